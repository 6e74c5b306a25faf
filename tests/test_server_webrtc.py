"""aiortc loopback end to end: speech in over WHIP, the dub out over WHEP, through a real server.

The output must arrive at 25 fps, its speech must be the input speech delayed by the budget (measured
by cross-correlation against what was sent, by wall clock), and a reference swap mid-session must show.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import av
import numpy as np
import pytest

from aiortc.mediastreams import VideoStreamTrack

from _server_support import control_url, loopback_candidates, speech_48k, start_server
from client.control import ControlClient
from client.recorder import place_audio, to_mono
from client.webrtc import Publisher, SpeechTrack, Viewer

DELAY = 4.2  # the minimum is 3.56 s: leave the chunks some room on a busy machine
SPEECH_SECONDS = 6.0


@pytest.fixture
def loopback(monkeypatch):
    loopback_candidates(monkeypatch)


class Capture:
    """A WHEP sink keeping what the test checks: frame arrivals, pts, a pixel's colour, the audio."""

    def __init__(self) -> None:
        self.video: list[tuple[float, int, tuple]] = []
        self.audio: list[tuple[float, int, np.ndarray]] = []

    def __call__(self, kind, frame, arrival) -> None:
        if kind == "video":
            pixel = frame.to_ndarray(format="rgb24")[4, 4]
            self.video.append((arrival, frame.pts, tuple(int(v) for v in pixel)))
        else:
            self.audio.append((arrival, frame.pts, to_mono(frame)))


def measured_delay(sent: np.ndarray, sent_at: float, received: np.ndarray, received_at: float) -> tuple[float, float]:
    """Seconds by which ``received`` lags ``sent`` (wall clock), and the normalised correlation peak."""
    size = 1 << int(np.ceil(np.log2(len(sent) + len(received))))
    correlation = np.fft.irfft(np.fft.rfft(received, size) * np.conj(np.fft.rfft(sent, size)), size)
    lag = int(np.argmax(correlation[: len(received)]))
    overlap = received[lag : lag + len(sent)]
    peak = float(correlation[lag] / (np.linalg.norm(sent[: len(overlap)]) * np.linalg.norm(overlap) + 1e-9))
    return received_at - sent_at + lag / 48_000, peak


@pytest.mark.slow
async def test_whip_in_whep_out_25fps_speech_delayed_by_the_budget_and_a_swap(tmp_path, loopback):
    server = await start_server(str(tmp_path / "sources"), size="256x256")
    capture = Capture()
    speech = speech_48k(SPEECH_SECONDS)
    try:
        async with ControlClient(control_url(server)) as control, aiohttp.ClientSession() as http:
            created = await control.request("create", source="red", delay=DELAY)
            assert created["delay"] == DELAY and created["generator"] == "passthrough"
            viewer = Viewer(http, capture)
            whep_posted = time.monotonic()
            await viewer.watch(created["whep"])
            track = SpeechTrack(speech)
            publisher = Publisher(http)
            await publisher.publish(created["whip"], track)
            await asyncio.sleep(4.0)  # chunk 0 (3.24 s of speech) is under way: the swap lands on chunk 1
            swap = await control.request("swap_reference", session=created["session"], source="blue", mode="cut")
            events = []
            while time.monotonic() < track.started_at + SPEECH_SECONDS + DELAY + 0.5:
                try:
                    events.append(await control.next_event(timeout=0.5))
                except asyncio.TimeoutError:
                    pass
            stats = (await control.request("stats", session=created["session"]))["stats"]
            await publisher.close()
            await asyncio.wait_for(viewer.ended.wait(), 5)  # DELETE ended the session: the tracks end
            await viewer.close(delete=False)
        health = await _get_json(server.url + "healthz")
    finally:
        await server.stop()

    # 25 fps: frames in a steady 4 s window, timestamps 3600 apart.
    arrivals = np.array([a for a, _, _ in capture.video])
    start = track.started_at + 1.0
    in_window = np.sum((arrivals >= start) & (arrivals < start + 4.0))
    assert 96 <= in_window <= 104, in_window
    steps = np.diff([pts for _, pts, _ in capture.video])
    assert np.median(steps) == 3600 and np.mean(steps == 3600) > 0.95
    assert capture.video[0][0] - whep_posted < 1.5  # the first frame (pre-roll) comes at once

    # The output speech is the input speech, DELAY later.
    received_at, received = place_audio(capture.audio)
    delay, peak = measured_delay(speech, track.started_at, received, received_at)
    assert peak > 0.8, peak
    assert abs(delay - DELAY) < 0.2, delay
    print(f"measured output speech delay {delay:.3f} s (budget {DELAY} s), correlation {peak:.2f}")

    # The swap: red until the chunk it took effect at, blue after; never back.
    colours = ["blue" if c[2] > c[0] else "red" for _, _, c in capture.video]
    switch = colours.index("blue")
    assert "red" in colours[:switch] and set(colours[switch:]) == {"blue"}
    assert swap["chunk"] >= 1 and swap["at"] > DELAY

    chunks = [e for e in events if e["event"] == "chunk"]
    assert chunks and all(e["status"] == "on_time" for e in chunks)
    assert stats["chunks"]["late"] == 0 and stats["viewers"] == 1 and 24 <= stats["fps_out"] <= 26
    assert health["sessions"] == 0


async def _get_json(url: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return await response.json()


class ColourTrack(VideoStreamTrack):
    """A camera showing one colour, at aiortc's default pace (30 fps)."""

    def __init__(self, colour) -> None:
        super().__init__()
        self.image = np.zeros((144, 176, 3), np.uint8)
        self.image[:] = colour

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


@pytest.mark.slow
async def test_whip_with_video_makes_the_live_video_the_source(tmp_path, loopback):
    server = await start_server(str(tmp_path / "sources"), size="128x128")
    capture = Capture()
    try:
        async with aiohttp.ClientSession() as http:
            publisher = Publisher(http)
            resource = await publisher.publish(server.url + f"whip?delay={DELAY}", SpeechTrack(speech_48k(5.0)),
                                               ColourTrack((20, 200, 20)))
            session_id = resource.rsplit("/", 1)[1]
            session = server.manager.get(session_id)
            assert session.source_name == "live" and session.live is not None
            viewer = Viewer(http, capture)
            await viewer.watch(server.url + f"whep/{session_id}")
            await asyncio.sleep(DELAY + 2.0)
            stats = session.stats()
            await publisher.close()
            await viewer.close(delete=False)
    finally:
        await server.stop()
    assert stats.ingest.video_frames > 100 and stats.chunks.generated >= 1
    colours = [c for _, _, c in capture.video]
    assert colours[0][1] < 50  # before the first chunk: the placeholder (black)
    green = [c for c in colours if c[1] > 150 and c[0] < 80]
    assert len(green) > 25 and colours[-1][1] > 150  # then the live camera's frames


async def test_viewers_share_one_encode_per_codec_and_get_the_codec_they_ask_for(tmp_path, loopback):
    server = await start_server(str(tmp_path / "sources"), size="128x128")
    captures = [Capture() for _ in range(4)]
    codecs = ["video/VP8", "video/VP8", "video/H264", "video/H264"]
    try:
        async with ControlClient(control_url(server)) as control, aiohttp.ClientSession() as http:
            created = await control.request("create", source="red", delay=DELAY)
            viewers = [Viewer(http, capture) for capture in captures]
            for viewer, codec in zip(viewers, codecs):
                await viewer.watch(created["whep"], codec=codec)
            publisher = Publisher(http)
            await publisher.publish(created["whip"], SpeechTrack(speech_48k(3.0)))
            await asyncio.sleep(3.0)
            egress = server.manager._entry(created["session"]).egress
            encoded = {mime: encoder.encoded for mime, encoder in egress.video.items()}
            sent = [server.manager.get(created["session"]).viewers[v].frames
                    for v in server.manager._entry(created["session"]).viewers]
            negotiated = [v.pc.getTransceivers()[0].receiver._RTCRtpReceiver__codecs for v in viewers]
            await publisher.close()
            for viewer in viewers:
                await viewer.close(delete=False)
    finally:
        await server.stop()
    # One encoder per codec, each frame encoded once for both of its viewers.
    assert set(encoded) == {"video/VP8", "video/H264"}
    assert all(count >= 60 for count in encoded.values()) and max(sent) <= max(encoded.values()) + 2
    for capture, codec, codecs_in_use in zip(captures, codecs, negotiated):
        assert codecs_in_use and all(c.mimeType.lower() in (codec.lower(), "video/rtx") for c in codecs_in_use.values())
        arrivals = np.array([a for a, _, _ in capture.video])
        assert len(arrivals) >= 60  # decoded frames, at 25 fps
        steps = np.diff([pts for _, pts, _ in capture.video])
        assert np.median(steps) == 3600
        assert all(c[0] > 150 and c[2] < 80 for _, _, c in capture.video[-10:])  # the red source
