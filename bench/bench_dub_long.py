"""Offline dubbing of long speech: wall time, frames per second and peak memory.

Shows that memory stays bounded as the input grows (frames are streamed to the writer; only the
16 kHz speech track is held whole). Usage:
    python bench/bench_dub_long.py --minutes 1 5 60 --generator passthrough --size 256x256
Each length runs in its own process so peak RSS is per run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def synthetic_speech(path: str, minutes: float) -> None:
    """Speech-like audio: noise bursts with a syllable-rate envelope and pauses (no speech model needed)."""
    import scipy.io.wavfile

    rate = 16000
    total = int(minutes * 60 * rate)
    rng = np.random.default_rng(0)
    out = np.empty(total, np.int16)
    block = rate * 10
    for start in range(0, total, block):
        size = min(block, total - start)
        t = (start + np.arange(size)) / rate
        envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (np.sin(2 * np.pi * 0.2 * t) > -0.3)
        out[start : start + size] = (0.2 * envelope * rng.standard_normal(size) * 32767).astype(np.int16)
    scipy.io.wavfile.write(path, rate, out)


def run_one(args: argparse.Namespace, minutes: float) -> dict:
    from server.demo import make_demo_source
    from streaming.dub import DubSettings, dub
    from streaming.source import parse_size

    with tempfile.TemporaryDirectory() as folder:
        speech = os.path.join(folder, "speech.wav")
        synthetic_speech(speech, minutes)
        source = make_demo_source(os.path.join(folder, "source.mp4"), seconds=20, size=256)
        started = time.perf_counter()
        report = dub(source, speech, os.path.join(folder, "out.mp4"),
                     DubSettings(generator=args.generator, size=parse_size(args.size), source_end="loop"))
        seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"minutes": minutes, "frames": report.frames, "seconds": round(seconds, 1),
            "fps": round(report.frames / seconds, 1), "peak_rss_mib": round(peak_mib)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--generator", default="passthrough")
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args, args.one)))
        return
    print(f"generator={args.generator} size={args.size} (each length in a fresh process)")
    for minutes in args.minutes:
        result = subprocess.run([sys.executable, __file__, "--one", str(minutes), "--generator", args.generator,
                                 "--size", args.size], capture_output=True, text=True, check=True)
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{row['minutes']:>6.1f} min  {row['frames']:>7d} frames  {row['seconds']:>7.1f} s  "
              f"{row['fps']:>6.1f} fps  peak RSS {row['peak_rss_mib']:>5d} MiB")


if __name__ == "__main__":
    main()
