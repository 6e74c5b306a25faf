"""Broadcast outputs against real receivers on loopback: nginx's RTMP module (its RTMP stream read back
with PyAV, and the HLS playlist it makes) and srt-live-transmit as an SRT listener. A receiver killed
and restarted is retried and connects again while another output of the same session goes on; the retry
waits are on the session's clock (checked on a virtual one). Each connection's relay process: a receiver
that never answers the handshake, and a relay that stops reading, stall nothing and are retried."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import av
import numpy as np
import pytest

from _media_servers import Nginx, SrtListener, TlsFront, missing_nginx, missing_srt
from _server_support import control_url, feed_in_real_time, free_port, next_event, speech_48k, start_server
from client.control import ControlClient, ControlError
from server.egress import Egress
from server.output_sinks import RelayLimits
from server.output_url import parse_output_url
from server.outputs import OUTPUT_QUEUE, Output, SessionOutputs
from streaming.chunker import ChunkPlan
from streaming.clock import InlineExecutor, VirtualClock
from streaming.ingest import PLAYOUT_RATE, RECEIVE_LATENCY, SampleRing
from streaming.playout import Playout
from streaming.timeline import OutputTimeline, SessionClock

DELAY = 6.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = "192x192"
ONSET_TOLERANCE = 0.12  # 3 frames: where the speech sits, not how fast anything ran


@pytest.fixture
def nginx(tmp_path):
    reason = missing_nginx()
    if reason:
        pytest.skip(reason)
    server = Nginx(str(tmp_path / "nginx")).start()
    yield server
    server.stop()


class RtmpReader:
    """Plays an RTMP stream in a thread (from before it is published, so from its first packet): video
    timestamps and the decoded speech (mono), until ``until`` seconds of stream time or ``limit`` s."""

    def __init__(self, url: str, limit: float = 60.0) -> None:
        self.url, self.limit = url, limit
        self.until = float("inf")
        self.video: list[float] = []
        self.audio: list[np.ndarray] = []
        self.audio_start: float | None = None
        self.rate: int | None = None
        self.codecs: set[str] = set()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "RtmpReader":
        self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        try:
            with av.open(self.url, timeout=(self.limit, 10.0)) as container:
                for packet in container.demux():
                    if packet.pts is None:
                        continue  # the demuxer's flush packet
                    seconds = float(packet.pts * packet.time_base)
                    self.codecs.add(packet.stream.codec_context.name)
                    if packet.stream.type == "video":
                        self.video.append(seconds)
                    else:
                        for frame in packet.decode():
                            if self.audio_start is None:
                                self.audio_start = float(frame.pts * frame.time_base)
                            self.rate = frame.sample_rate
                            self.audio.append(frame.to_ndarray().mean(axis=0))
                    if seconds >= self.until or time.monotonic() > deadline:
                        break
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def join(self) -> None:
        self._thread.join(self.limit + 15)
        assert not self._thread.is_alive(), "the RTMP reader never finished"


def _onset(samples: np.ndarray) -> int:
    """The first sample of speech: louder than a tenth of the loudest."""
    loud = np.flatnonzero(np.abs(samples) > 0.1 * np.abs(samples).max())
    return int(loud[0])


def _is_output(state: str, output: str | None = None):
    return lambda e: e["event"] == "output" and e["state"] == state and (output is None or e["output"] == output)


async def test_rtmp_output_of_a_live_session_reaches_nginx_with_speech_at_the_delay(tmp_path, nginx):
    server = await start_server(str(tmp_path / "sources"), generator="lite", worker="thread", size=SIZE, delay=DELAY)
    reader = RtmpReader(nginx.url("dub")).start()
    seen: list[dict] = []
    try:
        async with ControlClient(control_url(server)) as control:
            created = await control.request("create", source="red", outputs=[nginx.url("dub")], timeout=120)
            session_id = created["session"]
            assert [o["url"] for o in created["outputs"]] == [f"rtmp://127.0.0.1:{nginx.port}/live/***"]
            connected = await next_event(control, seen, _is_output("connected"), 30)
            output = server.manager._entries[session_id].outputs.outputs[connected["output"]]
            session = server.manager.get(session_id)
            speech = np.concatenate([np.zeros(PLAYOUT_RATE, np.float32), speech_48k(2.0)])
            fed_at = time.monotonic()
            await feed_in_real_time(session, speech)
            captured = fed_at + _onset(speech) / PLAYOUT_RATE - RECEIVE_LATENCY  # as the session counts it
            # The onset plays at output time (captured - origin): read the stream well past it.
            reader.until = captured - session.clock.origin - output.stream_start + 1.0
            await asyncio.get_running_loop().run_in_executor(None, reader.join)
            stats = (await control.request("stats", session=session_id))["stats"]
            await control.request("stop", session=session_id)
    finally:
        await server.stop()
    assert reader.error is None, reader.error
    assert {"h264", "aac"} <= reader.codecs
    steps = np.diff(reader.video)
    assert reader.video[0] == 0.0 and len(steps) > 100  # from its first keyframe on
    assert np.median(steps) == pytest.approx(0.04) and np.mean(np.isclose(steps, 0.04)) > 0.9  # 25 fps
    audio = np.concatenate(reader.audio)
    assert reader.rate == PLAYOUT_RATE
    onset_out = output.stream_start + reader.audio_start + _onset(audio) / PLAYOUT_RATE  # output seconds
    shown = session.clock.origin + DELAY + onset_out  # glass: due time plus the lead that covers the output leg
    assert abs((shown - captured) - DELAY) < ONSET_TOLERANCE, (shown - captured, DELAY)
    assert stats["outputs"][0]["state"] == "connected" and stats["outputs"][0]["frames"] > 100
    # nginx made HLS of it: a playlist whose segments exist and hold H.264 and AAC.
    playlist = os.path.join(nginx.hls, "dub.m3u8")
    with open(playlist) as handle:
        lines = handle.read().splitlines()
    segments = [line for line in lines if line.endswith(".ts")]
    assert lines[0] == "#EXTM3U" and any(line.startswith("#EXTINF") for line in lines) and segments
    with av.open(os.path.join(nginx.hls, segments[0])) as container:
        assert sorted(s.codec_context.name for s in container.streams) == ["aac", "h264"]


async def test_srt_output_reaches_an_srt_listener(tmp_path):
    """Every session's output from ``--output-url`` (its id as the SRT stream id) into a listener."""
    reason = missing_srt()
    if reason:
        pytest.skip(reason)
    received = str(tmp_path / "received.ts")
    listener = SrtListener(received).start()
    server = await start_server(str(tmp_path / "sources"), size=SIZE,
                                output_url=listener.url() + "?latency=120&streamid={session}")
    seen: list[dict] = []
    try:
        async with ControlClient(control_url(server)) as control:
            created = await control.request("create", source="blue", timeout=60)
            session_id = created["session"]
            [output] = created["outputs"]
            assert output["url"] == f"srt://127.0.0.1:{listener.port}?latency=120&streamid=***"
            await next_event(control, seen, _is_output("connected", output["output"]), 30)
            await feed_in_real_time(server.manager.get(session_id), speech_48k(3.0))
            await control.request("stop", session=session_id)
            ended = await next_event(control, seen, _is_output("ended", output["output"]), 10)
            assert session_id not in ended["url"]  # the stream id is a secret
    finally:
        await server.stop()
        listener.stop()
    with av.open(received) as container:
        assert sorted(s.codec_context.name for s in container.streams) == ["aac", "h264"]
        frames = {"video": 0, "audio": 0}
        for frame in container.decode(*container.streams):
            frames["video" if isinstance(frame, av.VideoFrame) else "audio"] += 1
    assert frames["video"] >= 25 and frames["audio"] >= 25


async def test_a_receiver_that_goes_away_is_retried_while_the_others_go_on(tmp_path, nginx):
    steady = Nginx(str(tmp_path / "steady")).start()
    reader = RtmpReader(steady.url("b")).start()
    server = await start_server(str(tmp_path / "sources"), size=SIZE, allow_output_host=["127.0.0.1"])
    seen: list[dict] = []
    try:
        async with ControlClient(control_url(server)) as control:
            created = await control.request("create", source="red", outputs=[nginx.url("a"), steady.url("b")],
                                            timeout=60)
            session_id = created["session"]
            first, _ = [o["output"] for o in created["outputs"]]
            for _ in range(2):
                await next_event(control, seen, _is_output("connected"), 30)
            with pytest.raises(ControlError) as caught:
                await control.request("add_output", session=session_id, url="rtmp://10.1.2.3/live/x")
            assert caught.value.reply["message"] == ("output host '10.1.2.3' is not allowed: accepted are "
                                                     "127.0.0.1")
            with pytest.raises(ControlError) as caught:
                await control.request("remove_output", session=session_id, output="nope")
            assert caught.value.code == "unknown_output"
            with pytest.raises(ControlError) as caught:
                await control.request("create", source="red", outputs=[steady.url("c"), "http://127.0.0.1/x"])
            assert caught.value.reply["message"].startswith("bad output URL scheme 'http': accepted are rtmp://")
            assert len(server.manager.sessions) == 1  # refused before a session was made
            third = await control.request("add_output", session=session_id, url=steady.url("c"))
            await next_event(control, seen, _is_output("connected", third["output"]), 30)
            await control.request("remove_output", session=session_id, output=third["output"])
            await next_event(control, seen, _is_output("removed", third["output"]), 10)
            output = server.manager._entries[session_id].outputs.outputs[first]
            await _frames_read(reader, 25)
            frames_before = server.manager._entries[session_id].outputs.stats()[1]["frames"]
            nginx.stop()  # the receiver goes away
            retrying = await next_event(control, seen, _is_output("retrying", first), 30)
            assert retrying["retry_in"] > 0 and retrying["attempt"] >= 2 and retrying["error"]
            await _frames_read(reader, len(reader.video) + 25)  # a second of the other output meanwhile
            nginx.start()  # and comes back on the same port
            back = await next_event(control, seen, _is_output("connected", first), 60)
            await _frames_read(reader, len(reader.video) + 25)
            assert back["attempt"] >= 2 and output.connects == 2
            stats = (await control.request("stats", session=session_id))["stats"]
            assert [o["state"] for o in stats["outputs"]] == ["connected", "connected"]
            assert stats["outputs"][1]["connects"] == 1 and stats["outputs"][1]["frames"] > frames_before
            reader.until = reader.video[-1]
            await control.request("stop", session=session_id)
            await next_event(control, seen, _is_output("ended", first), 10)
    finally:
        await server.stop()
        reader.join()
        steady.stop()
    _assert_25_fps(reader, 50)  # the other output's stream went on through the outage


def _assert_25_fps(reader: RtmpReader, frames: int) -> None:
    """The stream read back has more than ``frames`` frames, (nearly) all 40 ms apart."""
    assert reader.error is None, reader.error
    steps = np.diff(reader.video)
    assert len(steps) > frames and np.median(steps) == pytest.approx(0.04) and np.mean(np.isclose(steps, 0.04)) > 0.9


async def _frames_read(reader: RtmpReader, count: int) -> None:
    deadline = time.monotonic() + 60  # a bound on a busy machine, not a timing condition
    while len(reader.video) < count and reader.error is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(reader.video) >= count, (reader.error, len(reader.video))


def _virtual_session() -> tuple[VirtualClock, SessionClock, Egress]:
    """A session's playout and encoders (32x32, silence) on a virtual clock: frames as the test advances it."""
    clock = VirtualClock()
    schedule = SessionClock(origin=clock.now(), delay=1.0)
    timeline = OutputTimeline(ChunkPlan(window=30, context=3), np.zeros((32, 32, 3), np.uint8))
    playout = Playout(clock, schedule, timeline, SampleRing(PLAYOUT_RATE, 5.0).read)
    return clock, schedule, Egress(playout, (32, 32), InlineExecutor())


async def test_retries_wait_on_the_session_clock():
    """A refused connection is retried after 0.5 s, then 1 s, of the session's clock (virtual here):
    not before, whatever the machine's speed."""
    clock, _, egress = _virtual_session()
    events: list = []
    outputs = SessionOutputs(egress, clock, events.append)
    output = outputs.add(parse_output_url(f"rtmp://127.0.0.1:{free_port()}/live/x"))  # nobody listens there

    async def next_state(count: int):
        deadline = time.monotonic() + 20  # a bounded wait for the connect thread, not a timing condition
        while len(events) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(events) >= count, events
        return events[count - 1]

    first = await next_state(1)
    assert (first.state, first.retry_in, first.attempt, output.attempts) == ("retrying", 0.5, 2, 1)
    assert first.error == "RTMP connection failed: Connection refused"  # the relay's last line
    await clock.advance(0.49)
    await asyncio.sleep(0.2)
    assert output.attempts == 1 and len(events) == 1  # still waiting
    await clock.advance(0.02)
    second = await next_state(2)
    assert (second.state, second.retry_in, second.attempt, output.attempts) == ("retrying", 1.0, 3, 2)
    await outputs.remove(output.id)
    assert events[-1].state == "removed" and outputs.stats() == []
    egress.close()


async def test_a_receiver_that_falls_behind_loses_packets_and_resumes_at_a_keyframe():
    """An output whose connection thread takes nothing (a receiver that stopped reading): the session's
    encoders go on, the output's queue stays bounded, and what it keeps starts at a keyframe."""
    clock, schedule, egress = _virtual_session()
    video, audio = egress.broadcast_encoders()
    events: list = []
    output = Output("o1", parse_output_url("rtmp://127.0.0.1:1/live/x"), video, audio, clock, events.append)
    output._connected((32, 32))  # what its connection thread reports; no thread runs to drain the queue
    await clock.advance(schedule.frame_due(0) + 5.0 - clock.now())
    assert video.encoded >= 5 * 25 and audio.encoded >= 5 * 50  # the session's encodes were not held back
    items = list(output._queue.queue)
    assert output.dropped > OUTPUT_QUEUE and 0 < len(items) <= OUTPUT_QUEUE
    assert items[0][0] == "video" and items[0][1].keyframe  # resumes at a keyframe it asked for
    assert any(kind == "audio" for kind, _ in items)
    await output.close()
    assert [e.state for e in events] == ["connected", "removed"]
    egress.close()


@pytest.mark.parametrize("stereo", [False, True])
def test_the_aac_encoder_takes_mono_and_planar_stereo_speech(stereo):
    """Speech blocks as today's playout gives them (mono) and as the stereo playout does ([2, 960]):
    AAC at 48 kHz stereo, each side what it was given."""
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(960 * 50) / PLAYOUT_RATE)).astype(np.float32)

    def speech(start: int, end: int) -> np.ndarray:
        block = tone[start:end]
        return np.stack([block, np.zeros_like(block)]) if stereo else block

    clock = VirtualClock()
    playout = Playout(clock, SessionClock(origin=clock.now(), delay=1.0),
                      OutputTimeline(ChunkPlan(window=30, context=3), np.zeros((32, 32, 3), np.uint8)), speech)
    _, encoder = Egress(playout, (32, 32), InlineExecutor()).broadcast_encoders()
    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = encoder.extradata
    decoded = [f.to_ndarray() for j in range(40) for p in encoder._encode(j).packets for f in decoder.decode(p)]
    left, right = np.concatenate(decoded, axis=1)[:, 2048:]  # past the encoder's priming
    assert decoded[0].shape[0] == 2 and np.sqrt(np.mean(left ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)
    assert np.sqrt(np.mean(right ** 2)) < 0.01 if stereo else np.allclose(left, right, atol=0.02)


async def test_rtmps_output_through_tls(tmp_path, nginx):
    """rtmps:// (RTMP over TLS) to a TLS front of nginx (as a CDN's ingest would be): it connects and
    nginx gets the stream. FFmpeg does not verify the certificate (its TLS default; see the README)."""
    from _server_support import make_tls_files

    files = make_tls_files(str(tmp_path))
    front = TlsFront(files["server.crt"], files["server.key"], nginx.port).start()
    server = await start_server(str(tmp_path / "sources"), size=SIZE)
    seen: list[dict] = []
    try:
        async with ControlClient(control_url(server)) as control:
            created = await control.request("create", source="red", timeout=60,
                                            outputs=[f"rtmps://127.0.0.1:{front.port}/live/tls"])
            await next_event(control, seen, _is_output("connected"), 30)
            playlist = os.path.join(nginx.hls, "tls.m3u8")
            deadline = time.monotonic() + 30  # a bound for a busy machine: nginx writes it after a fragment
            while not os.path.exists(playlist) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            stats = (await control.request("stats", session=created["session"]))["stats"]
    finally:
        await server.stop()
        front.stop()
    assert os.path.exists(playlist)
    assert stats["outputs"][0]["connects"] == 1 and stats["outputs"][0]["state"] == "connected"


class SilentListener:
    """Accepts TCP connections and never reads or answers (a host that does not speak RTMP, or hangs)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.accepted = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            while True:
                self.held.append(self.socket.accept()[0])
                self.accepted.set()
        except OSError:  # closed
            pass

    def wait_connections(self, count: int, limit: float) -> bool:
        deadline = time.monotonic() + limit  # a bound for a busy machine
        while len(self.held) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return len(self.held) >= count

    def closed_by_peer(self, index: int, limit: float) -> bool:
        """Whether the ``index``th connection's other end closed it (what it sent is read only now)."""
        connection = self.held[index]
        connection.settimeout(limit)
        try:
            while connection.recv(65536):  # the handshake's first bytes, then the end
                pass
        except TimeoutError:
            return False
        except OSError:  # reset: closed too
            pass
        return True

    def close(self) -> None:
        self.socket.close()
        for connection in self.held:
            connection.close()


async def test_a_receiver_that_never_answers_the_handshake_stalls_nothing(tmp_path, nginx):
    """A host that accepts TCP and never answers RTMP's handshake: the output stays ``connecting`` until the
    connect timeout, then retries; meanwhile the server answers requests and the session's other output
    goes on at 25 fps (FFmpeg's handshake runs in the relay process, not the server's)."""
    silent = SilentListener()
    reader = RtmpReader(nginx.url("steady")).start()
    server = await start_server(str(tmp_path / "sources"), size=SIZE)
    seen: list[dict] = []
    try:
        async with ControlClient(control_url(server)) as control:
            created = await control.request("create", source="red", timeout=60,
                                            outputs=[nginx.url("steady")])
            session_id = created["session"]
            await next_event(control, seen, _is_output("connected"), 30)
            await _frames_read(reader, 25)
            hung = await control.request("add_output", session=session_id,
                                         url=f"rtmp://127.0.0.1:{silent.port}/live/key")
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, silent.accepted.wait, 30), "the relay never connected"
            frames_at_accept = len(reader.video)
            stats = (await control.request("stats", session=session_id))["stats"]  # answered mid-handshake
            assert [o["state"] for o in stats["outputs"]] == ["connected", "connecting"]
            retrying = await next_event(control, seen, _is_output("retrying", hung["output"]), 30)
            assert retrying["error"] == "RTMP connection failed: no answer within 5 s"
            # The stream went on while the handshake hung (5 s: a second's worth is a loose bound).
            assert len(reader.video) - frames_at_accept >= 25
            # Its next attempt hangs too; removed meanwhile, its relay is killed (its connection closes).
            assert await loop.run_in_executor(None, silent.wait_connections, 2, 30), "no second attempt"
            await control.request("remove_output", session=session_id, output=hung["output"])
            await next_event(control, seen, _is_output("removed", hung["output"]), 10)
            assert await loop.run_in_executor(None, silent.closed_by_peer, 1, 30)
            reader.until = reader.video[-1]
            await control.request("stop", session=session_id)
    finally:
        await server.stop()
        reader.join()
        silent.close()
    _assert_25_fps(reader, 100)


async def test_a_relay_that_stops_reading_is_caught_by_the_write_timeout_and_reconnected(nginx):
    """The relay stops taking packets (stopped with SIGSTOP: as one blocked writing to a receiver that
    stopped reading is): once its pipe is full a write waits the write timeout (0.3 s here), then the
    output retries with the reason, the relay is killed and reaped, and the next attempt connects again.
    The stream key is nowhere on the relay's command line."""
    clock, _, egress = _virtual_session()
    events: list = []
    outputs = SessionOutputs(egress, clock, events.append, RelayLimits(write=0.3, pipe_bytes=4096))
    output = outputs.add(parse_output_url(nginx.url("secretkey")))

    async def until(state: str, count: int = 1):
        return await _run_until(clock, events, state, count)

    await until("connected")
    relay = output.sink.relay.process
    with open(f"/proc/{relay.pid}/cmdline", "rb") as handle:
        assert b"secretkey" not in handle.read()
    frames = output.frames
    while output.frames < frames + 25:
        await clock.advance(0.1)
        await asyncio.sleep(0.01)
    os.kill(relay.pid, signal.SIGSTOP)
    retrying = await until("retrying")
    assert retrying.error == "connection lost: the receiver stopped taking the stream (nothing sent for 0.3 s)"
    assert relay.returncode == -signal.SIGKILL  # killed and reaped
    await until("connected", 2)
    assert output.connects == 2 and output.sink.relay.process.pid != relay.pid
    await outputs.close()
    assert events[-1].state == "ended"
    egress.close()


async def _run_until(clock: VirtualClock, events: list, state: str, count: int = 1, step: float = 0.1):
    """Run the session's clock on until the output said ``state`` ``count`` times."""
    deadline = time.monotonic() + 60  # a bound for a busy machine, not a timing condition
    while sum(e.state == state for e in events) < count and time.monotonic() < deadline:
        await clock.advance(step)
        await asyncio.sleep(0.01)  # the output's thread writes meanwhile
    return [e for e in events if e.state == state][count - 1]


async def test_a_receiver_that_stops_reading_is_caught_by_its_acknowledgements_and_reconnected(nginx):
    """nginx stops reading (SIGSTOP): its kernel acknowledges until its receive buffer is full, then
    nothing more. The relay notices that (server/ack_watch.py, 1 s here) while its own writes still go
    into its send buffer, long before the write timeout (10 s, never reached: the error says which
    fired). Once nginx runs again, the output connects again."""
    clock, _, egress = _virtual_session()
    events: list = []
    outputs = SessionOutputs(egress, clock, events.append, RelayLimits(ack_stall=1.0))
    output = outputs.add(parse_output_url(nginx.url("acks")))
    await _run_until(clock, events, "connected")
    relay = output.sink.relay.process
    os.kill(nginx.process.pid, signal.SIGSTOP)
    try:
        retrying = await _run_until(clock, events, "retrying", step=0.5)  # 0.5 s of stream a turn: fills sooner
    finally:
        os.kill(nginx.process.pid, signal.SIGCONT)
    assert retrying.error == "connection lost: the receiver stopped taking the stream (nothing acknowledged for 1 s)"
    assert relay.returncode == 1  # it ended itself, saying why
    await _run_until(clock, events, "connected", 2)
    assert output.connects == 2
    await outputs.close()
    egress.close()


_PARENT = """
import json, subprocess, sys
relay = subprocess.Popen([sys.executable, "-m", "server.rtmp_relay"], stdin=subprocess.PIPE)
relay.stdin.write(json.dumps({"url": sys.argv[1], "size": [32, 32], "aac_config": None}).encode() + b"\\n")
relay.stdin.flush()
print(relay.pid, flush=True)
sys.stdin.read()  # until the test says: die (leaving the relay in its handshake)
"""


def test_a_relay_in_a_handshake_dies_with_its_server():
    """A relay waiting on a silent receiver's handshake (FFmpeg has no timeout there) is killed when the
    process that started it dies, instead of staying an orphan for ever."""
    silent = SilentListener()
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, f"rtmp://127.0.0.1:{silent.port}/live/k"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
    try:
        relay = int(parent.stdout.readline())
        assert silent.accepted.wait(30), "the relay never connected"
        parent.stdin.close()
        parent.wait(30)
        deadline = time.monotonic() + 30  # a bound for a busy machine: the kernel kills it at once
        while _running(relay) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(relay)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        silent.close()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
