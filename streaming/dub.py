"""Offline dubbing: the chunk engine run over a whole speech file, written to an mp4.

No clock, no deadlines, no degradation: every chunk is generated at full quality, frames are streamed to
the writer as they come (memory stays bounded for any length) and the file appears only when complete.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Callable, TextIO

import numpy as np

from model.base import AUDIO_RATE, FPS, Generator
from model.registry import build_generator
from streaming.audio import integrated_loudness, is_silent_loudness, load_audio, loudness_gain
from streaming.chunker import ChunkPlan, frames_for_samples
from streaming.engine import AudioTrack, ChunkEngine, ChunkReport
from streaming.errors import InputError
from streaming.media import Mp4Writer, check_output_path
from streaming.source import VideoSource


@dataclasses.dataclass
class DubSettings:
    generator: str = "lite"
    size: int | tuple[int, int] = 480
    keyframe_interval: int = 72
    color_correction: float | None = None  # None: the generator's default
    source_end: str = "hold"
    seed: int = 42
    generator_options: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class DubReport:
    output: str
    frames: int
    size: tuple[int, int]
    seconds: float
    chunks: list[ChunkReport]

    def summary(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else float("inf")
        line = (f"wrote {self.output}: {self.frames} frames ({self.frames / FPS:.2f} s) at "
                f"{self.size[1]}x{self.size[0]}, {len(self.chunks)} chunks, {rate:.1f} fps")
        missed = [c.index for c in self.chunks if c.info.get("face_found") is False]
        if missed:
            line += f"; no face found in {len(missed)} of {len(self.chunks)} chunks (those frames are unchanged)"
        return line


def dub(source_path: str, audio_path: str, output_path: str, settings: DubSettings = DubSettings(),
        progress: Callable[[int, int], None] | None = None, generator: Generator | None = None) -> DubReport:
    """Dub ``source_path`` (video or image) with the speech in ``audio_path``; write ``output_path``."""
    output_path = check_output_path(output_path)
    if not 0.0 <= (settings.color_correction if settings.color_correction is not None else 0.0) <= 1.0:
        raise InputError(f"bad colour-correction strength {settings.color_correction}: accepted is 0..1")
    speech = load_audio(audio_path)
    total_frames = frames_for_samples(speech.size)
    if total_frames == 0:
        raise InputError(f"audio in {audio_path} is shorter than one frame (0.04 s); give longer speech")
    loudness = integrated_loudness(speech)
    if is_silent_loudness(loudness):
        raise InputError(f"audio in {audio_path} is silent (below -70 LUFS); give a speech track")
    speech *= np.float32(loudness_gain(loudness))  # in place: the official loudness_norm to -23 LUFS
    source = VideoSource(source_path, settings.size, settings.source_end, settings.keyframe_interval)
    owned = generator is None
    generator = generator or build_generator(settings.generator, **settings.generator_options)
    plan = ChunkPlan()
    engine = ChunkEngine(source, generator, plan, settings.keyframe_interval, settings.color_correction,
                         settings.seed)
    track = AudioTrack(speech)
    reports: list[ChunkReport] = []
    started = time.perf_counter()
    written = 0
    try:
        with Mp4Writer(output_path, source.size, audio=speech[: total_frames * AUDIO_RATE // FPS]) as writer:
            engine.prefetch(0, track, audio_end_frame=total_frames)  # a generator that prepares ahead starts now
            for chunk in plan.chunks(total_frames):
                request = engine.request(chunk.index, track, audio_end_frame=total_frames)
                if plan.is_needed(chunk.index + 1, total_frames):  # prepared beside this chunk's critical path
                    engine.prefetch(chunk.index + 1, track, audio_end_frame=total_frames)
                result = generator.generate(request)
                frames = engine.accept(request, result)
                keep = plan.output_range(chunk.index, total_frames)
                writer.write(frames[: len(keep)])
                written += len(keep)
                reports.append(engine.report(request, result))
                engine.release(chunk.index + 1)
                if progress:
                    progress(written, total_frames)
    finally:
        if owned:
            generator.close()
    return DubReport(output_path, written, source.size, time.perf_counter() - started, reports)


class ProgressBar:
    """A one-line progress bar on a terminal; one line per update elsewhere (logs, CI)."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.started = time.perf_counter()
        self.tty = stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.perf_counter() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        filled = int(self.width * done / max(total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {done}/{total} frames  {rate:5.1f} fps  ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def default_output_name(source_path: str) -> str:
    stem = os.path.splitext(os.path.basename(source_path))[0]
    return f"{stem}_dubbed.mp4"
