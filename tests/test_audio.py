"""Speech ingest: any container to 16 kHz mono, loudness to -23 LUFS (batch and running), voice activity."""

import av
import numpy as np
import pyloudnorm
import pytest

from streaming.audio import (RunningLoudness, VoiceActivity, integrated_loudness, is_silent, load_audio,
                             normalize_loudness)
from streaming.errors import InputError
from tests.conftest import write_wav


def tone(seconds, rate, freq=440.0, channels=1, amplitude=0.3):
    t = np.arange(int(seconds * rate)) / rate
    mono = amplitude * np.sin(2 * np.pi * freq * t)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


def encode(path, samples, rate, codec, layout="stereo"):
    """Write ``samples`` [N, 2] with PyAV's ``codec`` into ``path`` (container from its extension)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout
        fmt = stream.codec_context.codec.audio_formats[0].name
        frame_size = stream.codec_context.frame_size or 1024
        data = samples.T.astype(np.float32)
        for start in range(0, data.shape[1], frame_size):
            block = np.ascontiguousarray(data[:, start : start + frame_size])
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            if fmt != "fltp":
                frame = av.AudioResampler(format=fmt, layout=layout, rate=rate).resample(frame)[0]
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return str(path)


def dominant_frequency(samples, rate=16000):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return np.fft.rfftfreq(samples.size, 1 / rate)[spectrum.argmax()]


def test_wav_44k_stereo_to_16k_mono(tmp_path):
    path = write_wav(str(tmp_path / "a.wav"), tone(2.0, 44100, channels=2), 44100)
    samples = load_audio(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size - 32000) <= 32
    assert abs(dominant_frequency(samples) - 440) < 2
    assert abs(np.abs(samples).max() - 0.3) < 0.02  # stereo of identical channels averages, not sums


@pytest.mark.parametrize("channels", [3, 6, 8, 9, 16])
def test_any_channel_count_averages_to_mono(tmp_path, channels):
    """8 and more channels segfaulted (PyAV's planar frames past FFmpeg's 8 inline plane pointers)."""
    data = tone(1.0, 22050, channels=channels)
    data[:, -1] = 0.0  # one silent channel: the mean is (n-1)/n of the tone
    samples = load_audio(write_wav(str(tmp_path / f"{channels}.wav"), data, 22050))
    assert abs(samples.size - 16000) <= 16 and abs(dominant_frequency(samples) - 440) < 2
    assert abs(np.abs(samples).max() - 0.3 * (channels - 1) / channels) < 0.01


@pytest.mark.parametrize("name, codec", [("a.flac", "flac"), ("a.mp3", "libmp3lame"), ("a.m4a", "aac"),
                                         ("a.ogg", "libopus")])
def test_compressed_containers(tmp_path, name, codec):
    rate = 48000
    path = encode(tmp_path / name, tone(1.5, rate, freq=300, channels=2), rate, codec)
    samples = load_audio(path)
    assert abs(samples.size / 16000 - 1.5) < 0.08  # encoder priming/padding only
    assert abs(dominant_frequency(samples) - 300) < 3


def test_audio_of_a_video(tmp_path):
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for i in range(25):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        data = tone(1.0, 48000, freq=500).astype(np.float32)
        for start in range(0, data.size, 1024):
            frame = av.AudioFrame.from_ndarray(data[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, start
            container.mux(audio.encode(frame))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    samples = load_audio(path)
    assert abs(dominant_frequency(samples) - 500) < 3


def test_bad_audio(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "text.wav").write_text("hello")
    with pytest.raises(InputError, match="not a media file"):
        load_audio(tmp_path / "text.wav")
    empty = write_wav(str(tmp_path / "empty.wav"), np.zeros(0), 16000)
    with pytest.raises(InputError, match="empty"):
        load_audio(empty)


def test_loudness_normalisation_matches_bs1770(speech_wav):
    speech = load_audio(speech_wav)
    quiet = speech * 0.05
    normalized = normalize_loudness(quiet)
    measured = pyloudnorm.Meter(16000).integrated_loudness(normalized.astype(np.float64))
    assert abs(measured - (-23.0)) < 0.01
    # Silence stays as it is (the official code leaves |loudness| > 100 alone).
    silence = np.zeros(16000, np.float32)
    assert np.array_equal(normalize_loudness(silence), silence)
    assert is_silent(silence) and is_silent(silence + 1e-6) and not is_silent(quiet)


def test_running_loudness_converges_to_integrated(speech_wav):
    speech = load_audio(speech_wav)
    speech = speech[: speech.size // 1600 * 1600]  # whole 100 ms steps, as the stream has them
    running = RunningLoudness()
    rng = np.random.default_rng(0)
    position = 0
    while position < speech.size:  # arbitrary packet sizes, as a network delivers them
        size = int(rng.integers(100, 3000))
        running.push(speech[position : position + size])
        position += size
    assert abs(running.loudness - integrated_loudness(speech)) < 0.05
    normalized = speech * running.gain()
    assert abs(integrated_loudness(normalized) - (-23.0)) < 0.05
    assert RunningLoudness().gain() == 1.0  # nothing heard yet: leave the level alone


def test_voice_activity_per_30ms(speech_wav):
    speech = normalize_loudness(load_audio(speech_wav))
    padded = np.concatenate([np.zeros(16000, np.float32), speech, np.zeros(16000, np.float32)])
    decisions = VoiceActivity().frames(padded)
    assert decisions.size == padded.size // 480
    per_second = 16000 // 480
    assert not decisions[: per_second - 1].any()  # leading second of silence
    assert decisions[per_second + 5 : -per_second].mean() > 0.5  # mostly speech where speech is
    assert VoiceActivity().speech_fraction(np.zeros(4800, np.float32)) == 0.0


def test_piecewise_loudness_is_pyloudnorm_for_any_length(speech_wav):
    speech = load_audio(speech_wav)
    rng = np.random.default_rng(3)
    for size in [speech.size, 6400, 6401, 7000, 1000, 17, 4000] + [int(n) for n in rng.integers(6400, speech.size, 8)]:
        clip = speech[:size]
        block = 0.4 if size >= 6400 else size / 16000
        expected = pyloudnorm.Meter(16000, block_size=block).integrated_loudness(clip.astype(np.float64))
        # Small pieces: the filter state and the blocks that straddle pieces carry over exactly.
        measured = integrated_loudness(clip, piece_seconds=0.37)
        assert measured == expected or abs(measured - expected) < 1e-9, size
