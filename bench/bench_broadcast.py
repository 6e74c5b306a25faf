"""Cost of one 1080p ``lite`` output at the source's size (``--size source``), per session.

Source: a real face (scikit-image's astronaut portrait, public domain) upscaled to 900x900 and drifting
slowly across a 1920x1080 frame, 8 s at 25 fps, H.264 (written to a temporary folder). Speech: real read
speech (codec2-examples' Harvard sentences). Prints, per output frame and as a share of one core at 25 fps
(CPU time of this process, so a busy machine inflates wall time but not these):
- generation: lite's ``generate()`` on the face region (its own pixels, no resampling);
- region: reading the source and cutting the region out (the decode every session pays anyway, plus the crop);
- composite: the second, in-order decode of the source that composing reads, and putting the region back
  (``paste``: copy, feathered seam);
- encode: RGB to I420 and one WebRTC encode (x264 veryfast zerolatency at level 4.0, 4.1 Mbps; libvpx realtime);
then the memory a live session holds at 1080p (a LiveSession on a virtual clock, delay 5.5 s, default
81-frame chunks): the process's resident memory growth over the session, and the bytes its frame stores hold.

Run:  PYTHONPATH=$PWD .venv/bin/python bench/bench_broadcast.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import os
import sys
import tempfile
import time

import av
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from media import astronaut, real_speech  # noqa: E402
from model.base import FPS  # noqa: E402
from model.lite import build  # noqa: E402
from server.egress import _video_codec, yuv420_frame  # noqa: E402
from streaming.chunker import ChunkPlan  # noqa: E402
from streaming.composite import paste  # noqa: E402
from streaming.engine import AudioTrack, ChunkEngine  # noqa: E402
from streaming.region import region_finder  # noqa: E402
from streaming.regionsource import RegionSource  # noqa: E402
from streaming.source import SOURCE_SIZE, VideoSource  # noqa: E402

SIZE = (1080, 1920)


def make_clip(path: str, seconds: float) -> str:
    face = astronaut(900)
    background = np.empty((*SIZE, 3), np.uint8)
    background[..., 0] = np.linspace(30, 90, SIZE[1], dtype=np.uint8)[None]
    background[..., 1] = np.linspace(40, 70, SIZE[0], dtype=np.uint8)[:, None]
    background[..., 2] = 110
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.height, stream.width = SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "18"}
        for i in range(int(seconds * FPS)):
            image = background.copy()
            x = 500 + int(40 * np.sin(i / 40))
            image[90:990, x : x + 900] = face
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


class Meter:
    """CPU seconds of named stages."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def time(self, name: str, fn, *args):
        started = time.process_time()
        out = fn(*args)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.process_time() - started
        return out


def costs(path: str, frames: int) -> None:
    speech = real_speech()
    source = VideoSource(path, SOURCE_SIZE)
    finder, _ = region_finder(SOURCE_SIZE, "lite", {}, source.size)
    plan = ChunkPlan()
    region = RegionSource(source, finder, plan)
    generator = build()
    engine = ChunkEngine(region, generator, plan)
    reader = region.reader
    h264, vp8 = _video_codec("video/H264", SIZE), _video_codec("video/VP8", SIZE)
    meter = Meter()
    track = AudioTrack(speech)
    written = 0
    framing = None
    try:
        for chunk in plan.chunks(frames):
            request = meter.time("region", engine.request, chunk.index, track, frames)
            result = meter.time("generation", generator.generate, request)
            new = engine.accept(request, result)[: len(plan.output_range(chunk.index, frames))]
            framing = engine.framing(chunk.index)
            for k, image in enumerate(new):
                n = chunk.new_start + k
                native = meter.time("second decode", reader.frame, n)
                out = meter.time("paste", paste, native, image, framing)
                frame = meter.time("to I420", yuv420_frame, out)
                frame.pts, frame.time_base = n * 3600, fractions.Fraction(1, 90_000)
                meter.time("x264", h264.encode, frame)
                meter.time("libvpx", vp8.encode, frame)
                written += 1
            engine.release(chunk.index + 1)
    finally:
        generator.close()
        finder.close()
    box = framing.box
    print(f"1080p lite, {written} frames, face region {box.width}x{box.height} (worked at {framing.work[1]}x"
          f"{framing.work[0]}), CPU ms per frame and share of one core at {FPS} fps:")
    rows = [("generation (lite on the region)", ["generation"]),
            ("region: decode + crop (every session decodes)", ["region"]),
            ("composite: second decode", ["second decode"]), ("composite: paste (feathered)", ["paste"]),
            ("encode: RGB -> I420", ["to I420"]), ("encode: x264 veryfast 1080p", ["x264"]),
            ("encode: libvpx realtime 1080p", ["libvpx"])]
    for label, names in rows:
        ms = sum(meter.seconds[n] for n in names) / written * 1000
        print(f"  {label:48s} {ms:7.2f} ms  {ms * FPS / 1000:6.1%}")
    total = sum(v for k, v in meter.seconds.items() if k != "libvpx") / written * 1000
    print(f"  {'total with one H.264 encode':48s} {total:7.2f} ms  {total * FPS / 1000:6.1%}")


def rss_bytes() -> int:
    """Resident memory after handing the heap's free pages back (what is live, not what was)."""
    from streaming.heap import release_free_heap

    release_free_heap()
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def live_memory(path: str, seconds: float) -> None:
    from _server_support import audio_frame, speech_48k
    from streaming.clock import InlineExecutor, VirtualClock
    from streaming.ingest import PLAYOUT_RATE
    from streaming.regionsource import ComposedFrames
    from streaming.session import LiveSession, SessionSettings
    from streaming.pool import GeneratorPool
    from streaming.workers import GeneratorSpec

    clock = VirtualClock()
    pool = GeneratorPool(GeneratorSpec.from_registry("lite", {}), mode="thread", clock=clock.now,
                         executor=InlineExecutor())
    await pool.start()
    baseline = rss_bytes()
    peak, held_peak = baseline, 0
    session = LiveSession("bench", VideoSource(path, SOURCE_SIZE, "loop"), "bench", pool,
                          SessionSettings(region="face"), lambda event: None, clock=clock,
                          executor=InlineExecutor())
    await session.start()
    speech = speech_48k(seconds)
    n = 0
    for k in range(len(speech) // 960):
        session.receive_audio(audio_frame(speech[k * 960 : (k + 1) * 960], k * 960))
        await clock.advance(960 / PLAYOUT_RATE)
        while session.clock.frame_due(n) <= clock.now():
            session.playout.frame(n)
            n += 1
        if k % 25 == 0:
            peak = max(peak, rss_bytes())
            held_peak = max(held_peak, held_bytes(session, ComposedFrames))
    await session.stop()
    await pool.close()
    print(f"live session at 1920x1080 (lite, face region, delay {session.clock.delay} s, {n} frames played):")
    print(f"  resident memory growth (peak - before the session): {(peak - baseline) / 2**20:7.1f} MiB "
          "(its frames, a face finder, two 1080p decoders)")
    print(f"  frames held by the session's stores (peak):        {held_peak / 2**20:7.1f} MiB")
    window = (session.clock.delay + ChunkPlan().window / FPS) * FPS * SIZE[0] * SIZE[1] * 3
    print(f"  for comparison, {session.clock.delay} s + one window of raw 1080p RGB frames: {window / 2**20:7.1f} MiB")


def held_bytes(session, composed_type) -> int:
    """Bytes of frames the session's stores hold: timeline slots, the region source's crops and keyframes,
    and the composing reader's look-back."""
    total = 0
    for slot in session.timeline._slots.values():
        frames = slot.frames._frames if isinstance(slot.frames, composed_type) else slot.frames
        total += 0 if frames is None else np.asarray(frames).nbytes
    region = session.loop.engine.source
    total += sum(a.nbytes for a in region._crops.values()) + sum(a.nbytes for a in region._keyframes.values())
    reader = getattr(region.reader, "_source", None)
    if reader is not None:
        total += sum(a.nbytes for a in reader._buffer) + sum(a.nbytes for a in reader._keyframes.values())
    native = region.native
    total += sum(a.nbytes for a in native._buffer) + sum(a.nbytes for a in native._keyframes.values())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = make_clip(os.path.join(folder, "speaker_1080p.mp4"), args.seconds)
        costs(path, int(args.seconds * FPS))
        asyncio.run(live_memory(path, max(args.seconds, 10.0)))


if __name__ == "__main__":
    main()
