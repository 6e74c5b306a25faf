"""The capacity planner: what one InfiniteTalk chunk costs on given GPUs, from its FLOPs.

Time of a stage = its FLOPs / (GPU peak x efficiency). The efficiency per stage comes from the
calibration file the GPU benchmark writes (``model/calibration.py``: efficiency = FLOPs / (measured
seconds x peak) on the GPU it names), or from ``DEFAULT_EFFICIENCY`` before one exists.

The critical path of a chunk (what ``chunk_seconds`` adds up):
- the DiT: ``steps x passes`` forwards. Over N GPUs it is sequence parallel (Ulysses): each GPU runs
  1/N of the token-wise work and of the attention products, all of the small context work (text/image/
  audio keys and values, embeddings), and four all-to-alls per block (q, k, v in, the output back) of
  its activations at ``COMM_EFFICIENCY`` x the GPU's interconnect bandwidth plus ``COLLECTIVE_LATENCY``
  each, not overlapped with compute.
- the VAE decode, whole and on one GPU after the last step: the next chunk's context frames are the
  last 9 decoded frames, and the causal decoder reaches them only after every earlier latent frame.
- the VAE encode of those 9 context frames (the next chunk's motion latents).
Off the critical path: wav2vec2, CLIP and the VAE encode of the reference window depend only on the
input, so they run while the previous chunk's DiT does (on rank 0); they add only what exceeds the DiT.

``realtime_factor`` = seconds of new video a chunk adds (72 frames at 25 fps = 2.88 s) / chunk_seconds:
1 or more keeps up with live speech.
"""

from __future__ import annotations

import dataclasses
import math

from model.calibration import Calibration
from model.gpus import GpuSpec, match_gpu_name
from model.infinitetalk import flops as F

FPS = 25
CONTEXT_FRAMES = 9
# Audio the live generator's wav2vec2 sees per chunk: 8 s of left context + the 81-frame window + 1 s of
# lookahead (InfiniteTalkOptions' audio_context / audio_lookahead defaults).
AUDIO_SECONDS = 8.0 + 81 / FPS + 1.0
COMM_EFFICIENCY = 0.7  # NCCL all-to-all reaches about this fraction of the link's bandwidth (assumed)
COLLECTIVE_LATENCY = 25e-6  # seconds per all-to-all (assumed)
ALL_TO_ALLS_PER_BLOCK = 4  # Ulysses: q, k, v to head-sharded, the attention output back
ACTIVATION_BYTES = 2  # bf16 activations on the wire and in memory (fp8 compute keeps bf16 activations)

# The other models' sizes for the memory estimate (published parameter counts): the Wan2.1 VAE (fp32),
# CLIP ViT-H/14 visual tower (fp16), wav2vec2-base (fp32).
VAE_BYTES = 127e6 * 4
CLIP_BYTES = 632e6 * 2
WAV2VEC2_BYTES = 95e6 * 4


@dataclasses.dataclass(frozen=True)
class Efficiency:
    """Achieved fraction of the GPU's peak, per stage (the DiT's against its mixed bf16/fp8 peak)."""

    dit: float
    vae_decode: float
    vae_encode: float
    clip: float
    wav2vec2: float
    source: str


# Defaults before a calibration exists. DiT 0.45: a conservative share of the bf16 peak for a DiT of
# large matmuls and flash attention (LightX2V's published 5.18 s/it for Wan2.1-14B on one H100, if at
# 832x480 x 81 frames with 2 guidance passes, implies about 0.7 by this FLOP count). The VAE (fp32
# causal 3-D convolutions on TF32, frame by frame) and the encoders (small batches) reach far less of
# the tensor peak; their defaults are guesses, which the calibration replaces.
DEFAULT_EFFICIENCY = Efficiency(dit=0.45, vae_decode=0.15, vae_encode=0.15, clip=0.30, wav2vec2=0.10,
                                source="default (no calibration file)")


@dataclasses.dataclass(frozen=True)
class Hardware:
    gpu: GpuSpec
    count: int = 1
    dtype: str = "bf16"  # DiT matmul precision: bf16 or fp8 (attention stays bf16)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"bad GPU count {self.count}: accepted is a whole number >= 1")
        if self.dtype not in ("bf16", "fp8"):
            raise ValueError(f"bad dtype {self.dtype!r}: accepted are bf16, fp8")
        self.gpu.peak(self.dtype)  # refuses fp8 where the GPU has none

    def describe(self) -> str:
        return f"{self.count} x {self.gpu.label} ({self.dtype})"


@dataclasses.dataclass(frozen=True)
class ChunkFlops:
    """FLOPs of the stages of one chunk (DiT: per forward, one guidance pass)."""

    dit: F.DitFlops
    audio_proj: int
    vae_decode: int
    vae_encode: int  # the reference window (reference frame + zeros), off the critical path
    vae_encode_context: int  # the previous chunk's last frames, on the critical path
    clip: int
    wav2vec2: int


def chunk_flops(width: int, height: int, frames: int = 81, context: int = CONTEXT_FRAMES, persons: int = 1,
                audio_seconds: float = AUDIO_SECONDS) -> ChunkFlops:
    check_window(width, height, frames, context)
    samples = int(audio_seconds * 16_000)
    return ChunkFlops(
        dit=F.dit_flops(F.DitConfig(), frames, height, width, persons),
        audio_proj=F.audio_proj_flops(F.DitConfig(), frames, persons),
        vae_decode=F.vae_decode_flops(F.VaeConfig(), frames, height, width),
        vae_encode=F.vae_encode_flops(F.VaeConfig(), frames, height, width),
        vae_encode_context=F.vae_encode_flops(F.VaeConfig(), context, height, width) if context else 0,
        clip=F.clip_flops(F.ClipConfig()),
        wav2vec2=F.wav2vec2_flops(F.Wav2Vec2Config(), samples, samples // 640))


def check_window(width: int, height: int, frames: int, context: int) -> None:
    if width < 16 or height < 16 or width % 16 or height % 16:
        raise ValueError(f"bad size {width}x{height}: accepted are sides that are multiples of 16")
    if frames < 5 or (frames - 1) % 4:
        raise ValueError(f"bad frame count {frames}: accepted is 4k+1 (5, 9, ..., 81)")
    if not 0 <= context < frames:
        raise ValueError(f"bad context {context}: accepted is 0 to {frames - 1} frames")


def dit_ideal_seconds(dit: F.DitFlops, hardware: Hardware, share: float = 1.0) -> float:
    """Seconds of one forward at 100 % of peak; ``share`` of the token-wise work (1/N when sharded)."""
    matmul_peak, bf16 = hardware.gpu.peak(hardware.dtype), hardware.gpu.bf16_flops
    return (dit.linear * share + dit.replicated) / matmul_peak + dit.attention * share / bf16


def all_to_all_seconds(dit: F.DitFlops, hardware: Hardware) -> float:
    """Ulysses traffic of one forward per GPU: 4 all-to-alls per block of its (tokens/N x dim) activations,
    of which (N-1)/N leaves the GPU."""
    n = hardware.count
    if n == 1:
        return 0.0
    config = F.DitConfig()
    per_gpu = math.ceil(dit.tokens / n) * config.dim * ACTIVATION_BYTES * (n - 1) / n
    calls = config.num_layers * ALL_TO_ALLS_PER_BLOCK
    return calls * (per_gpu / (hardware.gpu.interconnect * COMM_EFFICIENCY) + COLLECTIVE_LATENCY)


def efficiency_from(calibration: Calibration, gpu: GpuSpec | None = None) -> Efficiency:
    """Per-stage efficiency from a calibration: FLOPs at its size / (measured seconds x peak)."""
    gpu = gpu or match_gpu_name(calibration.gpu_name)
    if gpu is None:
        raise ValueError(f"calibration {calibration.path}: GPU {calibration.gpu_name!r} is not one the planner "
                         "knows (see model/gpus.py)")
    stages = chunk_flops(calibration.width, calibration.height, calibration.frames)
    hardware = Hardware(gpu, 1, calibration.dtype)
    seconds = calibration.seconds
    bf16 = gpu.bf16_flops
    return Efficiency(
        dit=dit_ideal_seconds(stages.dit, hardware) / seconds["dit_forward"],
        vae_decode=stages.vae_decode / (seconds["vae_decode"] * bf16),
        vae_encode=stages.vae_encode / (seconds["vae_encode"] * bf16),
        clip=stages.clip / (seconds["clip"] * bf16),
        wav2vec2=stages.wav2vec2 / (seconds["wav2vec2"] * bf16),
        source=f"calibration {calibration.path} ({calibration.gpu_name}, {calibration.dtype}, "
               f"{calibration.width}x{calibration.height}, measured {calibration.measured_at})")


def choose_efficiency(calibration: Calibration | None, gpu: GpuSpec) -> Efficiency:
    """The calibration's efficiencies when it was measured on this kind of GPU, else the defaults."""
    if calibration is not None and match_gpu_name(calibration.gpu_name) == gpu:
        return efficiency_from(calibration, gpu)
    return DEFAULT_EFFICIENCY


@dataclasses.dataclass(frozen=True)
class ChunkTime:
    width: int
    height: int
    frames: int
    steps: int
    passes: int
    dit_forward_seconds: float  # one forward on the N GPUs, all-to-alls included
    all_to_all_seconds: float  # of which communication
    dit_seconds: float  # steps x passes forwards
    vae_decode_seconds: float
    vae_encode_context_seconds: float
    encoders_seconds: float  # wav2vec2 + CLIP + reference encode (overlapped with the previous DiT)
    chunk_seconds: float
    new_seconds: float  # seconds of new video the chunk adds

    @property
    def realtime_factor(self) -> float:
        return self.new_seconds / self.chunk_seconds

    @property
    def realtime(self) -> bool:
        return self.realtime_factor >= 1.0


def chunk_time(hardware: Hardware, efficiency: Efficiency, width: int, height: int, steps: int, passes: int,
               frames: int = 81, context: int = CONTEXT_FRAMES, persons: int = 1,
               stages: ChunkFlops | None = None) -> ChunkTime:
    if steps < 1:
        raise ValueError(f"bad steps {steps}: accepted is a whole number >= 1")
    if passes not in (1, 2, 3):
        raise ValueError(f"bad passes {passes}: accepted are 1 (CFG-free), 2 (audio CFG), 3 (text + audio CFG)")
    stages = stages or chunk_flops(width, height, frames, context, persons)
    bf16 = hardware.gpu.bf16_flops
    comm = all_to_all_seconds(stages.dit, hardware)
    forward = dit_ideal_seconds(stages.dit, hardware, 1 / hardware.count) / efficiency.dit + comm
    dit = steps * passes * forward
    decode = stages.vae_decode / (bf16 * efficiency.vae_decode)
    encode_context = stages.vae_encode_context / (bf16 * efficiency.vae_encode)
    encoders = (stages.vae_encode / (bf16 * efficiency.vae_encode) + stages.clip / (bf16 * efficiency.clip)
                + stages.wav2vec2 / (bf16 * efficiency.wav2vec2)
                + passes * stages.audio_proj / (bf16 * efficiency.dit))
    total = dit + decode + encode_context + max(0.0, encoders - dit)
    return ChunkTime(width, height, frames, steps, passes, forward, comm, dit, decode, encode_context, encoders,
                     total, (frames - context) / FPS)


@dataclasses.dataclass(frozen=True)
class Memory:
    """Estimated bytes on the busiest GPU (rank 0: it also holds the VAE and the encoders)."""

    weights: float
    activations: float
    vae: float
    encoders: float

    @property
    def total(self) -> float:
        return self.weights + self.activations + self.vae + self.encoders


def memory_per_gpu(hardware: Hardware, width: int, height: int, frames: int = 81) -> Memory:
    """Weights: every GPU holds the whole DiT (sequence parallelism shards tokens, not weights), 2 bytes a
    parameter in bf16, 1 in fp8. Activations of one block's working set over the GPU's tokens: the FFN's
    hidden pair, a few bf16 and two fp32 copies of the residual stream, the gathered q/k/v. VAE decode:
    its weights, the causal cache of every convolution (2 frames) and a few of its largest activations."""
    config = F.DitConfig()
    dit = F.dit_flops(config, frames, height, width)
    tokens = math.ceil(dit.tokens / hardware.count)
    weights = F.dit_parameters(config) * (1 if hardware.dtype == "fp8" else 2)
    activations = tokens * (2 * config.ffn_dim * ACTIVATION_BYTES + config.dim * (6 * ACTIVATION_BYTES + 2 * 4))
    cache, peak = F.vae_decode_cache_elements(F.VaeConfig(), height, width)
    vae = VAE_BYTES + 4 * (cache + 3 * peak)
    return Memory(weights, activations, vae, CLIP_BYTES + WAV2VEC2_BYTES)
