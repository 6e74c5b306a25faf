"""``livedub conformance DIR --parallel N``: every DiT and pipeline case with the DiT sharded over N gloo
ranks on this machine (model/infinitetalk/parallel.py), against the same tolerances. Every rank runs the
same cases on the same inputs (the sharded DiT needs all ranks in each call); rank 0 prints the lines
and also runs the encoder cases, which do not touch the DiT."""

from __future__ import annotations

import functools
from pathlib import Path

import torch.distributed as dist

from model.infinitetalk.conformance import PARTS, find_sets, run
from model.infinitetalk.local_ranks import run_ranks
from model.infinitetalk.parallel import MODES, shard_transformer
from model.errors import InputError


def run_parallel(root: str | Path, world: int, mode: str = "ulysses", threads: int | None = None) -> int:
    """Runs the sets in ``root`` on ``world`` ranks; returns the number of failed cases (rank 0's count)."""
    if world < 2:
        raise InputError(f"--parallel {world}: sharding needs at least 2 ranks")
    if mode not in MODES:
        raise InputError(f"bad --parallel-mode {mode!r}: accepted are {', '.join(MODES)}")
    if not Path(root).is_dir() or not find_sets(Path(root)):
        run(root)  # raises the one-line error about the folder before any rank starts
    return run_ranks(_rank, world, str(root), mode, threads=threads)[0]


def _rank(root: str, mode: str) -> int:
    leader = dist.get_rank() == 0
    write = functools.partial(print, flush=True) if leader else (lambda line: None)

    def shard(model) -> None:
        write(f"DiT sharded: {shard_transformer(model, mode).describe()} (gloo)")

    report = run(root, write, shard, PARTS if leader else tuple(p for p in PARTS if p != "encoders"))
    return len(report.failures)
