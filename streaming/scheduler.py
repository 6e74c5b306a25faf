"""The latency budget per chunk: which tier a chunk can afford, from the measured cost of recent chunks.

Each chunk has a deadline (its first new frame's playout time minus a margin). Before submitting a
chunk, the scheduler compares the time left with the estimated cost of each tier, best first, and picks
the first that fits (the cheapest is still tried when only the safety margin is missing). When none
fits, the chunk is skipped: its slot plays the fallback frames and the generator's time goes to the
next chunk. This is backpressure on the generator's input, at chunk level:
playing late chunks late would grow the delay without bound, dropping them at playout would not help
throughput (spec/realtime.md).

Costs are measured from submission to result, queueing included, and smoothed per tier when they rise;
a cost lower than the estimate replaces it at once, so the estimate recovers within one chunk once the
load drops (a load spike must not keep skipping chunks the generator could now afford). A tier's
estimate is only refreshed when it runs, so estimates of better tiers not run lately shrink a little
each chunk: the scheduler tries them again once the load has gone, instead of staying degraded forever.

A generator may declare prior costs (the capacity planner's prediction for its hardware, model/planner.py):
a tier not measured yet is judged by its prior instead of being tried blind, and its first measurement
replaces the prior. Priors do not shrink: they predict the idle hardware, so there is no load to wait out
(a tier the planner rules out is not tried at all; a calibration file makes the planner right).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from model.base import Tier

# The default ladder, best first. Generators read the knobs they understand (``steps`` for diffusion
# models, ``scale`` for resolution) and ignore the rest; the measured costs tell whether a tier pays.
DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier("full"),
    Tier("fast", steps=4, scale=0.75),
    Tier("draft", steps=2, scale=0.5),
)


SAFETY = 1.2  # estimates are multiplied by this before comparing with the time left


@dataclasses.dataclass(frozen=True)
class Decision:
    tier: Tier | None  # None: skip the chunk (its slot plays the fallback)
    level: int  # index in the ladder; len(ladder) for a skip
    time_left: float
    estimate: float | None  # the chosen tier's estimated cost, when known

    @property
    def skipped(self) -> bool:
        return self.tier is None

    @property
    def degraded(self) -> bool:
        return self.level > 0


class Scheduler:
    def __init__(self, tiers: Sequence[Tier] = DEFAULT_TIERS, safety: float = SAFETY, smoothing: float = 0.5,
                 recovery: float = 0.9, priors: Mapping[str, float] | None = None) -> None:
        if not tiers:
            raise ValueError("the tier ladder is empty")
        self.tiers = tuple(tiers)
        self.safety = safety  # estimates are multiplied by this before comparing with the time left
        self.smoothing = smoothing  # weight of the newest measurement
        self.recovery = recovery  # per-chunk shrink of estimates of better tiers not run
        names = {tier.name for tier in self.tiers}
        self._estimate: dict[str, float] = {name: float(cost) for name, cost in (priors or {}).items() if name in names}
        self._measured: set[str] = set()  # tiers whose estimate comes from running them

    def estimate(self, tier: Tier) -> float | None:
        return self._estimate.get(tier.name)

    def measured(self, tier: Tier) -> bool:
        """Whether the tier's estimate is measured (not a prior)."""
        return tier.name in self._measured

    def choose(self, time_left: float) -> Decision:
        """The best tier whose estimated cost (with the safety factor) fits in ``time_left`` seconds;
        unknown costs are tried. When none fits with the margin but the cheapest fits without it, that
        one is tried anyway: a miss costs no more than a skip (the slot plays its fallback either way)."""
        if time_left > 0:
            for level, tier in enumerate(self.tiers):
                cost = self._estimate.get(tier.name)
                if cost is None or cost * self.safety <= time_left:
                    self._relax(level)
                    return Decision(tier, level, time_left, cost)
            level, tier = len(self.tiers) - 1, self.tiers[-1]
            if self._estimate[tier.name] <= time_left:
                self._relax(level)
                return Decision(tier, level, time_left, self._estimate[tier.name])
        self._relax(len(self.tiers))  # skipping idles the generator: its estimates may be stale
        return Decision(None, len(self.tiers), time_left, None)

    def _relax(self, chosen: int) -> None:
        for tier in self.tiers[:chosen]:
            if tier.name in self._measured:
                self._estimate[tier.name] *= self.recovery

    def record(self, tier: Tier, seconds: float) -> None:
        """A chunk at ``tier`` took ``seconds`` from submission to result (the first replaces any prior)."""
        old = self._estimate.get(tier.name) if tier.name in self._measured else None
        self._estimate[tier.name] = seconds if old is None or seconds <= old else (
            self.smoothing * seconds + (1 - self.smoothing) * old)
        self._measured.add(tier.name)
