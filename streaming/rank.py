"""One rank of a generator's process group (a spawned process; see streaming/group.py).

Rank 0 opens the group's TCPStore on a free loopback port and reports it to the parent, which then
starts the other ranks on it; all join with ``init_process_group`` (NCCL on GPUs, gloo on CPU). Every
rank builds the generator after joining, so that it can shard itself over the default group. Rank 0
answers the parent's chunk requests and broadcasts each to the others (``broadcast_object_list``);
all ranks run it, then gather their outcomes, so that a request refused on one rank only is not
mistaken for a result; any other exception ends the rank (its peers may be waiting in a collective). While idle, rank 0 broadcasts a heartbeat so that the waiting ranks never reach the group's
collective timeout, which only a stuck or lost peer should hit. A collective that fails (a peer died)
ends the rank's process: the parent sees it and restarts the whole group.
"""

from __future__ import annotations

import datetime
import logging
import os

from streaming.errors import InputError
from streaming.workers import START_TIMEOUT, GeneratorProfile, describe, quiet_child, serve_requests

log = logging.getLogger("livedub.rank")
LOOPBACK = "127.0.0.1"
HEARTBEAT_SECONDS = 30.0  # idle rank 0 pings the others this often
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=START_TIMEOUT)  # > a build, a chunk, and a heartbeat gap
EXIT_PEER_LOST = 3  # a collective failed: a peer is gone
EXIT_DIVERGED = 4  # some ranks refused a chunk and others did not: the group's state is unknown
EXIT_RAISED = 5  # the generator raised: the other ranks may be inside a collective without this one


def _collective(call, *args, **kwargs):
    """A collective; on failure (a dead peer, a timeout) the rank ends and the parent restarts the group."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure inside a collective breaks the group
        log.error("collective failed, ending this rank: %s", describe(exc))
        os._exit(EXIT_PEER_LOST)


def _gather(outcome: str | None) -> list[str | None]:
    import torch.distributed as dist

    outcomes = [None] * dist.get_world_size()
    _collective(dist.all_gather_object, outcomes, outcome)
    return outcomes


def _broadcast(message: tuple) -> tuple:
    import torch.distributed as dist

    box = [message]
    _collective(dist.broadcast_object_list, box, src=0)
    return box[0]


def _run_chunk(generator, request):
    """The chunk on this rank; raises (on every rank alike) when the request was refused.

    A request error (InputError: checked before any collective, alike on every rank) fails the chunk
    only. Any other exception may leave the other ranks waiting inside a collective this rank will
    never join, so the rank ends and the parent restarts the group."""
    try:
        result, error = generator.generate(request), None
    except InputError as exc:
        result, error = None, exc
    except Exception as exc:  # noqa: BLE001 - the group cannot go on
        log.error("chunk %s failed on this rank, ending it: %s", request.index, describe(exc))
        os._exit(EXIT_RAISED)
    outcomes = _gather(None if error is None else describe(error))
    failed = [o for o in outcomes if o is not None]
    if failed and len(failed) != len(outcomes):
        log.error("ranks diverged on chunk %s: %s", request.index, failed[0])
        os._exit(EXIT_DIVERGED)
    if error is not None:
        raise error
    return result


def _follow(generator) -> None:
    """A rank other than 0: run what rank 0 broadcasts until it says stop."""
    while True:
        kind, request = _broadcast((None, None))
        if kind == "stop":
            return
        if kind == "chunk":
            try:
                _run_chunk(generator, request)
            except InputError:  # every rank refused it alike; rank 0 reports it
                pass


def _lead(generator, conn) -> None:
    """Rank 0: the parent's requests, each broadcast to the group and run here too."""
    import torch.distributed as dist

    def run(request):
        _broadcast(("chunk", request))  # source frames: pickled out of the shared view
        result = _run_chunk(generator, request)
        result.info["ranks"] = dist.get_world_size()  # the chunk events say it ran on the group
        return result

    serve_requests(conn, lambda request, _stream: run(request), idle=lambda: _broadcast(("ping", None)),
                   idle_seconds=HEARTBEAT_SECONDS)
    _broadcast(("stop", None))


def _join(rank: int, layout, store_port: int, conn):
    import torch
    import torch.distributed as dist

    device = torch.device(layout.devices[rank])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:  # the ranks share the cores instead of each taking all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // layout.world_size))
    store = dist.TCPStore(LOOPBACK, store_port, layout.world_size, is_master=rank == 0, wait_for_workers=False,
                          timeout=COLLECTIVE_TIMEOUT)
    if rank == 0:
        conn.send(("store", store.port))
    dist.init_process_group(layout.backend, store=store, rank=rank, world_size=layout.world_size,
                            timeout=COLLECTIVE_TIMEOUT)


def rank_main(rank: int, layout, spec, conn, store_port: int) -> None:
    """The process of one rank: join the group, build the generator, serve (rank 0) or follow."""
    quiet_child()
    import torch.distributed as dist

    _join(rank, layout, store_port, conn)
    generator, error = None, None
    try:
        generator = spec.build(device=layout.devices[rank])
    except Exception as exc:  # noqa: BLE001 - every rank learns of it below
        error = describe(exc)
    failures = [e for e in _gather(error) if e is not None]
    try:
        if rank == 0:
            if failures:
                conn.send(("failed", failures[0]))
                return
            conn.send(("ready", GeneratorProfile.of(generator)))
            _lead(generator, conn)
        elif not failures:
            _follow(generator)
    finally:
        if generator is not None:
            generator.close()
        dist.destroy_process_group()
