"""`livedub dub --generator infinitetalk` end to end on a tiny random model in the official layout.

The weights are random, so the frames are noise: this checks the plumbing (engine, chunking, audio
windows, context frames, colour correction, mp4 size and timing), not the picture."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from it_weights import write_weights

ROOT = Path(__file__).parents[1]


def write_speech(path: Path, seconds: float) -> Path:
    t = np.arange(int(16000 * seconds)) / 16000
    voice = np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * 0.3
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes((voice * 32767).astype(np.int16).tobytes())
    return path


@pytest.mark.slow
def test_dub_cli_writes_a_correctly_sized_and_timed_mp4(tmp_path):
    from server.demo import make_demo_source

    weights = write_weights(tmp_path / "weights")
    source = make_demo_source(str(tmp_path / "source.mp4"), seconds=2.0, size=96)
    speech = write_speech(tmp_path / "speech.wav", 4.0)  # 100 frames: two chunks (81 + 19 of 72)
    output = tmp_path / "dubbed.mp4"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "server.cli", "dub", source, str(speech), "-o", str(output), "--quiet",
               "--generator", "infinitetalk", "--weights", str(weights), "--device", "cpu", "--size", "80x64",
               "--generator-option", "steps=2", "--generator-option", "audio_context=2",
               "--report", str(tmp_path / "report.json")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "100 frames (4.00 s) at 80x64, 2 chunks" in result.stdout
    with av.open(str(output)) as container:
        video = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video)]
    assert len(frames) == 100 and frames[0].shape == (64, 80, 3)
    with av.open(str(output)) as container:
        audio = container.streams.audio[0]
        duration = float(audio.duration * audio.time_base)
    assert abs(duration - 4.0) < 0.1
    assert np.std(np.stack(frames).astype(np.float32)) > 1.0  # generated (noise), not a blank picture
