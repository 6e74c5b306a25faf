"""TeaCache, the official way (spec §6.4): skip the block stack when the timestep modulation has barely moved.

Per guidance branch, the relative L1 change of the modulation ``e0`` since that branch's previous call is
rescaled by a fitted polynomial and accumulated; while the sum stays under the threshold the block stack
is skipped and its last residual reused, otherwise it runs and the sum resets. The first 5 steps always
run (``use_ret_steps``). The official code tells branches apart by call order modulo 3, which mislabels
them in the 2-pass mode; here each branch is keyed by its name (the same thing for 3 passes).
"""

from __future__ import annotations

import numpy as np
import torch

COEFFICIENTS = {  # use_ret_steps=True, per resolution setting
    480: [2.57151496e05, -3.54229917e04, 1.40286849e03, -1.35890334e01, 1.32517977e-01],
    720: [8.10705460e03, 2.13393892e03, -3.72934672e02, 1.66203073e01, -4.17769401e-02],
}
WARMUP_STEPS = 5


class TeaCache:
    """State for one chunk's denoising loop."""

    def __init__(self, threshold: float = 0.2, resolution: int = 480) -> None:
        self.threshold = threshold
        self.rescale = np.poly1d(COEFFICIENTS[resolution])
        self.step = 0
        self.branches: dict[str, dict] = {}

    def next_step(self) -> None:
        self.step += 1

    def should_compute(self, branch: str, modulation: torch.Tensor) -> bool:
        state = self.branches.setdefault(branch, {"accumulated": 0.0, "previous": None, "residual": None})
        if self.step < WARMUP_STEPS or state["residual"] is None:
            compute = True
            state["accumulated"] = 0.0
        else:
            previous = state["previous"]
            change = ((modulation - previous).abs().mean() / previous.abs().mean()).cpu().item()
            state["accumulated"] += self.rescale(change)
            compute = state["accumulated"] >= self.threshold
            if compute:
                state["accumulated"] = 0.0
        state["previous"] = modulation.clone()
        return compute

    def residual(self, branch: str) -> torch.Tensor:
        return self.branches[branch]["residual"]

    def store(self, branch: str, residual: torch.Tensor) -> None:
        self.branches[branch]["residual"] = residual
