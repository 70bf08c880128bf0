"""The baseline every accelerator must beat: plain Euler on a shorter schedule of the same family.

At time fraction f the reference's T steps become k = max(1, round(f·T)) steps with the same shift,
so the σ's still run from 1 to 0; every token is computed at each of them.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..schedule import FlowMatchSchedule
from .euler import EulerSampler


class FewerStepsSampler:
    name = "fewer_steps"

    def __init__(self, fraction: float):
        if not 0 < fraction <= 1:
            raise ConfigError(f"fraction must be in (0, 1], got {fraction!r}")
        self.fraction = fraction

    def steps_for(self, steps: int) -> int:
        return max(1, round(self.fraction * steps))

    @torch.inference_mode()
    def sample(self, adapter, x, grid, conditioning, schedule: FlowMatchSchedule, frozen=None, callback=None):
        steps = self.steps_for(schedule.steps)
        result = EulerSampler().sample(adapter, x, grid, conditioning, FlowMatchSchedule(steps, schedule.shift),
                                       frozen=frozen, callback=callback)
        fraction = steps / schedule.steps  # relative to the reference schedule, like every other method
        result.token_fraction = result.predicted_compute_fraction = result.achieved_compute_fraction = fraction
        result.extra["steps"] = steps
        return result
