"""A pool of generator workers: chunk requests from any number of sessions, earliest deadline first.

A pool serves chunk requests through a bounded queue, earliest deadline first; a request whose deadline
passed while it waited is not run at all. CPU generators of every pool share ``CpuSlots`` (one core's
worth on a 2-core machine), taken in deadline order too. A worker process that dies fails its chunk with
``WorkerDied`` and is restarted (with backoff) before it takes the next one. A pool may instead hold one
process group of ranks (``group=``, streaming/group.py), restarted whole in the same way. ``PoolStream``
is one session's view of a pool (streaming/workers.py has the workers themselves).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import heapq
import itertools
import logging
import time

from model.base import ChunkRequest, ChunkResult
from model.errors import InputError
from model.serving import WORKER_MODES
from streaming.group import GroupWorker
from streaming.workers import (RESTART_BACKOFF, Expired, GeneratorFailed, GeneratorProfile, GeneratorSpec,
                               PoolBusy, ProcessWorker, ThreadWorker, WorkerDied)

log = logging.getLogger("livedub.workers")


class CpuSlots:
    """At most ``count`` CPU generators run at once across all pools that share this, earliest deadline
    first. With more sessions than cores, chunks that all fall due together otherwise run together and
    thrash: each then takes several times its cost and all of them miss; taken in deadline order, each
    gets a core to itself."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("at least one CPU slot")
        self.count = count
        self._free = count
        self._waiting: list[tuple[float, int, asyncio.Future]] = []
        self._order = itertools.count()

    async def acquire(self, deadline: float) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        granted = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (deadline, next(self._order), granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # granted just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, granted = heapq.heappop(self._waiting)
            if not granted.done():
                granted.set_result(None)
                return
        self._free += 1


@dataclasses.dataclass(order=True)
class _Job:
    deadline: float
    order: int
    request: ChunkRequest = dataclasses.field(compare=False)
    future: asyncio.Future = dataclasses.field(compare=False)
    stream: object = dataclasses.field(default=None, compare=False)


class GeneratorPool:
    """``workers`` instances of one generator serving chunk requests, earliest deadline first."""

    def __init__(self, spec: GeneratorSpec, workers: int = 1, mode: str = "thread", queue_limit: int = 8,
                 clock=time.monotonic, cpu_slots: CpuSlots | None = None, group=None,
                 executor: concurrent.futures.Executor | None = None, per_stream: bool = False) -> None:
        """``group``: a streaming.group.GroupLayout; the pool's one worker is then a process group.
        ``executor``: where thread workers run (tests on a virtual clock run them inline).
        ``per_stream``: each stream (session) runs on an instance of its own in the worker."""
        if mode not in WORKER_MODES:
            raise InputError(f"bad worker mode {mode!r}: accepted are {', '.join(WORKER_MODES)}")
        if workers < 1:
            raise InputError(f"bad worker count {workers}: accepted is a whole number >= 1")
        self.spec = spec
        self.mode = mode
        self.per_stream = per_stream and group is None
        self._clock = clock
        self._cpu_slots = cpu_slots
        if group is not None:
            if workers != 1 or mode != "process":
                raise InputError("a process group is one worker of its own: workers=1, mode=process")
            self._workers = [GroupWorker(spec, group)]
        else:
            if per_stream and workers != 1:
                raise InputError("a per-stream pool has one worker: a stream's state lives in it")
            self._workers = [ThreadWorker(spec, executor, per_stream) if mode == "thread"
                             else ProcessWorker(spec, per_stream) for _ in range(workers)]
        self._queue: asyncio.PriorityQueue[_Job] = asyncio.PriorityQueue(maxsize=queue_limit)
        self._order = itertools.count()
        self._tasks: list[asyncio.Task] = []
        self.profile: GeneratorProfile | None = None
        self.restarts = 0
        self.deaths = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers if isinstance(w, ProcessWorker) and w.pid is not None]

    @property
    def rank_pids(self) -> list[int]:
        """A group pool's rank processes, rank 0 first (empty for other pools)."""
        return [pid for w in self._workers for pid in getattr(w, "pids", [])]

    async def start(self) -> GeneratorProfile:
        profiles = await asyncio.gather(*(w.start() for w in self._workers))
        self.profile = profiles[0]
        self._tasks = [asyncio.create_task(self._serve(w), name=f"pool-{self.name}") for w in self._workers]
        return self.profile

    async def run(self, request: ChunkRequest, deadline: float, stream=None) -> ChunkResult:
        """The generator's result for ``request`` of ``stream`` (None: a warm-up's, or any); raises
        GeneratorFailed, WorkerDied, PoolBusy or Expired."""
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Job(deadline, next(self._order), request, future, stream))
        except asyncio.QueueFull:
            raise PoolBusy(f"{self.name}: {self._queue.maxsize} chunks already queued") from None
        return await future

    def stream(self, key) -> "PoolStream":
        """Session ``key``'s view of this pool (its own instance in a per-stream pool)."""
        return PoolStream(self, key)

    async def forget(self, stream) -> None:
        """Stream ``stream`` has ended: a per-stream pool closes its instance."""
        if self.per_stream and stream is not None:
            await asyncio.gather(*(w.forget(stream) for w in self._workers), return_exceptions=True)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def _serve(self, worker) -> None:
        failures = 0
        while True:
            job = result = None  # an idle worker keeps no request's frames alive
            job = await self._queue.get()
            if job.future.done():  # the session gave up on it
                continue
            try:
                result = await self._generate(worker, job)
            except Expired as exc:
                _settle(job.future, exc)
                continue
            except WorkerDied as exc:
                self.deaths += 1
                _settle(job.future, exc)
                failures = await self._restart(worker, failures)
                continue
            except GeneratorFailed as exc:
                _settle(job.future, exc)
                continue
            except asyncio.CancelledError:
                _settle(job.future, GeneratorFailed(f"{self.name} pool closed"))
                raise
            failures = 0
            if not job.future.done():
                job.future.set_result(result)

    async def _generate(self, worker, job: _Job) -> ChunkResult:
        if self._cpu_slots is not None and not await self._acquire(job):
            raise Expired(f"chunk {job.request.index} was given up")
        try:
            if job.future.done():
                raise Expired(f"chunk {job.request.index} was given up")
            if self._clock() > job.deadline:
                raise Expired(f"chunk {job.request.index} waited past its deadline")
            return await worker.generate(job.request, job.stream)
        finally:
            if self._cpu_slots is not None:
                self._cpu_slots.release()

    async def _acquire(self, job: _Job) -> bool:
        """A CPU slot for ``job``; False when the job is given up first (a warm-up cancelled because its
        session's first chunk is ready must not keep the worker, and that chunk, waiting for a slot)."""
        acquiring = asyncio.ensure_future(self._cpu_slots.acquire(job.deadline))
        await asyncio.wait((acquiring, job.future), return_when=asyncio.FIRST_COMPLETED)
        if not acquiring.done():
            acquiring.cancel()
            await asyncio.gather(acquiring, return_exceptions=True)
        if acquiring.cancelled():
            return False  # CpuSlots passes a slot granted during the cancellation on
        if job.future.done():
            self._cpu_slots.release()
            return False
        return True

    async def _restart(self, worker: ProcessWorker, failures: int) -> int:
        """Restart a dead worker process, waiting longer after each failure; never gives up."""
        while True:
            await asyncio.sleep(RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)])
            failures += 1
            try:
                await worker.restart()
            except GeneratorFailed as exc:
                log.error("restarting %s worker failed: %s", self.name, exc)
                continue
            self.restarts += 1
            log.warning("%s worker restarted (pid %s)", self.name, worker.pid)
            return failures

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []  # a cancelled task keeps its traceback, whose frames hold self
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        while not self._queue.empty():
            job = self._queue.get_nowait()
            _settle(job.future, GeneratorFailed(f"{self.name} pool closed"))
        await asyncio.gather(*(w.close() for w in self._workers), return_exceptions=True)


def _settle(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class PoolStream:
    """One session's view of a pool: its chunks (and warm-up) run on its own instance in a per-stream
    pool, on the one instance otherwise. Closing it closes that instance, never the pool."""

    def __init__(self, pool: GeneratorPool, key) -> None:
        self.pool = pool
        self.key = key
        self.closed = False

    @property
    def name(self) -> str:
        return self.pool.name

    @property
    def profile(self) -> GeneratorProfile | None:
        return self.pool.profile

    @property
    def mode(self) -> str:
        return self.pool.mode

    @property
    def worker_pids(self) -> list[int]:
        return self.pool.worker_pids

    async def run(self, request: ChunkRequest, deadline: float) -> ChunkResult:
        return await self.pool.run(request, deadline, self.key)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.pool.forget(self.key)
