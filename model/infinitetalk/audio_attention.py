"""Per-block audio cross-attention (official ``SingleStreamMutiAttention``, spec §3.6).

Every visual token attends only to the audio tokens of its own latent frame (32 per person). With two
persons, tokens are routed by a 1-D RoPE: from the self-attention map against the first latent frame,
each token is classed person 1 / person 2 / background and gets a position in [0, 4], [20, 24] or 12;
person 1's audio keys sit at 2 and person 2's at 22, so a token listens mostly to "its" speaker.
Parameter names are the official ones (``q_linear``, ``kv_linear``, ``proj``); there is no q/k norm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.models.attention import AttentionModuleMixin
from diffusers.models.attention_dispatch import dispatch_attention_fn
from torch import nn
from torch.nn import functional as F

RangeReducer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

# Official L-RoPE layout (class_range=24, class_interval=4).
CLASS_RANGE = 24
CLASS_INTERVAL = 4
PERSON1_SPAN = (0.0, float(CLASS_INTERVAL))
PERSON2_SPAN = (float(CLASS_RANGE - CLASS_INTERVAL), float(CLASS_RANGE))
BACKGROUND_POSITION = float(CLASS_RANGE // 2)
QUERY_CHUNK = 4096  # query tokens per slice of the reference-attention map (bounds its memory)


def rope_1d(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Interleaved-pair 1-D RoPE in float32 (official ``RotaryPositionalEmbedding1D``).

    ``x`` is ``[..., N, D]``; ``positions`` ``[..., N]`` broadcasts against it (float, may be fractional)."""
    dim = x.shape[-1]
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=x.device)[: dim // 2].float() / dim))
    angles = (positions.float()[..., None] * inv_freq).repeat_interleave(2, dim=-1)
    values = x.float()
    pairs = values.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return (values * angles.cos() + rotated * angles.sin()).type_as(x)


def reference_attention_map(query: torch.Tensor, key: torch.Tensor, token_masks: torch.Tensor,
                            groups: int = 2) -> torch.Tensor:
    """How much each token attends to each reference region (official ``get_attn_map_with_target``).

    ``query``/``key``: self-attention q and k after RoPE, ``[B, L, H, D]``; the reference is the first
    latent frame (``token_masks.shape[1]`` tokens). Heads are split into ``groups`` groups of
    ``H // groups`` heads (an odd last head belongs to none, as in the official slicing); per group,
    softmax over the reference tokens, masked mean per region, mean over the group's heads; then the
    mean over groups. Returns ``[B, regions, L]``.
    """
    batch, length, heads, dim = query.shape
    ref_tokens = token_masks.shape[1]
    ref_key = key[:, :ref_tokens]
    per_group = heads // groups
    masks = token_masks.to(query.dtype)
    total = torch.zeros(batch, masks.shape[0], length, dtype=query.dtype, device=query.device)
    for group in range(groups):
        heads_slice = slice(group * per_group, (group + 1) * per_group)
        k = ref_key[:, :, heads_slice].transpose(1, 2)  # [B, h, R, D]
        for start in range(0, length, QUERY_CHUNK):
            q = query[:, start : start + QUERY_CHUNK, heads_slice] * (1.0 / dim**0.5)
            probs = (q.transpose(1, 2) @ k.transpose(-2, -1)).softmax(-1)  # [B, h, n, R]
            for region, mask in enumerate(masks):
                share = (probs * mask).sum(-1) / mask.sum()  # [B, h, n]
                total[:, region, start : start + q.shape[1]] += share.mean(1)
    return total / groups


def route_positions(attention_map: torch.Tensor, global_range: RangeReducer | None = None) -> torch.Tensor:
    """``[B, 3, L]`` map -> per-token 1-D RoPE positions ``[B, L]`` (person 1 / person 2 / background).

    Each person's row is rescaled by its min and max over all tokens; with a sharded sequence
    ``global_range`` turns this rank's ``[B, 2]`` minima and maxima into the whole sequence's."""
    low, high = attention_map[:, :2].amin(-1), attention_map[:, :2].amax(-1)  # [B, 2]
    if global_range is not None:
        low, high = global_range(low, high)
    low, high = low[..., None], high[..., None]
    span_low = torch.tensor([PERSON1_SPAN[0], PERSON2_SPAN[0]], dtype=low.dtype, device=low.device)[:, None]
    span = torch.tensor([PERSON1_SPAN[1] - PERSON1_SPAN[0], PERSON2_SPAN[1] - PERSON2_SPAN[0]],
                        dtype=low.dtype, device=low.device)[:, None]
    persons = (attention_map[:, :2] - low) / (high - low + 1e-8) * span + span_low  # [B, 2, L]
    background = torch.full_like(persons[:, :1], BACKGROUND_POSITION)
    candidates = torch.cat([persons, background], dim=1)
    return candidates.gather(1, attention_map.argmax(dim=1, keepdim=True))[:, 0]


def audio_key_positions(tokens_per_frame: int, device: torch.device) -> torch.Tensor:
    """First half of a frame's audio tokens (person 1) at 2, second half (person 2) at 22."""
    positions = torch.empty(tokens_per_frame, device=device)
    positions[: tokens_per_frame // 2] = sum(PERSON1_SPAN) / 2
    positions[tokens_per_frame // 2 :] = sum(PERSON2_SPAN) / 2
    return positions


class AudioAttnProcessor:
    """Frame-local attention of visual tokens over audio tokens; follows the model's attention backend."""

    _attention_backend = None
    _parallel_config = None

    def __call__(self, attn: "AudioCrossAttention", hidden_states: torch.Tensor, audio_tokens: torch.Tensor,
                 query_positions: torch.Tensor | None = None, shard=None) -> torch.Tensor:
        batch, length, channels = hidden_states.shape
        query = attn.q_linear(hidden_states)
        if shard is not None:  # a rank's slice, padded out to the whole latent frames it touches
            pad = (shard.pad_before, shard.pad_after)
            query = F.pad(query, (0, 0, *pad))
            audio_tokens = audio_tokens[:, shard.first_frame : shard.first_frame + shard.frames]
            if query_positions is not None:
                query_positions = F.pad(query_positions, pad)
        frames, tokens = audio_tokens.shape[1:3]
        per_frame = query.shape[1] // frames
        query = query.view(batch, frames, per_frame, attn.heads, -1)
        key_value = attn.kv_linear(audio_tokens).view(batch, frames, tokens, 2, attn.heads, -1)
        key, value = key_value.unbind(3)
        if query_positions is not None:
            # RoPE over the frame-flattened sequence, as the official code applies it.
            query = rope_1d(query.transpose(2, 3), query_positions.view(batch, frames, 1, per_frame))
            query = query.transpose(2, 3)
            key_pos = audio_key_positions(tokens, hidden_states.device)
            key = rope_1d(key.transpose(2, 3), key_pos).transpose(2, 3)
        out = dispatch_attention_fn(query.flatten(0, 1), key.flatten(0, 1), value.flatten(0, 1),
                                    backend=self._attention_backend).reshape(batch, frames * per_frame, channels)
        if shard is not None:
            out = out[:, shard.pad_before : shard.pad_before + length]
        return attn.proj(out)


class AudioCrossAttention(nn.Module, AttentionModuleMixin):
    _default_processor_cls = AudioAttnProcessor
    _available_processors = [AudioAttnProcessor]
    _supports_qkv_fusion = False

    def __init__(self, dim: int, heads: int, audio_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(audio_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.set_processor(AudioAttnProcessor())

    def forward(self, hidden_states: torch.Tensor, audio_tokens: torch.Tensor,
                query_positions: torch.Tensor | None = None, shard=None) -> torch.Tensor:
        """``hidden_states [B, T*S, dim]``, ``audio_tokens [B, T, N_a, audio_dim]``, optional per-token
        positions ``[B, T*S]`` (two persons) -> ``[B, T*S, dim]``. With a ``shard`` (parallel.TokenShard)
        ``hidden_states`` and ``query_positions`` hold only that rank's tokens."""
        return self.processor(self, hidden_states, audio_tokens, query_positions, shard)
