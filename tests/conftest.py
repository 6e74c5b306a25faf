"""Shared test fixtures: real media made offline (espeak-ng speech, the astronaut portrait)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Hypothesis draws the same cases on every run of the test command, so a red run is a change's doing and
# never the draw (CI once failed on a fresh random case). LIVEDUB_FUZZ_EXPLORE=N draws fresh cases instead,
# N times as many where a test asks for ``fuzz_cases``, to look for new failures; each one found becomes a
# fixed test.
FUZZ_EXPLORE = int(os.environ.get("LIVEDUB_FUZZ_EXPLORE") or 0)
settings.register_profile("livedub", derandomize=not FUZZ_EXPLORE, database=None)
settings.load_profile("livedub")


def fuzz_cases(count: int) -> int:
    """``count`` generated cases, times the exploration factor when exploring."""
    return count * max(FUZZ_EXPLORE, 1)


def espeak(path: str, text: str, rate: int = 150) -> str:
    """Synthetic speech from Debian's espeak-ng (22.05 kHz mono wav)."""
    if not shutil.which("espeak-ng"):
        pytest.fail("espeak-ng is missing: scripts/setup.sh installs it")
    subprocess.run(["espeak-ng", "-s", str(rate), "-w", path, text], check=True, capture_output=True)
    return path


def write_wav(path: str, samples: np.ndarray, rate: int) -> str:
    """A 16-bit PCM wav of mono (or [N, channels]) float samples in [-1, 1]."""
    import scipy.io.wavfile

    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    scipy.io.wavfile.write(path, rate, pcm)
    return path


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="session")
def speech_wav(media_dir) -> str:
    """About 3.5 s of speech with a pause in the middle."""
    return espeak(os.path.join(media_dir, "speech.wav"),
                  "The weather will be dry tonight. [[_:1000]] Tomorrow brings rain in the north.")


@pytest.fixture(scope="session")
def portrait_png(media_dir) -> str:
    from PIL import Image
    from skimage import data

    path = os.path.join(media_dir, "astronaut.png")
    Image.fromarray(data.astronaut()).save(path)
    return path


@pytest.fixture(scope="session")
def conformance_public() -> str:
    """The public conformance fixture set (copied into the repo; ../shared beside a developer checkout)."""
    for candidate in (os.path.join(ROOT, "tests", "fixtures", "conformance", "public"),
                      os.path.join(ROOT, "..", "shared", "conformance", "public")):
        if os.path.isdir(candidate):
            return candidate
    pytest.fail("public conformance fixtures not found under tests/fixtures/conformance/public")
