"""Sequence parallelism for the InfiniteTalk DiT on torch.distributed (NCCL on GPUs, gloo on CPU).

Every rank holds the full weights and the full inputs and runs the block stack on its contiguous slice
of the video tokens (``tensor_split`` order: the first ``L mod N`` ranks hold one token more). Only
these steps cross ranks:

- self-attention: diffusers' templated context-parallel attention. Ulysses (all-to-all trading tokens
  for heads; its degree divides the head count), ring (key/value all-gather, log-sum-exp merge), or
  both (Ulysses inside groups, ring across them). Uneven slices take diffusers' "anything" variants;
  Ulysses x ring on uneven slices composes the two (diffusers has no such variant);
- the two-speaker reference map: the first latent frame's keys are summed into every rank (one
  all-reduce of a zero-filled buffer, exact) and the routing's min/max are reduced (one all-reduce);
- the head's output is all-gathered, so every rank returns the whole prediction.
Text/image cross-attention is local (full context on every rank). The frame-local audio attention is
local too: a slice is padded out to the whole latent frames it touches, which ``TokenShard`` knows
from the window shape (computed once per shape and cached, no per-token work on a call).

``shard_transformer(model, mode)`` is the public entry; see the project README for why diffusers'
``enable_parallelism`` / ``_cp_plan`` hooks are not used as they are.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers.models import attention_dispatch as dispatch
from diffusers.models._modeling_parallel import ContextParallelConfig, ParallelConfig
from torch.distributed.device_mesh import init_device_mesh

MODES = ("ulysses", "ring", "hybrid")


def parallel_degrees(mode: str, world: int, heads: int) -> tuple[int, int]:
    """``(ulysses, ring)`` degrees for ``world`` ranks and ``heads`` attention heads.

    ulysses: all ranks when the heads divide evenly, else the largest Ulysses degree that divides both
    (ring over the rest; pure ring when that is 1). hybrid: the largest such degree below ``world``.
    ring: ring over all ranks."""
    if mode not in MODES:
        raise ValueError(f"bad parallel mode {mode!r}: accepted are {', '.join(MODES)}")
    if world < 2:
        raise ValueError(f"sequence parallelism needs at least 2 ranks, got {world}")
    if mode == "ring":
        return 1, world
    limit = world if mode == "ulysses" else world - 1
    ulysses = max(d for d in range(1, limit + 1) if world % d == 0 and heads % d == 0)
    return ulysses, world // ulysses


def sdpa_lse_forward_op(ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False, return_lse=False, _save_ctx=True, _parallel_config=None):
    """A forward op for diffusers' ring attention that also returns the log-sum-exp (layout ``[B, S, H]``).
    diffusers' native op refuses ``return_lse`` and its lse-capable ops are CUDA/NPU only; this one uses
    torch's CPU flash kernel, or its memory-efficient kernel on CUDA (any dtype). Inference only."""
    q, k, v = (x.transpose(1, 2) for x in (query, key, value))
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=scale)[:2]
    else:
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
            q.contiguous(), k.contiguous(), v.contiguous(), None, True, scale=scale)[:2]
        lse = lse[..., : q.shape[2]]  # the kernel pads the query dim of its lse
    out, lse = out.transpose(1, 2), lse.transpose(1, 2)
    return (out, lse) if return_lse else out


# diffusers' own forward ops that return the log-sum-exp (CUDA): used for ring when the model chose them.
LSE_OPS = {"flash": dispatch._flash_attention_forward_op, "_native_flash": dispatch._native_flash_attention_forward_op,
           "_native_cudnn": dispatch._cudnn_attention_forward_op}


def _backend_forward_op(backend):
    """Ulysses needs no log-sum-exp: any attention backend works on the gathered sequence."""

    def forward_op(ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False, return_lse=False, _save_ctx=True, _parallel_config=None):
        return dispatch.dispatch_attention_fn(query, key, value, scale=scale, backend=backend)

    return forward_op


def slice_sizes(length: int, world: int) -> tuple[int, ...]:
    """Tokens per rank, in ``torch.tensor_split`` order (the first ``length mod world`` ranks one more)."""
    if length < world:
        raise ValueError(f"{length} tokens cannot be split over {world} ranks")
    base, extra = divmod(length, world)
    return tuple(base + (rank < extra) for rank in range(world))


class SequenceParallel:
    """The process group, its (ring, ulysses) device mesh and diffusers' context-parallel configs."""

    def __init__(self, ulysses: int, ring: int, device: torch.device, group=None) -> None:
        if group is not None and group != dist.group.WORLD and dist.get_world_size(group) != dist.get_world_size():
            raise ValueError("shard_transformer: only the default process group (all ranks) is supported")
        self.group = dist.group.WORLD
        self.world = dist.get_world_size()
        self.rank = dist.get_rank()
        if ulysses * ring != self.world:
            raise ValueError(f"ulysses {ulysses} x ring {ring} != {self.world} ranks")
        backend = str(dist.get_backend()).lower()
        if device.type == "cpu" and "gloo" not in backend:
            raise ValueError(f"a DiT on the CPU needs a gloo process group, not {backend}")
        self.ulysses, self.ring = ulysses, ring
        # diffusers' enable_parallelism would build this mesh with `rank % accelerator count`, which
        # divides by zero on a CPU-only machine: the mesh and config are set up here instead.
        mesh = init_device_mesh(device.type, (ring, ulysses), mesh_dim_names=("ring", "ulysses"))
        cp = ContextParallelConfig(ring_degree=ring, ulysses_degree=ulysses)
        cp.setup(self.rank, self.world, device, mesh)
        self.config = ParallelConfig(context_parallel_config=cp)
        # uneven slices: diffusers' "anything" variants (one flag each, not both together)
        anything = dataclasses.replace(cp, ulysses_anything=ring == 1, ring_anything=ulysses == 1) \
            if ring == 1 or ulysses == 1 else cp
        self.uneven_config = ParallelConfig(context_parallel_config=anything)

    @property
    def mode(self) -> str:
        return "ulysses" if self.ring == 1 else "ring" if self.ulysses == 1 else "hybrid"

    def describe(self) -> str:
        return f"{self.mode}: ulysses {self.ulysses} x ring {self.ring} over {self.world} ranks"

    @functools.lru_cache(maxsize=16)
    def layout(self, length: int, frame_tokens: int) -> "TokenShard":
        """This rank's slice of a ``length``-token window with ``frame_tokens`` tokens per latent frame."""
        sizes = slice_sizes(length, self.world)
        start = sum(sizes[: self.rank])
        return TokenShard(self, length, frame_tokens, start, start + sizes[self.rank], sizes)


@dataclasses.dataclass(frozen=True, eq=False)
class TokenShard:
    """One rank's contiguous slice ``[start, stop)`` of one window shape, and the collectives on it."""

    parallel: SequenceParallel | None  # None only for arithmetic without collectives (tests)
    length: int
    frame_tokens: int
    start: int
    stop: int
    sizes: tuple[int, ...]

    @property
    def even(self) -> bool:
        return len(set(self.sizes)) == 1

    # the latent frames this slice touches, and the padding that makes them whole (audio attention)
    @property
    def first_frame(self) -> int:
        return self.start // self.frame_tokens

    @property
    def frames(self) -> int:
        return (self.stop - 1) // self.frame_tokens - self.first_frame + 1

    @property
    def pad_before(self) -> int:
        return self.start - self.first_frame * self.frame_tokens

    @property
    def pad_after(self) -> int:
        return (self.first_frame + self.frames) * self.frame_tokens - self.stop

    def split(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        return x.narrow(dim, self.start, self.stop - self.start)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, n, C]`` slices -> ``[B, L, C]`` on every rank. Padded to the largest slice because gloo's
        all_gather needs equal sizes; the sizes are known, so nothing else is exchanged."""
        largest = max(self.sizes)
        x = F.pad(x, (0, 0, 0, largest - x.shape[1])).contiguous()
        parts = [torch.empty_like(x) for _ in self.sizes]
        dist.all_gather(parts, x, group=self.parallel.group)
        return torch.cat([part[:, :size] for part, size in zip(parts, self.sizes)], dim=1)

    def attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, backend=None) -> torch.Tensor:
        """Self-attention of this slice's queries over the whole sequence (``[B, n, H, D]`` in and out)."""
        parallel = self.parallel
        if parallel.ring == 1:
            op = _backend_forward_op(backend)
        else:
            op = LSE_OPS.get(getattr(backend, "value", backend), sdpa_lse_forward_op)
        if self.even or parallel.ring == 1 or parallel.ulysses == 1:
            config = parallel.config if self.even else parallel.uneven_config
            return dispatch._templated_context_parallel_attention(
                query, key, value, forward_op=op, backward_op=None, _parallel_config=config)
        # Ulysses x ring on uneven slices: Ulysses-anything all-to-all inside each group, ring-anything across
        group = parallel.config.context_parallel_config._ulysses_mesh.get_group()
        metadata = dispatch.ulysses_anything_metadata(query)
        query, key, value = (dispatch.all_to_all_single_any_qkv_async(x, group, **metadata)()
                             for x in (query, key, value))
        out = dispatch.TemplatedRingAnythingAttention.apply(query, key, value, None, 0.0, False, None, False, False,
                                                            op, None, parallel.config)
        return dispatch.all_to_all_single_any_o_async(out, group, **metadata)()

    def reference_keys(self, key: torch.Tensor) -> torch.Tensor:
        """The first latent frame's keys ``[B, S, H, D]`` on every rank: each rank writes the part it holds
        into zeros and one all-reduce sums them (each token comes from exactly one rank: exact)."""
        reference = key.new_zeros(key.shape[0], self.frame_tokens, *key.shape[2:])
        held = min(self.stop, self.frame_tokens) - self.start
        if held > 0:
            reference[:, self.start : self.start + held] = key[:, :held]
        dist.all_reduce(reference, group=self.parallel.group)
        return reference

    def global_range(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Min of ``low`` and max of ``high`` over all ranks (one all-reduce MAX of ``[-low | high]``)."""
        packed = torch.cat([-low, high]).contiguous()
        dist.all_reduce(packed, op=dist.ReduceOp.MAX, group=self.parallel.group)
        return -packed[: len(low)], packed[len(low) :]


def shard_transformer(transformer, mode: str = "ulysses", group=None) -> SequenceParallel:
    """Shard ``transformer``'s tokens over the process group (default: all ranks); every rank keeps its
    full weights and must call the model with identical inputs. Returns the sharding, also stored on the
    model (``transformer._sequence_parallel``); ``unshard_transformer`` undoes it."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("shard_transformer needs torch.distributed initialised (init_process_group)")
    if getattr(transformer, "_sequence_parallel", None) is not None:
        raise RuntimeError("this transformer is already sharded")
    world = dist.get_world_size(group)
    ulysses, ring = parallel_degrees(mode, world, transformer.config.num_attention_heads)
    device = next(transformer.parameters()).device
    transformer._sequence_parallel = SequenceParallel(ulysses, ring, device, group)
    return transformer._sequence_parallel


def unshard_transformer(transformer) -> None:
    transformer._sequence_parallel = None
