"""InfiniteTalk's audio projection: per-frame wav2vec2 windows -> 32 audio tokens per latent frame (spec §3.5).

The input holds, for every pixel frame of the chunk, a window of ``audio_window`` (5) feature frames
(offsets -2..+2) of 12 wav2vec2 layers x 768. Latent frame 0 covers pixel frame 0 and keeps its whole
window; latent frame j >= 1 covers pixel frames 4j-3..4j and keeps the left half of the first frame's
window, the centre row of the middle frames and the right half of the last frame's window: 8 rows, i.e.
the contiguous feature frames [4j-5, 4j+2]. Parameter names are the official ones (``audio_proj.*``).
"""

from __future__ import annotations

import torch
from torch import nn


def split_audio_window(audio: torch.Tensor, vae_scale: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """``[P, F, W, layers, C]`` per-frame windows -> (first latent ``[P, 1, W, ...]``,
    later latents ``[P, T-1, W + vae_scale - 1, ...]``) as the official regrouping does."""
    persons, frames, window = audio.shape[:3]
    if (frames - 1) % vae_scale:
        raise ValueError(f"audio covers {frames} frames; expected 1 + {vae_scale}k")
    middle = window // 2
    first = audio[:, :1]
    later = audio[:, 1:].unflatten(1, (-1, vae_scale))  # [P, T-1, vae_scale, W, ...]
    rows = [later[:, :, 0, : middle + 1], later[:, :, 1:-1, middle], later[:, :, -1, middle:]]
    return first, torch.cat(rows, dim=2)


class AudioProjModel(nn.Module):
    """Official ``AudioProjModel``: two input MLP heads (latent frame 0 / later frames), then
    ``context_tokens`` tokens of ``output_dim`` per latent frame, LayerNorm'ed (eps 1e-5)."""

    def __init__(self, window: int = 5, vae_scale: int = 4, layers: int = 12, channels: int = 768,
                 intermediate_dim: int = 512, output_dim: int = 768, context_tokens: int = 32,
                 norm_output: bool = True) -> None:
        super().__init__()
        self.context_tokens = context_tokens
        self.output_dim = output_dim
        self.proj1 = nn.Linear(window * layers * channels, intermediate_dim)
        self.proj1_vf = nn.Linear((window + vae_scale - 1) * layers * channels, intermediate_dim)
        self.proj2 = nn.Linear(intermediate_dim, intermediate_dim)
        self.proj3 = nn.Linear(intermediate_dim, context_tokens * output_dim)
        self.norm = nn.LayerNorm(output_dim) if norm_output else nn.Identity()

    def forward(self, first: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
        """-> ``[P, T, context_tokens, output_dim]``; flatten order per frame is (row, layer, channel)."""
        persons = first.shape[0]
        head = torch.relu(self.proj1(first.flatten(2)))
        tail = torch.relu(self.proj1_vf(later.flatten(2)))
        hidden = torch.relu(self.proj2(torch.cat([head, tail], dim=1)))
        tokens = self.proj3(hidden).unflatten(-1, (self.context_tokens, self.output_dim))
        if isinstance(self.norm, nn.LayerNorm):
            tokens = nn.functional.layer_norm(tokens.float(), self.norm.normalized_shape,
                                              self.norm.weight.float(), self.norm.bias.float(),
                                              self.norm.eps).to(tokens.dtype)
        return tokens.view(persons, -1, self.context_tokens, self.output_dim)
