"""Property-based fuzzing (hypothesis) of the media readers and ``livedub dub``: any file in, either a valid
result or one clear line with exit status 2; never a traceback, a crash or a signal.

Inputs: real containers made here (wav, flac, ogg/opus, mp3, m4a, mp4 with and without sound, png, jpg,
an mp4 with zero-length streams) truncated and garbled (bytes flipped, zeroed, inserted, duplicated),
wav files of 1 to 16 channels at odd sample rates and sample formats (zero samples included), and
non-media (random bytes, text). The readers run in-process; a few ``livedub dub`` cases run in a
subprocess, where a segfault shows as a signal instead of ending the test run.

About 330 generated cases per run (hypothesis ``max_examples`` below), bounded to well under a minute on
two idle cores; the same cases every run, or fresh ones with ``LIVEDUB_FUZZ_EXPLORE=N`` (tests/conftest.py).
A case found by exploring becomes a fixed regression test below.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from fractions import Fraction

import av
import numpy as np
import pytest
import scipy.io.wavfile
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from server.cli import main
from streaming.audio import load_audio
from streaming.errors import InputError
from streaming.source import VideoSource
from tests.conftest import ROOT, fuzz_cases

FUZZ = settings(deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


# ---- seed media, made once --------------------------------------------------------------------------------
def _audio_container(path: str, codec: str, rate: int, layout: str = "stereo", seconds: float = 0.6) -> str:
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout
        _encode_audio(container, stream, rate, layout, seconds)
    return path


def _encode_audio(container, stream, rate: int, layout: str, seconds: float) -> None:
    channels = av.AudioLayout(layout).nb_channels
    fmt = stream.codec_context.codec.audio_formats[0].name
    size = stream.codec_context.frame_size or 1024
    t = np.arange(int(seconds * rate)) / rate
    data = np.repeat((0.3 * np.sin(2 * np.pi * 220 * t))[None], channels, 0).astype(np.float32)
    resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
    for start in range(0, data.shape[1], size):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, start : start + size]), format="fltp",
                                           layout=layout)
        frame.sample_rate, frame.pts = rate, start
        for converted in resampler.resample(frame):
            container.mux(stream.encode(converted))
    container.mux(stream.encode(None))


def _video(path: str, with_audio: bool, frames: int = 12, size: int = 48) -> str:
    with av.open(path, "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=16000) if with_audio else None
        if audio is not None:
            audio.layout = "mono"
        for n in range(frames):
            image = np.zeros((size, size, 3), np.uint8)
            image[:, : (n * 4) % size] = (200, 80, 40)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = n, Fraction(1, 25)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            _encode_audio(container, audio, 16000, "mono", frames / 25)
    return path


def _empty_streams(path: str) -> str:
    """A container whose video and audio streams hold no samples at all (header only)."""
    with av.open(path, "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        container.add_stream("aac", rate=16000).layout = "mono"
        container.start_encoding()
    return path


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    folder = str(tmp_path_factory.mktemp("seeds"))
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    t = np.arange(9600) / 16000
    scipy.io.wavfile.write(path("a.wav"), 16000, (np.sin(2 * np.pi * 300 * t) * 12000).astype(np.int16))
    files = [path("a.wav"), _audio_container(path("a.flac"), "flac", 44100),
             _audio_container(path("a.ogg"), "libopus", 48000), _audio_container(path("a.mp3"), "libmp3lame", 22050),
             _audio_container(path("a.m4a"), "aac", 16000, "mono"), _video(path("talk.mp4"), True),
             _video(path("silent.mp4"), False), _empty_streams(path("empty.mp4")), _empty_streams(path("empty.mkv"))]
    image = np.zeros((40, 56, 3), np.uint8)
    image[10:30, 10:40] = (30, 160, 220)
    for name in ("a.png", "a.jpg"):
        Image.fromarray(image).save(path(name))
        files.append(path(name))
    out = {}
    for file in files:
        with open(file, "rb") as handle:
            out[os.path.basename(file)] = handle.read()
    return out


# ---- strategies -------------------------------------------------------------------------------------------
AUDIO_SEEDS = ("a.wav", "a.flac", "a.ogg", "a.mp3", "a.m4a", "talk.mp4")
PICTURE_SEEDS = ("talk.mp4", "silent.mp4", "a.png", "a.jpg")


@st.composite
def garbled(draw, seeds: dict[str, bytes], names: tuple[str, ...] | None = None) -> tuple[str, bytes]:
    """A seed truncated and/or with bytes flipped, zeroed, inserted or duplicated (mostly past its first
    tenth, where the container header usually ends: a broken header alone is the least interesting case)."""
    name = draw(st.sampled_from(sorted(names or seeds)))
    data = bytearray(seeds[name])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "zero", "insert", "duplicate"]))
        header = draw(st.integers(0, 9)) == 0
        low = 0 if header else len(data) // 10
        at = draw(st.integers(low, max(len(data) - 1, low)))
        if op == "truncate":
            del data[at:]
        elif op == "flip":
            for offset in range(draw(st.integers(1, 16))):
                if at + offset < len(data):
                    data[at + offset] ^= draw(st.integers(1, 255))
        elif op == "zero":
            span = draw(st.integers(1, 512))
            data[at : at + span] = bytes(len(data[at : at + span]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            span = draw(st.integers(1, 256))
            data[at:at] = data[at : at + span]
    return os.path.splitext(name)[1], bytes(data)


@st.composite
def odd_wav(draw) -> tuple[str, bytes]:
    """A valid wav with 1..16 channels, an odd sample rate and sample format, possibly zero samples."""
    channels = draw(st.integers(1, 16))
    rate = draw(st.sampled_from([1000, 4000, 7350, 8000, 11025, 16000, 22050, 44100, 48000, 96000, 192000]))
    samples = draw(st.one_of(st.just(0), st.integers(1, 64), st.integers(rate // 8, min(rate, 24000))))  # <= 1 s
    dtype = draw(st.sampled_from(["int16", "int32", "float32", "uint8", "float64"]))
    t = np.arange(samples) / rate
    wave = 0.4 * np.sin(2 * np.pi * 180 * t)[:, None] * np.linspace(1.0, 0.2, channels)[None]
    if dtype == "uint8":
        data = (wave * 127 + 128).astype(np.uint8)
    elif dtype.startswith("int"):
        data = (wave * np.iinfo(dtype).max).astype(dtype)
    else:
        data = wave.astype(dtype)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "a.wav")
        scipy.io.wavfile.write(path, rate, data if channels > 1 else data[:, 0])
        with open(path, "rb") as handle:
            return ".wav", handle.read()


def non_media() -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(
        st.tuples(st.sampled_from([".wav", ".mp4", ".png", ".bin", ""]), st.binary(max_size=4096)),
        st.tuples(st.sampled_from([".txt", ".md", ".wav"]),
                  st.text(min_size=0, max_size=3000).map(lambda text: text.encode("utf-8", "replace"))),
    )


def seed(seeds, names: tuple[str, ...]) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.sampled_from(names).map(lambda name: (os.path.splitext(name)[1], seeds[name]))


def speech_file(seeds) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(seed(seeds, AUDIO_SEEDS), garbled(seeds, AUDIO_SEEDS), odd_wav(), non_media(),
                     seed(seeds, ("a.png", "silent.mp4", "empty.mp4", "empty.mkv")))


def source_file(seeds) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(seed(seeds, PICTURE_SEEDS), garbled(seeds, PICTURE_SEEDS), non_media(),
                     seed(seeds, ("a.wav", "a.m4a", "empty.mp4", "empty.mkv")))


def _write(folder: str, name: str, file: tuple[str, bytes]) -> str:
    path = os.path.join(folder, name + file[0])
    with open(path, "wb") as handle:
        handle.write(file[1])
    return path


def _one_line_error(exc: InputError, record: bool = True) -> None:
    message = str(exc)
    assert message and "\n" not in message and "Traceback" not in message, message
    if record:  # hypothesis' statistics (only inside a @given test)
        event(f"refused: {_kind(message)}")


def _kind(message: str) -> str:
    """The message without its file names and numbers (for hypothesis' statistics)."""
    return " ".join(word for word in message.split()[:6] if "/" not in word and not word[:1].isdigit())


# ---- the readers ------------------------------------------------------------------------------------------
def test_audio_reader_gives_mono_speech_or_one_line(seeds, tmp_path):
    @settings(FUZZ, max_examples=fuzz_cases(130))
    @given(file=st.one_of(garbled(seeds, AUDIO_SEEDS), garbled(seeds), odd_wav(), non_media()))
    def check(file):
        path = _write(str(tmp_path), "speech", file)
        try:
            samples = load_audio(path)
        except InputError as exc:
            _one_line_error(exc)
            return
        assert samples.dtype == np.float32 and samples.ndim == 1 and samples.size > 0
        assert np.isfinite(samples).all()
        event("decoded")

    check()


def test_source_reader_gives_frames_or_one_line(seeds, tmp_path):
    @settings(FUZZ, max_examples=fuzz_cases(100))
    @given(file=st.one_of(garbled(seeds, PICTURE_SEEDS), garbled(seeds), non_media(), odd_wav()),
           end=st.sampled_from(["hold", "loop"]))
    def check(file, end):
        path = _write(str(tmp_path), "source", file)
        try:
            source = VideoSource(path, (32, 48), end, keyframe_interval=4)
            frames = [source.frame(n) for n in range(0, 30, 3)]  # past the end of the short seeds: held/looped
        except InputError as exc:
            _one_line_error(exc)
            return
        for frame in frames:
            assert frame.shape == (32, 48, 3) and frame.dtype == np.uint8
        event("decoded")

    check()


# ---- livedub dub ------------------------------------------------------------------------------------------
def _check_dub_outcome(code: int, err: str, out: str, record: bool = True) -> None:
    if code == 0:
        with av.open(out) as container:
            assert container.streams.video and container.streams.audio
            assert sum(1 for _ in container.decode(video=0)) > 0
        if record:
            event("dubbed")
        return
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("livedub dub: error: ") and "Traceback" not in err, err
    assert not os.path.exists(out)
    if record:
        event(f"refused: {_kind(lines[0].removeprefix('livedub dub: error: '))}")


def test_dub_command_gives_an_mp4_or_one_line_exit_2(seeds, tmp_path, capsys):
    @settings(FUZZ, max_examples=fuzz_cases(90))
    @given(source=source_file(seeds), audio=speech_file(seeds))
    def check(source, audio):
        folder = tempfile.mkdtemp(dir=tmp_path)
        out = os.path.join(folder, "out.mp4")
        code = main(["dub", _write(folder, "source", source), _write(folder, "speech", audio), "-o", out,
                     "--generator", "passthrough", "--size", "64x64", "--quiet"])
        _check_dub_outcome(code, capsys.readouterr().err, out)

    check()


@pytest.mark.timeout(300)
def test_dub_in_a_subprocess_never_dies_of_a_signal(seeds, tmp_path):
    """A few cases where a crash in native code would kill the process (8+ channels segfaulted)."""
    @settings(FUZZ, max_examples=fuzz_cases(6))
    @given(source=st.sampled_from(["a.png", "talk.mp4"]).map(lambda name: (os.path.splitext(name)[1], seeds[name])),
           audio=st.one_of(odd_wav().filter(lambda file: len(file[1]) > 2000), garbled(seeds)))
    def check(source, audio):
        folder = tempfile.mkdtemp(dir=tmp_path)
        out = os.path.join(folder, "out.mp4")
        result = subprocess.run([sys.executable, "-m", "server.cli", "dub", _write(folder, "source", source),
                                 _write(folder, "speech", audio), "-o", out, "--generator", "passthrough",
                                 "--size", "64x64", "--quiet"], capture_output=True, text=True, timeout=120,
                                cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
        assert result.returncode >= 0, f"killed by signal {-result.returncode}: {result.stderr[-500:]}"
        _check_dub_outcome(result.returncode, result.stderr, out)

    check()


@pytest.mark.parametrize("name", ["talk.mp4", "a.m4a"])
def test_a_container_cut_anywhere_in_its_index(seeds, tmp_path, name):
    """Every cut through the mp4 index (moov, written last): found by the fuzzing above, a cut inside a
    track's header left a stream without a decoder (``codec_context`` None) and an AttributeError."""
    data = seeds[name]
    start = data.rindex(b"moov") - 4
    for cut in range(start, len(data), 8):
        path = _write(str(tmp_path), f"cut{cut}", (".mp4", data[:cut]))
        for read in (lambda: VideoSource(path, (32, 48)).frame(5), lambda: load_audio(path)):
            try:
                read()
            except InputError as exc:
                _one_line_error(exc, record=False)


# The case hypothesis found (142 bytes): a chunk with a garbage name and length after the image data.
BROKEN_PNG = (b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x008\x00\x00\x00(\x08\x02\x00\x00\x00$2\xae\xd2\x00\x00\x00MIDA'
    b"Tx\x9c\xed\xce\xc1\t\xc0 \x10DQ\x93B<\xa5\xb0\x94\x96\xc2<Y\x89\x1d\x08\x81\x11D\xde\xbb\xee\xc2\xfcR\x00`'\xd7\xfc\\"
    b"\xbfR\x00`'\xd7\xfc\\\xbf\xb6h\xb8\xbf\xcf\xaf\xff{QG\x9c\xd04\xa1iB\xd3\x84\xa6\tM\x13\x9a&4Mh\x9aP\x008"
    b'\xdb\x00\xb3\x96\x03(3\xe7.V\x00\x00\x00\x00IEND\xaeB`\x82')


def test_a_png_with_a_damaged_chunk(seeds, tmp_path, capsys):
    """Found by the fuzzing: PIL raised SyntaxError ("broken PNG file") on a damaged chunk."""
    source = _write(str(tmp_path), "broken", (".png", BROKEN_PNG))
    out = str(tmp_path / "out.mp4")
    code = main(["dub", source, _write(str(tmp_path), "speech", (".wav", seeds["a.wav"])), "-o", out,
                 "--generator", "passthrough", "--size", "64x64", "--quiet"])
    _check_dub_outcome(code, capsys.readouterr().err, out, record=False)  # FFmpeg reads this one whole


# Found by the fuzzing (CI, 97 bytes): a FLAC header repeated, whose stream info announces 170 hours.
LYING_FLAC = (b'fLaC\x00\x00\x00"\x12\x00\x12\x00\x00\x03\xd2\x00\x05\x00\n\xc4BfLaC\x00\x00\x00"\x12\x00\x12\x00\x00'
    b'\x03\xd2\x00\x05\x00\n\xc4B\xf0\x00\x00g\\[\xd2X\xf5\xd8s)\xb1\xeb2\xf2\xf9\xda\xe3~#\x04\x00\x00.\r\x00\x00'
    b'\x00Lavf62.12.102\x01\x00\x00\x00\x15\x00\x00\x00encoder=Lavf62.12.102\x81\x00 ' + b'\x00' * 35)


def test_a_header_announcing_hours_in_a_tiny_file(tmp_path):
    """The decode buffer was sized from the header alone: this file asked numpy for 36.6 GiB."""
    path = _write(str(tmp_path), "lying", (".flac", LYING_FLAC))
    with pytest.raises(InputError) as raised:
        load_audio(path)
    _one_line_error(raised.value, record=False)
