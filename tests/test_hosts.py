"""Host workers: the sessions of a generator with per-session state share a few worker processes, each
session on an instance of its own (streaming/hosts.py, streaming/instances.py); a job given up while it
waits for a CPU slot frees its worker; new sessions' chunk phases are spread (streaming/phases.py); a
session's own thread yields to the event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.base import AudioMargins, Tier
from streaming.chunker import ChunkPlan
from streaming.hosts import GeneratorHosts
from streaming.instances import Instances
from streaming.phases import spread_origin
from streaming.warmup import warm_up_request
from streaming.pool import CpuSlots, GeneratorPool
from streaming.workers import WORKER_NICENESS, Expired, GeneratorSpec, nice_this_thread

COUNTING = GeneratorSpec("counting", "server_fault_generators", "build_counting")
SLOW = GeneratorSpec("slow", "server_fault_generators", "build_slow", (("seconds", 0.05),))
FAR = 1e9  # a deadline that never passes


def _request(index: int = 0):
    return warm_up_request(np.zeros((16, 16, 3), np.uint8), ChunkPlan(window=9, context=3), AudioMargins(),
                           Tier("full"), None)


class _Closing:
    def __init__(self, log: list, name: str) -> None:
        self.log, self.name = log, name

    def generate(self, request):
        return self.name

    def close(self) -> None:
        self.log.append(self.name)


def test_instances_are_one_per_stream_built_on_first_use_and_closed_when_forgotten():
    closed: list[str] = []
    names = iter(["a", "b", "c"])
    instances = Instances(_Closing(closed, "first"), lambda: _Closing(closed, next(names)), per_stream=True)
    assert instances.generate(None, None) == "first"  # warm-ups run on the instance built at start
    assert [instances.generate(None, key) for key in ("s1", "s2", "s1")] == ["a", "b", "a"]
    instances.forget("s1")
    assert closed == ["a"] and instances.generate(None, "s1") == "c"  # a fresh one: no state carried over
    instances.forget(None)  # the first instance is never forgotten
    instances.close()
    assert sorted(closed) == ["a", "b", "c", "first"]


def test_a_shared_instance_serves_every_stream_and_forgetting_one_closes_nothing():
    closed: list[str] = []
    instances = Instances(_Closing(closed, "only"), lambda: pytest.fail("a shared generator is built once"),
                          per_stream=False)
    assert {instances.generate(None, key) for key in ("s1", "s2", None)} == {"only"}
    instances.forget("s1")
    assert closed == [] and len(instances) == 1


@pytest.mark.parametrize("mode", ["thread", "process"])
async def test_a_host_keeps_each_sessions_state_apart_and_a_forgotten_stream_starts_afresh(mode):
    hosts = GeneratorHosts(COUNTING, mode, count=1)
    try:
        await hosts.start()
        one, two = hosts.stream("one"), hosts.stream("two")
        assert hosts.sessions() == [2] and one.pool is two.pool
        calls = [(await stream.run(_request(), FAR)).info["calls"] for stream in (one, one, two, one)]
        assert calls == [1, 2, 1, 3]  # each session counts on its own instance, in one worker
        await one.close()
        assert hosts.sessions() == [1]
        again = hosts.stream("one")
        assert (await again.run(_request(), FAR)).info["calls"] == 1  # its old instance was closed
        if mode == "process":
            assert len(hosts.worker_pids) == 1  # two sessions, one process
    finally:
        await hosts.close()


async def test_sessions_go_to_the_host_with_the_fewest_and_stay_there():
    hosts = GeneratorHosts(COUNTING, "thread", count=2)
    try:
        await hosts.start()
        streams = [hosts.stream(key) for key in "abc"]
        assert hosts.sessions() == [2, 1]
        assert streams[0].pool is streams[2].pool is not streams[1].pool
        await streams[0].close()
        assert hosts.sessions() == [1, 1]
        streams.append(hosts.stream("d"))
        assert hosts.sessions() == [2, 1] and streams[3].pool is hosts.pools[0]
        for _ in range(3):  # a session's chunks keep finding its instance
            calls = (await streams[3].run(_request(), FAR)).info["calls"]
        assert calls == 3
    finally:
        await hosts.close()


async def test_a_job_given_up_while_waiting_for_a_cpu_slot_frees_its_worker_for_the_next():
    slots = CpuSlots(1)
    pool = GeneratorPool(COUNTING, mode="thread", cpu_slots=slots, per_stream=True)
    try:
        await pool.start()
        await slots.acquire(0.0)  # another pool's chunk holds the only slot
        warm_up = asyncio.ensure_future(pool.run(_request(), FAR, "s"))  # taken by the worker, waits for a slot
        await asyncio.sleep(0.05)
        chunk = asyncio.ensure_future(pool.run(_request(), 10.0**8, "s"))  # queued behind it
        await asyncio.sleep(0.05)
        warm_up.cancel()
        await asyncio.sleep(0.05)
        assert not chunk.done()
        slots.release()
        result = await asyncio.wait_for(chunk, 5)
        assert result.info["calls"] == 1  # the warm-up never ran; the chunk did, and the slot is free again
        await asyncio.wait_for(slots.acquire(0.0), 1)
        slots.release()
    finally:
        await pool.close()


async def test_a_job_whose_deadline_passed_while_it_waited_is_not_run():
    now = [0.0]
    pool = GeneratorPool(COUNTING, mode="thread", clock=lambda: now[0], per_stream=True)
    try:
        await pool.start()
        now[0] = 5.0
        with pytest.raises(Expired):
            await pool.run(_request(), 1.0, "s")
        assert (await pool.run(_request(), FAR, "s")).info["calls"] == 1
    finally:
        await pool.close()


def _circular(a: float, b: float, period: float) -> float:
    d = abs(a - b) % period
    return min(d, period - d)


def test_sessions_started_together_get_phases_spread_over_the_stride():
    stride, now, origins = 2.88, 1000.0, []
    for _ in range(6):
        origins.append(spread_origin(now, origins, stride, most_back=4.0))
    assert origins[0] == now  # the first session starts now
    assert all(now - stride < o <= now for o in origins)
    phases = sorted(o % stride for o in origins)
    gaps = [(phases[(i + 1) % 6] - p) % stride for i, p in enumerate(phases)]
    assert min(gaps) >= stride / 8 - 1e-9  # six sessions, none closer than 0.36 s of a 2.88 s stride


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 10_000), max_size=12), st.floats(0, 10_000), st.floats(0.1, 5.0))
def test_a_new_phase_lies_in_the_middle_of_the_widest_gap_unless_that_is_too_far_back(origins, now, most_back):
    stride = 2.88
    origin = spread_origin(now, origins, stride, most_back)
    assert now - min(stride, most_back) - 1e-6 <= origin <= now
    if not origins:
        assert origin == now
        return
    phases = sorted({o % stride for o in origins})
    widest = max(((phases[(i + 1) % len(phases)] - p) % stride or stride) for i, p in enumerate(phases))
    nearest = min(_circular(origin % stride, p, stride) for p in phases)
    if now - origin < most_back - 1e-6:  # not limited: the middle of the widest gap
        assert nearest == pytest.approx(widest / 2, abs=1e-6)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="niceness is per thread on Linux only")
def test_a_session_thread_yields_to_the_event_loop_and_the_process_keeps_its_priority():
    before = os.getpriority(os.PRIO_PROCESS, 0)
    if before > WORKER_NICENESS:
        pytest.skip(f"this process already runs at niceness {before}")
    with concurrent.futures.ThreadPoolExecutor(1, initializer=nice_this_thread) as thread:
        niceness = thread.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()
    assert niceness == WORKER_NICENESS
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # this thread, and so the loop
