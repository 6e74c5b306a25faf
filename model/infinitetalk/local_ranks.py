"""N gloo ranks on this machine (loopback, a free port), for CPU runs of the sharded DiT: the
conformance runner's ``--parallel N`` and the tests. Serving on GPUs starts its own process group."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

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
    raises makes this raise."""
    if world < 1:
        raise ValueError(f"need at least 1 rank, got {world}")
    threads = threads or max(1, (os.cpu_count() or 1) // world)
    queue = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_rank_main, args=(world, free_port(), threads, function, args, queue), nprocs=world,
                       join=True, start_method="spawn")
    results = dict(queue.get() for _ in range(world))
    return [results[rank] for rank in range(world)]


def _rank_main(rank: int, world: int, port: int, threads: int, function: Callable, args: tuple, queue) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        queue.put((rank, function(*args)))
    finally:
        dist.destroy_process_group()
