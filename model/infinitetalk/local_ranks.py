"""N gloo ranks on this machine (loopback, a free port), for CPU runs of the sharded DiT: the
conformance runner's ``--parallel N`` and the tests. Serving on GPUs starts its own process group."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_ranks(function: Callable, world: int, *args, threads: int | None = None) -> list:
    """``function(*args)`` on ``world`` spawned processes joined in one gloo group; returns each rank's
    result, rank 0 first. ``function`` must be importable (spawn pickles it by name). A rank that
    raises makes this raise. Results travel as files: a pipe would block a rank whose result outgrows
    its buffer while the parent waits for the ranks to exit."""
    if world < 1:
        raise ValueError(f"need at least 1 rank, got {world}")
    threads = threads or max(1, (os.cpu_count() or 1) // world)
    with tempfile.TemporaryDirectory(prefix="livedub-ranks-") as folder:
        mp.start_processes(_rank_main, args=(world, free_port(), threads, function, args, folder), nprocs=world,
                           join=True, start_method="spawn")
        return [torch.load(Path(folder) / f"{rank}.pt", weights_only=False) for rank in range(world)]


def _rank_main(rank: int, world: int, port: int, threads: int, function: Callable, args: tuple, folder: str) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.save(function(*args), Path(folder) / f"{rank}.pt")
        # Every rank's collectives are finished before any rank tears its group down (diffusers' ring
        # attention issues asynchronous all-gathers). Once, in a full test run on a busy machine, a rank
        # died at the end with "terminate called without an active exception" (SIGABRT): not reproduced
        # since, in 16 runs with or without this barrier; the barrier is the usual guard.
        dist.barrier()
    finally:
        dist.destroy_process_group()
