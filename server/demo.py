"""Demo material built from what is available offline: a source clip and a dubbed speech track.

Source: skimage's astronaut portrait (NASA, public domain) as a clip with a slow pan and zoom, so the
source has camera motion. Speech: the Harvard sentences read in codec2's examples (Debian
``codec2-examples``, LGPL-2.1), or espeak-ng when that package is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import av
import numpy as np
from PIL import Image

from model.base import FPS

REAL_SPEECH = "/usr/share/codec2/raw/speech_orig_16k.wav"
DEMO_TEXT = ("Good evening. Tonight's programme comes to you live, translated as it is spoken. "
             "The speaker's lips now follow the new words.")


def make_demo_source(path: str, seconds: float = 12.0, size: int = 512) -> str:
    """The astronaut portrait as an H.264 clip with a slow pan and zoom."""
    from skimage import data

    portrait = Image.fromarray(data.astronaut())
    frames = int(seconds * FPS)
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for n in range(frames):
            phase = n / max(frames - 1, 1)
            zoom = 1.05 + 0.06 * np.sin(np.pi * phase)
            side = portrait.width / zoom
            left = (portrait.width - side) / 2 + 6 * np.sin(2 * np.pi * phase)
            top = (portrait.height - side) / 2
            crop = portrait.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))
            frame = av.VideoFrame.from_ndarray(np.asarray(crop), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def make_demo_speech(path: str) -> str:
    """Real read speech when available, else synthetic speech from espeak-ng; a wav at ``path``."""
    if os.path.exists(REAL_SPEECH):
        shutil.copyfile(REAL_SPEECH, path)
        return path
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-s", "150", "-w", path, DEMO_TEXT], check=True, capture_output=True)
        return path
    raise RuntimeError("no demo speech: install codec2-examples or espeak-ng (scripts/setup.sh does)")


def prepare(folder: str) -> tuple[str, str]:
    """Demo source and speech in ``folder`` (made once)."""
    os.makedirs(folder, exist_ok=True)
    source = os.path.join(folder, "astronaut.mp4")
    speech = os.path.join(folder, "speech.wav")
    if not os.path.exists(source):
        make_demo_source(source)
    if not os.path.exists(speech):
        make_demo_speech(speech)
    return source, speech


def prepare_live(folder: str) -> tuple[str, str]:
    """The demo sources for ``livedub serve --demo``: the clip (``astronaut``), the same portrait as a
    still (``portrait``, far cheaper to animate live), and the speech (for the page's demo button)."""
    from skimage import data

    source, speech = prepare(folder)
    still = os.path.join(folder, "portrait.png")
    if not os.path.exists(still):
        Image.fromarray(data.astronaut()).resize((512, 512), Image.BILINEAR).save(still)
    return source, speech
