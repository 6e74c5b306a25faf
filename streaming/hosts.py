"""Worker processes that host the sessions of a generator with per-session state.

A generator that keeps state per stream (lite's face tracking) needs an instance per session; it used to
get a process per session as well. Now a few host workers (as many as there are CPU slots: no more can
run at once anyway) each hold the instances of several sessions (streaming/instances.py). A session is
pinned to the host with the fewest sessions when it starts, since its instance (its state) lives there.
Starting a session then costs no process start: the hosts are started, and warmed, with the server.
A host that dies fails its sessions' chunks in flight and is restarted by its pool; their instances are
rebuilt on their next chunk.
"""

from __future__ import annotations

import asyncio
import collections

from streaming.pool import CpuSlots, GeneratorPool, PoolStream
from streaming.workers import GeneratorProfile, GeneratorSpec


class HostedStream(PoolStream):
    """A session's stream on one host; closing it frees its place there."""

    def __init__(self, hosts: "GeneratorHosts", pool: GeneratorPool, key) -> None:
        super().__init__(pool, key)
        self._hosts = hosts

    async def close(self) -> None:
        if not self.closed:
            self._hosts.left(self.pool)
        await super().close()


class GeneratorHosts:
    """``count`` per-stream pools of generator ``spec`` (each one worker), sharing ``cpu_slots``."""

    def __init__(self, spec: GeneratorSpec, mode: str, count: int, cpu_slots: CpuSlots | None = None,
                 queue_limit: int = 16) -> None:
        self.spec = spec
        self.mode = mode
        self._pools = [GeneratorPool(spec, workers=1, mode=mode, queue_limit=queue_limit, cpu_slots=cpu_slots,
                                     per_stream=True) for _ in range(max(1, count))]
        self._streams: collections.Counter = collections.Counter()  # pool index -> sessions on it

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def profile(self) -> GeneratorProfile | None:
        return self._pools[0].profile

    @property
    def worker_pids(self) -> list[int]:
        return [pid for pool in self._pools for pid in pool.worker_pids]

    @property
    def pools(self) -> list[GeneratorPool]:
        """The hosts (each warms up at start-up on its instance for no stream)."""
        return list(self._pools)

    async def start(self) -> GeneratorProfile:
        profiles = await asyncio.gather(*(pool.start() for pool in self._pools))
        return profiles[0]

    def stream(self, key) -> HostedStream:
        """Session ``key``'s stream, on the host with the fewest sessions."""
        index = min(range(len(self._pools)), key=lambda i: (self._streams[i], i))
        self._streams[index] += 1
        return HostedStream(self, self._pools[index], key)

    def left(self, pool: GeneratorPool) -> None:
        self._streams[self._pools.index(pool)] -= 1

    def sessions(self) -> list[int]:
        """Sessions on each host."""
        return [self._streams[i] for i in range(len(self._pools))]

    async def close(self) -> None:
        await asyncio.gather(*(pool.close() for pool in self._pools), return_exceptions=True)
