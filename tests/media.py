"""Test media made offline: synthetic speech (Debian espeak-ng), real speech (codec2-examples) and a real
portrait (scikit-image's astronaut, public domain). Small on purpose; shared by several test suites."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import numpy as np
import scipy.signal
from scipy.io import wavfile

from model.base import AUDIO_RATE

REAL_SPEECH_WAV = "/usr/share/codec2/raw/speech_orig_16k.wav"  # Harvard sentences, 10.8 s, 16 kHz


def speech(text: str, words_per_minute: int = 150, voice: str = "en") -> np.ndarray:
    """``text`` spoken by espeak-ng as 16 kHz mono float32. SSML is accepted, e.g. ``<break time="800ms"/>``
    for a pause."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is missing: scripts/setup.sh installs it (Debian package espeak-ng)")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "speech.wav")
        subprocess.run(["espeak-ng", "-m", "-v", voice, "-s", str(words_per_minute), "-w", path, text],
                       check=True, capture_output=True)
        rate, samples = wavfile.read(path)
    return to_16k(samples, rate)


def real_speech() -> np.ndarray:
    """Real read speech (Harvard sentences) as 16 kHz mono float32."""
    rate, samples = wavfile.read(REAL_SPEECH_WAV)
    return to_16k(samples, rate)


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    if samples.dtype == np.int16:
        samples = samples.astype(np.float32) / 32768.0
    samples = np.asarray(samples, np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if rate != AUDIO_RATE:
        divisor = np.gcd(rate, AUDIO_RATE)
        samples = scipy.signal.resample_poly(samples, AUDIO_RATE // divisor, rate // divisor).astype(np.float32)
    return samples


def astronaut(size: int | tuple[int, int] = 480) -> np.ndarray:
    """The astronaut portrait (RGB uint8), resized to cover ``size`` and centre-cropped like a source."""
    import skimage.data

    from streaming.source import resize_and_centercrop

    shape = (size, size) if isinstance(size, int) else tuple(size)
    return resize_and_centercrop(skimage.data.astronaut(), shape)


def grace_hopper(size: int | tuple[int, int] = 480) -> np.ndarray:
    """Grace Hopper's portrait (matplotlib's sample data, public domain; a closed mouth), like ``astronaut``."""
    import matplotlib.cbook
    from PIL import Image

    from streaming.source import resize_and_centercrop

    shape = (size, size) if isinstance(size, int) else tuple(size)
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        return resize_and_centercrop(np.asarray(image.convert("RGB")), shape)


def two_people(height: int = 448) -> np.ndarray:
    """Two real faces side by side, ``height`` x 2*``height``: the astronaut (left) and Grace Hopper (right)."""
    return np.concatenate([astronaut(height), grace_hopper(height)], axis=1)
