"""A generator for process-group tests: the source frames, after a collective over the group's ranks.

Built on every rank (the registry entry is added by the tests; worker processes import it because
tests/ is on their path). Its result says which group ran it: the world size, the sum of the ranks'
numbers from an all_reduce (every rank took part), and the process ids of the ranks.
"""

from __future__ import annotations

import os

from model.base import ChunkRequest, ChunkResult
from model.passthrough import PassthroughGenerator
from streaming.errors import InputError


class RankProbe(PassthroughGenerator):
    name = "rank_probe"

    def __init__(self, device: str = "cpu", raise_everywhere=(), raise_on_rank1=()) -> None:
        self.device = device
        self.raise_everywhere = set(raise_everywhere)  # chunk indices every rank refuses
        self.raise_on_rank1 = set(raise_on_rank1)  # chunk indices rank 1 alone fails on

    def generate(self, request: ChunkRequest) -> ChunkResult:
        import torch
        import torch.distributed as dist

        if request.index in self.raise_everywhere:  # a request error: every rank refuses it alike
            raise InputError(f"deliberately refused chunk {request.index}")
        if request.index in self.raise_on_rank1 and dist.get_rank() == 1:  # rank 0 waits in all_reduce
            raise RuntimeError(f"deliberate failure on chunk {request.index} (rank 1)")
        ranks = torch.tensor([float(dist.get_rank() + 1)], device=self.device)
        dist.all_reduce(ranks)
        pids = [None] * dist.get_world_size()
        dist.all_gather_object(pids, os.getpid())
        result = super().generate(request)
        result.info.update(world=dist.get_world_size(), rank_sum=int(ranks.item()), pids=_pid_list(pids))
        return result


def _pid_list(pids) -> str:
    """The ranks' process ids as chunk events carry them (plain values only): "123,456"."""
    return ",".join(map(str, pids))


def build_rank_probe(**options) -> RankProbe:
    return RankProbe(**options)


REGISTRY = {"rank_probe": (__name__, "build_rank_probe", "the source frames after an all_reduce over the group")}
