"""Warm start: a generator runs one chunk on the session's source before the first real chunk is due.

What a generator loads lazily (face analysis of the source, kernels compiled on first use, caches) then
costs nothing in the first real chunk, and a second, warm run measures the cost the scheduler starts
from: the cold cost never enters its estimates (a cold first chunk would otherwise look like the
generator's price and skip every chunk after it). The warm-up chunk is silent and its frames are dropped.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from model.base import AudioMargins, ChunkRequest, Tier
from streaming.chunker import ChunkPlan

WARM_UP_SECONDS = 600.0  # a warm-up has no slot: its deadline only bounds a stuck worker


@dataclasses.dataclass(frozen=True)
class WarmUp:
    cold: float  # seconds of the first run (loading included), submission to result
    warm: float  # seconds of the second run: what a chunk costs from now on, on an idle machine


def warm_up_request(reference: np.ndarray, plan: ChunkPlan, margins: AudioMargins, tier: Tier,
                    source_frames: np.ndarray | None) -> ChunkRequest:
    """Chunk 0 of a session whose speech is silence, on ``reference`` (the source's first frame) and,
    for a moving source, the window's ``source_frames`` (generators that follow the source's motion
    analyse every frame: a still would measure far less than they cost)."""
    chunk = plan.chunk(0)
    first, last, offset = plan.audio_span(chunk, margins)
    frames = None if source_frames is None else np.ascontiguousarray(source_frames[: chunk.num_frames])
    return ChunkRequest(index=0, start_frame=0, num_frames=chunk.num_frames,
                        audio=np.zeros(last - first, np.float32), audio_offset=offset,
                        reference_frame=reference, reference_index=0, source_frames=frames, tier=tier)


async def warm_up(pool, request: ChunkRequest, now) -> WarmUp:
    """Run ``request`` twice on ``pool``: the cold cost, then the warm one (``now``: the clock's reading).

    Each cost is the generator's own time when it reports one: a warm-up has no deadline, so it waits
    behind every real chunk of other sessions, and that wait is not what a chunk of this one costs."""
    costs = []
    for _ in range(2):
        started = now()
        result = await pool.run(request, started + WARM_UP_SECONDS)
        costs.append(result.seconds if result.seconds > 0 else now() - started)
    return WarmUp(*costs)
