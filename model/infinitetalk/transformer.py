"""The InfiniteTalk DiT: diffusers' Wan2.1 I2V transformer plus InfiniteTalk's audio path (spec §3).

Subclasses ``WanTransformer3DModel`` (Wan2.1 I2V exactly when ``in_channels=36, image_dim=1280,
added_kv_proj_dim=inner_dim``) and adds, with the official parameter names, ``audio_proj`` and per block
``norm_x`` + ``audio_cross_attn`` (after the text/image cross-attention, before the FFN). The forward is
re-written because the stock one cannot pass audio; it follows the official numerics: float64 time
sinusoid, fp32 modulation and head, text zero-padded to ``text_len`` before its MLP, the image/text
split at 257 tokens. Audio tokens come from ``encode_audio`` once per chunk and are reused every step.
This copies the structure of two diffusers forwards: diffusers is pinned in pyproject.toml.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import (
    WanTransformer3DModel,
    WanTransformerBlock,
    _get_added_kv_projections,
    _get_qkv_projections,
)
from torch import nn

from model.infinitetalk.audio_attention import AudioCrossAttention, reference_attention_map, route_positions
from model.infinitetalk.audio_proj import AudioProjModel, split_audio_window

CLIP_TOKENS = 257  # 1 CLS + 16x16 patches of CLIP ViT-H/14 at 224 px; the official split is hard-coded


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's 3-D RoPE on interleaved pairs (float64 tables, as the official complex multiply)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    return out.type_as(x)


class SelfAttnProcessor:
    """Wan self-attention; with reference masks it also returns the per-region attention map that
    routes two speakers (computed from the same q/k after RoPE, as the official block does)."""

    _attention_backend = None
    _parallel_config = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None,
                 reference_masks: torch.Tensor | None = None, shard=None):
        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        query = apply_rotary(query, *rotary_emb)
        key = apply_rotary(key, *rotary_emb)
        if shard is None:
            out = dispatch_attention_fn(query, key, value, backend=self._attention_backend,
                                        parallel_config=self._parallel_config)
        else:  # this rank's tokens (model/infinitetalk/parallel.py)
            out = shard.attention(query, key, value, self._attention_backend)
        out = attn.to_out[0](out.flatten(2, 3).type_as(query))
        if reference_masks is None:
            return out
        reference_keys = key if shard is None else shard.reference_keys(key)
        return out, reference_attention_map(query, reference_keys, reference_masks)


class ImageTextCrossAttnProcessor:
    """Wan I2V cross-attention: text and CLIP-image branches summed before the output projection.
    The context is [257 image tokens | text tokens] (diffusers' stock processor assumes 512 text tokens)."""

    _attention_backend = None
    _parallel_config = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        image, text = encoder_hidden_states[:, :CLIP_TOKENS], encoder_hidden_states[:, CLIP_TOKENS:]
        query, key, value = _get_qkv_projections(attn, hidden_states, text)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        key_img, value_img = _get_added_kv_projections(attn, image)
        key_img = attn.norm_added_k(key_img).unflatten(2, (attn.heads, -1))
        value_img = value_img.unflatten(2, (attn.heads, -1))
        out_img = dispatch_attention_fn(query, key_img, value_img, backend=self._attention_backend)
        out = dispatch_attention_fn(query, key, value, backend=self._attention_backend)
        out = out.flatten(2, 3).type_as(query) + out_img.flatten(2, 3).type_as(query)
        return attn.to_out[0](out)


class InfiniteTalkBlock(WanTransformerBlock):
    """Wan block + ``norm_x`` and ``audio_cross_attn`` between the cross-attention and the FFN."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, qk_norm: str, cross_attn_norm: bool, eps: float,
                 added_kv_proj_dim: int, audio_dim: int, norm_input_visual: bool) -> None:
        super().__init__(dim, ffn_dim, num_heads, qk_norm, cross_attn_norm, eps, added_kv_proj_dim)
        self.attn1.set_processor(SelfAttnProcessor())
        self.attn2.set_processor(ImageTextCrossAttnProcessor())
        self.audio_cross_attn = AudioCrossAttention(dim, num_heads, audio_dim)
        self.norm_x = FP32LayerNorm(dim, eps, elementwise_affine=True) if norm_input_visual else nn.Identity()

    def forward(self, hidden_states, encoder_hidden_states, temb, rotary_emb, audio_tokens,
                reference_masks: torch.Tensor | None = None, shard=None):
        shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = (
            self.scale_shift_table + temb.float()).chunk(6, dim=1)
        # 1. self-attention (and, for two speakers, the reference attention map)
        normed = (self.norm1(hidden_states.float()) * (1 + scale_msa) + shift_msa).type_as(hidden_states)
        attn_output = self.attn1(normed, None, None, rotary_emb, reference_masks=reference_masks, shard=shard)
        positions = None
        if reference_masks is not None:
            attn_output, attention_map = attn_output
            positions = route_positions(attention_map, None if shard is None else shard.global_range)
        hidden_states = (hidden_states.float() + attn_output * gate_msa).type_as(hidden_states)
        # 2. text + image cross-attention
        normed = self.norm2(hidden_states.float()).type_as(hidden_states)
        hidden_states = hidden_states + self.attn2(normed, encoder_hidden_states, None, None)
        # 3. audio cross-attention (no gate, no modulation)
        hidden_states = hidden_states + self.audio_cross_attn(self.norm_x(hidden_states), audio_tokens, positions,
                                                              shard)
        # 4. feed-forward
        normed = (self.norm3(hidden_states.float()) * (1 + c_scale_msa) + c_shift_msa).type_as(hidden_states)
        ff_output = self.ffn(normed)
        return (hidden_states.float() + ff_output.float() * c_gate_msa).type_as(hidden_states)


def time_sinusoid(dim: int, timestep: torch.Tensor) -> torch.Tensor:
    """Official ``sinusoidal_embedding_1d``: float64, ``[cos | sin]``."""
    half = dim // 2
    position = timestep.to(torch.float64)
    sinusoid = torch.outer(position, torch.pow(10000, -torch.arange(half, device=position.device).to(position)
                                               .div(half)))
    return torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)


def _linear_fp32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x.float(), layer.weight.float(), bias)


class InfiniteTalkTransformer3DModel(WanTransformer3DModel):
    _no_split_modules = ["InfiniteTalkBlock"]
    _repeated_blocks = ["InfiniteTalkBlock"]
    # The head and the audio LayerNorm are computed in fp32 as the official code does.
    _skip_layerwise_casting_patterns = ["patch_embedding", "condition_embedder", "norm", "proj_out"]
    _sequence_parallel = None  # set by parallel.shard_transformer: this rank runs its slice of the tokens

    @register_to_config
    def __init__(self, patch_size: tuple[int, ...] = (1, 2, 2), num_attention_heads: int = 40,
                 attention_head_dim: int = 128, in_channels: int = 36, out_channels: int = 16, text_dim: int = 4096,
                 freq_dim: int = 256, ffn_dim: int = 13824, num_layers: int = 40, cross_attn_norm: bool = True,
                 qk_norm: str | None = "rms_norm_across_heads", eps: float = 1e-6, image_dim: int | None = 1280,
                 added_kv_proj_dim: int | None = 5120, rope_max_seq_len: int = 1024, text_len: int = 512,
                 audio_window: int = 5, vae_scale: int = 4, audio_layers: int = 12, audio_channels: int = 768,
                 audio_intermediate_dim: int = 512, audio_token_dim: int = 768, audio_tokens_per_frame: int = 32,
                 norm_input_visual: bool = True, norm_output_audio: bool = True) -> None:
        super().__init__(patch_size=patch_size, num_attention_heads=num_attention_heads,
                         attention_head_dim=attention_head_dim, in_channels=in_channels, out_channels=out_channels,
                         text_dim=text_dim, freq_dim=freq_dim, ffn_dim=ffn_dim, num_layers=0,
                         cross_attn_norm=cross_attn_norm, qk_norm=qk_norm, eps=eps, image_dim=image_dim,
                         added_kv_proj_dim=added_kv_proj_dim, rope_max_seq_len=rope_max_seq_len)
        self.register_to_config(num_layers=num_layers)  # the parent registered the 0 used above
        inner_dim = num_attention_heads * attention_head_dim
        self.blocks = nn.ModuleList([
            InfiniteTalkBlock(inner_dim, ffn_dim, num_attention_heads, qk_norm, cross_attn_norm, eps,
                              added_kv_proj_dim, audio_token_dim, norm_input_visual)
            for _ in range(num_layers)])
        self.audio_proj = AudioProjModel(audio_window, vae_scale, audio_layers, audio_channels,
                                         audio_intermediate_dim, audio_token_dim, audio_tokens_per_frame,
                                         norm_output_audio)

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """Per-frame wav2vec2 windows ``[persons, F, W, layers, C]`` -> audio tokens ``[1, T, persons*32, C_a]``
        (person 1's tokens first). Computed once per chunk and passed to every step's forward."""
        weight = self.audio_proj.proj1.weight
        dtype = weight.dtype if weight.dtype.is_floating_point and weight.element_size() > 1 else torch.bfloat16
        first, later = split_audio_window(audio.to(weight.device, dtype), self.config.vae_scale)
        tokens = self.audio_proj(first, later)  # [P, T, 32, C_a]
        return tokens.permute(1, 0, 2, 3).flatten(1, 2)[None]

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_hidden_states_image: torch.Tensor, condition: torch.Tensor, audio_tokens: torch.Tensor,
                reference_masks: torch.Tensor | None = None, return_dict: bool = False,
                teacache=None, teacache_branch: str = "cond"):
        """Velocity prediction ``[B, out, T, H, W]`` (float32).

        ``hidden_states``: noisy latents ``[B, 16, T, H, W]``; ``condition``: ``[B, 20, T, H, W]`` =
        [4 mask channels | 16 reference-latent channels]; ``timestep``: ``[B]`` shifted float timesteps;
        ``encoder_hidden_states``: umT5 tokens ``[B, <=text_len, 4096]`` (zero-padded here);
        ``encoder_hidden_states_image``: CLIP ``[B, 257, 1280]``; ``audio_tokens``: from ``encode_audio``,
        ``[B or 1, T, persons*32, C_a]``; ``reference_masks``: ``[3, H, W]`` (person 1, person 2,
        background) at latent resolution, used only with two persons. ``teacache``: a ``TeaCache`` that may
        skip the block stack for this call (``teacache_branch`` names the guidance branch).
        """
        dtype = self.patch_embedding.weight.dtype
        x = torch.cat([hidden_states, condition], dim=1).to(dtype)
        batch, _, frames, height, width = x.shape
        p_t, p_h, p_w = self.config.patch_size
        grid = (frames // p_t, height // p_h, width // p_w)
        rotary_emb = self.rope(x)
        x = self.patch_embedding(x).flatten(2).transpose(1, 2).contiguous()
        shard = None
        if self._sequence_parallel is not None:  # from here to the head, this rank's tokens only
            shard = self._sequence_parallel.layout(x.shape[1], grid[1] * grid[2])
            x = shard.split(x)
            rotary_emb = tuple(shard.split(table) for table in rotary_emb)

        embedder = self.condition_embedder
        sinusoid = time_sinusoid(self.config.freq_dim, timestep.reshape(-1)).float()
        temb = embedder.time_embedder(sinusoid.to(embedder.time_embedder.linear_1.weight.dtype)).float()
        timestep_proj = _linear_fp32(embedder.time_proj, embedder.act_fn(temb)).unflatten(1, (6, -1))

        text = encoder_hidden_states.to(dtype)
        text = F.pad(text, (0, 0, 0, self.config.text_len - text.shape[1]))
        context = torch.cat([embedder.image_embedder(encoder_hidden_states_image.to(dtype)),
                             embedder.text_embedder(text)], dim=1).to(dtype)
        if context.shape[0] != batch:
            context = context.expand(batch, -1, -1)

        audio_tokens = audio_tokens.to(x.device, dtype)
        if audio_tokens.shape[0] != batch:
            audio_tokens = audio_tokens.expand(batch, -1, -1, -1)
        persons = audio_tokens.shape[2] // self.config.audio_tokens_per_frame
        token_masks = None
        if persons > 1:
            if reference_masks is None:
                raise ValueError("two-person audio needs reference_masks [3, H, W]")
            token_masks = F.interpolate(reference_masks[None].float(), size=grid[1:], mode="nearest")[0]
            token_masks = (token_masks > 0).flatten(1).to(dtype)

        if teacache is not None and not teacache.should_compute(teacache_branch, timestep_proj):
            x = x + teacache.residual(teacache_branch)
        else:
            start = x
            for block in self.blocks:
                x = block(x, context, timestep_proj, rotary_emb, audio_tokens, token_masks, shard)
            if teacache is not None:
                teacache.store(teacache_branch, x - start)

        shift, scale = (self.scale_shift_table.float() + temb.unsqueeze(1)).chunk(2, dim=1)
        x = self.norm_out(x.float()) * (1 + scale) + shift
        x = _linear_fp32(self.proj_out, x)
        if shard is not None:
            x = shard.gather(x)
        x = x.reshape(batch, *grid, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        output = x.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        return (output,) if not return_dict else {"sample": output}


def transformer_config_from_official(official: dict) -> dict:
    """The official ``WanModel`` kwargs (its config.json) -> this class's config. Keys starting with
    ``_`` and the fixed I2V settings are checked, not copied."""
    if official.get("model_type", "i2v") != "i2v":
        raise ValueError(f"model_type {official.get('model_type')!r}: InfiniteTalk needs the i2v model")
    if tuple(official.get("window_size", (-1, -1))) != (-1, -1):
        raise ValueError("only global attention (window_size [-1, -1]) is supported, as in the official model")
    dim, heads = official["dim"], official["num_heads"]
    if dim % heads or (dim // heads) % 2:
        raise ValueError(f"dim {dim} / num_heads {heads} must give an even head dimension")
    if not official.get("qk_norm", True):
        raise ValueError("qk_norm False is not supported (every released Wan/InfiniteTalk model uses it)")
    return dict(
        patch_size=tuple(official.get("patch_size", (1, 2, 2))), num_attention_heads=heads,
        attention_head_dim=dim // heads, in_channels=official.get("in_dim", 36),
        out_channels=official.get("out_dim", 16), text_dim=official.get("text_dim", 4096),
        freq_dim=official.get("freq_dim", 256), ffn_dim=official["ffn_dim"], num_layers=official["num_layers"],
        cross_attn_norm=official.get("cross_attn_norm", True),
        qk_norm="rms_norm_across_heads",
        eps=official.get("eps", 1e-6), image_dim=1280, added_kv_proj_dim=dim, text_len=official.get("text_len", 512),
        audio_window=official.get("audio_window", 5), vae_scale=official.get("vae_scale", 4),
        # wav2vec2 layers x width: hard-coded 12 x 768 in the official model; settable for tiny test models
        audio_layers=official.get("audio_layers", 12), audio_channels=official.get("audio_channels", 768),
        audio_intermediate_dim=official.get("intermediate_dim", 512),
        audio_token_dim=official.get("output_dim", 768), audio_tokens_per_frame=official.get("context_tokens", 32),
        norm_input_visual=official.get("norm_input_visual", True),
        norm_output_audio=official.get("norm_output_audio", True))


def num_latent_frames(pixel_frames: int, vae_scale: int = 4) -> int:
    return 1 + (pixel_frames - 1) // vae_scale

