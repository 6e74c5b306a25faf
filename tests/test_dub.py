"""`livedub dub` end to end, checked with PyAV, and every kind of bad input."""

import os
import subprocess
import sys

import av
import numpy as np
import pytest

from server.cli import main
from tests.conftest import ROOT, write_wav


def probe(path):
    with av.open(path) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        frames = sum(1 for _ in container.decode(video=0))
        return {"frames": frames, "fps": video.average_rate, "codec": video.codec_context.name,
                "size": (video.height, video.width), "audio_codec": audio.codec_context.name,
                "video_seconds": float(video.duration * video.time_base),
                "audio_seconds": float(audio.duration * audio.time_base) if audio.duration else None}


def speech_frames(path):
    from streaming.audio import load_audio
    from streaming.chunker import frames_for_samples

    return frames_for_samples(load_audio(path).size)


def test_dub_command_end_to_end(tmp_path, portrait_png, speech_wav):
    """The installed console script with the default generator (lite), as a user runs it."""
    out = tmp_path / "dubbed.mp4"
    livedub = os.path.join(os.path.dirname(sys.executable), "livedub")
    result = subprocess.run([livedub, "dub", portrait_png, speech_wav, "-o", str(out), "--size", "256x320"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "frames" in result.stderr  # the progress bar
    assert "wrote" in result.stdout and "no face" not in result.stdout
    info = probe(str(out))
    expected = speech_frames(speech_wav)
    assert info["frames"] == expected and info["fps"] == 25
    assert info["codec"] == "h264" and info["audio_codec"] == "aac" and info["size"] == (320, 256)
    assert abs(info["video_seconds"] - expected / 25) < 1e-6
    assert abs(info["audio_seconds"] - expected / 25) < 0.07  # AAC frames of 64 ms at 16 kHz


def test_dub_video_source_longer_speech_loops(tmp_path, speech_wav):
    from server.demo import make_demo_source

    source = make_demo_source(str(tmp_path / "clip.mp4"), seconds=1.0, size=128)
    out = tmp_path / "looped.mp4"
    report_path = tmp_path / "report.json"
    assert main(["dub", source, speech_wav, "-o", str(out), "--generator", "passthrough", "--source-end", "loop",
                 "--quiet", "--report", str(report_path)]) == 0
    info = probe(str(out))
    assert info["frames"] == speech_frames(speech_wav) and info["size"] == (640, 640)
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]
    # Passthrough shows the source: a 1 s source looping means frame n matches frame n + 25.
    assert np.abs(frames[3] - frames[28]).mean() < 3 and np.abs(frames[3] - frames[15]).mean() > 3
    import json

    report = json.loads(report_path.read_text())
    assert [c["reference_index"] for c in report["chunks"]] == [72 * k for k in range(len(report["chunks"]))]
    assert 0 < report["chunks"][0]["speech_fraction"] <= 1


def run_error(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.fixture(scope="module")
def bad_media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    paths = {"text": folder / "notes.txt", "silent": folder / "silent.wav", "empty": folder / "empty.wav",
             "audio_only": folder / "audio_only.m4a", "tiny": folder / "tiny.wav"}
    paths["text"].write_text("this is not media")
    paths["long_text"] = folder / "readme.txt"
    paths["long_text"].write_text("# A project\n\nSome words about it, a list:\n- one\n- two\n" * 60)
    write_wav(str(paths["silent"]), np.zeros(32000), 16000)
    write_wav(str(paths["empty"]), np.zeros(0), 16000)
    write_wav(str(paths["tiny"]), np.ones(300) * 0.5, 16000)
    with av.open(str(paths["audio_only"]), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        data = (0.3 * np.sin(np.arange(16000) / 10)).astype(np.float32)
        for start in range(0, data.size, 1024):
            frame = av.AudioFrame.from_ndarray(data[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return {k: str(v) for k, v in paths.items()}


@pytest.mark.parametrize("case, needle", [
    ("missing_source", "source not found"),
    ("missing_audio", "audio file not found"),
    ("text_source", "not a video or image"),
    ("text_audio", "not a media file"),
    ("no_video", "no video stream"),
    ("empty_audio", "empty"),
    ("tiny_audio", "shorter than one frame"),
    ("silent_audio", "silent"),
    ("missing_folder", "output folder does not exist"),
    ("bad_generator", "unknown generator"),
    ("long_text_source", "is text, not a video or image"),  # FFmpeg's tty demuxer takes a longer .txt
    ("unwritable_output", "cannot write a file in /proc"),
    ("empty_output", "empty output path"),
    ("report_folder", "report folder does not exist"),
])
def test_bad_input_one_line_exit_2(case, needle, tmp_path, capsys, portrait_png, speech_wav, bad_media):
    source, audio, out = portrait_png, speech_wav, str(tmp_path / "out.mp4")
    extra = ["--generator", "passthrough"]
    if case == "missing_source":
        source = str(tmp_path / "nope.mp4")
    elif case == "missing_audio":
        audio = str(tmp_path / "nope.wav")
    elif case == "text_source":
        source = bad_media["text"]
    elif case == "text_audio":
        audio = bad_media["text"]
    elif case == "no_video":
        source = bad_media["audio_only"]
    elif case == "empty_audio":
        audio = bad_media["empty"]
    elif case == "tiny_audio":
        audio = bad_media["tiny"]
    elif case == "silent_audio":
        audio = bad_media["silent"]
    elif case == "missing_folder":
        out = str(tmp_path / "no" / "such" / "out.mp4")
    elif case == "bad_generator":
        extra = ["--generator", "magic"]
    elif case == "long_text_source":
        source = bad_media["long_text"]
    elif case == "unwritable_output":
        out = "/proc/out.mp4"
    elif case == "empty_output":
        out = ""
    elif case == "report_folder":
        extra += ["--report", str(tmp_path / "no" / "report.json")]
    code, err = run_error(["dub", source, audio, "-o", out, "--quiet", *extra], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("livedub dub: error:") and needle in err, err
    assert "Traceback" not in err
    assert not os.path.exists(out) and not os.path.exists("astronaut_dubbed.mp4")
    assert not [f for f in os.listdir(tmp_path) if f.startswith((".partial", ".probe"))]


@pytest.mark.parametrize("args, needle", [
    (["--size", "99999x5"], "bad size"),
    (["--size", "501x500"], "bad size"),  # odd: 500x500 is an output size (the generator works on a region)
    (["--color-correction", "1.5"], "bad strength"),
    (["--keyframe-interval", "0"], "whole number"),
    (["--source-end", "bounce"], "invalid choice"),
])
def test_bad_options_exit_2(args, needle, capsys, portrait_png, speech_wav, tmp_path):
    with pytest.raises(SystemExit) as stop:
        main(["dub", portrait_png, speech_wav, "-o", str(tmp_path / "o.mp4"), *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_failure_midway_leaves_no_partial_file(tmp_path, portrait_png, speech_wav):
    from model.passthrough import PassthroughGenerator
    from streaming.dub import DubSettings, dub

    class Failing(PassthroughGenerator):
        calls = 0

        def generate(self, request):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("boom")
            return super().generate(request)

    out = tmp_path / "out.mp4"
    long_speech = write_wav(str(tmp_path / "long.wav"), 0.3 * np.sin(np.arange(16000 * 5) / 7), 16000)
    with pytest.raises(RuntimeError, match="boom"):
        dub(portrait_png, long_speech, str(out), DubSettings(size=(64, 64)), generator=Failing())
    assert os.listdir(tmp_path) == ["long.wav"]
