"""Live programme sources: the operator's [live_sources] checked at start-up, a stream's frames put on
the 25 fps capture timeline by their own timestamps, and real SRT (and RTMP) programmes read by the
server and played by live sessions through a sender that drops and comes back."""

from __future__ import annotations

import asyncio
import io
import math
import random
import socket
import time
from fractions import Fraction

import aiohttp
import av
import numpy as np
import pytest
from PIL import Image
from _media_servers import Nginx, free_udp_port, missing_nginx, missing_srt
from _programme_servers import PacedEncoder, SrtSender, read_mark, relay_children, until
from _server_support import control_url, feed_in_real_time, speech_48k, start_server

from client.control import ControlClient, ControlError
from server.config import build_config, load_file
from server.livesources import LiveSourceSpec, check_no_clash, parse_live_sources
from server.sources import BadName, SourceLibrary
from streaming.backoff import Backoff
from streaming.chunker import WINDOW_FRAMES
from streaming.errors import InputError
from streaming.livesource import LiveVideoSource
from streaming.programme import Programme
from streaming.programmereader import RECONNECT_CAP
from streaming.restamp import Restamper
from streaming.timeline import SessionClock
from streaming.i420 import i420_to_rgb


# ---- 25 fps by timestamp -------------------------------------------------------------------------------
def _numbered(k: int) -> av.VideoFrame:
    """A tiny frame that says its number in its colour (red: k % 256, green: k // 256)."""
    image = np.zeros((16, 16, 3), np.uint8)
    image[..., 0], image[..., 1] = k % 256, k // 256
    return av.VideoFrame.from_ndarray(image, format="rgb24")


def _number(image: np.ndarray) -> int:
    return int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])


@pytest.mark.parametrize("rate", [Fraction(30), Fraction(30000, 1001), Fraction(24)])
def test_a_stream_at_any_rate_lands_on_the_25_fps_timeline_by_its_timestamps_not_its_arrival(rate):
    """Frames that arrive in bursts and with jitter (up to 0.3 s late, a 0.4 s stall) show, at each 25 fps
    capture slot, the latest frame filmed before the slot ends: as if they had come on time."""
    rng = random.Random(7)
    origin = 1000.0  # the session clock's origin on the server's clock
    clock = SessionClock(origin, delay=5.0, lead=0.0)
    start_stamp, first_arrival = 12.345, origin + 0.213  # a stream's timestamps start anywhere
    restamper = Restamper()
    live = LiveVideoSource((16, 16))
    count = int(10 * rate)
    arrival = first_arrival
    stamps = []
    for k in range(count):
        stamp = start_stamp + float(k / rate)
        stamps.append(stamp)
        on_time = first_arrival + (stamp - start_stamp)
        # Jitter (the first frame is on time), and a 0.4 s network stall after which its frames come at once.
        jitter = rng.uniform(0, 0.3) if k else 0.0
        arrival = max(arrival, on_time + jitter, first_arrival + 3.4 if 3.0 <= k / rate < 3.4 else 0)
        due = restamper.due(stamp, arrival)
        live.push(_numbered(k), clock.session_time(due))
    assert restamper.anchors == 1  # one offset throughout: lateness under the limit never moved it
    slots = int(9.5 * 25)
    window = live.window(0, slots)
    shown = [_number(window.frame(i)) for i in range(5, slots)]
    # Slot i covers session time [i/25, (i+1)/25); the first frame is due 0.213 s into the session.
    filmed = [0.213 + (stamp - start_stamp) for stamp in stamps]
    expected = [max(k for k in range(count) if filmed[k] < (i + 1) / 25) for i in range(5, slots)]
    # (a frame filmed exactly on a slot's edge may go either way in floating point: not judged)
    edge = [any(abs(t - (i + 1) / 25) < 1e-6 for t in filmed) for i in range(5, slots)]
    assert [s for s, e in zip(shown, edge) if not e] == [x for x, e in zip(expected, edge) if not e]
    assert sum(edge) < len(edge) / 10
    repeats = sum(a == b for a, b in zip(shown, shown[1:]))
    assert repeats == (0 if rate > 25 else pytest.approx(len(shown) / 25, abs=2))  # 24 fps: one repeat a second


def test_restamping_follows_breaks_and_late_frames_and_never_goes_back():
    restamper = Restamper(tighten=False)
    assert restamper.due(5.0, 100.0) == 100.0
    assert restamper.due(5.04, 100.5) == pytest.approx(100.04)  # late within the limit: its timestamp decides
    assert restamper.due(6.0, 101.0) == pytest.approx(101.0)
    assert restamper.due(6.04, 101.7) == pytest.approx(101.7)  # 0.66 s late: the offset is set afresh
    assert restamper.due(0.0, 101.8) == pytest.approx(101.8)  # timestamps restarted (a reconnect)
    assert restamper.due(9.0, 101.9) == pytest.approx(101.9)  # a jump of 9 s: afresh
    restamper.reset()
    assert restamper.due(3.0, 50.0) == pytest.approx(101.9)  # a clock that went back: due times do not
    assert restamper.due(None, 102.5) == 102.5  # no timestamp: by arrival
    assert restamper.anchors == 5


def test_the_latency_of_a_late_first_frame_is_shed_step_by_step_without_making_frames_late():
    """The first second of frames came at once after the opening probe; the rest 20 ms after filming."""
    def arrival(k: int) -> float:
        return 1.0 if k < 30 else k / 30 + 0.02

    restamper = Restamper()
    leads = [restamper.due(k / 30, arrival(k)) - arrival(k) for k in range(30 * 20)]
    assert restamper.anchors == 1 and min(leads) >= -1e-9  # never late, never re-anchored
    assert restamper.tightened == pytest.approx(0.93)  # down to the 0.05 s slack, in 0.2 s steps
    assert leads[-1] == pytest.approx(0.05)
    held = Restamper(tighten=False)  # HLS: the first offset holds, segments buffer
    assert [held.due(k / 30, arrival(k)) - arrival(k) for k in range(30 * 20)][-1] == pytest.approx(0.98)


def test_reconnect_backoff_doubles_up_to_its_limit():
    assert [Backoff(cap=RECONNECT_CAP).delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


# ---- configuration -------------------------------------------------------------------------------------
def test_live_sources_from_the_config_file_are_checked_at_start_up(tmp_path):
    path = tmp_path / "livedub.toml"
    path.write_text('delay = 5.0\n[live_sources]\nprogramme = "srt://0.0.0.0:9000?mode=listener"\n'
                    'studio-b = "rtmp://127.0.0.1/live/b"\nfeed = "https://cdn.example.org/live/index.m3u8"\n'
                    'cam = "rtsp://10.0.0.5:8554/cam"\n')
    config = build_config(load_file(str(path)))
    assert config.live_sources == (LiveSourceSpec("programme", "srt://0.0.0.0:9000?mode=listener"),
                                   LiveSourceSpec("studio-b", "rtmp://127.0.0.1/live/b"),
                                   LiveSourceSpec("feed", "https://cdn.example.org/live/index.m3u8"),
                                   LiveSourceSpec("cam", "rtsp://10.0.0.5:8554/cam"))
    for table, match in (({"p": "udp://0.0.0.0:9000"}, r"bad live source p = 'udp://0\.0\.0\.0:9000': accepted are srt:"),
                         ({"p": "/srv/programme.ts"}, "accepted are srt://"),
                         ({"p": "http://cdn.example.org/live.mp4"}, "must be an HLS playlist"),
                         ({"p": "srt://0.0.0.0?mode=listener"}, "an SRT source needs a port"),
                         ({"p": "srt://:9000?mode=rendezvous"}, "mode=listener"),
                         ({"p": "srt://:9000?mode=caller"}, "mode=caller with a host"),
                         ({"p": "rtmp://host:99999/live"}, "accepted are"),
                         ({"p": "rtmp:///live"}, "no host"),
                         ({"p": 9000}, "must be a URL string"),
                         ({"../up": "rtmp://h/live/s"}, "bad live source name"),
                         ({"a b": "rtmp://h/live/s"}, "bad live source name"),
                         ({"live": "rtmp://h/live/s"}, "it names a session's own WebRTC video"),
                         ({"a": "rtmp://h/live/s", "b": "rtmp://h/live/s"}, "live sources a and b have the same URL"),
                         ("srt://0.0.0.0:9000", "a table of NAME")):
        with pytest.raises(InputError, match=match) as caught:
            build_config({"live_sources": table})
        assert "\n" not in str(caught.value)


def test_a_live_source_may_not_share_a_name_with_a_file_and_clients_never_name_a_url(tmp_path):
    (tmp_path / "anchor.png").write_bytes(b"x")
    specs = parse_live_sources({"anchor": "rtmp://127.0.0.1/live/a", "programme": "rtmp://127.0.0.1/live/p"})
    library = SourceLibrary(str(tmp_path), ["programme"])
    with pytest.raises(InputError, match="live source name.s. anchor also name files in the sources folder"):
        check_no_clash(specs, library.names())
    check_no_clash(specs[1:], library.names())
    assert library.listing() == ["anchor", "programme"]
    for url in ("srt://evil.example.org:9000", "rtmp://127.0.0.1/live/x", "file:///etc/passwd", "http://x/a.m3u8"):
        with pytest.raises(BadName, match="a URL is not a source: .* available are anchor, programme$"):
            library.path(url)


# ---- real servers ----------------------------------------------------------------------------------------
needs_srt = pytest.mark.skipif(missing_srt() is not None, reason=str(missing_srt()))


async def _programme_event(control: ControlClient, seen: list, state: str, limit: float = 20.0) -> dict:
    """The next ``programme`` event in ``state`` (the states of all, this one's included, go to ``seen``)."""
    while True:
        event = await control.next_event("programme", timeout=limit)
        seen.append(event["state"])
        if event["state"] == state:
            return event


async def _watch(session, played: list) -> None:
    """A viewer at 25 fps: every output frame at its due time, as (index, kind, programme frame shown)."""
    n = session.clock.frame_at(time.monotonic()) + 1
    while session.state != "ended":
        await asyncio.sleep(max(0.0, session.clock.frame_due(n) - time.monotonic()))
        image, kind = session.timeline.frame(n)
        image = i420_to_rgb(image)  # the timeline keeps whole frames as I420
        played.append((n, kind, read_mark(image) if kind != "idle" else None))
        n += 1


def _captured(session) -> int:
    """The 25 fps capture frame being captured now (output frame n shows capture frame n, later)."""
    return math.floor(session.session_time() * 25)


def _follows(marks: list[int]) -> bool:
    """Frames that follow a 30 fps programme at 25 fps: never back, and mostly a new frame each time (on
    a loaded machine a frame may come after its chunk was frozen: that chunk holds the one before)."""
    steps = [b - a for a, b in zip(marks, marks[1:])]
    return all(step >= 0 for step in steps) and sum(step > 0 for step in steps) >= 0.5 * len(steps)


@needs_srt
async def test_an_srt_programme_feeds_a_live_lite_session_and_a_dropped_sender_is_held_then_rejoined(tmp_path):
    port = free_udp_port()
    server = await start_server(str(tmp_path / "sources"), generator="lite", worker="thread", size="256x256",
                                live_sources={"programme": f"srt://127.0.0.1:{port}?mode=listener"})
    sender = None
    played: list = []
    seen: list = []
    try:
        async with ControlClient(control_url(server)) as control:
            listing = await control.request("sources")
            assert listing["sources"] == ["blue", "programme", "red"] and listing["live"] == ["programme"]
            with pytest.raises(ControlError, match="a URL is not a source"):
                await control.request("create", source=f"srt://127.0.0.1:{port}?mode=caller")
            sender = SrtSender(port, first=0)
            connected = await _programme_event(control, seen, "connected")
            assert connected["source"] == "programme" and connected["size"] == "320x320"
            created = await control.request("create", source="programme")
            assert created["source"] == "programme"
            session = server.manager.get(created["session"])
            programme = server.manager.programmes.get("programme")
            assert programme.subscribers == 1
            with pytest.raises(ControlError, match="programme is a live programme source"):
                await control.request("swap_reference", session=session.id, source="programme")
            viewer = asyncio.create_task(_watch(session, played))
            feed = asyncio.create_task(feed_in_real_time(session, np.tile(speech_48k(10.0), 3)))
            await until(lambda: _captured(session) >= 100, 30)
            sender.kill()
            killed_at = _captured(session)
            lost = await _programme_event(control, seen, "lost")
            await _programme_event(control, seen, "reconnecting")
            assert lost["reason"]
            await until(lambda: _captured(session) >= killed_at + 75, 30)  # 3 s without
            held_until = _captured(session)
            sender = SrtSender(port, first=2000)
            await _programme_event(control, seen, "connected")
            back_at = _captured(session)
            await until(lambda: _captured(session) >= back_at + 125, 30)  # 5 s of the programme back
            feed.cancel()  # the speech ends here
            session.end_ingest()
            await asyncio.wait_for(session.finished.wait(), session.clock.delay + 10)
            await viewer
            assert programme.subscribers == 0  # the ended session no longer gets frames
            stats = (await control.request("stats"))["live_sources"]
            chunks = session.stats().chunks
    finally:
        if sender is not None:
            sender.kill()
        await server.stop()
    assert relay_children() == []  # the server's SRT relays were killed and reaped (no zombies)
    assert seen == ["connected", "lost", "reconnecting", "connected"]
    assert stats[0]["state"] == "connected" and stats[0]["frames"] > 200
    shown = {n: (kind, mark) for n, kind, mark in played}
    indices = sorted(shown)
    assert indices == list(range(indices[0], indices[-1] + 1))  # a frame for every 25 fps slot
    first_chunk = min(n for n, (kind, _) in shown.items() if kind != "idle")
    # After the first chunk a frame is idle only in a chunk the session itself reports late (its frames
    # were due before it came): a busy machine's doing, never unaccounted. On an idle machine, none.
    idle = sum(kind == "idle" for n, (kind, _) in shown.items() if n >= first_chunk)
    assert idle <= WINDOW_FRAMES * (chunks.late + chunks.skipped + chunks.failed), (idle, chunks)
    assert any(kind == "generated" for kind, _ in shown.values())
    marks = {n: mark for n, (kind, mark) in shown.items() if kind != "idle"}
    # Before the drop: the programme as it goes (30 fps shown at 25 fps).
    before = [marks[n] for n in range(first_chunk, killed_at - 25) if n in marks]
    assert len(before) > 25 and _follows(before) and max(before) < 2000, before
    # The sender gone: the last programme frame held, at 25 fps, until it is back (the sender's last
    # burst of frames is due up to a second after it came).
    held = [marks[n] for n in range(killed_at + 40, held_until) if n in marks]
    assert len(held) >= 20 and len(set(held)) == 1 and max(before) <= held[0] < 2000, held
    # Back: the new programme from its first frames on.
    after = [marks[n] for n in range(back_at + 50, indices[-1] - 10) if n in marks]
    assert len(after) > 25 and _follows(after) and min(after) >= 2000, after


@pytest.mark.skipif(missing_nginx() is not None, reason=str(missing_nginx()))
async def test_an_rtmp_programme_from_nginx_feeds_a_session(tmp_path):
    nginx = Nginx(str(tmp_path), playlist_seconds=4).start()
    publisher = PacedEncoder(nginx.url("programme"), "flv", first=500)  # as OBS or a vision mixer would
    played: list = []
    seen: list = []
    server = None
    try:
        await until(lambda: publisher.sent >= 15, 20)  # publishing: a player finds the stream there
        server = await start_server(str(tmp_path / "sources"), size="256x256",
                                    live_sources={"studio": nginx.url("programme")})
        async with ControlClient(control_url(server)) as control:
            idle = (await control.request("stats"))["live_sources"][0]  # pulled: not read while unused
            assert (idle["state"], idle["decoding"], idle["frames"]) == ("idle", False, 0)
            async with aiohttp.ClientSession() as http:  # the console's picker shows its last frame
                # Asking for its thumbnail starts reading it; the answer waits for its first frame.
                async with http.get(server.url + "sources/studio/thumbnail") as response:
                    assert response.status == 200 and response.content_type == "image/jpeg"
                    thumbnail = Image.open(io.BytesIO(await response.read()))
            assert thumbnail.size == (160, 160) and read_mark(np.asarray(thumbnail.convert("RGB"))) >= 500
            await _programme_event(control, seen, "connected")
            created = await control.request("create", source="studio")
            session = server.manager.get(created["session"])
            viewer = asyncio.create_task(_watch(session, played))
            await feed_in_real_time(session, speech_48k(5.0))
            session.end_ingest()
            await asyncio.wait_for(session.finished.wait(), session.clock.delay + 10)
            await viewer
    finally:
        if server is not None:
            await server.stop()
        publisher.stop()
        nginx.stop()
    assert publisher.error is None
    marks = [mark for _, kind, mark in played if kind != "idle"]
    assert len(marks) > 75 and _follows(marks[25:]) and min(marks) >= 500, marks


@pytest.mark.skipif(missing_nginx() is not None, reason=str(missing_nginx()))
async def test_an_hls_programme_is_read_at_its_own_pace_a_segment_ahead(tmp_path):
    """nginx makes HLS of an RTMP stream; the programme reads the playlist over HTTP: its frames come a
    segment at a time but are due at the stream's pace, and are read no more than 2 s ahead."""
    nginx = Nginx(str(tmp_path), playlist_seconds=4).start()
    publisher = PacedEncoder(nginx.url("programme"), "flv", first=300)
    playlist = tmp_path / "hls" / "programme.m3u8"
    states: list = []
    received: list = []
    programme = Programme("feed", nginx.hls_url("programme"), states.append)
    try:
        await until(lambda: playlist.exists() and playlist.read_text().count(".ts") >= 3, 20)
        programme.start()  # a pulled source: read from its first session (subscriber) on
        programme.subscribe(lambda frame, due: received.append((time.monotonic(), due, frame)))
        await until(lambda: len(received) >= 150, 20)
    finally:
        await programme.close()
        publisher.stop()
        nginx.stop()
    assert [s.state for s in states] == ["connected"] and states[0].size == "320x320"
    marks = [read_mark(frame.to_ndarray(format="rgb24")) for _, _, frame in received]
    assert marks[0] >= 300 and marks == list(range(marks[0], marks[0] + len(marks)))  # every frame, in order
    dues = [due for _, due, _ in received]
    steps = np.diff(dues)
    assert np.allclose(steps, 1 / 30, atol=1e-3)  # at the stream's own 30 fps (FLV stamps in ms), not as segments came
    assert max(due - arrival for arrival, due, _ in received) <= 2.0 + 0.1  # read at most 2 s ahead


@needs_srt
async def test_an_srt_listener_that_cannot_start_is_retried_with_the_relays_reason(tmp_path):
    port = free_udp_port()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the port is taken
    squatter.bind(("0.0.0.0", port))
    states: list = []
    programme = Programme("programme", f"srt://0.0.0.0:{port}?mode=listener", states.append)
    programme.start()
    try:
        await until(lambda: len(states) >= 2, 20)
    finally:
        await programme.close()
        squatter.close()
    assert [(s.state, s.attempt, s.retry_in) for s in states[:2]] == [("reconnecting", 1, 0.5), ("reconnecting", 2, 1.0)]
    assert states[0].reason.startswith("srt-live-transmit: ") and "srt_bind" in states[0].reason
    assert programme.state == "reconnecting" and relay_children() == []
