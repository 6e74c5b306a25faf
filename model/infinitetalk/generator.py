"""The ``infinitetalk`` generator: one ChunkRequest -> the chunk's new frames, on the official model.

Per chunk: wav2vec2 features of the request's audio (a sliding window: ``audio_margins`` of left context
and lookahead), the official per-frame windows with last-chunk mirror padding when the speech end is
known; the reference frame as CLIP/VAE condition; the context frames (the previous chunk's last output)
as motion latents; the sampler; a streamed decode; colour correction on the device. Differences from the
official loop, all deliberate: each chunk's noise comes from its own seed (``request.seed``) instead of
one stream for the whole video, so a live chunk can be redone or skipped; the context frames arrive as
uint8 (the engine's output), not floats; colour correction targets each chunk's reference (the engine's
choice), not source frame 0; wav2vec2 sees a window, not the whole file.

Two speakers (a request with ``second_audio``, the multi weights): one audio window per speaker, and the
person masks built from the faces detected in the reference (model/lite/face.py), where the official code
takes the boxes from the user.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F

from model.base import AudioMargins, ChunkRequest, ChunkResult
from model.infinitetalk.acceleration import FP8_MODES, fp8_mode, place_transformer
from model.infinitetalk.fp8 import fp8_compute_refusal
from model.infinitetalk.audio_features import SAMPLES_PER_FRAME, chunk_features
from model.infinitetalk.components import Components, load_components
from model.infinitetalk.layout import WeightsLayout
from model.infinitetalk.live_tiers import declare_ladder, scaled_size
from model.infinitetalk.lora import DEFAULT_SCALE, merge_lora
from model.infinitetalk.overlap import Events, SideWorker, emit, hand_over, request_key
from model.infinitetalk.parallel import MODES as PARALLEL_MODES
from model.infinitetalk.parallel import shard_transformer
from model.infinitetalk.person_masks import boxes_from_faces, latent_person_masks
from model.infinitetalk.pipeline import VAE_STRIDE, ChunkConditions, ChunkPipeline, PreparedChunk, SamplingSettings
from model.infinitetalk.sampler import Guidance
from model.infinitetalk.text import DEFAULT_PROMPT, NEGATIVE_PROMPT
from model.errors import InputError
from model.infinitetalk.vae import WanVae
from model.speakers import MAX_FACES, SpeakerError, SpeakerFaces

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
LARGE_AREA = 600_000  # pixels: above it the official 720 setting (shift 11), else the 480 one (shift 7)
MAX_CONTEXT = 32  # output frames kept to recognise the next request's context as this generator's own
MOTION_SOURCES = ("frames", "latents")


def latent_count(frames: int) -> int:
    """Latents of ``frames`` pixel frames under the causal VAE (1 + 4 per latent after the first)."""
    return 1 + (frames - 1) // VAE_STRIDE


@dataclasses.dataclass
class PreparedRequest:
    """A request's prepared stage: its key, render size, conditions, sampling settings and tensors."""

    key: tuple
    size: tuple[int, int]
    conditions: ChunkConditions
    settings: SamplingSettings
    chunk: PreparedChunk

    def tensors(self) -> list[torch.Tensor]:
        """Device tensors the critical stage reads (to hand over from a side stream)."""
        extra = [self.conditions.color_reference, self.conditions.audio]
        return self.chunk.tensors() + [t for t in extra if t is not None]


@dataclasses.dataclass
class HeldChunk:
    """The last chunk this generator made: its x0 latent and last output frames (uint8, output size)."""

    index: int
    size: tuple[int, int]  # render size
    latent: torch.Tensor
    frames: np.ndarray


@dataclasses.dataclass(frozen=True)
class InfiniteTalkOptions:
    weights: str
    device: str | None = None  # default: cuda when available
    dtype: str | None = None  # DiT weights: bfloat16 (cuda default) | float16 | float32 (cpu default)
    speakers: str = "single"
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = NEGATIVE_PROMPT
    steps: int = 40
    shift: float | None = None  # None: 7 (480 buckets) or 11 (720 buckets), the official defaults
    text_guidance: float = 5.0
    audio_guidance: float = 4.0
    apg: bool = False
    sdedit: float | None = None  # SDEdit start level t0 in (0, 1] from the source frames; None: off
    lora: tuple[str, ...] = ()
    lora_scale: tuple[float, ...] = (DEFAULT_SCALE,)
    fp8: bool | str = False  # off | storage (true) | compute (GPUs of capability 8.9+)
    offload: bool = False
    compile: bool = False
    attention: str | None = None
    batch_cfg: bool = False
    teacache: float | None = None  # TeaCache threshold (official: 0.2 when on); None: off
    audio_context: float = 8.0  # seconds of speech before the window the features see
    audio_lookahead: float = 1.0  # seconds after it (adds to live latency)
    color_correction: float = 1.0  # the official CLI default
    # With torch.distributed initialised over more than one rank, the DiT's tokens are split over all
    # ranks (each holds full weights; every rank must generate the same requests): ulysses | ring | hybrid
    # (ulysses falls back to ulysses x ring when the head count does not divide; model/infinitetalk/parallel.py).
    parallel_mode: str = "ulysses"
    vae_device: str | None = None  # the VAE on its own device (e.g. cuda:1 beside the DiT on cuda:0)
    # Where chunk k+1's motion latents come from: "frames" (official: VAE encoding of the decoded, colour-
    # corrected context frames) or "latents" (deviation: chunk k's last generated latents, so chunk k's
    # decode leaves the critical path and runs beside chunk k+1's DiT).
    motion_source: str = "frames"


class InfiniteTalkGenerator:
    name = "infinitetalk"
    applies_color_correction = True

    def __init__(self, components: Components, options: InfiniteTalkOptions, device: torch.device,
                 events: Events | None = None) -> None:
        self.options = options
        self.device = device
        self.vae_device = components.vae.device
        self.components = components
        self.events = events  # observer of stage starts and ends: (name, chunk index), from any thread
        self._side: SideWorker | None = None  # prepares prefetched chunks
        self._side_pipeline: ChunkPipeline | None = None
        self._dit: SideWorker | None = None  # runs a next chunk's DiT ahead (motion_source=latents)
        self._prefetched: dict[int, tuple] = {}  # index -> (request key, future of PreparedRequest, request)
        self._speculation: tuple | None = None
        self._held: HeldChunk | None = None
        self.pipeline = ChunkPipeline(components.transformer, components.vae, components.clip, device)
        self.audio_margins = AudioMargins(_whole_frames(options.audio_context), _whole_frames(options.audio_lookahead))
        self.default_color_correction = options.color_correction
        self._faces = None  # a multi-face finder, made on the first two-speaker request
        self._masks: tuple | None = None  # (reference, picks, size) and its person masks
        self.prompt = components.prompts(options.prompt)
        self.negative = components.prompts(options.negative_prompt)
        # The live tier ladder, with the capacity planner's cost of each tier on this GPU as the scheduler's prior.
        self.tiers, self.prior_costs = declare_ladder(options.steps, options.text_guidance, options.audio_guidance,
                                                      torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                                                      count=_world_size(), dtype="fp8" if fp8_mode(options.fp8) == "compute" else "bf16")

    def settings(self, request: ChunkRequest) -> SamplingSettings:
        o, tier = self.options, request.tier
        area = request.size[0] * request.size[1]
        default_shift = o.shift if o.shift is not None else (11.0 if area > LARGE_AREA else 7.0)
        guidance = Guidance(text_scale=_pick(tier.text_guidance, o.text_guidance),
                            audio_scale=_pick(tier.audio_guidance, o.audio_guidance), apg=o.apg)
        return SamplingSettings(steps=_pick(tier.steps, o.steps), shift=_pick(tier.shift, default_shift),
                                guidance=guidance, sdedit_strength=o.sdedit, replay_motion_noise=True,
                                batch_branches=o.batch_cfg, teacache=o.teacache,
                                teacache_resolution=720 if area > LARGE_AREA else 480)

    def audio_window(self, request: ChunkRequest) -> torch.Tensor:
        """``[persons, F, 5, layers, C]`` wav2vec2 windows for the request's frames, one per speaker."""
        sample_offset = request.start_frame * SAMPLES_PER_FRAME - request.audio_offset
        tracks = [request.audio] if request.second_audio is None else [request.audio, request.second_audio]
        return torch.stack([chunk_features(self.components.audio, track, sample_offset, request.start_frame,
                                           request.num_frames, request.audio_end_frame) for track in tracks])

    def person_masks(self, request: ChunkRequest, size: tuple[int, int]) -> torch.Tensor | None:
        """Latent-resolution person masks for a two-speaker request (None for one speaker), from the faces
        in the reference; the last reference's masks are reused."""
        if request.second_audio is None:
            return None
        if self.options.speakers != "multi":
            raise InputError("two speakers need the multi weights: add --generator-option speakers=multi")
        picks = request.speaker_faces or SpeakerFaces()
        key = (request.reference_frame.tobytes(), picks, size)
        if self._masks is None or self._masks[0] != key:
            if self._faces is None:
                from model.lite.face import FaceLandmarks

                self._faces = FaceLandmarks(max_faces=MAX_FACES)
            found = self._faces.detect_all(np.ascontiguousarray(request.reference_frame))
            try:
                pair = picks.pick(found, request.size[1])
            except SpeakerError as exc:
                raise InputError(str(exc)) from None
            height, width = request.size
            masks = latent_person_masks(height, width, size, (size[0] // 8, size[1] // 8), 2,
                                        boxes_from_faces(list(pair), height, width))
            self._masks = (key, masks)
        return self._masks[1]

    # -- prepare: everything that does not need the previous chunk (may run ahead on the side worker) ----
    def prefetch(self, request: ChunkRequest) -> None:
        """Start preparing ``request`` (normally the next chunk, without its context frames) on the side
        worker; ``generate`` picks the result up when the same request comes (else prepares again)."""
        if self._side is None:
            self._side = SideWorker("infinitetalk-prepare", self.device, self.vae_device)
            # its own VAE instance: diffusers' VAE keeps its causal cache on the module
            self._side_pipeline = self.pipeline.with_vae(WanVae(copy.deepcopy(self.components.vae.model)))
        for index in [i for i in self._prefetched if i < request.index - 1]:
            del self._prefetched[index]
        key = request_key(request, self.options.sdedit is not None)
        self._prefetched[request.index] = (key, self._side.submit(self._prepare, request, self._side_pipeline), request)

    def _prepare(self, request: ChunkRequest, pipeline: ChunkPipeline) -> PreparedRequest:
        height, width = request.size
        if height % 16 or width % 16:
            raise InputError(f"output size {width}x{height} is not a multiple of 16 (the VAE and the DiT patches need it)")
        if (request.num_frames - 1) % 4:
            raise InputError(f"chunk of {request.num_frames} frames: InfiniteTalk needs 4k+1 frames")
        with emit(self.events, "prepare", request.index):
            size = scaled_size(request.size, request.tier.scale)
            reference = self._frames(request.reference_frame[None], size)  # [1, 3, 1, h, w]
            source = None
            if self.options.sdedit is not None and request.source_frames is not None:
                source = self._frames(request.source_frames, size)
            conditions = ChunkConditions(
                reference=reference, audio=self.audio_window(request), prompt=self.prompt,
                negative_prompt=self.negative, color_reference=reference[0, :, 0].permute(1, 2, 0),
                color_strength=request.color_strength, source_frames=source,
                reference_masks=self.person_masks(request, size))
            settings = self.settings(request)
            generator = torch.Generator(device=self.device).manual_seed(request.seed)
            chunk = pipeline.prepare(conditions, settings, generator)
        return PreparedRequest(request_key(request, self.options.sdedit is not None), size, conditions, settings, chunk)

    def _take_prepared(self, request: ChunkRequest) -> PreparedRequest:
        key = request_key(request, self.options.sdedit is not None)
        entry = self._prefetched.pop(request.index, None)
        if entry is not None:
            prepared = entry[1].result()  # wait for it even when unused: one prepare at a time
            if entry[0] == key:
                hand_over(prepared.tensors())
                return prepared
        if self._side is None:
            return self._prepare(request, self.pipeline)
        # on the side worker too: two prepares at once would share wav2vec2's resampling hook and the
        # audio projection's casting hooks
        prepared = self._side.submit(self._prepare, request, self._side_pipeline).result()
        hand_over(prepared.tensors())
        return prepared

    # -- the critical path: motion latents, DiT steps, decode ------------------------------------------
    @torch.no_grad()
    def generate(self, request: ChunkRequest) -> ChunkResult:
        started = time.perf_counter()
        latent, prepared = self._speculated(request)
        if latent is None:
            prepared = self._take_prepared(request)
            motion, first_chunk = self._motion(request, prepared)
            with emit(self.events, "dit", request.index):
                latent = self.pipeline.denoise(prepared.chunk, motion, prepared.settings, first_chunk,
                                               prepared.conditions)
        if self.options.motion_source == "latents":
            self._speculate(request, latent)
        conditions, size = prepared.conditions, prepared.size
        with emit(self.events, "decode", request.index):
            video = self.pipeline.decode(latent, conditions.color_reference, conditions.color_strength)
        video = video[request.num_context:]
        if size != request.size:  # a cheaper tier rendered smaller: back to the output size
            video = F.interpolate(video.permute(0, 3, 1, 2), size=request.size, mode="bilinear",
                                  align_corners=False).permute(0, 2, 3, 1)
        frames = ((video + 1) / 2 * 255).clamp(0, 255).to(torch.uint8).cpu().numpy()  # official truncation
        self._held = HeldChunk(request.index, size, latent, frames[-MAX_CONTEXT:].copy())
        settings = prepared.settings
        info = {"steps": settings.steps, "passes": len(settings.guidance.branches), "shift": settings.shift}
        if size != request.size:
            info["render_size"] = size
        return ChunkResult(frames, time.perf_counter() - started, info)

    def _motion(self, request: ChunkRequest, prepared: PreparedRequest) -> tuple[torch.Tensor, bool]:
        """(motion latents, whether this is a first chunk): the reference's latent without context; with
        ``motion_source=latents`` and an unbroken chain the previous chunk's last generated latents;
        else (official) the VAE encoding of the context frames."""
        if not request.num_context:
            return self.pipeline.first_motion(prepared.chunk), True
        if self.options.motion_source == "latents" and self._continues_held(request, prepared.size):
            return self._held.latent[:, :, -latent_count(request.num_context):], False
        with emit(self.events, "motion", request.index):
            return self.pipeline.motion_latents(self._frames(request.context_frames, prepared.size)), False

    def _continues_held(self, request: ChunkRequest, size: tuple[int, int]) -> bool:
        """Whether ``request``'s context frames are the end of the chunk this generator made last (a live
        session may have filled that slot with a fallback instead)."""
        held = self._held
        return (held is not None and held.index == request.index - 1 and held.size == size
                and len(held.frames) >= request.num_context
                and np.array_equal(held.frames[len(held.frames) - request.num_context:], request.context_frames))

    def _speculate(self, request: ChunkRequest, latent: torch.Tensor) -> None:
        """motion_source=latents: the next chunk needs only this chunk's latents, so when it is prefetched
        its DiT starts now, on the DiT worker, while this chunk decodes."""
        entry = self._prefetched.get(request.index + 1)
        if entry is None:
            return
        overlap = request.start_frame + request.num_frames - entry[2].start_frame  # the next chunk's context
        if not 0 < overlap <= min(request.num_new, MAX_CONTEXT):  # not a context this chunk's output gives
            return
        del self._prefetched[request.index + 1]
        if self._dit is None:
            self._dit = SideWorker("infinitetalk-dit", self.device)
        count = latent_count(overlap)
        motion = latent[:, :, -count:].clone()

        def run() -> tuple[PreparedRequest, torch.Tensor | None]:
            prepared = entry[1].result()
            if prepared.chunk.latent.shape[-2:] != motion.shape[-2:]:  # another render size (tier scale)
                return prepared, None
            with emit(self.events, "dit", request.index + 1):
                return prepared, self.pipeline.denoise(prepared.chunk, motion, prepared.settings, False,
                                                       prepared.conditions)

        self._speculation = (request.index + 1, entry[0], count, self._dit.submit(run))

    def _speculated(self, request: ChunkRequest):
        """(the x0 latent, its preparation) of a DiT started ahead by ``_speculate``, when it fits ``request``."""
        speculation, self._speculation = self._speculation, None
        if speculation is None:
            return None, None
        index, key, count, future = speculation
        prepared, latent = future.result()  # waited for even when unused: one DiT at a time
        if (latent is not None and index == request.index and key == request_key(request, self.options.sdedit is not None)
                and request.num_context and count == latent_count(request.num_context)
                and self._continues_held(request, prepared.size)):
            hand_over([latent, *prepared.tensors()])
            return latent, prepared
        return None, None

    def _frames(self, frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` -> ``[1, 3, N, h, w]`` in [-1, 1] on the device, resized if ``size`` differs."""
        video = _to_signed(frames).to(self.device).permute(0, 3, 1, 2)
        if tuple(video.shape[-2:]) != size:
            video = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
        return video.permute(1, 0, 2, 3)[None]

    def close(self) -> None:
        if self._faces is not None:
            self._faces.close()
        for worker in (self._side, self._dit):
            if worker is not None:
                worker.close()
        self.pipeline = None
        self.components = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


OPTIONAL_FLOATS = ("shift", "sdedit", "teacache")


def _coerce(name: str, value, default):
    """Option values typed on the command line (``--generator-option steps=8``) -> the field's type."""
    try:
        if isinstance(default, tuple):
            items = value.split(",") if isinstance(value, str) else (value if isinstance(value, (list, tuple)) else [value])
            kind = float if default and isinstance(default[0], float) else str
            return tuple(kind(item) for item in items)
        if not isinstance(value, str):
            return value
        if name == "fp8" and value.lower() in FP8_MODES:
            return value.lower()
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            return type(default)(value)
        if name in OPTIONAL_FLOATS:
            return None if value.lower() in ("", "none") else float(value)
        return value
    except ValueError:
        raise InputError(f"bad value {value!r} for infinitetalk option {name}") from None


def _pick(value, default):
    return default if value is None else value


def _whole_frames(seconds: float) -> float:
    """Margins on the 25 fps grid, so the feature window starts on a frame boundary."""
    return round(max(seconds, 0.08) * 25) / 25


def _to_signed(frames: np.ndarray) -> torch.Tensor:
    """uint8 RGB -> float32 in [-1, 1], as the official ``(x/255 - 0.5) * 2``."""
    return (torch.from_numpy(np.array(frames, dtype=np.uint8)) / 255 - 0.5) * 2


def build_generator(**options) -> InfiniteTalkGenerator:
    if not options.get("weights"):
        raise InputError("the infinitetalk generator needs --weights DIR (the official release layout; see README)")
    fields = {f.name for f in dataclasses.fields(InfiniteTalkOptions)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise InputError(f"unknown infinitetalk options {', '.join(unknown)}: accepted are {', '.join(sorted(fields))}")
    defaults = InfiniteTalkOptions(weights="")
    options = {key: _coerce(key, value, getattr(defaults, key)) for key, value in options.items()}
    opts = InfiniteTalkOptions(**options)
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype_name = opts.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    if dtype_name not in DTYPES:
        raise InputError(f"bad dtype {dtype_name!r}: accepted are {', '.join(DTYPES)}")
    if opts.parallel_mode not in PARALLEL_MODES:
        raise InputError(f"bad parallel_mode {opts.parallel_mode!r}: accepted are {', '.join(PARALLEL_MODES)}")
    if opts.sdedit is not None and not 0 < opts.sdedit <= 1:
        raise InputError(f"bad SDEdit level {opts.sdedit}: accepted is a number in (0, 1]")
    if opts.motion_source not in MOTION_SOURCES:
        raise InputError(f"bad motion_source {opts.motion_source!r}: accepted are {', '.join(MOTION_SOURCES)}")
    if fp8_mode(opts.fp8) == "compute" and fp8_compute_refusal(device):  # before loading 40 GB of weights
        raise InputError(fp8_compute_refusal(device))
    vae_device = _vae_device(opts.vae_device, device)
    layout = WeightsLayout.find(opts.weights, opts.speakers)
    components = load_components(layout, device, DTYPES[dtype_name], (opts.prompt, opts.negative_prompt))
    transformer = components.transformer
    if opts.lora:
        scales = opts.lora_scale if len(opts.lora_scale) == len(opts.lora) else opts.lora_scale[:1] * len(opts.lora)
        if not opts.offload:
            transformer.to(device)  # merge on the GPU: seconds instead of minutes
        for path, scale in zip(opts.lora, scales):
            merge_lora(transformer, path, scale)
    place_transformer(transformer, device, opts.fp8, opts.offload, opts.compile, opts.attention)
    if _world_size() > 1:
        try:
            shard_transformer(transformer, opts.parallel_mode)
        except ValueError as exc:
            raise InputError(f"cannot shard the DiT: {exc}") from None
    components.vae.model.to(vae_device)
    return InfiniteTalkGenerator(components, opts, device)


def _world_size() -> int:
    """Ranks the DiT is sharded over (1 outside a process group): the tier priors are for that many GPUs."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_world_size() if distributed else 1


def _vae_device(name: str | None, device: torch.device) -> torch.device:
    """The ``vae_device`` option: a torch device this machine has (default: the DiT's device)."""
    if name is None:
        return device
    try:
        vae_device = torch.device(name)
    except RuntimeError:
        raise InputError(f"bad vae_device {name!r}: accepted is a torch device such as cpu, cuda, cuda:1") from None
    if vae_device.type == "cuda" and (not torch.cuda.is_available()
                                      or (vae_device.index or 0) >= torch.cuda.device_count()):
        raise InputError(f"vae_device {name} is not on this machine ({torch.cuda.device_count()} CUDA devices)")
    return vae_device
