"""Source decoding: 25 fps by timestamp, buckets, resize and crop, hold / loop, stills."""

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from streaming.errors import InputError
from streaming.source import BUCKETS, VideoSource, bucket_size, parse_size, resize_and_centercrop


def numbered_video(path, count, rate: Fraction, size=(48, 64)):
    """An H.264 mp4 whose frame i is a flat colour coding i (8 levels per step), timestamps i/rate."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = size[1], size[0]
        stream.pix_fmt = "yuv444p"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        stream.codec_context.time_base = Fraction(1, rate.numerator)
        for i in range(count):
            colour = np.array([8 * (i % 32), 8 * (i // 32), 0], np.uint8)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.broadcast_to(colour, (*size, 3))),
                                               format="rgb24")
            frame.pts = i * rate.denominator
            frame.time_base = Fraction(1, rate.numerator)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return str(path)


def shown_index(frame: np.ndarray) -> int:
    red, green = (int(round(frame[..., c].mean() / 8)) for c in (0, 1))
    return red + 32 * green


def test_2997_source_is_resampled_by_timestamp(tmp_path):
    rate = Fraction(30000, 1001)
    path = numbered_video(tmp_path / "ntsc.mp4", 120, rate)
    source = VideoSource(path, size=(48, 64))
    shown = [shown_index(source.frame(n)) for n in range(100)]
    # Output frame n shows the last source frame with pts <= n/25 s.
    expected = [int(Fraction(n, 25) * rate) for n in range(100)]
    assert shown == expected
    assert shown[25] == 29 and shown[50] == 59  # one second in: ~30 source frames, not 25
    source.frame(200)  # reading past the end fixes the length
    assert source.length == 100  # 120 frames at 29.97 fps = 4.004 s -> 100 frames at 25 fps


def test_25fps_source_is_identity(tmp_path):
    path = numbered_video(tmp_path / "pal.mp4", 30, Fraction(25))
    source = VideoSource(path, size=(48, 64))
    assert [shown_index(source.frame(n)) for n in range(30)] == list(range(30))


def test_hold_and_loop(tmp_path):
    path = numbered_video(tmp_path / "short.mp4", 10, Fraction(25))
    held = VideoSource(path, size=(48, 64), end="hold")
    assert [shown_index(held.frame(n)) for n in range(8, 14)] == [8, 9, 9, 9, 9, 9]
    looped = VideoSource(path, size=(48, 64), end="loop")
    assert [shown_index(looped.frame(n)) for n in range(8, 24)] == [8, 9] + list(range(10)) + [0, 1, 2, 3]


def test_release_keeps_memory_bounded_and_keyframes(tmp_path):
    path = numbered_video(tmp_path / "long.mp4", 400, Fraction(25))
    source = VideoSource(path, size=(48, 64), keyframe_interval=100)
    for start in range(0, 300, 72):
        source.frames(start, 81)
        source.release_before(start + 72)
        assert len(source._buffer) <= 81
    # A keyframe behind the released window is still available (nearest keyframe of a later chunk).
    assert shown_index(source.frame(200)) == 200
    with pytest.raises(IndexError):
        source.frame(150)


def test_still_image(portrait_png):
    source = VideoSource(portrait_png)
    assert source.is_still and source.size == (640, 640)
    assert source.frame(0) is source.frame(12345)


def test_buckets_and_sizes():
    assert bucket_size(1080, 1920, BUCKETS[480]) == (448, 896)
    assert bucket_size(1080, 1920, BUCKETS[720]) == (704, 1280)
    assert bucket_size(512, 512, BUCKETS[480]) == (640, 640)
    assert bucket_size(1920, 1080, BUCKETS[480]) == (832, 448)
    assert parse_size("480") == 480 and parse_size("512x256") == (256, 512)
    for bad in ["99999x5", "501x500", "0x0", "abc", "48x48", "4096x4096", "-16x64"]:
        with pytest.raises(InputError, match="accepted"):
            parse_size(bad)


def test_resize_and_centercrop_rule():
    image = np.arange(100 * 90 * 3, dtype=np.uint32).reshape(100, 90, 3).astype(np.uint8)
    out = resize_and_centercrop(image, (64, 64))
    # scale = max(64/100, 64/90) -> 90 px wide becomes 64, 100 px tall becomes ceil(71.1) = 72; crop 4 rows top.
    resized = np.asarray(Image.fromarray(image).resize((64, 72), Image.BILINEAR))
    assert np.array_equal(out, resized[4:68])


def test_bad_sources(tmp_path):
    with pytest.raises(InputError, match="not found"):
        VideoSource(tmp_path / "missing.mp4")
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    with pytest.raises(InputError, match="not a video or image"):
        VideoSource(text)
    with pytest.raises(InputError, match="folder"):
        VideoSource(tmp_path)
