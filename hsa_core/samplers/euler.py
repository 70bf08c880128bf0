"""The reference sampler: plain flow-matching Euler with classifier-free guidance.

x_{i+1} = x_i + (σ_{i+1} − σ_i) · v̂(x_i, σ_i), every token at every step, state in float32.
Frozen (conditioning) tokens see σ = 0 and are never stepped — Wan 2.2 TI2V's first frame.
"""

from __future__ import annotations

import torch

from ..adapters.base import DenoiserAdapter, TokenGrid
from ..schedule import FlowMatchSchedule
from .base import (
    Conditioning,
    GuidedDenoiser,
    SampleResult,
    StepCallback,
    StepStats,
    Stopwatch,
    sigma_input,
    validate_inputs,
)


class EulerSampler:
    name = "euler"

    @torch.inference_mode()
    def sample(
        self,
        adapter: DenoiserAdapter,
        x: torch.Tensor,
        grid: TokenGrid,
        conditioning: Conditioning,
        schedule: FlowMatchSchedule,
        frozen: torch.Tensor | None = None,
        callback: StepCallback | None = None,
    ) -> SampleResult:
        validate_inputs(x, grid, frozen)
        denoiser = GuidedDenoiser(adapter, grid, conditioning)
        clock = Stopwatch(x.device)
        sigmas = schedule.sigmas.tolist()
        x = x.to(torch.float32).clone()
        initial = x.clone()
        stats: list[StepStats] = []
        start = clock.now()
        for i in range(schedule.steps):
            step_start = clock.now()
            velocity = denoiser(x, sigma_input(sigmas[i], grid.batch, frozen).to(x.device))  # (B, N, D)
            if frozen is not None:
                velocity[:, frozen] = 0
            x.add_(velocity, alpha=sigmas[i + 1] - sigmas[i])  # same arithmetic as HSA's update
            stats.append(StepStats(i, sigmas[i], grid.num_tokens, 0, None, clock.now() - step_start))
            if callback is not None:
                callback(stats[-1])
        if frozen is not None:
            x[:, frozen] = initial[:, frozen]  # exact, whatever the signs of zero did
        return SampleResult(
            tokens=x,
            steps=stats,
            num_tokens=grid.num_tokens,
            token_fraction=1.0,
            predicted_compute_fraction=1.0,
            achieved_compute_fraction=1.0,
            predicted_seconds=None,
            seconds=clock.now() - start,
        )
