"""Generators run off the event loop: workers, each holding a generator's instances.

``Generator.generate`` blocks for a whole chunk, so it never runs on the event loop that paces the
WebRTC tracks. A thread worker runs it in a thread of its own (CPU generators that release the GIL in
their numeric code); a process worker runs it in a child process (GPU generators, and the CPU hosts: a
crash, a CUDA error or a leak stays there, and heavy imports stay out of the server). A request names
its stream (the session it is for): a ``per_stream`` worker runs each stream on an instance of its own
(streaming/instances.py), so sessions that keep per-stream state share a worker process instead of each
starting one (streaming/hosts.py). A worker process that dies fails its chunk with ``WorkerDied``.
Pools of workers (queueing, CPU slots, restarts) are in streaming/pool.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import importlib
import importlib.util
import logging
import multiprocessing
import os
import signal
import sys
import threading

import numpy as np

from model.base import AudioMargins, ChunkRequest, ChunkResult
from model.errors import InputError
from model.registry import GENERATORS
from streaming.heap import bound_heap, release_free_heap
from streaming.instances import Instances
from streaming.sharedframes import AttachedSegments, SharedSegment

log = logging.getLogger("livedub.workers")
START_TIMEOUT = 600.0  # seconds a worker may take to build its generator (model weights load slowly)
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
POLL_SECONDS = 0.1
WORKER_NICENESS = 10


class GeneratorFailed(RuntimeError):
    """The generator raised on a chunk (the message names the exception)."""


class WorkerDied(GeneratorFailed):
    """The worker process running the generator died."""


class PoolBusy(RuntimeError):
    """The pool's queue is full: the chunk is not accepted."""


class Expired(RuntimeError):
    """The chunk's deadline passed while it waited in the queue."""


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
    """Which generator to build, resolved from the registry: a module's factory and its options."""

    name: str
    module: str
    factory: str
    options: tuple[tuple[str, object], ...] = ()

    @classmethod
    def from_registry(cls, name: str, options: dict | None = None, fallback: str | None = "passthrough",
                      registry: dict | None = None) -> "GeneratorSpec":
        """The spec of generator ``name``; when its module is not installed and ``fallback`` is given,
        the fallback's spec (the caller warns)."""
        registry = GENERATORS if registry is None else registry
        if name not in registry:
            raise InputError(f"unknown generator {str(name)[:40]!r}: accepted are {', '.join(registry)}")
        module, factory, _ = registry[name]
        if importlib.util.find_spec(module) is None:
            if fallback is None or fallback == name:
                raise InputError(f"generator {name!r} is not installed (module {module} missing)")
            log.warning("generator %r is not installed (module %s missing): using %r", name, module, fallback)
            return cls.from_registry(fallback, None, None, registry)
        return cls(name, module, factory, tuple(sorted((options or {}).items())))

    def build(self, **overrides):
        """The generator, with ``overrides`` on top of the spec's options (a rank's own device)."""
        options = {**dict(self.options), **overrides}
        return getattr(importlib.import_module(self.module), self.factory)(**options)


@dataclasses.dataclass(frozen=True)
class GeneratorProfile:
    """What the chunk engine needs to know about a generator, without the generator itself."""

    name: str
    audio_margins: AudioMargins
    default_color_correction: float
    applies_color_correction: bool
    tiers: tuple | None = None  # the generator's own tier ladder, when it declares one
    # The predicted cost of its tiers on its hardware, when it declares it: an object whose
    # ``seconds(size, frames, context)`` maps tier names to seconds per chunk (model/infinitetalk/live_tiers.py).
    prior_costs: object | None = None
    uses_source_landmarks: bool = False  # animates a request's shared landmarks (model/lite/analysis.py)

    @classmethod
    def of(cls, generator) -> "GeneratorProfile":
        tiers = getattr(generator, "tiers", None)
        return cls(getattr(generator, "name", type(generator).__name__),
                   getattr(generator, "audio_margins", AudioMargins()),
                   float(getattr(generator, "default_color_correction", 0.0)),
                   bool(getattr(generator, "applies_color_correction", False)),
                   tuple(tiers) if tiers else None, getattr(generator, "prior_costs", None),
                   bool(getattr(generator, "uses_source_landmarks", False)))

    def priors(self, size: tuple[int, int], frames: int, context: int) -> dict[str, float]:
        """Tier name -> predicted seconds of a chunk of ``frames`` (``context`` carried over) at output
        ``size`` (height, width); empty when the generator declares none."""
        if self.prior_costs is None:
            return {}
        try:
            return dict(self.prior_costs.seconds(size, frames, context))
        except ValueError as exc:  # a size or window the cost model cannot take: the tiers are measured instead
            log.warning("no prior tier costs for %s at %s: %s", self.name, size, exc)
            return {}


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


class ThreadWorker:
    """The generator's instances (one, or one per stream), built and run in one thread of its own."""

    def __init__(self, spec: GeneratorSpec, executor: concurrent.futures.Executor | None = None,
                 per_stream: bool = False) -> None:
        self.spec = spec
        self.per_stream = per_stream
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"gen-{spec.name}")
        self._instances: Instances | None = None  # touched only inside the executor's thread

    def _build(self) -> GeneratorProfile:
        first = self.spec.build()
        self._instances = Instances(first, self.spec.build, self.per_stream)
        return GeneratorProfile.of(first)

    def _generate(self, request: ChunkRequest, stream=None) -> ChunkResult:
        try:
            return self._instances.generate(request, stream)
        except Exception as exc:  # noqa: BLE001 - any generator bug fails this chunk only
            raise GeneratorFailed(describe(exc)) from exc

    def _forget(self, stream) -> None:
        if self._instances is not None:
            self._instances.forget(stream)

    def _close(self) -> None:
        if self._instances is not None:
            self._instances.close()
            self._instances = None

    async def start(self) -> GeneratorProfile:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._build)

    async def generate(self, request: ChunkRequest, stream=None) -> ChunkResult:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._generate, request, stream)

    async def forget(self, stream) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._forget, stream)

    @property
    def alive(self) -> bool:
        return True

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)


def quiet_child() -> None:
    """A worker process's scheduling: the parent decides when it ends, and the server goes first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this process ends
    # Generation has slack until its deadline; pacing the tracks has none. When the CPU is contended,
    # the server's event loop goes first (a late chunk falls back; a late frame is a visible stutter).
    os.nice(WORKER_NICENESS)


def nice_this_thread(niceness: int = WORKER_NICENESS) -> None:
    """Give the calling thread the workers' niceness: a session's decoding, face analysis and request
    building have until their chunk's deadline, the event loop pacing every track has none. On Linux
    niceness is per thread; elsewhere it would lower the whole server, so nothing is done."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
        except OSError:  # not permitted here: the thread keeps the server's priority
            pass


def serve_requests(conn, generate, idle=None, idle_seconds: float = 30.0, forget=None) -> None:
    """Answer the parent's chunk requests with ``generate(request, stream)`` until told to stop (or the
    pipe closes); ``forget(stream)`` when the parent says a stream has ended. Frames come and go through
    the parent's shared-memory segments (streaming/sharedframes.py). ``idle`` is called every
    ``idle_seconds`` without a request."""
    segments = AttachedSegments()
    try:
        while True:
            while idle is not None and not conn.poll(idle_seconds):
                idle()
            try:
                request = conn.recv()
            except EOFError:
                break
            if request is None:
                break
            if request[0] == "forget":
                if forget is not None:
                    forget(request[1])
                continue
            _, stream, request, frames_in, frames_out = request
            segments.forget_except({slot.name for slot in (frames_in, frames_out) if slot is not None})
            if frames_in is not None:
                request.source_frames = segments.view(frames_in)
            try:
                result = generate(request, stream)
            except Exception as exc:  # noqa: BLE001 - one chunk fails, the worker goes on
                conn.send(("raised", describe(exc)))
                continue
            frames = np.asarray(result.frames)
            written = frames.shape == frames_out.shape and frames.dtype == np.uint8
            if written:
                segments.view(frames_out)[...] = frames
                result.frames = None
            conn.send(("ok", (result, written)))
    finally:
        segments.forget_except(set())


def _child_main(conn, spec: GeneratorSpec, per_stream: bool = False) -> None:
    """The worker process: build the generator, then answer requests until told to stop."""
    quiet_child()
    bound_heap()  # a host outlives the sessions it serves: their frames must not fragment its heap
    try:
        generator = spec.build()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("failed", describe(exc)))
        return
    conn.send(("ready", GeneratorProfile.of(generator)))
    instances = Instances(generator, spec.build, per_stream)

    def forget(stream) -> None:
        instances.forget(stream)
        release_free_heap()

    try:
        serve_requests(conn, instances.generate, forget=forget)
    finally:
        instances.close()


class ProcessWorker:
    """The generator's instances (one, or one per stream) in a child process (spawned: no inherited
    locks, CUDA-safe)."""

    def __init__(self, spec: GeneratorSpec, per_stream: bool = False) -> None:
        self.spec = spec
        self.per_stream = per_stream
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"gen-{spec.name}-io")
        self._process: multiprocessing.Process | None = None
        self._conn = None
        self._frames_in = SharedSegment()  # the request's source frames
        self._frames_out = SharedSegment()  # the result's frames

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def _lost(self) -> str | None:
        """Why the worker cannot answer any more, or None while it can."""
        if self._process.is_alive():
            return None
        return f"{self.spec.name} worker process (pid {self._process.pid}) died with exit code {self._process.exitcode}"

    def _receive(self, timeout: float | None):
        """The child's next message; WorkerDied if it exits first."""
        waited = 0.0
        while not self._conn.poll(POLL_SECONDS):
            waited += POLL_SECONDS
            lost = self._lost()
            if lost is not None and not self._conn.poll(0):
                raise WorkerDied(lost)
            if timeout is not None and waited > timeout:
                raise WorkerDied(f"{self.spec.name} worker process did not answer in {timeout:.0f} s")
        try:
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            self._settle()  # the pipe closes as the process ends: its exit code says more
            raise WorkerDied(self._lost() or f"{self.spec.name} worker process closed its pipe "
                                              f"({describe(exc)})") from None

    def _settle(self, seconds: float = 2.0) -> None:
        self._process.join(seconds)

    def _start(self) -> GeneratorProfile:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(target=_child_main, args=(child, self.spec, self.per_stream), daemon=True,
                                        name=f"livedub-{self.spec.name}")
        self._process.start()
        child.close()
        self._conn = parent
        kind, payload = self._receive(START_TIMEOUT)
        if kind != "ready":
            self._process.join(5)
            raise GeneratorFailed(f"{self.spec.name} could not be built: {payload}")
        return payload

    def _generate(self, request: ChunkRequest, stream=None) -> ChunkResult:
        lost = self._lost()
        if lost is not None:  # found dead while idle: fail fast, the pool restarts it
            raise WorkerDied(lost)
        frames_in = None
        if request.source_frames is not None:
            frames_in = self._frames_in.put(request.source_frames)
            request = dataclasses.replace(request, source_frames=None)
        frames_out = self._frames_out.reserve((request.num_new, *request.size, 3))
        try:
            self._conn.send(("chunk", stream, request, frames_in, frames_out))
        except (OSError, ValueError) as exc:
            raise WorkerDied(f"{self.spec.name} worker process is gone ({describe(exc)})") from None
        kind, payload = self._receive(None)
        if kind == "raised":
            raise GeneratorFailed(payload)
        result, written = payload
        if written:
            result.frames = self._frames_out.view(frames_out).copy()
        return result

    def _forget(self, stream) -> None:
        if self._process is not None and self._process.is_alive():
            try:
                self._conn.send(("forget", stream))
            except (OSError, ValueError):
                pass  # gone: a restarted process has no instances to forget

    def _stop(self) -> None:
        if self._process is None:
            return
        if self._process.is_alive():
            try:
                self._conn.send(None)
            except (OSError, ValueError):
                pass
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
        self._conn.close()
        self._process = None

    def _release(self) -> None:
        self._stop()
        self._frames_in.close()
        self._frames_out.close()

    async def start(self) -> GeneratorProfile:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._start)

    async def restart(self) -> GeneratorProfile:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._stop)
        return await loop.run_in_executor(self._executor, self._start)

    async def generate(self, request: ChunkRequest, stream=None) -> ChunkResult:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._generate, request, stream)

    async def forget(self, stream) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._forget, stream)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._release)
        self._executor.shutdown(wait=False)
