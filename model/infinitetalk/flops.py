"""FLOPs of one InfiniteTalk chunk, stage by stage, from the shapes alone (no torch).

A FLOP here is what ``torch.utils.flop_counter.FlopCounterMode`` counts: 2 x the multiply-accumulates of
every matmul, convolution and attention product (QK^T and PV); norms, activations, RoPE and other
element-wise work are not counted. Each formula walks the module structure this project runs
(model/infinitetalk/transformer.py on diffusers' Wan blocks, diffusers' AutoencoderKLWan with its causal
frame-by-frame cache, transformers' CLIPVisionModel and Wav2Vec2Model) and is checked against
FlopCounterMode on those modules in tests/test_planner_flops.py, exactly.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DitConfig:
    """The InfiniteTalk DiT's shape (the defaults are the 14B model's; names as the transformer's config)."""

    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_attention_heads: int = 40
    attention_head_dim: int = 128
    in_channels: int = 36
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    ffn_dim: int = 13824
    num_layers: int = 40
    image_dim: int = 1280
    text_len: int = 512
    clip_tokens: int = 257
    audio_window: int = 5
    vae_scale: int = 4
    audio_layers: int = 12
    audio_channels: int = 768
    audio_intermediate_dim: int = 512
    audio_token_dim: int = 768
    audio_tokens_per_frame: int = 32

    @classmethod
    def of(cls, config) -> "DitConfig":
        """From the transformer's config (a dict or diffusers' FrozenDict); unknown keys are ignored."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: config[k] for k in config if k in fields}
        if "patch_size" in values:
            values["patch_size"] = tuple(values["patch_size"])
        return cls(**values)

    @property
    def dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


@dataclasses.dataclass(frozen=True)
class DitFlops:
    """One DiT forward (one guidance pass), split by what the planner treats differently."""

    linear: int  # projections over the video tokens: split N ways by sequence parallelism, fp8-able
    attention: int  # attention products: split N ways, stay bf16 (fp8 compute covers the linears)
    replicated: int  # context/time embeddings and the context K/V: every rank computes them whole
    tokens: int  # video tokens of the window

    @property
    def total(self) -> int:
        return self.linear + self.attention + self.replicated


def latent_frames(frames: int, vae_scale: int = 4) -> int:
    return 1 + (frames - 1) // vae_scale


def dit_tokens(config: DitConfig, frames: int, height: int, width: int) -> tuple[int, int]:
    """(latent frames, video tokens per latent frame) for a window of pixel ``frames`` at ``height x width``."""
    p_t, p_h, p_w = config.patch_size
    if height % (8 * p_h) or width % (8 * p_w):
        raise ValueError(f"size {width}x{height}: each side must be a multiple of {8 * p_h}")
    return latent_frames(frames, config.vae_scale) // p_t, (height // 8 // p_h) * (width // 8 // p_w)


def dit_flops(config: DitConfig, frames: int, height: int, width: int, persons: int = 1) -> DitFlops:
    """FLOPs of ``InfiniteTalkTransformer3DModel.forward`` for one window (batch 1, one pass)."""
    c, d = config, config.dim
    t, per_frame = dit_tokens(c, frames, height, width)
    s = t * per_frame
    audio_tokens = t * c.audio_tokens_per_frame * persons
    context = c.text_len + c.clip_tokens
    per_block_linear = (
        4 * s * d * d  # self-attention q, k, v, o
        + 2 * s * d * d  # cross-attention q, o
        + 2 * s * d * d  # audio cross-attention q_linear, proj
        + 2 * s * d * c.ffn_dim)  # feed-forward
    per_block_attention = (
        2 * s * s * d  # self-attention
        + 2 * s * context * d  # text and image cross-attention
        + 2 * s * c.audio_tokens_per_frame * persons * d)  # audio: frame-local
    if persons > 1:  # the reference attention map routing two speakers: q against frame 0's keys
        heads = 2 * (c.num_attention_heads // 2)
        per_block_attention += heads * c.attention_head_dim * s * per_frame
    per_block_replicated = (
        2 * context * d * d  # text k, v and image k, v
        + audio_tokens * c.audio_token_dim * 2 * d)  # audio kv_linear
    embeddings = (
        s * d * c.in_channels * c.patch_size[0] * c.patch_size[1] * c.patch_size[2]  # patch embedding
        + s * d * c.out_channels * c.patch_size[0] * c.patch_size[1] * c.patch_size[2])  # head
    replicated = (
        c.freq_dim * d + d * d + 6 * d * d  # time embedding MLP and projection (one timestep)
        + c.clip_tokens * (c.image_dim * c.image_dim + c.image_dim * d)  # image embedding MLP
        + c.text_len * (c.text_dim * d + d * d))  # text embedding MLP
    return DitFlops(linear=2 * (c.num_layers * per_block_linear + embeddings),
                    attention=2 * c.num_layers * per_block_attention,
                    replicated=2 * (c.num_layers * per_block_replicated + replicated), tokens=s)


def audio_proj_flops(config: DitConfig, frames: int, persons: int = 1) -> int:
    """``encode_audio`` (once per chunk, per audio variant): the audio projection MLP."""
    c = config
    t = latent_frames(frames, c.vae_scale)
    features = c.audio_layers * c.audio_channels
    later_rows = c.audio_window + c.vae_scale - 1
    macs = (features * c.audio_window * c.audio_intermediate_dim
            + (t - 1) * features * later_rows * c.audio_intermediate_dim
            + t * c.audio_intermediate_dim * c.audio_intermediate_dim
            + t * c.audio_intermediate_dim * c.audio_tokens_per_frame * c.audio_token_dim)
    return 2 * persons * macs


def dit_parameters(config: DitConfig) -> int:
    """Parameters of the DiT (weights, biases, norms, modulation tables)."""
    c, d = config, config.dim
    patch = c.patch_size[0] * c.patch_size[1] * c.patch_size[2]
    linear = lambda i, o: i * o + o  # noqa: E731
    block = (4 * linear(d, d) + 2 * d  # self-attention + q/k RMSNorm
             + 4 * linear(d, d) + 2 * linear(d, d) + 3 * d  # cross-attention (+ image k, v) + norms
             + 2 * d  # norm2 (affine; diffusers' names)
             + linear(d, c.ffn_dim) + linear(c.ffn_dim, d) + 6 * d  # FFN + modulation table
             + 2 * linear(d, d) + linear(c.audio_token_dim, 2 * d) + 2 * d)  # audio attention + norm_x
    features = c.audio_layers * c.audio_channels
    audio_proj = (linear(features * c.audio_window, c.audio_intermediate_dim)
                  + linear(features * (c.audio_window + c.vae_scale - 1), c.audio_intermediate_dim)
                  + linear(c.audio_intermediate_dim, c.audio_intermediate_dim)
                  + linear(c.audio_intermediate_dim, c.audio_tokens_per_frame * c.audio_token_dim)
                  + 2 * c.audio_token_dim)
    embeddings = (c.in_channels * patch * d + d  # patch embedding
                  + linear(c.freq_dim, d) + linear(d, d) + linear(d, 6 * d)  # time
                  + linear(c.text_dim, d) + linear(d, d)  # text
                  + 2 * c.image_dim + linear(c.image_dim, c.image_dim) + linear(c.image_dim, d) + 2 * d  # image
                  + 2 * d + linear(d, c.out_channels * patch))  # head modulation + projection
    return c.num_layers * block + audio_proj + embeddings


# ---- the Wan2.1 VAE (diffusers' AutoencoderKLWan, not residual) -------------------------------------------
@dataclasses.dataclass(frozen=True)
class VaeConfig:
    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temperal_downsample: tuple[bool, ...] = (False, True, True)

    @classmethod
    def of(cls, config) -> "VaeConfig":
        return cls(config["base_dim"], config["z_dim"], tuple(config["dim_mult"]), config["num_res_blocks"],
                   tuple(config["temperal_downsample"]))


@dataclasses.dataclass
class _Tally:
    """MACs of the convolutions and attention walked so far, and the causal cache they hold (elements)."""

    macs: int = 0
    cache: int = 0
    peak: int = 0  # largest single activation (elements)

    def conv(self, c_in: int, c_out: int, kernel: int, frames: int, h: int, w: int, cached: bool = True) -> None:
        self.macs += c_in * c_out * kernel * frames * h * w
        if cached:
            self.cache += c_in * 2 * h * w
        self.peak = max(self.peak, c_out * frames * h * w, c_in * frames * h * w)

    def resblock(self, c_in: int, c_out: int, frames: int, h: int, w: int) -> None:
        if c_in != c_out:
            self.conv(c_in, c_out, 1, frames, h, w, cached=False)  # shortcut
        self.conv(c_in, c_out, 27, frames, h, w)
        self.conv(c_out, c_out, 27, frames, h, w)

    def attention(self, dim: int, frames: int, h: int, w: int) -> None:
        tokens = h * w
        self.macs += frames * (dim * 3 * dim * tokens + 2 * tokens * tokens * dim + dim * dim * tokens)
        self.peak = max(self.peak, frames * tokens * tokens)


def _decode_latent(c: VaeConfig, tally: _Tally, first: bool, h: int, w: int) -> int:
    """One latent frame through ``WanDecoder3d`` (the streamed decode); returns the pixel frames out."""
    dims = [c.base_dim * u for u in (c.dim_mult[-1], *c.dim_mult[::-1])]
    upsample_t = c.temperal_downsample[::-1]
    frames = 1
    tally.conv(c.z_dim, dims[0], 27, frames, h, w)
    tally.resblock(dims[0], dims[0], frames, h, w)
    tally.attention(dims[0], frames, h, w)
    tally.resblock(dims[0], dims[0], frames, h, w)
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
        in_dim = in_dim // 2 if i > 0 else in_dim
        for _ in range(c.num_res_blocks + 1):
            tally.resblock(in_dim, out_dim, frames, h, w)
            in_dim = out_dim
        if i == len(c.dim_mult) - 1:
            continue
        if upsample_t[i] and not first:  # the first latent frame skips the time convolution
            tally.conv(out_dim, 2 * out_dim, 3, frames, h, w)
            frames *= 2
        h, w = 2 * h, 2 * w
        tally.conv(out_dim, out_dim // 2, 9, frames, h, w, cached=False)
    tally.conv(dims[-1], 3, 27, frames, h, w)
    return frames


def vae_decode_flops(config: VaeConfig, frames: int, height: int, width: int) -> int:
    """``WanVae.decode`` of a window of ``frames`` pixel frames (post-quant conv + the streamed decoder)."""
    t, h, w = latent_frames(frames), height // 8, width // 8
    tally = _Tally(macs=config.z_dim * config.z_dim * t * h * w)
    for index in range(t):
        _decode_latent(config, tally, index == 0, h, w)
    return 2 * tally.macs


def vae_decode_cache_elements(config: VaeConfig, height: int, width: int) -> tuple[int, int]:
    """(causal-cache elements held across latent frames, largest single activation) of the decode."""
    tally = _Tally()
    _decode_latent(config, tally, False, height // 8, width // 8)
    return tally.cache, tally.peak


def vae_encode_flops(config: VaeConfig, frames: int, height: int, width: int) -> int:
    """``WanVae.encode`` of ``frames`` pixel frames: chunks of 1, 4, 4, ... frames with the causal cache."""
    c = config
    dims = [c.base_dim * u for u in (1, *c.dim_mult)]
    tally = _Tally()
    chunks = [1] + [4] * ((frames - 1) // 4)
    for index, chunk in enumerate(chunks):
        n, h, w = chunk, height, width
        tally.conv(3, dims[0], 27, n, h, w)
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(c.num_res_blocks):
                tally.resblock(in_dim, out_dim, n, h, w)
                in_dim = out_dim
            if i == len(c.dim_mult) - 1:
                continue
            h, w = h // 2, w // 2
            tally.conv(out_dim, out_dim, 9, n, h, w, cached=False)
            if c.temperal_downsample[i] and index > 0:  # stride-2 time conv over [last cached frame, chunk]
                n = (n + 1 - 3) // 2 + 1
                tally.conv(out_dim, out_dim, 3, n, h, w, cached=False)
        tally.resblock(dims[-1], dims[-1], n, h, w)
        tally.attention(dims[-1], n, h, w)
        tally.resblock(dims[-1], dims[-1], n, h, w)
        tally.conv(dims[-1], 2 * c.z_dim, 27, n, h, w)
    t = latent_frames(frames)
    tally.macs += (2 * c.z_dim) ** 2 * t * (height // 8) * (width // 8)  # quant conv
    return 2 * tally.macs


# ---- the encoders -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """The CLIP vision tower as run (``num_hidden_layers`` = the official L - 1 blocks that run)."""

    hidden_size: int = 1280
    intermediate_size: int = 5120
    num_hidden_layers: int = 31
    image_size: int = 224
    patch_size: int = 14

    @classmethod
    def of(cls, config) -> "ClipConfig":
        return cls(config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.image_size,
                   config.patch_size)


def clip_flops(config: ClipConfig) -> int:
    """``CLIPVisionModel`` on one 224x224 reference image."""
    c, d = config, config.hidden_size
    patches = (c.image_size // c.patch_size) ** 2
    tokens = patches + 1
    macs = d * 3 * c.patch_size * c.patch_size * patches
    macs += c.num_hidden_layers * (4 * tokens * d * d + 2 * tokens * tokens * d + 2 * tokens * d * c.intermediate_size)
    return 2 * macs


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config:
    """The wav2vec2-base shape (transformers' defaults; chinese-wav2vec2-base is this architecture)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    intermediate_size: int = 3072
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16

    @classmethod
    def of(cls, config) -> "Wav2Vec2Config":
        return cls(config.hidden_size, config.num_hidden_layers, config.intermediate_size, tuple(config.conv_dim),
                   tuple(config.conv_kernel), tuple(config.conv_stride), config.num_conv_pos_embeddings,
                   config.num_conv_pos_embedding_groups)


def wav2vec2_flops(config: Wav2Vec2Config, samples: int, frames: int) -> int:
    """``Wav2VecEncoder.embed``: the CNN over ``samples`` at 16 kHz, resampled to ``frames`` (25 fps), then
    the feature projection, the positional convolution and the transformer layers over ``frames``."""
    c, d = config, config.hidden_size
    macs, length, channels = 0, samples, 1
    for out, kernel, stride in zip(c.conv_dim, c.conv_kernel, c.conv_stride):
        length = (length - kernel) // stride + 1
        macs += channels * out * kernel * length
        channels = out
    macs += frames * channels * d  # feature projection
    pos_kernel = c.num_conv_pos_embeddings
    pos_length = frames + 2 * (pos_kernel // 2) - pos_kernel + 1
    macs += d * (d // c.num_conv_pos_embedding_groups) * pos_kernel * pos_length
    macs += c.num_hidden_layers * (4 * frames * d * d + 2 * frames * frames * d + 2 * frames * d * c.intermediate_size)
    return 2 * macs
