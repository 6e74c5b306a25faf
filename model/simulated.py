"""The ``simulated`` generator: a GPU machine that costs what the capacity planner predicts.

``simulate=h100x8`` (KINDxN) names the hardware. Each chunk sleeps for the planner's chunk time of the
requested tier at the request's size and window (model/planner.py) and returns the reference frame
repeated: the live server's scheduler, tiers and backpressure then run on a CPU against the real
model's cost structure. It declares the ``infinitetalk`` generator's tier ladder and the same priors,
and the same audio margins (8 s of context, 1 s of lookahead), which set the live latency budget.
The efficiencies are the planner's defaults unless ``calibration=PATH`` is given (never read implicitly,
so a run is reproducible).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from model.base import AudioMargins, ChunkRequest, ChunkResult
from model.calibration import read_calibration
from model.gpus import parse_gpus
from model.infinitetalk.live_tiers import PriorCosts, prior_costs, tier_work

DEFAULT_HARDWARE = "h100x8"


@dataclasses.dataclass(frozen=True)
class SimulatedOptions:
    simulate: str = DEFAULT_HARDWARE
    dtype: str = "bf16"
    steps: int = 40  # the configured sampler, as the infinitetalk generator's options
    text_guidance: float = 5.0
    audio_guidance: float = 4.0
    audio_context: float = 8.0
    audio_lookahead: float = 1.0
    calibration: str | None = None


class SimulatedGenerator:
    name = "simulated"
    default_color_correction = 0.0
    applies_color_correction = False

    def __init__(self, options: SimulatedOptions = SimulatedOptions(), sleep: Callable[[float], None] = time.sleep):
        gpu, count = parse_gpus(options.simulate)
        calibration = read_calibration(options.calibration, required=True) if options.calibration else None
        self.options = options
        self.hardware = f"{count}x{gpu.kind}"
        self.audio_margins = AudioMargins(options.audio_context, options.audio_lookahead)
        self.prior_costs: PriorCosts = prior_costs(gpu, count, options.dtype, options.steps, options.text_guidance,
                                                   options.audio_guidance, calibration)
        self.tiers = tuple(work.tier for work in self.prior_costs.ladder)
        self._sleep = sleep

    def cost(self, request: ChunkRequest) -> float:
        """The planner's seconds for this request's tier, size and window."""
        o = self.options
        work = tier_work(request.tier, o.steps, o.text_guidance, o.audio_guidance)
        return self.prior_costs.tier_seconds(work, request.size, request.num_frames, request.num_context)

    def generate(self, request: ChunkRequest) -> ChunkResult:
        seconds = self.cost(request)
        self._sleep(seconds)
        frames = np.ascontiguousarray(np.broadcast_to(request.reference_frame,
                                                      (request.num_new, *request.reference_frame.shape)))
        return ChunkResult(frames, seconds, {"simulated": self.hardware, "tier": request.tier.name})

    def close(self) -> None:
        pass


def build(**options) -> SimulatedGenerator:
    fields = {f.name: f for f in dataclasses.fields(SimulatedOptions)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(f"unknown simulated options {', '.join(unknown)}: accepted are {', '.join(fields)}")
    defaults = SimulatedOptions()
    values = {}
    for key, value in options.items():
        default = getattr(defaults, key)
        try:
            values[key] = type(default)(value) if isinstance(default, (int, float)) and isinstance(value, str) else value
        except ValueError:
            raise ValueError(f"bad value {value!r} for simulated option {key}") from None
    return SimulatedGenerator(SimulatedOptions(**values))
