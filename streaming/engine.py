"""From speech, source and previous output to chunk requests, and from results to output frames.

Shared by offline dubbing and live sessions: the request for chunk k (audio window with the generator's
margins, nearest keyframe as reference, the last output frames as context, the source frames of the
window) and what happens to a result (colour correction against the chunk's reference, then the new
context is taken from the corrected frames, as the official loop does).

With a region source (an output size the generator does not work at, streaming/regionsource.py), each
chunk has a region: the generator sees that region of the source frames at its own size, and ``compose``
puts its frames back into the source-size frames.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from model.base import ChunkRequest, ChunkResult, Generator, Tier
from model.speakers import SpeakerFaces
from streaming.audio import VoiceActivity
from streaming.chunker import Chunk, ChunkPlan, nearest_keyframe
from streaming.color import match_colors_uint8
from streaming.region import Framing, framing_info
from streaming.regionsource import RegionSource
from streaming.source import VideoSource


class AudioBuffer(Protocol):
    def read(self, first: int, last: int) -> np.ndarray:
        """16 kHz samples [first, last) (absolute indices); zeros where there is no audio."""


class AudioTrack:
    """A whole speech track in memory (offline dubbing)."""

    def __init__(self, samples: np.ndarray) -> None:
        self.samples = np.asarray(samples, dtype=np.float32)

    def read(self, first: int, last: int) -> np.ndarray:
        out = np.zeros(max(0, last - first), np.float32)
        lo, hi = max(first, 0), min(last, self.samples.size)
        if hi > lo:
            out[lo - first : hi - first] = self.samples[lo:hi]
        return out


@dataclasses.dataclass
class ChunkReport:
    index: int
    start_frame: int
    new_frames: int
    reference_index: int
    speech_fraction: float
    seconds: float
    info: dict
    second_speech_fraction: float | None = None  # two speakers: speaker 2's share (speaker 1's is above)


class ChunkEngine:
    """Builds each chunk's request and turns its result into output frames, carrying the context."""

    def __init__(self, source: VideoSource, generator: Generator, plan: ChunkPlan = ChunkPlan(),
                 keyframe_interval: int = 72, color_strength: float | None = None, seed: int = 42) -> None:
        self.source = source
        self.generator = generator
        self.plan = plan
        self.keyframe_interval = keyframe_interval
        self.color_strength = generator.default_color_correction if color_strength is None else color_strength
        self.seed = seed
        self._context: np.ndarray | None = None
        self._vad = VoiceActivity()
        # Which face each speaker animates, used by requests that carry a second speech track.
        self.speaker_faces = SpeakerFaces()
        # The region the generator sees of a RegionSource's frames (None: it works on whole frames).
        self._last_framing: Framing | None = None  # of the last chunk requested
        self._framing_index = 0
        self._context_framing: Framing | None = None  # the region the context frames show

    def reference_index(self, chunk: Chunk) -> int:
        return nearest_keyframe(chunk.start_frame, self.keyframe_interval)

    def request(self, index: int, audio: AudioBuffer, audio_end_frame: int | None = None,
                tier: Tier = Tier(), second_audio: AudioBuffer | None = None) -> ChunkRequest:
        """Chunk ``index``'s request; with ``second_audio``, a two-speaker request (speaker 2's speech)."""
        context = self._context if index > 0 else None
        if index > 0 and context is None:
            raise RuntimeError(f"chunk {index} requested before chunk {index - 1} was accepted")
        self._last_framing, self._framing_index = self.framing(index), index
        if context is not None and _moved(self._context_framing, self._last_framing):
            context = self._reframe(context, self.plan.chunk(index).start_frame)
        return self._request(index, audio, audio_end_frame, tier, context, second_audio)

    def prefetch(self, index: int, audio: AudioBuffer, audio_end_frame: int | None = None,
                 tier: Tier = Tier(), second_audio: AudioBuffer | None = None) -> bool:
        """Hand chunk ``index``'s request, without its context frames (they do not exist yet), to a
        generator that prepares ahead (an optional ``prefetch`` method); whether it had one. The
        generator uses the preparation when the same request comes with its context."""
        prefetch = getattr(self.generator, "prefetch", None)
        if prefetch is None:
            return False
        prefetch(self._request(index, audio, audio_end_frame, tier, None, second_audio))
        return True

    def _request(self, index: int, audio: AudioBuffer, audio_end_frame: int | None, tier: Tier,
                 context: np.ndarray | None, second_audio: AudioBuffer | None) -> ChunkRequest:
        chunk = self.plan.chunk(index)
        first, last, offset = self.plan.audio_span(chunk, self.generator.audio_margins)
        reference_index = self.reference_index(chunk)
        reference = self.seen_frames(index, reference_index, 1)[0]
        window = None if self.source.is_still else self.seen_frames(index, chunk.start_frame, chunk.num_frames)
        landmarks = None if window is None else self.shared_landmarks(chunk.start_frame, chunk.num_frames)
        return ChunkRequest(
            index=index, start_frame=chunk.start_frame, num_frames=chunk.num_frames,
            audio=audio.read(first, last), audio_offset=offset,
            reference_frame=reference, reference_index=reference_index,
            context_frames=context, source_frames=window, audio_end_frame=audio_end_frame,
            tier=tier, seed=self.seed + index, color_strength=self.color_strength,
            second_audio=None if second_audio is None else second_audio.read(first, last),
            speaker_faces=None if second_audio is None else self.speaker_faces, source_landmarks=landmarks)

    def shared_landmarks(self, start: int, count: int) -> tuple | None:
        """The window's landmarks from the source's shared analysis (sessions on one source track its
        faces once), when the source has one and the generator animates them; None: it tracks them itself.
        A region's crops differ per session: their faces are the generator's own to track."""
        analysis = getattr(self.source, "analysis", None)
        if analysis is None or not getattr(self.generator, "uses_source_landmarks", False):
            return None
        return tuple(analysis.tracked(i) for i in range(start, start + count))

    def accept(self, request: ChunkRequest, result: ChunkResult) -> np.ndarray:
        """The chunk's new output frames (colour-corrected); keeps the last frames as the next context."""
        frames = np.asarray(result.frames)
        expected = (request.num_new, *request.size, 3)
        if frames.shape != expected or frames.dtype != np.uint8:
            raise RuntimeError(f"{self.generator.name} returned frames {frames.shape} {frames.dtype}, "
                               f"expected {expected} uint8")
        if self.color_strength > 0 and not getattr(self.generator, "applies_color_correction", False):
            frames = match_colors_uint8(frames, request.reference_frame, self.color_strength)
        self.set_context(frames, request.context_frames, request.index)
        return frames

    def set_context(self, new_frames: np.ndarray, previous_context: np.ndarray | None = None,
                    index: int | None = None) -> None:
        """Carry the last output frames into the next chunk (also used when a fallback filled the slot);
        they show chunk ``index``'s region (by default the last chunk requested)."""
        self._context_framing = self._last_framing if index is None else self.framing(index)
        # A copy, never a view: a view would keep the whole chunk's frames (or its source window) alive
        # until the next chunk, after the timeline has kept them in I420 (streaming/i420.py).
        if self.plan.context == 0:
            self._context = new_frames[:0].copy()
            return
        tail = new_frames[-self.plan.context :]
        if len(tail) < self.plan.context and previous_context is not None:
            tail = np.concatenate([previous_context, tail])[-self.plan.context :]
        self._context = np.array(tail, copy=True)

    def release(self, next_index: int) -> None:
        """Free source frames no later chunk needs."""
        self.source.release_before(self.plan.chunk(next_index).start_frame)

    # ---- the generator's region ----------------------------------------------------------------------
    def framing(self, index: int) -> Framing | None:
        """Chunk ``index``'s region (None: the generator works on whole frames)."""
        return self.source.framing(index) if isinstance(self.source, RegionSource) else None

    def seen_frames(self, index: int, start: int, count: int) -> np.ndarray:
        """Source frames ``[start, start + count)`` as the generator sees them in chunk ``index``."""
        if isinstance(self.source, RegionSource):
            return self.source.crops(index, start, count)
        return self.source.frames(start, count)

    def _reframe(self, context: np.ndarray, start: int) -> np.ndarray:
        """The region moved: the context is the source in the new region (the generator's last frames
        showed the old one; a move is rare and is a cut anyway)."""
        return self.source.crops(self._framing_index, start, len(context))

    def compose(self, index: int, first_frame: int, frames: np.ndarray) -> np.ndarray:
        """Output frames ``first_frame...`` at the source's size: chunk ``index``'s generated frames put
        back into their source frames (the frames unchanged when the generator works on whole frames)."""
        if not isinstance(self.source, RegionSource):
            return frames
        return np.stack(self.source.compose(index, first_frame, frames))

    def speech_fraction(self, request: ChunkRequest, speaker: int = 1) -> float:
        """Share of the window's 30 ms frames that webrtcvad hears as speech (of speaker 1 or 2)."""
        return self._vad.speech_fraction(request.window_audio(speaker))

    def report(self, request: ChunkRequest, result: ChunkResult) -> ChunkReport:
        second = None if request.second_audio is None else self.speech_fraction(request, 2)
        return ChunkReport(index=request.index, start_frame=request.start_frame, new_frames=request.num_new,
                           reference_index=request.reference_index, speech_fraction=self.speech_fraction(request),
                           seconds=result.seconds, info={**result.info, **framing_info(self.framing(request.index))},
                           second_speech_fraction=second)


def _moved(old: Framing | None, new: Framing | None) -> bool:
    """Whether the region changed between two chunks (a kept region's flag alone does not count)."""
    if old is None or new is None:
        return False
    return (old.box, old.work) != (new.box, new.work)
