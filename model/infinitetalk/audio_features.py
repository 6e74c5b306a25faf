"""Speech -> per-frame wav2vec2 features at 25 fps (spec §4), whole-file or over a live sliding window.

The official features: Wav2Vec2FeatureExtractor normalisation, the CNN (50 fps), a linear
interpolation (align_corners=True) to ``int(seconds*25)`` frames *before* the feature projection and the
transformer, then the 12 transformer layers' outputs (``hidden_states[1:]``) -> ``[L, 12, 768]``.
A live stream has no whole file: ``embed`` is run on a window that starts on a frame boundary and is a
whole number of frames long, so the interpolation is exactly every second CNN frame and frame f of the
window is absolute frame ``first + f``. What a window lacks against the whole file (left context beyond
the margin, lookahead, the global normalisation and group-norm statistics) is measured in
``bench/bench_infinitetalk_audio_window.py``.

Each chunk frame reads a window of 5 feature frames (offsets -2..+2), clamped to the speech; the last
chunk's features are mirror-padded by ``end - L + 3`` frames first (spec §2.2 step 13).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

AUDIO_RATE = 16_000
FPS = 25
SAMPLES_PER_FRAME = AUDIO_RATE // FPS
WINDOW_OFFSETS = (-2, -1, 0, 1, 2)


def official_frame_count(num_samples: int) -> int:
    """``int(len / 16000 * 25)`` exactly as the official ``get_embedding`` computes it."""
    return int(num_samples / AUDIO_RATE * FPS)


def mirror_padding(end: int, length: int) -> int:
    """Rows the official loop appends (flipped tail) when a chunk ending at ``end`` reaches ``length``."""
    return end - length + 3 if end >= length else 0


def pad_mirrored(embedding: torch.Tensor, rows: int) -> torch.Tensor:
    """Official ``cat([emb, flip(emb[-rows:])])``."""
    if rows <= 0:
        return embedding
    return torch.cat([embedding, torch.flip(embedding[-rows:], dims=[0])])


def window_index(start: int, frames: int, length: int | None) -> torch.Tensor:
    """``[frames, 5]`` feature rows for output frames ``[start, start+frames)``: offsets -2..+2, clamped to
    ``[0, length-1]`` (no upper bound when the length is not known yet, i.e. live)."""
    index = torch.arange(start, start + frames)[:, None] + torch.tensor(WINDOW_OFFSETS)[None]
    return index.clamp(min=0) if length is None else index.clamp(0, length - 1)


def chunk_rows(start: int, frames: int, speech_frames: int | None) -> torch.Tensor:
    """Absolute feature frames a chunk reads, with the official end handling folded in: a chunk that
    reaches the end of the speech (``speech_frames``) reads the mirror-padded features, i.e. row
    ``L + j`` is frame ``L - 1 - j``; earlier chunks clamp at ``L - 1``."""
    if speech_frames is None:
        return window_index(start, frames, None)
    rows = mirror_padding(start + frames, speech_frames)
    padded = speech_frames + min(rows, speech_frames)
    index = window_index(start, frames, padded)
    return torch.where(index >= speech_frames, 2 * speech_frames - 1 - index, index)


class Wav2VecEncoder:
    """chinese-wav2vec2-base (any HF wav2vec2) run the InfiniteTalk way."""

    def __init__(self, model: Wav2Vec2Model, extractor: Wav2Vec2FeatureExtractor) -> None:
        self.model = model.eval().requires_grad_(False)
        self.extractor = extractor

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def input_values(self, samples: np.ndarray) -> np.ndarray:
        values = self.extractor(samples, sampling_rate=AUDIO_RATE).input_values
        return np.squeeze(np.asarray(values, dtype=np.float32))

    def cnn_features(self, samples: np.ndarray) -> torch.Tensor:
        """The CNN features at ~50 fps, ``[1, T50, C]``."""
        values = torch.from_numpy(np.atleast_1d(self.input_values(samples)))[None].to(self.device)
        return self.model.feature_extractor(values.to(self.model.dtype)).transpose(1, 2)

    @torch.no_grad()
    def embed(self, samples: np.ndarray, frames: int | None = None) -> torch.Tensor:
        """``[frames, layers, hidden]`` float32 (frames defaults to the official count for the length).

        The stock forward runs with a hook that resamples the CNN output to ``frames`` (the official
        subclass does exactly this inside its forward), so the library records the hidden states."""
        frames = official_frame_count(len(samples)) if frames is None else frames
        values = torch.from_numpy(np.atleast_1d(self.input_values(samples)))[None].to(self.device)

        def to_frame_rate(module, inputs, output):
            return F.interpolate(output, size=frames, mode="linear", align_corners=True)

        hook = self.model.feature_extractor.register_forward_hook(to_frame_rate)
        try:
            encoded = self.model(values.to(self.model.dtype), output_hidden_states=True)
        finally:
            hook.remove()
        return torch.stack(encoded.hidden_states[1:], dim=2)[0].float()

    def embed_span(self, samples: np.ndarray, sample_offset: int) -> tuple[int, torch.Tensor]:
        """Features of a live window. ``samples[0]`` is absolute sample ``sample_offset``; the window is cut
        to whole frames on the 25 fps grid. Returns (absolute frame of row 0, ``[n, layers, hidden]``)."""
        skip = (-sample_offset) % SAMPLES_PER_FRAME
        first = (sample_offset + skip) // SAMPLES_PER_FRAME
        frames = (len(samples) - skip) // SAMPLES_PER_FRAME
        if frames < 1:
            raise ValueError(f"audio window of {len(samples)} samples holds no whole 25 fps frame")
        span = samples[skip : skip + frames * SAMPLES_PER_FRAME]
        return first, self.embed(span, frames)


def chunk_features(encoder: Wav2VecEncoder, samples: np.ndarray, sample_offset: int, start: int, frames: int,
                   speech_frames: int | None) -> torch.Tensor:
    """What the DiT reads for one chunk: ``[frames, 5, layers, hidden]`` from a live window.

    ``samples[0]`` is absolute sample ``sample_offset``; the window must cover the chunk's frames +-2
    (plus any context). When the speech length is known the window is cut there, as the whole file
    ends there, and the official end handling (clamp / mirror) applies."""
    samples = np.asarray(samples, dtype=np.float32)
    if speech_frames is not None:
        samples = samples[: max(speech_frames * SAMPLES_PER_FRAME - sample_offset, SAMPLES_PER_FRAME)]
    first, features = encoder.embed_span(samples, sample_offset)
    rows = chunk_rows(start, frames, speech_frames)
    return features[(rows - first).clamp(0, features.shape[0] - 1).to(features.device)]
