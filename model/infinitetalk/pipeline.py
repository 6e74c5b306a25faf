"""One chunk of InfiniteTalk, in floats: the official per-chunk loop (spec §2.2, §6), used both by the
generator and by the conformance runner.

For a chunk of F frames (T = 1 + (F-1)/4 latents): noise; a mask marking only latent 0; ``y`` = VAE
latents of [reference, F-1 zero frames] after the mask channels; CLIP tokens of the reference; the
motion latents (the reference's latent for the first chunk, else the VAE encoding of the previous
chunk's last colour-corrected frames) hard-replaced into the latent before every DiT call and after
every step; guidance and Euler steps; a streamed decode; colour correction towards a reference.
Optional SDEdit (paper §3.4, not in the official code) starts from the source latents noised to t0.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from model.infinitetalk.clip import ClipImageEncoder
from model.infinitetalk.color_transfer import match_colors
from model.infinitetalk.sampler import Guidance, Guider, add_noise, euler_step, shifted_timesteps
from model.infinitetalk.teacache import TeaCache
from model.infinitetalk.transformer import InfiniteTalkTransformer3DModel
from model.infinitetalk.vae import WanVae

Trace = Callable[[str, torch.Tensor], None]
LATENT_CHANNELS = 16
VAE_STRIDE = 4


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    steps: int = 40
    shift: float = 7.0
    guidance: Guidance = Guidance()
    # SDEdit start level t0 in (0, 1]: begin at the first scheduled timestep <= 1000*t0, from the source
    # latents noised to it. None: pure noise, as the official code.
    sdedit_strength: float | None = None
    # Draw the official loop's discarded motion noise (1 + steps draws of the motion-latent shape per
    # chunk after the first), so the RNG stream replays the official one exactly.
    replay_motion_noise: bool = True
    # Run the guidance passes as one batch when their audio token counts match (faster on a GPU).
    batch_branches: bool = False
    # TeaCache threshold (official default 0.2 when enabled) and its resolution setting (480 or 720).
    teacache: float | None = None
    teacache_resolution: int = 480


@dataclasses.dataclass
class ChunkConditions:
    reference: torch.Tensor  # [1, 3, 1, H, W] in [-1, 1]
    audio: torch.Tensor  # [persons, F, 5, layers, C] per-frame wav2vec2 windows
    prompt: torch.Tensor  # [L, 4096] umT5 tokens
    negative_prompt: torch.Tensor  # [L', 4096]
    motion_frames: torch.Tensor | None = None  # [1, 3, M, H, W] in [-1, 1]; None for the first chunk
    reference_masks: torch.Tensor | None = None  # [3, h, w] latent-resolution person masks (two persons)
    color_reference: torch.Tensor | None = None  # [H, W, 3] in [-1, 1]
    color_strength: float = 0.0
    source_frames: torch.Tensor | None = None  # [1, 3, F, H, W] in [-1, 1], for SDEdit

    @property
    def num_frames(self) -> int:
        return self.audio.shape[1]


@dataclasses.dataclass
class PreparedChunk:
    """A chunk's inputs that do not depend on the previous chunk, on the DiT's device (``ChunkPipeline.prepare``)."""

    latent: torch.Tensor  # [1, 16, T, h, w] the starting latent: the noise (or the noised source, SDEdit)
    y: torch.Tensor  # [1, 20, T, h, w] mask + VAE latents of [reference, zeros]
    clip_tokens: torch.Tensor  # [1, 257, 1280]
    audio_tokens: torch.Tensor  # [persons, T', 32, C]
    null_audio_tokens: torch.Tensor  # the unconditional (zeros, one person) tokens
    masks: torch.Tensor  # [3, h, w] person masks
    timesteps: torch.Tensor  # [steps + 1] shifted
    start: int  # first step (> 0 with SDEdit)
    generator: torch.Generator  # the chunk's RNG, for the official discarded motion-noise draws

    def tensors(self) -> list[torch.Tensor]:
        return [self.latent, self.y, self.clip_tokens, self.audio_tokens, self.null_audio_tokens, self.masks,
                self.timesteps]


def first_latent_mask(frames: int, height: int, width: int, device=None) -> torch.Tensor:
    """``[1, 4, T, h, w]``: pixel frame 4t+c in channel c of latent t (frame 0 repeated 4 times); only
    latent 0 is marked known, in every chunk (the motion latents are not marked)."""
    mask = torch.zeros(1, frames + 3, height, width, device=device)
    mask[:, :4] = 1
    return mask.view(1, (frames + 3) // VAE_STRIDE, VAE_STRIDE, height, width).transpose(1, 2)


class ChunkPipeline:
    def __init__(self, transformer: InfiniteTalkTransformer3DModel, vae: WanVae, clip: ClipImageEncoder,
                 device: torch.device | str) -> None:
        self.transformer = transformer
        self.vae = vae
        self.clip = clip
        self.device = torch.device(device)
        self._condition_memo: tuple | None = None  # a still source repeats its reference every chunk

    # -- stages (each also used on its own by the conformance runner) --------------------------------
    def condition(self, reference: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(``y [1, 20, T, h, w]`` = mask + VAE latents of [reference, zeros], CLIP tokens ``[1, 257, 1280]``).
        The last result is reused when the same reference comes again (an 81-frame encode saved)."""
        key = (frames, hashlib.sha1(reference.detach().float().cpu().numpy().tobytes()).hexdigest())
        if self._condition_memo is not None and self._condition_memo[0] == key:
            return self._condition_memo[1]
        reference = reference.to(self.device, torch.float32)
        _, _, _, height, width = reference.shape
        video = torch.cat([reference, reference.new_zeros(1, 3, frames - 1, height, width)], dim=2)
        latents = self.vae.encode(video).to(self.device)  # the VAE may live on its own device
        mask = first_latent_mask(frames, latents.shape[-2], latents.shape[-1], self.device)
        result = torch.cat([mask, latents], dim=1), self.clip(reference)
        self._condition_memo = (key, result)
        return result

    def motion_latents(self, frames: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(frames.to(self.device, torch.float32)).to(self.device)

    def with_vae(self, vae: WanVae) -> "ChunkPipeline":
        """A sibling sharing the DiT and CLIP but with another VAE instance (the diffusers VAE keeps its
        causal cache on the module, so two threads cannot share one)."""
        return ChunkPipeline(self.transformer, vae, self.clip, self.device)

    def audio_tokens(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(audio tokens, the unconditional tokens: zeros for one person, as the official CFG builds them)."""
        audio = audio.to(self.device)
        with torch.no_grad():
            return self.transformer.encode_audio(audio), self.transformer.encode_audio(torch.zeros_like(audio[-1:]))

    @torch.no_grad()
    def predict(self, latent: torch.Tensor, t: torch.Tensor, branches: tuple[str, ...], y: torch.Tensor,
                clip_tokens: torch.Tensor, texts: dict[str, torch.Tensor], audio: dict[str, torch.Tensor],
                reference_masks: torch.Tensor | None, batch: bool = False, teacache=None) -> dict[str, torch.Tensor]:
        """The DiT velocity for each guidance branch. ``texts``/``audio`` map 'cond'/'null' to the inputs."""
        plan = {"cond": ("cond", "cond"), "drop_text": ("null", "cond"), "uncond": ("null", "null"),
                "drop_audio": ("cond", "null")}
        timestep = t.reshape(1).to(self.device)
        text_len = self.transformer.config.text_len

        def run(names: tuple[str, ...]) -> list[torch.Tensor]:
            text = torch.cat([F.pad(texts[plan[n][0]], (0, 0, 0, text_len - texts[plan[n][0]].shape[0]))[None]
                              for n in names]).to(self.device)
            tokens = torch.cat([audio[plan[n][1]] for n in names])
            size = len(names)
            out = self.transformer(latent.expand(size, -1, -1, -1, -1), timestep.expand(size), text,
                                   clip_tokens.expand(size, -1, -1), y.expand(size, -1, -1, -1, -1), tokens,
                                   reference_masks, teacache=teacache, teacache_branch=names[0])[0]
            return list(out.float().split(1))

        if not batch or teacache is not None:
            return {name: run((name,))[0] for name in branches}
        groups: dict[int, list[str]] = {}
        for name in branches:
            groups.setdefault(audio[plan[name][1]].shape[2], []).append(name)
        result = {}
        for names in groups.values():
            result.update(zip(names, run(tuple(names))))
        return {name: result[name] for name in branches}

    # -- the chunk: a prepare stage (nothing from the previous chunk) and a critical stage -----------
    @torch.no_grad()
    def prepare(self, inputs: ChunkConditions, settings: SamplingSettings, generator: torch.Generator,
                trace: Trace | None = None) -> PreparedChunk:
        """Everything of a chunk that does not depend on the previous chunk's output: the noise, the
        reference conditions (VAE + CLIP), the audio tokens, the person masks and the SDEdit start. Its
        ``motion_frames`` are ignored, so it can run for chunk k+1 while chunk k is still being made."""
        record = trace or (lambda name, value: None)
        frames = inputs.num_frames
        _, _, _, height, width = inputs.reference.shape
        shape = (LATENT_CHANNELS, 1 + (frames - 1) // VAE_STRIDE, height // 8, width // 8)
        noise = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
        record("noise", noise)
        noise = noise.to(self.device, copy=True)[None]
        y, clip_tokens = self.condition(inputs.reference, frames)
        record("y", y)
        record("clip_fea", clip_tokens)
        tokens, null_tokens = self.audio_tokens(inputs.audio)
        masks = inputs.reference_masks
        if masks is None:
            masks = torch.ones(3, shape[2], shape[3])
        timesteps = shifted_timesteps(settings.steps, settings.shift).to(self.device)
        start, latent = 0, noise
        if settings.sdedit_strength is not None and inputs.source_frames is not None:
            start = int((timesteps[:-1] > settings.sdedit_strength * 1000 + 1e-3).sum().clamp(max=settings.steps - 1))
            source = self.vae.encode(inputs.source_frames.to(self.vae.device)).to(self.device)
            latent = add_noise(source, noise, timesteps[start])
        return PreparedChunk(latent, y, clip_tokens, tokens, null_tokens, masks.to(self.device), timesteps, start,
                             generator)

    def first_motion(self, prepared: PreparedChunk) -> torch.Tensor:
        """The first chunk's motion latent: the reference's own latent."""
        return prepared.y[:, 4:, :1]

    @torch.no_grad()
    def denoise(self, prepared: PreparedChunk, motion: torch.Tensor, settings: SamplingSettings,
                first_chunk: bool, inputs: ChunkConditions, trace: Trace | None = None) -> torch.Tensor:
        """The sampler: the motion latents hard-replaced before every DiT call and after every step; returns
        the x0 latent ``[1, 16, T, h, w]``. ``prepared`` is consumed (its latent is updated in place)."""
        record = trace or (lambda name, value: None)
        record("motion_latent", motion[0])
        count = motion.shape[2]
        generator = prepared.generator

        def motion_noise() -> None:  # official add_noise draws; the result is overwritten by `motion`
            if settings.replay_motion_noise and not first_chunk:
                torch.randn(motion.shape[1:], generator=generator, device=generator.device)

        timesteps, latent, y, clip_tokens = prepared.timesteps, prepared.latent, prepared.y, prepared.clip_tokens
        guider = Guider(settings.guidance)
        cache = None if settings.teacache is None else TeaCache(settings.teacache, settings.teacache_resolution)
        texts = {"cond": inputs.prompt, "null": inputs.negative_prompt}
        audio = {"cond": prepared.audio_tokens, "null": prepared.null_audio_tokens}
        motion_noise()
        for step in range(prepared.start, settings.steps):
            latent[:, :, :count] = motion
            record(f"step{step}.x_in", latent[0])
            out = self.predict(latent, timesteps[step], settings.guidance.branches, y, clip_tokens, texts, audio,
                               prepared.masks, settings.batch_branches, cache)
            if cache is not None:
                cache.next_step()
            for name, value in out.items():
                record(f"step{step}.{name}.out", value)
            latent = euler_step(latent, guider(out), timesteps[step], timesteps[step + 1])
            motion_noise()
            latent[:, :, :count] = motion
        record("x0_latent", latent[0])
        return latent

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, color_reference: torch.Tensor | None, color_strength: float,
               trace: Trace | None = None) -> torch.Tensor:
        """The streamed decode and the colour correction: frames ``[F, H, W, 3]`` in [-1, 1], on the VAE's
        device."""
        pieces, raw = [], []
        for piece in self.vae.decode_stream(latent):
            piece = piece[0].permute(1, 2, 3, 0)  # [n, H, W, 3]
            raw.append(piece)
            if color_reference is not None and color_strength > 0:
                piece = match_colors(piece, color_reference.to(piece.device), color_strength)
            pieces.append(piece)
        video = torch.cat(pieces)
        if trace is not None:
            trace("decoded", torch.cat(raw).permute(3, 0, 1, 2)[None])
            trace("color_corrected", video.permute(3, 0, 1, 2)[None])
        return video

    @torch.no_grad()
    def generate(self, inputs: ChunkConditions, settings: SamplingSettings, generator: torch.Generator,
                 trace: Trace | None = None) -> torch.Tensor:
        """Frames ``[F, H, W, 3]`` in [-1, 1] (decoded, clamped, colour-corrected): prepare, then the critical
        stage (motion latents from the context frames, the DiT steps, the decode)."""
        prepared = self.prepare(inputs, settings, generator, trace)
        first_chunk = inputs.motion_frames is None
        motion = self.first_motion(prepared) if first_chunk else self.motion_latents(inputs.motion_frames)
        latent = self.denoise(prepared, motion, settings, first_chunk, inputs, trace)
        return self.decode(latent, inputs.color_reference, inputs.color_strength, trace)
