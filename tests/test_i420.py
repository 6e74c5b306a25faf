"""Output frames kept as I420 (streaming/i420.py): half the bytes, and the encoders send the same bits.

The encoders (VP8 and H.264, as egress sets them up) are fed one clip's frames twice: as RGB, converted by
egress as before, and as a timeline's I420 slot; every packet must be byte-identical. The chunk engine's
context must own its frames: a view would keep a whole chunk's RGB frames alive beside their I420 copy.
"""

from __future__ import annotations

import fractions

import numpy as np
import pytest

from model.passthrough import PassthroughGenerator
from server.egress import _video_codec, yuv420_frame
from streaming.chunker import ChunkPlan
from streaming.engine import AudioTrack, ChunkEngine
from streaming.i420 import I420Frames, compact, i420_to_rgb, image_size
from streaming.sharedsource import SharedClip
from streaming.timeline import OutputTimeline

SIZE = (64, 96)  # height, width


def _frames(count: int, size=SIZE) -> np.ndarray:
    """A moving colour gradient with noise: every encoder decision (motion, chroma) has work to do."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[: size[0], : size[1]]
    frames = np.empty((count, *size, 3), np.uint8)
    for n in range(count):
        frames[n, ..., 0] = (x * 2 + n * 5) % 256
        frames[n, ..., 1] = (y * 3 + n * 2) % 256
        frames[n, ..., 2] = (x + y + n * 7) % 256
    return np.clip(frames + rng.integers(-12, 12, frames.shape), 0, 255).astype(np.uint8)


def _encode(mime: str, images) -> list[bytes]:
    codec = _video_codec(mime, SIZE)
    packets = []
    for n, image in enumerate(images):
        frame = yuv420_frame(np.ascontiguousarray(image))
        frame.pts, frame.time_base = n * 3600, fractions.Fraction(1, 90_000)
        packets += [bytes(p) for p in codec.encode(frame)]
    packets += [bytes(p) for p in codec.encode(None)]
    return packets


@pytest.mark.parametrize("mime", ["video/VP8", "video/H264"])
def test_an_i420_slot_encodes_to_the_same_packets_as_its_rgb_frames(mime):
    rgb = _frames(12)
    kept = compact(rgb)
    assert isinstance(kept, I420Frames) and len(kept) == len(rgb)
    assert [image_size(kept[k]) for k in range(len(kept))] == [SIZE] * len(rgb)
    assert sum(kept[k].nbytes for k in range(len(kept))) * 2 == rgb.nbytes  # half the bytes
    from_rgb, from_i420 = _encode(mime, rgb), _encode(mime, [kept[k] for k in range(len(kept))])
    assert from_rgb and from_rgb == from_i420


def test_i420_comes_back_within_a_few_levels_on_smooth_frames_and_odd_sizes_stay_rgb():
    smooth = np.broadcast_to(np.arange(0, 192, 2, dtype=np.uint8)[None, :, None], (*SIZE, 3)).copy()
    back = i420_to_rgb(compact(smooth[None])[0])
    assert np.abs(back.astype(int) - smooth).max() <= 3
    odd = _frames(2, (63, 96))
    assert compact(odd) is odd  # no I420 layout: the encoder converts these itself, as before


def test_the_engine_context_owns_its_frames_instead_of_viewing_the_chunk():
    plan = ChunkPlan(window=10, context=3)
    clip = SharedClip(list(_frames(30)), is_still=False, keyframe_interval=10)
    generator = PassthroughGenerator()
    engine = ChunkEngine(clip, generator, plan, keyframe_interval=10)
    audio = AudioTrack(np.zeros(16_000 * 2, np.float32))
    first = engine.request(0, audio)
    accepted = engine.accept(first, generator.generate(first))
    second = engine.request(1, audio)
    assert second.context_frames.base is None and not np.shares_memory(second.context_frames, accepted)
    assert np.array_equal(second.context_frames, accepted[-3:])
    # The same after a fallback (the request's source window: 10 frames, of which 3 are kept).
    engine.set_context(first.source_frames, None)
    third = engine.request(1, audio)
    assert third.context_frames.base is None and not np.shares_memory(third.context_frames, first.source_frames)


def test_an_i420_slot_lets_go_of_played_frames_one_at_a_time():
    plan = ChunkPlan(window=10, context=3)
    frames = _frames(10)
    timeline = OutputTimeline(plan, np.zeros((*SIZE, 3), np.uint8))
    timeline.offer(0, compact(frames), "generated")
    shown, kind = timeline.frame(3)
    assert kind == "generated" and np.array_equal(shown, compact(frames[3:4])[0])
    timeline.release_before(4)  # frames 0-3 are behind every viewer; the slot (0-9) stays
    assert timeline.slot(0) is not None and timeline.slot(0).frames[3] is None
    assert timeline.frame(4)[1] == "generated" and np.array_equal(timeline.frame(4)[0], compact(frames[4:5])[0])
    image, kind = timeline.frame(2)  # a released frame: the last one shown, as where no slot is
    assert kind == "idle" and np.array_equal(image, compact(frames[4:5])[0])
    timeline.release_before(10)
    assert timeline.slot(0) is None
    rgb = OutputTimeline(plan, np.zeros((*SIZE, 3), np.uint8))  # an RGB slot goes whole, as before
    rgb.offer(0, frames, "generated")
    rgb.release_before(4)
    assert rgb.frame(2)[1] == "generated"
