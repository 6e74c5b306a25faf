"""One generator served by a torch.distributed process group: N ranks, one per GPU (or N CPU ranks).

``--gpus 0,1,2,3`` (NCCL, rank k on cuda:<k-th GPU>) or ``--parallel N`` (gloo, CPU) start one group
per server. Every rank builds the generator, which shards itself over the default process group
(model/infinitetalk); every rank runs every chunk with the same request and seed. Rank 0 alone talks
to the server, through the same pipe and shared-memory frames as a single worker process, and hands
each request to the others with a torch.distributed broadcast (streaming/rank.py). The ranks meet at
a TCPStore on loopback that rank 0 opens on a free port.

The parent watches every rank: a rank that dies fails the chunk in flight with ``WorkerDied`` (the
sessions play their fallback), the whole group is killed, and the pool starts a new one. NCCL does not
notice a dead peer by itself, so the parent's watch is what keeps survivors from waiting forever; gloo
raises at once, and the group's collective timeout backs both up. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from typing import Callable

from model.base import ChunkRequest, ChunkResult
from model.registry import is_shardable, shardable_names
from streaming.errors import InputError
from streaming.workers import START_TIMEOUT, GeneratorFailed, GeneratorProfile, GeneratorSpec, ProcessWorker

STOP_SECONDS = 5.0  # a rank told to stop gets this long before it is killed


@dataclasses.dataclass(frozen=True)
class GroupLayout:
    """The ranks of one group: the torch device of each, rank 0 first."""

    devices: tuple[str, ...]

    @property
    def world_size(self) -> int:
        return len(self.devices)

    @property
    def backend(self) -> str:
        return "nccl" if self.devices[0].startswith("cuda") else "gloo"

    def describe(self) -> str:
        if self.backend == "nccl":
            return f"GPUs {','.join(d.split(':')[1] for d in self.devices)} (nccl)"
        return f"{self.world_size} CPU rank{'s' * (self.world_size > 1)} (gloo)"


def _cuda_count() -> int:
    import torch  # only when --gpus is given

    return torch.cuda.device_count()


def parse_gpus(text) -> tuple[int, ...]:
    """``"0,1,2,3"`` (or a list of ints, from a config file) -> distinct GPU indices."""
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    words = [str(item).strip() for item in items]
    if not words or not all(w.isdigit() for w in words) or len(set(map(int, words))) != len(words):
        raise InputError(f"bad --gpus {text!r}: accepted is a comma-separated list of distinct GPU indices, "
                         "e.g. 0,1,2,3")
    return tuple(int(w) for w in words)


def group_layout(gpus=None, parallel=None, generator: str = "", options: dict | None = None,
                 cuda_count: Callable[[], int] = _cuda_count) -> GroupLayout | None:
    """The checked layout of ``--gpus``/``--parallel`` for ``generator``; None when neither is given."""
    if gpus is None and parallel is None:
        return None
    if gpus is not None and parallel is not None:
        raise InputError("give --gpus (GPU ranks) or --parallel (CPU ranks), not both")
    if parallel is not None and (isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1):
        raise InputError(f"bad --parallel {parallel!r}: accepted is a whole number of CPU ranks >= 1")
    indices = parse_gpus(gpus) if gpus is not None else ()
    if not is_shardable(generator):
        raise InputError(f"generator {generator!r} cannot run on a process group: --gpus and --parallel work "
                         f"with {', '.join(shardable_names())}")
    if (options or {}).get("device"):
        raise InputError("--device does not go with --gpus/--parallel: each rank gets its own device")
    if parallel is not None:
        return GroupLayout(("cpu",) * parallel)
    count = cuda_count()
    if count == 0:
        raise InputError("--gpus needs CUDA GPUs and torch sees none here; --parallel N runs N CPU ranks")
    missing = [i for i in indices if i >= count]
    if missing:
        raise InputError(f"GPU {missing[0]} does not exist: this machine has {count} (indices 0-{count - 1})")
    return GroupLayout(tuple(f"cuda:{i}" for i in indices))


class GroupWorker(ProcessWorker):
    """A ProcessWorker whose process is rank 0 of a group; the other ranks are watched beside it."""

    def __init__(self, spec: GeneratorSpec, layout: GroupLayout) -> None:
        super().__init__(spec)
        self.layout = layout
        self._followers: list[multiprocessing.Process] = []

    @property
    def _ranks(self) -> list[multiprocessing.Process]:
        return ([self._process] if self._process is not None else []) + self._followers

    @property
    def pids(self) -> list[int]:
        """Every rank's process id, rank 0 first."""
        return [p.pid for p in self._ranks]

    @property
    def alive(self) -> bool:
        ranks = self._ranks
        return bool(ranks) and all(p.is_alive() for p in ranks)

    def _lost(self) -> str | None:
        dead = [f"rank {rank} (pid {p.pid}) exited with code {p.exitcode}"
                for rank, p in enumerate(self._ranks) if not p.is_alive()]
        if not dead:
            return None
        return f"{self.spec.name} group on {self.layout.describe()}: {', '.join(dead)}"

    def _settle(self, seconds: float = 2.0) -> None:
        deadline = time.monotonic() + seconds
        for process in self._ranks:
            process.join(max(0.0, deadline - time.monotonic()))

    def _spawn(self, context, rank: int, conn, store_port: int) -> multiprocessing.Process:
        from streaming.rank import rank_main

        process = context.Process(target=rank_main, args=(rank, self.layout, self.spec, conn, store_port),
                                  daemon=True, name=f"livedub-{self.spec.name}-rank{rank}")
        process.start()
        return process

    def _start(self) -> GeneratorProfile:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._conn = parent
        self._followers = []
        try:
            self._process = self._spawn(context, 0, child, 0)
            child.close()
            kind, payload = self._receive(START_TIMEOUT)  # rank 0 opened the store: its port
            if kind == "store":
                self._followers = [self._spawn(context, rank, None, payload)
                                   for rank in range(1, self.layout.world_size)]
                kind, payload = self._receive(START_TIMEOUT)
            if kind != "ready":
                raise GeneratorFailed(f"{self.spec.name} could not be built on {self.layout.describe()}: {payload}")
        except BaseException:
            self._kill()
            raise
        return payload

    def _stop(self) -> None:
        """Rank 0 tells the others to stop when the group is whole; a broken group is killed at once."""
        if self._process is None:
            return
        if self.alive:
            try:
                self._conn.send(None)
            except (OSError, ValueError):
                pass
            for process in self._ranks:
                process.join(STOP_SECONDS)
        self._kill()

    def _kill(self) -> None:
        for process in self._ranks:
            if process.is_alive():
                process.kill()
        for process in self._ranks:
            process.join(STOP_SECONDS)
        if self._conn is not None:
            self._conn.close()
        self._process, self._followers = None, []


class GroupGenerator:
    """A group used synchronously, as a Generator (offline dubbing): start, chunks in order, close."""

    def __init__(self, spec: GeneratorSpec, layout: GroupLayout) -> None:
        self._worker = GroupWorker(spec, layout)
        profile = self._worker._start()
        self.name = profile.name
        self.audio_margins = profile.audio_margins
        self.default_color_correction = profile.default_color_correction
        self.applies_color_correction = profile.applies_color_correction

    def generate(self, request: ChunkRequest) -> ChunkResult:
        return self._worker._generate(request)

    def close(self) -> None:
        self._worker._release()
