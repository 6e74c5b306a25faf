"""Benchmark: CPU per session of N ``lite`` sessions on one library clip, with the clip's face analysis
shared (model/lite/analysis.py) and, for comparison, with each session tracking the faces itself.

Each session is a chunk engine with its own ``lite`` generator on the demo clip (server/demo.py, the
astronaut with a slow pan and zoom, held whole by streaming/sharedsource.py as the server does), dubbing
the demo speech chunk after chunk; sessions take turns chunk by chunk, in this one process (the server
runs each session's ``lite`` in a process of its own and the shared analysis in its chunk threads: the
sum is the same work). CPU is this process's (all threads: mediapipe's included) over the whole run.
The machine may be shared: the load average is printed beside the figures.

Run:  PYTHONPATH=$PWD .venv/bin/python bench/bench_shared_analysis.py [--sessions 1 3] [--chunks 4] [--size 512]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model.lite import build  # noqa: E402
from model.lite.analysis import SourceAnalysis  # noqa: E402
from server.demo import make_demo_source, make_demo_speech  # noqa: E402
from streaming.audio import load_audio  # noqa: E402
from streaming.chunker import ChunkPlan  # noqa: E402
from streaming.engine import AudioTrack, ChunkEngine  # noqa: E402
from streaming.sharedsource import SourceCache  # noqa: E402


class OwnTracking:
    """The shared clip without its analysis: each session's generator tracks the faces itself (as before)."""

    def __init__(self, clip) -> None:
        self._clip = clip
        self.is_still, self.size = clip.is_still, clip.size

    def frame(self, index):
        return self._clip.frame(index)

    def frames(self, start, count):
        return self._clip.frames(start, count)

    def release_before(self, index):
        pass


def run(clip, sessions: int, chunks: int, shared: bool, speech: AudioTrack) -> dict:
    plan = ChunkPlan()
    generators = [build() for _ in range(sessions)]
    clip.analysis.of_clip = SourceAnalysis(clip)  # a fresh analysis: nothing carried from an earlier run
    source = clip if shared else OwnTracking(clip)
    engines = [ChunkEngine(source, generator, plan) for generator in generators]
    started_cpu, started = time.process_time(), time.monotonic()
    for index in range(chunks):
        for engine in engines:
            request = engine.request(index, speech)
            engine.accept(request, engine.generator.generate(request))
    cpu, wall = time.process_time() - started_cpu, time.monotonic() - started
    for generator in generators:
        generator.close()
    clip.analysis.of_clip.close()
    return {"cpu_per_session_chunk": cpu / sessions / chunks, "wall": wall,
            # Own tracking: chunk 0's frames, then each later chunk's new ones and its last context frame.
            "runs": clip.analysis.of_clip.runs if shared else sessions * (plan.window + (chunks - 1) * (plan.stride + 1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = make_demo_source(os.path.join(folder, "astronaut.mp4"), seconds=12.0, size=args.size)
        speech = AudioTrack(load_audio(make_demo_speech(os.path.join(folder, "speech.wav"))))
        clip = SourceCache().open(path, (args.size, args.size), 72)
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start (shared machine); "
              f"lite at {args.size}x{args.size}, {args.chunks} chunks of 81 frames per session")
        for sessions in args.sessions:
            for shared in (False, True):
                result = run(clip, sessions, args.chunks, shared, speech)
                label = "shared analysis" if shared else "own tracking   "
                print(f"{sessions} session(s), {label}: CPU {result['cpu_per_session_chunk']:.3f} s per session "
                      f"per chunk, {result['runs']} face-landmark runs, wall {result['wall']:.1f} s, "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
