"""Source-size output: the size setting, the region around the speaker (real faces, mediapipe's landmarks)
and how it holds still, the composite's exact outside and feathered seam, and ``livedub dub --size source``
end to end."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.io import wavfile

from media import astronaut, real_speech
from server.cli import main
from streaming.composite import crop, paste
from streaming.errors import InputError
from streaming.region import Box, Framing, RegionFinder, region_finder, region_option, whole_frame
from streaming.source import OutputSize, parse_size

FRAME = (540, 960)  # a quarter of 1080p: real faces, small arrays


def scene(x: int, y: int, size: int = 300, frame: tuple[int, int] = FRAME) -> np.ndarray:
    """A real face (the astronaut portrait, ``size`` pixels) at (x, y) on a textured background."""
    image = np.empty((*frame, 3), np.uint8)
    image[..., 0] = 90
    image[..., 1] = (np.arange(frame[1]) % 256)[None]
    image[..., 2] = (np.arange(frame[0]) % 256)[:, None]
    image[y : y + size, x : x + size] = astronaut(size)
    return image


@pytest.fixture(scope="module")
def finder_factory():
    made = []

    def make(kind="face", **options):
        finder = RegionFinder(kind, FRAME, **options)
        made.append(finder)
        return finder

    yield make
    for finder in made:
        finder.close()


# ---- the size setting ---------------------------------------------------------------------------------
def test_source_and_broadcast_sizes_are_accepted_and_larger_ones_refused():
    assert parse_size("source") == OutputSize()
    assert parse_size("1920x1080") == OutputSize(1080, 1920)
    assert parse_size("1918x1078") == OutputSize(1078, 1918)
    assert parse_size("3840x2160") == OutputSize(2160, 3840)
    assert parse_size("2160x3840") == OutputSize(3840, 2160)  # portrait 4K
    assert parse_size("512x512") == (512, 512) and parse_size("480") == 480  # the generator's own sizes, as today
    for bad in ("3856x2160", "3840x2176", "4096x4096", "1919x1080", "source2"):
        with pytest.raises(InputError) as caught:
            parse_size(bad)
        message = str(caught.value)
        assert "\n" not in message and "source" in message and "3840x2160" in message


def test_source_size_keeps_the_source_up_to_4k_with_even_sides():
    assert OutputSize().resolve(1078, 1918) == (1078, 1918)
    assert OutputSize().resolve(4320, 7680) == (2160, 3840)  # 8K scaled down to fit
    assert OutputSize().resolve(1077, 1917) == (1076, 1916)  # yuv420p: the odd row and column cropped
    assert OutputSize(1080, 1920).resolve(300, 200) == (1080, 1920)


def test_region_option_is_checked_and_needs_an_output_size():
    assert region_option("lite", {}) == ("face", {})
    assert region_option("infinitetalk", {"region": "full", "steps": "8"}) == ("full", {"steps": "8"})
    assert region_option("infinitetalk", {}) == ("upper_body", {})
    with pytest.raises(InputError, match="accepted are face, upper_body, full"):
        region_option("infinitetalk", {"region": "torso"})
    with pytest.raises(InputError, match="needs an output size"):
        region_finder(480, "lite", {"region": "face"}, FRAME)
    assert region_finder(480, "lite", {}, FRAME) == (None, {})


# ---- the region around the speaker --------------------------------------------------------------------
def test_region_holds_still_while_the_speaker_moves_a_little(finder_factory):
    finder = finder_factory("face")
    first = finder.choose([scene(400, 120)])
    box = first.box
    assert first.found and first.kind == "face"
    # The region is the face: inside the portrait, a fraction of it.
    assert 400 <= box.left and box.right <= 700 and 120 <= box.top and box.bottom <= 420
    assert 0.1 < box.width * box.height / 300**2 < 0.5
    # Small movements, as a speaker's head makes: the same region every time (no per-frame jitter).
    for step in range(1, 8):
        dx, dy = (step % 3) * 4 - 4, (step % 2) * 3
        assert finder.choose([scene(400 + dx, 120 + dy), scene(400 - dx, 120)]).box == box
    assert finder.moves == 0


def test_region_moves_once_when_the_face_leaves_it_then_holds_again(finder_factory):
    finder = finder_factory("face")
    before = finder.choose([scene(100, 100)]).box
    after = finder.choose([scene(560, 200)])
    assert after.box != before and finder.moves == 1 and after.box.left > before.right - 50
    for dx in (0, 5, -5, 3):
        assert finder.choose([scene(560 + dx, 200)]).box == after.box
    assert finder.moves == 1


def test_no_face_keeps_the_last_region_or_uses_the_whole_frame(finder_factory):
    blank = np.full((*FRAME, 3), 40, np.uint8)
    fresh = finder_factory("upper_body")
    whole = fresh.choose([blank])
    assert not whole.found and whole.face_width == 0 and whole == whole_frame(FRAME, "upper_body", False)
    finder = finder_factory("upper_body")
    chosen = finder.choose([scene(300, 100)])
    kept = finder.choose([blank, blank])
    assert not kept.found and kept.box == chosen.box and kept.work == chosen.work
    assert finder.choose([scene(300, 100)]) == chosen  # the face again: the same region, found


def test_regions_lie_inside_the_frame_at_the_generators_size(finder_factory):
    bucket = finder_factory("upper_body")
    framing = bucket.choose([scene(640, 230)])  # near the bottom right corner
    box = framing.box
    assert 0 <= box.top and box.bottom <= FRAME[0] and 0 <= box.left and box.right <= FRAME[1]
    assert framing.work == (704, 576)  # the 480 bucket of its fixed aspect
    native = finder_factory("face", any_size=True).choose([scene(640, 230)])
    assert native.work == (native.box.height, native.box.width)  # lite: the region's own pixels
    full = whole_frame((1080, 1920))
    assert full.work == (448, 896) and full.box == Box(60, 0, 960, 1920)


# ---- the composite ------------------------------------------------------------------------------------
@pytest.mark.parametrize("frame_size", [(1078, 1918), (90, 130)])
def test_outside_the_region_the_output_is_the_source_pixel_for_pixel(frame_size):
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (*frame_size, 3), dtype=np.uint8)
    height, width = frame_size
    box = Box(height // 3, width // 2 - 7, height // 3 + 1, width // 4 + 3)  # odd sizes, odd offsets
    framing = Framing(box, (64, 48), frame_size, "face")
    generated = np.full((64, 48, 3), 255, np.uint8) - crop(frame, framing)  # surely different everywhere
    out = paste(frame, generated, framing)
    outside = np.ones(frame_size, bool)
    outside[box.slices] = False
    assert np.array_equal(out[outside], frame[outside])
    assert out.shape == frame.shape and not np.array_equal(out[box.slices], frame[box.slices])


def test_the_seam_is_feathered_and_the_inside_is_the_generators():
    frame = np.zeros((200, 300, 3), np.uint8)
    box = Box(50, 100, 100, 120)
    framing = Framing(box, (100, 120), (200, 300), "face")
    out = paste(frame, np.full((100, 120, 3), 200, np.uint8), framing)
    row = out[100, 95:170, 0].astype(int)  # across the left border, into the region
    assert row[0] == 0 and row[5] == 0  # outside, and the border's outermost pixel: the source
    ramp = row[5:20]
    assert np.all(np.diff(ramp) >= 0) and 0 < ramp[3] < 200 and row[-1] == 200  # a ramp, then the generated
    assert len(set(ramp[:9].tolist())) >= 7  # gradual: no step
    # Unchanged generated pixels at the region's own size put back where they came from: the source again.
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    assert np.array_equal(paste(image, crop(image, framing), framing), image)


def test_a_region_on_the_frames_edge_is_not_feathered_there():
    frame = np.zeros((108, 192, 3), np.uint8)
    framing = whole_frame((108, 192))  # 16:9: the 448x896 bucket's centre crop, 96 rows of 108
    out = paste(frame, np.full((*framing.work, 3), 200, np.uint8), framing)
    box = framing.box
    assert (box.left, box.right, box.height) == (0, 192, 96)
    assert np.all(out[box.top + 10 : box.bottom - 10, 0] == 200)  # up to the frame's edge: no ramp there
    assert out[box.top, 96, 0] == 0 and out[box.top + 10, 96, 0] == 200  # a ramp at the inner border


# ---- livedub dub --size source ------------------------------------------------------------------------
def _clip(path: str, size: tuple[int, int], frames: int) -> str:
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = scene(300 + i, 150, 360, size)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def test_dub_at_the_source_size_end_to_end(tmp_path, capsys):
    source = _clip(str(tmp_path / "wide.mp4"), (542, 962), 20)  # not multiples of 16
    speech = str(tmp_path / "speech.wav")
    wavfile.write(speech, 16_000, real_speech()[:16_000])
    output = str(tmp_path / "out.mp4")
    assert main(["dub", source, speech, "-o", output, "--size", "source", "--quiet"]) == 0
    assert "962x542" in capsys.readouterr().out
    with av.open(output) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (962, 542)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 25
    with av.open(source) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    # Far from the speaker (the top left corner) the output is the source, to within H.264's loss.
    assert np.abs(frames[0][:100, :200].astype(int) - first[:100, :200]).mean() < 3


def test_the_region_source_holds_crops_not_source_frames_and_passthrough_gives_the_source_back(tmp_path):
    from model.passthrough import PassthroughGenerator
    from streaming.chunker import ChunkPlan
    from streaming.engine import AudioTrack, ChunkEngine
    from streaming.regionsource import RegionSource
    from streaming.source import VideoSource

    path = _clip(str(tmp_path / "wide.mp4"), (542, 962), 60)
    plan = ChunkPlan(window=9, context=3)
    source = VideoSource(path, OutputSize(), keyframe_interval=9)
    finder = RegionFinder("face", any_size=True)
    region = RegionSource(source, finder, plan, keyframe_interval=9)
    engine = ChunkEngine(region, PassthroughGenerator(), plan, keyframe_interval=9)
    again = VideoSource(path, OutputSize())
    audio = AudioTrack(real_speech()[:16_000 * 3])
    try:
        for chunk in plan.chunks(60):
            request = engine.request(chunk.index, audio, 60)
            assert request.size == engine.framing(chunk.index).work  # the generator sees the region
            frames = engine.accept(request, engine.generator.generate(request))
            out = engine.compose(chunk.index, chunk.new_start, frames)
            for k, image in enumerate(out):  # unchanged crops put back: the source exactly
                assert image.shape == (542, 962, 3) and np.array_equal(image, again.frame(chunk.new_start + k))
            engine.release(chunk.index + 1)
            again.release_before(chunk.new_start + len(out))
            # Held: no source-size frame but the decoder's current one and a few keyframes, and crops of
            # about two windows (this one and the next, read ahead), at the region's size.
            assert len(source._buffer) <= 1 and len(region._keyframes) <= 3
            assert len(region._crops) <= 2 * plan.window
            assert all(c.shape[:2] == engine.framing(chunk.index).work for c in region._crops.values())
            assert len(region.reader._source._buffer) <= region.reader.look_back + 1
    finally:
        finder.close()


def test_a_late_reader_seeks_to_the_frame_it_is_asked_for(tmp_path):
    from streaming.source import VideoSource

    path = str(tmp_path / "counting.mp4")
    with av.open(path, "w") as container:  # frame i: grey level 6i, every frame different
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width, stream.pix_fmt = 64, 96, "yuv420p"
        stream.options = {"g": "10"}  # a keyframe every 10 frames: seeking lands before the frame asked for
        for i in range(40):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((64, 96, 3), 6 * i, np.uint8),
                                                                   format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    whole = VideoSource(path, OutputSize(), "loop")
    frames = [whole.frame(i) for i in range(50)]  # past the end: the clip again
    assert whole.length == 40 and np.array_equal(frames[45], frames[5])
    assert len({int(f.mean()) for f in frames[:40]}) == 40
    for start in (17, 33):
        late = VideoSource(path, OutputSize(), "loop", start=start)
        assert all(np.array_equal(late.frame(i), frames[i]) for i in range(start, start + 5))
    looped = VideoSource(path, OutputSize(), "loop", start=43, length=40)
    assert np.array_equal(looped.frame(43), frames[3]) and np.array_equal(looped.frame(47), frames[7])
    reader = whole.reader()
    assert np.array_equal(reader.frame(2), frames[2])
    assert np.array_equal(reader.frame(38), frames[38])  # near: decoded on
    decoder = reader._source
    assert np.array_equal(reader.frame(100), frames[20])  # far ahead (two passes on): a new decoder, sought
    assert reader._source is not decoder and reader._source.first_held >= 98


def test_an_odd_sized_source_is_cropped_to_even_sides_not_resampled(tmp_path):
    from PIL import Image

    from streaming.source import VideoSource

    image = np.random.default_rng(3).integers(0, 256, (143, 175, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "odd.png")
    source = VideoSource(str(tmp_path / "odd.png"), OutputSize())
    assert source.size == (142, 174) and np.array_equal(source.frame(0), image[:142, :174])


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 5000))
def test_any_width_and_height_is_taken_as_a_valid_size_or_refused_in_one_line(width, height):
    try:
        size = parse_size(f"{width}x{height}")
    except InputError as exc:
        assert "\n" not in str(exc) and "accepted" in str(exc)
        return
    if isinstance(size, tuple):  # the generator's own size
        assert size == (height, width) and all(s % 16 == 0 and 64 <= s <= 2048 for s in size)
    else:
        assert (size.height, size.width) == (height, width) and height % 2 == 0 == width % 2
        assert max(size.height, size.width) <= 3840 and min(size.height, size.width) <= 2160


@settings(max_examples=60, deadline=None)
@given(st.integers(8, 120), st.integers(8, 160), st.data())
def test_any_region_leaves_every_pixel_outside_it_alone(height, width, data):
    top = data.draw(st.integers(0, height - 4))
    left = data.draw(st.integers(0, width - 4))
    box = Box(top, left, data.draw(st.integers(4, height - top)), data.draw(st.integers(4, width - left)))
    work = (data.draw(st.integers(4, 64)), data.draw(st.integers(4, 64)))
    rng = np.random.default_rng(height * width)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    generated = rng.integers(0, 256, (*work, 3), dtype=np.uint8)
    out = paste(frame, generated, Framing(box, work, (height, width), "face"))
    outside = np.ones((height, width), bool)
    outside[box.slices] = False
    assert out.shape == frame.shape and np.array_equal(out[outside], frame[outside])
