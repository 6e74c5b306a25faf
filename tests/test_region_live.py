"""A live session at the source's size: the lite generator works on the speaker's face region, playout
composes its frames into source-size frames (read a second time from the file), and outside the region
every played frame is the source pixel for pixel. Virtual clock, blocking work inline, short chunks."""

from __future__ import annotations

import av
import numpy as np
import pytest

from _server_support import audio_frame, speech_48k
from media import astronaut
from server.config import build_config
from streaming.chunker import ChunkPlan
from streaming.clock import InlineExecutor, VirtualClock
from streaming.errors import InputError
from streaming.ingest import PLAYOUT_RATE
from streaming.livesource import LiveVideoSource
from streaming.session import LiveSession, SessionSettings
from streaming.sharedsource import SourceCache
from streaming.source import OutputSize, VideoSource
from streaming.pool import GeneratorPool
from streaming.workers import GeneratorSpec
from streaming.i420 import i420_to_rgb

PLAN = ChunkPlan(window=9, context=3)
SIZE = (286, 510)  # (height, width): not multiples of 16
FACE = astronaut(200)


def _clip(path: str, frames: int = 30) -> str:
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = SIZE
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = _scene(i)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _scene(i: int) -> np.ndarray:
    """Frame ``i``: a real face (the astronaut) on a textured background, drifting slowly to the right."""
    image = np.empty((*SIZE, 3), np.uint8)
    image[..., 0] = 80
    image[..., 1] = (np.arange(SIZE[1]) * 3 % 256)[None]
    image[..., 2] = (np.arange(SIZE[0]) * 5 % 256)[:, None]
    image[40:240, 150 + i : 350 + i] = FACE
    return image


async def _lite_pool(clock) -> GeneratorPool:
    pool = GeneratorPool(GeneratorSpec.from_registry("lite", {}), mode="thread", clock=clock.now,
                         executor=InlineExecutor())
    await pool.start()
    return pool


async def _play(session: LiveSession, clock: VirtualClock, seconds: float, video=None, at=None) -> list:
    """Feed ``seconds`` of real speech (and ``video(i)``'s frames, 25 a second) at virtual instants, end
    the ingest and play every frame when due: [(n, kind, image)]; ``at=(seconds, action)`` runs
    ``action()`` once, that far in."""
    played = []
    speech = speech_48k(seconds)

    def play_due():
        while session.state != "ended" and session.clock.frame_due(len(played)) <= clock.now():
            image, kind = session.timeline.frame(len(played))
            image = i420_to_rgb(image)  # the timeline keeps whole frames as I420
            played.append((len(played), kind, image))

    for k in range(len(speech) // 960):
        if video is not None and k % 2 == 0:
            session.receive_video(av.VideoFrame.from_ndarray(video(k // 2), format="rgb24"))
        session.receive_audio(audio_frame(speech[k * 960 : (k + 1) * 960], k * 960))
        await clock.advance(960 / PLAYOUT_RATE)
        play_due()
        if at is not None and k == int(at[0] * 50):
            at[1]()
    session.end_ingest()
    while session.state != "ended":
        await clock.advance(0.02)
        play_due()
    return played


def _check_composed(played: list, events: list, source_frame) -> None:
    """Generated frames at the source size, the face animated, and outside the face the source exactly."""
    generated = [(n, image) for n, kind, image in played if kind == "generated"]
    assert len(generated) >= 30 and all(image.shape == (*SIZE, 3) for _, kind, image in played if kind != "idle")
    chunks = [e for e in events if type(e).__name__ == "ChunkDone"]
    assert chunks and all(c.status == "on_time" for c in chunks)
    assert all(c.info.get("face_found") for c in chunks)  # lite found the face in every region it was given
    assert all(c.info["region"] == "face" and c.info["region_used"] == "region" for c in chunks)
    changed = 0
    for n, image in generated:
        differs = np.any(image != source_frame(n), axis=2)
        rows, cols = np.nonzero(differs)
        if rows.size:
            changed += 1
            # Every changed pixel is around the face (the portrait spans rows 40-240 and drifts right).
            assert rows.min() >= 40 and rows.max() < 240 and cols.min() >= 150 and cols.max() < 350 + 40
            assert differs.sum() < 0.25 * differs.size
    assert changed >= len(generated) // 3  # the mouth moved in many frames


async def test_a_live_session_at_the_source_size_composes_around_the_face(tmp_path):
    path = _clip(str(tmp_path / "speaker.mp4"))
    clock = VirtualClock()
    pool = await _lite_pool(clock)
    source = SourceCache(max_bytes=0).open(path, OutputSize(), 72)  # a decoder of its own (not held whole)
    assert isinstance(source, VideoSource) and source.size == SIZE
    events: list = []
    try:
        session = LiveSession("s1", source, "speaker", pool, SessionSettings(delay=1.0, region="face"),
                              events.append, clock=clock, plan=PLAN, executor=InlineExecutor(), warm=True)
        await session.start()
        assert session.output_size == SIZE
        played = await _play(session, clock, 1.6)
        assert session.warm_up is not None  # warmed on the face region's crops
    finally:
        await pool.close()
    # The same frames decoded again: outside the face region the output is the source, pixel for pixel.
    reference = VideoSource(path, OutputSize(), "loop")
    _check_composed(played, events, reference.frame)


async def test_live_video_at_its_own_size_composes_around_the_face():
    clock = VirtualClock()
    pool = await _lite_pool(clock)
    events: list = []
    try:
        session = LiveSession("s1", LiveVideoSource(OutputSize()), "live", pool,
                              SessionSettings(delay=1.0, region="face"), events.append, clock=clock, plan=PLAN,
                              executor=InlineExecutor())
        await session.start()
        played = await _play(session, clock, 1.6, video=lambda i: _scene(i))
    finally:
        await pool.close()
    assert session.live.size == SIZE  # the first received frame said the size
    # Received frame i is shown as capture frame i (pushed every 40 ms from the session's start).
    _check_composed(played, events, lambda n: _scene(min(n, 39)))


async def test_a_reference_swap_at_the_source_size_shows_the_new_source_around_the_same_speaker(tmp_path):
    from PIL import Image

    first, second = _scene(0), _scene(0)
    second[..., 0] = 200  # another background: the red channel tells the sources apart outside the face
    second[40:240, 150:350] = FACE
    paths = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    for path, image in zip(paths, (first, second)):
        Image.fromarray(image).save(path)
    clock = VirtualClock()
    pool = await _lite_pool(clock)
    events: list = []
    swapped = {}
    try:
        session = LiveSession("s1", VideoSource(paths[0], OutputSize()), "a", pool,
                              SessionSettings(delay=1.0, region="face"), events.append, clock=clock, plan=PLAN,
                              executor=InlineExecutor())
        await session.start()
        swap = VideoSource(paths[1], OutputSize())
        action = lambda: swapped.update(session.swap_reference("b", swap, "cut"))  # noqa: E731
        played = await _play(session, clock, 2.0, at=(0.8, action))
    finally:
        await pool.close()
    start = PLAN.chunk(swapped["chunk"]).new_start
    shown = [(n, image) for n, kind, image in played if kind == "generated"]
    assert any(n < start for n, _ in shown) and any(n >= start for n, _ in shown)
    outside = np.ones(SIZE, bool)
    outside[40:240, 150:350] = False
    for n, image in shown:
        expected = first if n < start else second
        assert np.array_equal(image[outside], expected[outside])


def test_the_server_takes_source_size_and_a_region_option():
    config = build_config({"size": "source", "generator_option": [("region", "upper_body"), ("steps", "8")]})
    assert config.size == OutputSize() and config.region == "upper_body"
    assert dict(config.generator_options) == {"steps": "8"}  # the generator never sees region=
    assert build_config({"size": "1920x1080"}).size == OutputSize(1080, 1920)
    with pytest.raises(InputError, match="needs an output size"):
        build_config({"size": "480", "generator_option": [("region", "face")]})
    with pytest.raises(InputError, match="accepted are face, upper_body, full"):
        build_config({"size": "source", "generator_option": [("region", "hands")]})


@pytest.mark.parametrize("mime", ["video/H264", "video/VP8"])
def test_the_webrtc_encoders_take_source_size_frames(mime):
    from fractions import Fraction

    from server.egress import _video_codec, bitrate_for, encode_threads, h264_level, yuv420_frame

    assert (h264_level((720, 1280)), h264_level((1080, 1920)), h264_level((2160, 3840))) == ("31", "40", "51")
    assert encode_threads((1080, 1920)) == 1 and encode_threads((2160, 3840)) == 4
    size = (1078, 1918)  # a source's own odd-looking (even) size
    codec = _video_codec(mime, size)
    assert codec.bit_rate == bitrate_for(size) > 4_000_000
    packets = []
    for i in range(3):
        image = np.full((*size, 3), 60 + 40 * i, np.uint8)
        frame = yuv420_frame(image)
        frame.pts, frame.time_base = i * 3600, Fraction(1, 90_000)
        packets += codec.encode(frame)
    packets += codec.encode(None)
    decoder = av.CodecContext.create("libvpx" if mime == "video/VP8" else "h264", "r")
    frames = [f for p in packets for f in decoder.decode(p)]
    assert [(f.height, f.width) for f in frames] == [size] * 3
    levels = [float(f.to_ndarray(format="rgb24").mean()) for f in frames]
    assert all(abs(level - expected) < 2 for level, expected in zip(levels, (60, 100, 140)))
    if mime == "video/H264":  # the stream says level 4.0 (1080p at 25 fps); 3.1 does not take it
        sps = bytes(packets[0])
        assert sps[sps.find(b"\x00\x00\x01\x67") + 6] == 40


async def test_a_server_at_the_source_size_creates_sessions_at_the_source_size(tmp_path):
    import aiohttp

    from _server_support import control_url, start_server
    from client.control import ControlClient

    server = await start_server(str(tmp_path / "sources"), size="source")  # its library: 128x128 stills
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url.rstrip("/") + "/config") as reply:
                assert (await reply.json())["size"] == "source"
        async with ControlClient(control_url(server)) as control:
            created = await control.request("create", source="red")
            session = server.manager.get(created["session"])
            assert session.output_size == (128, 128) and session.settings.region == "upper_body"
            assert session.playout.frame(0).shape == (128, 128, 3)  # before any chunk: the source's first frame
    finally:
        await server.stop()
