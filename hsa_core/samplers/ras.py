"""RAS-style per-step top-k token selection — the closest token-level prior art to HSA.

RAS (Liu et al., "Region-Adaptive Sampling for Diffusion Transformers", arXiv 2502.10389) decides
*every step* which tokens the model computes: the k tokens whose latest output is most uncertain
(largest standard deviation over the token's channels), with tokens that have waited too long forced
in (its starvation guard). Unselected tokens reuse their cached output, and the selected ones attend
to everyone through cached K/V — so it shares HSA's machinery and differs in the policy: a greedy
per-step ranking instead of a budgeted allocation of step divisors from velocity dynamics.

Same warm-up and final full windows as HSA (``HSAConfig``) and the same budget → token-evaluation
conversion (``CostModel``), so the two compare at equal compute; k is the budget spread evenly over
the window.
"""

from __future__ import annotations

import torch

from ..cost_model import CostModel
from ..errors import ConfigError
from .base import GuidedDenoiser, SampleResult, StepStats, Stopwatch, sigma_input, validate_inputs
from .hsa import HSAConfig


class RASSampler:
    name = "ras"

    def __init__(self, budget: float, config: HSAConfig | None = None, max_staleness: int = 16,
                 cost_model: CostModel | None = None):
        if not 0 < budget <= 1:
            raise ConfigError(f"budget must be in (0, 1], got {budget!r}")
        if max_staleness < 1:
            raise ConfigError(f"max_staleness must be ≥ 1, got {max_staleness!r}")
        self.budget, self.config, self.max_staleness = budget, config or HSAConfig(), max_staleness
        self.cost_model = cost_model

    @torch.inference_mode()
    def sample(self, adapter, x, grid, conditioning, schedule, frozen=None, callback=None) -> SampleResult:
        validate_inputs(x, grid, frozen)
        cost_model = self.cost_model or CostModel()
        steps, num_tokens = schedule.steps, grid.num_tokens
        device = x.device
        generated = torch.arange(num_tokens, device=device) if frozen is None else (~frozen).nonzero().squeeze(1)
        warmup, final = self.config.windows(steps)
        window_steps = steps - warmup - final
        window_budget = cost_model.token_evaluations(self.budget, steps, num_tokens) - (warmup + final) * num_tokens
        per_step = 0 if window_steps <= 0 else int(round(window_budget / window_steps))
        sparse = self.budget < 1 and window_steps > 0 and per_step < generated.numel()
        if sparse and per_step < 1:
            raise ConfigError(f"budget {self.budget:g} leaves no tokens to compute in the caching window")

        denoiser = GuidedDenoiser(adapter, grid, conditioning, with_kv_cache=sparse)
        sigmas = schedule.sigmas.tolist()
        clock = Stopwatch(device)
        x = x.to(torch.float32).clone()
        initial = x.clone()
        velocity = torch.zeros_like(x)
        last_step = torch.zeros(num_tokens, dtype=torch.long, device=device)
        stats: list[StepStats] = []
        start = clock.now()
        for i in range(steps):
            step_start = clock.now()
            if sparse and warmup <= i < steps - final:
                uncertainty = velocity[:, generated].std(-1).mean(0)  # (G,)
                starving = (i - last_step[generated]) >= self.max_staleness
                priority = torch.where(starving, torch.full_like(uncertainty, float("inf")), uncertainty)
                active = generated[torch.topk(priority, per_step).indices]
                fresh = denoiser(x[:, active], sigma_input(sigmas[i], grid.batch, None).to(device), active)
                velocity[:, active] = fresh
                last_step[active] = i
                computed = active.numel()
            else:
                fresh = denoiser(x, sigma_input(sigmas[i], grid.batch, frozen).to(device))
                if frozen is not None:
                    fresh[:, frozen] = 0
                velocity.copy_(fresh)
                last_step[:] = i
                computed = num_tokens
            x.add_(velocity, alpha=sigmas[i + 1] - sigmas[i])  # unselected tokens reuse their cached output
            stats.append(StepStats(i, sigmas[i], computed, 0, None, clock.now() - step_start))
            if callback is not None:
                callback(stats[-1])
        if frozen is not None:
            x[:, frozen] = initial[:, frozen]
        actual = [s.active_tokens for s in stats]
        fraction = cost_model.compute_fraction(actual, num_tokens)
        return SampleResult(tokens=x, steps=stats, num_tokens=num_tokens,
                            token_fraction=sum(actual) / (steps * num_tokens), predicted_compute_fraction=fraction,
                            achieved_compute_fraction=fraction, predicted_seconds=None, seconds=clock.now() - start,
                            kv_cache_bytes=denoiser.kv_cache_bytes, extra={"tokens_per_step": per_step})
