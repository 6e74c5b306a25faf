"""The one interface every generator implements, and the data that crosses it.

A generator turns one chunk request (audio for the window, a reference frame, the previous chunk's last
output frames) into the chunk's new frames. It is blocking and owns no timing policy: deadlines, tiers and
fallbacks belong to the caller (streaming/). Kept free of torch so that streaming/ and server/ can import it.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import numpy as np

from model.speakers import SpeakerFaces

AUDIO_RATE = 16_000
FPS = 25
SAMPLES_PER_FRAME = AUDIO_RATE // FPS  # 640


@dataclasses.dataclass(frozen=True)
class Tier:
    """A quality/cost setting chosen per chunk. ``None`` fields mean "the generator's default"."""

    name: str = "full"
    steps: int | None = None
    text_guidance: float | None = None
    audio_guidance: float | None = None
    shift: float | None = None
    # 0..1: fraction of the generator's full resolution (the scheduler's cheapest video knob).
    scale: float = 1.0


@dataclasses.dataclass
class ChunkRequest:
    """Everything a generator needs for one chunk.

    Frame indices are output frames at 25 fps. The window covers output frames
    ``[start_frame, start_frame + num_frames)``; its first ``len(context_frames)`` frames are already
    generated (the previous chunk's last output frames) and the rest are new.
    """

    index: int
    start_frame: int
    num_frames: int
    # 16 kHz mono float32 audio. ``audio[audio_offset]`` is the sample at the window's first frame
    # (``start_frame / 25`` s); samples before it are left context, after the window's end lookahead.
    # Past the end of the stream the audio is zeros.
    audio: np.ndarray
    audio_offset: int
    # The reference (nearest source keyframe) at output size, RGB uint8 [H, W, 3], and its source index.
    reference_frame: np.ndarray
    reference_index: int
    # The last output frames of the previous chunk, RGB uint8 [C, H, W, 3]; None for the first chunk.
    context_frames: np.ndarray | None = None
    # The source frames of the whole window at output size, RGB uint8 [num_frames, H, W, 3], when the
    # caller has them (video sources; generators that follow the source's motion use them).
    source_frames: np.ndarray | None = None
    # Output frame index where the speech ends, when the stream has ended inside or before this window.
    audio_end_frame: int | None = None
    tier: Tier = dataclasses.field(default_factory=Tier)
    seed: int = 42
    # Colour-correction strength towards the reference (0..1). The engine applies it to the result unless
    # the generator says it applies it itself (``applies_color_correction``, e.g. on the GPU).
    color_strength: float = 0.0
    # Two speakers: the second speaker's speech over the same samples as ``audio`` (same offset), and which
    # face each speaker animates. None: one speaker (the generator's own choice of face).
    second_audio: np.ndarray | None = None
    speaker_faces: SpeakerFaces | None = None
    # Face landmarks of each window frame ([478, 2] pixels, or None: no face), when the source's shared
    # analysis (model/lite/analysis.py) has them and the generator uses them (``uses_source_landmarks``):
    # computed once per source frame for every session on the source.
    source_landmarks: tuple | None = None

    @property
    def speakers(self) -> int:
        return 1 if self.second_audio is None else 2

    @property
    def size(self) -> tuple[int, int]:
        """Output (height, width)."""
        return self.reference_frame.shape[0], self.reference_frame.shape[1]

    @property
    def num_context(self) -> int:
        return 0 if self.context_frames is None else len(self.context_frames)

    @property
    def num_new(self) -> int:
        return self.num_frames - self.num_context

    def window_audio(self, speaker: int = 1) -> np.ndarray:
        """The audio of exactly the window's frames (no margins), of speaker 1 or 2."""
        length = self.num_frames * SAMPLES_PER_FRAME
        audio = self.audio if speaker == 1 else self.second_audio
        return audio[self.audio_offset : self.audio_offset + length]


@dataclasses.dataclass
class ChunkResult:
    """The chunk's new frames (RGB uint8 [num_new, H, W, 3]) and what they cost."""

    frames: np.ndarray
    seconds: float = 0.0
    # Generator-specific facts worth reporting (e.g. {"face_found": False}).
    info: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class AudioMargins:
    """Audio a generator needs around the window, in seconds: left context and lookahead."""

    left: float = 0.0
    right: float = 0.0


@runtime_checkable
class Generator(Protocol):
    """A chunk generator. ``generate`` blocks; it may be called from a worker thread or process."""

    name: str
    # Audio the generator reads beyond the window; the chunker supplies it.
    audio_margins: AudioMargins
    # Default colour-correction strength for this generator (the CLI may override it), and whether the
    # generator applies it itself (otherwise the engine does, on the CPU).
    default_color_correction: float
    applies_color_correction: bool

    def generate(self, request: ChunkRequest) -> ChunkResult: ...

    def close(self) -> None: ...
