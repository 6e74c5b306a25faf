"""Live programme sources: the operator's [live_sources] checked at start-up, a stream's frames put on
the 25 fps capture timeline by their own timestamps, and real SRT (and RTMP) programmes read by the
server and played by live sessions through a sender that drops and comes back."""

from __future__ import annotations

import asyncio
import random
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from server.config import build_config, load_file
from server.livesources import LiveSourceSpec, check_no_clash, parse_live_sources
from server.sources import BadName, SourceLibrary
from streaming.errors import InputError
from streaming.livesource import LiveVideoSource
from streaming.programmereader import Backoff
from streaming.restamp import Restamper
from streaming.timeline import SessionClock


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
    restamper = Restamper(pull_early=False)
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
    # Pulled early: a frame that comes before its due time brings the stream's offset forward to it.
    early = Restamper()
    assert early.due(0.0, 10.0) == 10.0  # the first frame came late (the opening probe)...
    assert early.due(0.5, 10.01) == pytest.approx(10.01)  # ...the rest of the burst: no later than arrival
    assert early.due(1.0, 10.5) == pytest.approx(10.5)
    assert early.due(1.04, 10.6) == pytest.approx(10.54)


def test_reconnect_backoff_doubles_up_to_its_limit():
    assert [Backoff().delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


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
    for table, match in (({"p": "udp://0.0.0.0:9000"}, r"bad live source p = 'udp://0\.0\.0\.0:9000': accepted are srt://"),
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
