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

from model.base import FPS, Generator
from model.registry import build_generator
from model.speakers import MAX_FACES, SpeakerError, SpeakerFaces
from streaming.audio import VoiceActivity, integrated_loudness, is_silent_loudness, load_audio, loudness_gain
from streaming.chunker import ChunkPlan, frames_for_samples
from streaming.engine import AudioTrack, ChunkEngine, ChunkReport
from streaming.errors import InputError
from streaming.media import Mp4Writer, check_output_path
from streaming.playback import PLAYBACK_RATE, PlaybackSpeech, mix_playback, spool_folder
from streaming.region import region_finder
from streaming.regionsource import RegionSource
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
    # Two speakers (a second speech file): which face each animates; None is speaker 1 = leftmost face.
    speaker_faces: SpeakerFaces | None = None
    group: object = None  # a streaming.group.GroupLayout: run the generator on that process group


@dataclasses.dataclass
class DubReport:
    output: str
    frames: int
    size: tuple[int, int]
    seconds: float
    chunks: list[ChunkReport]
    speech: str = ""  # the output's sound, e.g. "48 kHz stereo (downmixed from 8 channels)"

    def summary(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else float("inf")
        line = (f"wrote {self.output}: {self.frames} frames ({self.frames / FPS:.2f} s) at "
                f"{self.size[1]}x{self.size[0]}, {len(self.chunks)} chunks, {rate:.1f} fps")
        if self.speech:
            line += f", speech {self.speech}"
        missed = [c.index for c in self.chunks if c.info.get("face_found") is False]
        if missed:
            line += f"; no face found in {len(missed)} of {len(self.chunks)} chunks (those frames are unchanged)"
        regionless = [c.index for c in self.chunks if c.info.get("region_used", "region") != "region"]
        if regionless:
            line += (f"; no face for the region in {len(regionless)} of {len(self.chunks)} chunks (the last region, "
                     "or the whole frame, was used)")
        return line


def dub(source_path: str, audio_path: str, output_path: str, settings: DubSettings = DubSettings(),
        progress: Callable[[int, int], None] | None = None, generator: Generator | None = None,
        second_audio_path: str | None = None) -> DubReport:
    """Dub ``source_path`` (video or image) with the speech in ``audio_path``; write ``output_path``.

    With ``second_audio_path`` two people speak: speaker 1's face follows ``audio_path`` only, speaker 2's
    face the second file only (faces chosen by ``settings.speaker_faces``), and the output's sound mixes both.
    """
    output_path = check_output_path(output_path)
    if not 0.0 <= (settings.color_correction if settings.color_correction is not None else 0.0) <= 1.0:
        raise InputError(f"bad colour-correction strength {settings.color_correction}: accepted is 0..1")
    if second_audio_path is None and settings.speaker_faces is not None:
        raise InputError("speaker faces were given for one speech file: they need a second speech file (AUDIO2)")
    # What listeners hear: the files as they are, at 48 kHz (the models get 16 kHz mono at -23 LUFS).
    heard = PlaybackSpeech(spool_folder(output_path))
    heard_second = None if second_audio_path is None else PlaybackSpeech(spool_folder(output_path))
    try:
        return _dub(source_path, output_path, settings, progress, generator, audio_path, second_audio_path,
                    heard, heard_second)
    finally:
        heard.close()
        if heard_second is not None:
            heard_second.close()


def _dub(source_path: str, output_path: str, settings: DubSettings, progress, generator: Generator | None,
         audio_path: str, second_audio_path: str | None, heard: PlaybackSpeech,
         heard_second: PlaybackSpeech | None) -> DubReport:
    speech = load_speech(audio_path, playback=heard)
    second = None if second_audio_path is None else load_speech(second_audio_path, second=True,
                                                                 playback=heard_second)
    total_frames = frames_for_samples(max(speech.size, 0 if second is None else second.size))
    source = VideoSource(source_path, settings.size, settings.source_end, settings.keyframe_interval)
    if second is not None:
        faces = settings.speaker_faces or SpeakerFaces()
        try:
            check_speaker_faces(source.frame(0), faces)
        except SpeakerError as exc:
            raise InputError(str(exc)) from None
    # An output size the generator does not work at: it works on a region around the speaker.
    region, options = region_finder(settings.size, settings.generator, settings.generator_options, source.size,
                                    1 if second is None else 2)
    settings = dataclasses.replace(settings, generator_options=options)
    owned = generator is None
    generator = generator or _build(settings)
    plan = ChunkPlan()
    seen = source if region is None else RegionSource(source, region, plan, settings.keyframe_interval)
    engine = ChunkEngine(seen, generator, plan, settings.keyframe_interval, settings.color_correction,
                         settings.seed)
    track = AudioTrack(speech)
    second_track = None
    if second is not None:
        engine.speaker_faces = faces
        second_track = AudioTrack(second)
    if heard_second is not None:
        heard = mix_playback(heard, heard_second, spool_folder(output_path))
    reports: list[ChunkReport] = []
    started = time.perf_counter()
    written = 0
    try:
        with Mp4Writer(output_path, source.size, audio=heard.samples[: total_frames * PLAYBACK_RATE // FPS],
                       audio_rate=PLAYBACK_RATE) as writer:
            engine.prefetch(0, track, audio_end_frame=total_frames, second_audio=second_track)  # a generator that prepares ahead starts now
            for chunk in plan.chunks(total_frames):
                request = engine.request(chunk.index, track, audio_end_frame=total_frames, second_audio=second_track)
                if plan.is_needed(chunk.index + 1, total_frames):  # prepared beside this chunk's critical path
                    engine.prefetch(chunk.index + 1, track, audio_end_frame=total_frames, second_audio=second_track)
                result = generator.generate(request)
                frames = engine.accept(request, result)
                keep = plan.output_range(chunk.index, total_frames)
                writer.write(engine.compose(chunk.index, chunk.new_start, frames[: len(keep)]))
                written += len(keep)
                reports.append(engine.report(request, result))
                engine.release(chunk.index + 1)
                if progress:
                    progress(written, total_frames)
    finally:
        if owned:
            generator.close()
        if region is not None:
            region.close()
        if heard_second is not None:
            heard.close()  # the mix's spool (the callers close the speakers' own)
    return DubReport(output_path, written, source.size, time.perf_counter() - started, reports, heard.describe())


MIN_SPEECH_FRACTION = 0.02  # a second speaker's file with less of its 30 ms frames heard as speech has none


def load_speech(path: str, second: bool = False, playback: PlaybackSpeech | None = None) -> np.ndarray:
    """A speech file as 16 kHz mono, loudness-normalised (the official ``loudness_norm`` to -23 LUFS): what
    the models get. ``playback`` is filled from the same decode with what listeners hear (not normalised)."""
    speech = load_audio(path, playback)
    if playback is not None:
        playback.finish()
    if frames_for_samples(speech.size) == 0:
        raise InputError(f"audio in {path} is shorter than one frame (0.04 s); give longer speech")
    loudness = integrated_loudness(speech)
    if is_silent_loudness(loudness):
        raise InputError(f"audio in {path} is silent (below -70 LUFS); give a speech track")
    # A second speaker's file that is sound but no speech (music, a tone) would leave a face still
    # without the user knowing why: say so.
    if second and VoiceActivity().speech_fraction(speech) < MIN_SPEECH_FRACTION:
        raise InputError(f"no speech heard in {path} (webrtcvad finds none); give the second speaker's speech")
    speech *= np.float32(loudness_gain(loudness))  # in place
    return speech


def check_speaker_faces(reference: np.ndarray, faces: SpeakerFaces) -> None:
    """The two speakers' faces in the reference, or SpeakerError (too few faces, a bad pick) before any work."""
    from model.lite.face import FaceLandmarks  # mediapipe: only when two people speak

    finder = FaceLandmarks(max_faces=MAX_FACES)
    try:
        found = finder.detect_all(np.ascontiguousarray(reference))
    finally:
        finder.close()
    faces.pick(found, reference.shape[1])
def _build(settings: DubSettings) -> Generator:
    if settings.group is None:
        return build_generator(settings.generator, **settings.generator_options)
    from streaming.group import GroupGenerator
    from streaming.workers import GeneratorFailed, GeneratorSpec

    spec = GeneratorSpec.from_registry(settings.generator, settings.generator_options, fallback=None)
    try:
        return GroupGenerator(spec, settings.group)
    except GeneratorFailed as exc:  # e.g. the weights are missing: the ranks' own one-line error
        raise InputError(str(exc)) from None


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
