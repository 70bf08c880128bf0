"""EasyCache-style step skipping: a whole model call is replaced by the cached transformation.

EasyCache (Zhou et al., "Less is Enough: Training-Free Video Diffusion Acceleration via
Runtime-Adaptive Caching", arXiv 2507.02860), rewritten for our sampler interface (no maintained
package covers it). After each computed step the *transformation* Δ_b = output_b − input is cached
per CFG branch, and the transformation rate k = mean|out − out_prev| / mean|x − x_prev| is measured.
At a later step the output change is predicted as k · mean|x − x_prev| / mean|out_prev| and
accumulated; while the sum stays below ``threshold`` the step reuses out_b = x + Δ_b (no model
call), otherwise it computes and the sum resets. The first ``warmup_fraction`` of the steps and the
last step are always computed, as in the reference implementation.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import GuidedDenoiser, SampleResult, StepStats, Stopwatch, sigma_input, validate_inputs


class EasyCacheSampler:
    name = "easycache"

    def __init__(self, threshold: float, warmup_fraction: float = 0.1):
        if threshold < 0:
            raise ConfigError(f"threshold must be ≥ 0, got {threshold!r}")
        self.threshold = threshold
        self.warmup_fraction = warmup_fraction

    @torch.inference_mode()
    def sample(self, adapter, x, grid, conditioning, schedule, frozen=None, callback=None) -> SampleResult:
        validate_inputs(x, grid, frozen)
        steps = schedule.steps
        warmup = max(2, round(self.warmup_fraction * steps))
        denoiser = GuidedDenoiser(adapter, grid, conditioning)
        sigmas = schedule.sigmas.tolist()
        clock = Stopwatch(x.device)
        x = x.to(torch.float32).clone()
        initial = x.clone()

        transformations: list[torch.Tensor] | None = None  # Δ_b per branch
        previous_input = previous_output = None  # x of the last step, output (cond) of the last computed step
        rate = None  # k
        accumulated = 0.0
        stats: list[StepStats] = []
        start = clock.now()
        for i in range(steps):
            step_start = clock.now()
            compute = i < warmup or i == steps - 1 or rate is None
            input_change = None if previous_input is None else float((x - previous_input).abs().mean())
            if not compute:
                accumulated += rate * input_change / (float(previous_output.abs().mean()) + 1e-12)
                compute = accumulated >= self.threshold
            sigma = sigma_input(sigmas[i], grid.batch, frozen).to(x.device)
            if compute:
                accumulated = 0.0
                outputs = denoiser.velocities(x, sigma)
                if previous_output is not None and input_change:
                    rate = float((outputs[0] - previous_output).abs().mean()) / input_change
                previous_output = outputs[0]
                transformations = [out - x for out in outputs]
            else:
                outputs = [x + delta for delta in transformations]
            previous_input = x.clone()

            velocity = denoiser.guide(x, sigma, outputs)
            if frozen is not None:
                velocity[:, frozen] = 0
            x.add_(velocity, alpha=sigmas[i + 1] - sigmas[i])
            stats.append(StepStats(i, sigmas[i], grid.num_tokens if compute else 0, 0, None, clock.now() - step_start))
            if callback is not None:
                callback(stats[-1])
        if frozen is not None:
            x[:, frozen] = initial[:, frozen]
        computed = sum(1 for s in stats if s.active_tokens)
        return SampleResult(tokens=x, steps=stats, num_tokens=grid.num_tokens, token_fraction=computed / steps,
                            predicted_compute_fraction=computed / steps, achieved_compute_fraction=computed / steps,
                            predicted_seconds=None, seconds=clock.now() - start,
                            extra={"computed_steps": computed, "threshold": self.threshold})
