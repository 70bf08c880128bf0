"""Mixture-of-experts schedules (Wan 2.2 A14B): one model above a timestep boundary, another below.

Wan 2.2 A14B gives the steps with timestep ≥ boundary_ratio · 1000 to a high-noise expert and the
rest to a low-noise expert, each with its own guidance scale (diffusers' ``guidance_scale`` and
``guidance_scale_2``). Here each expert's span of the schedule is sampled as its own run of the same
sampler, the runs chained through the latent tokens:

* at budget 1 the chain *is* diffusers' loop: the same σ's, the same Euler update, the same expert
  and guidance scale at every step;
* the switch is a full refresh: the low-noise run starts with new K/V caches and full warm-up
  steps, so no token keeps a velocity, a score or a K/V row from the other expert (the experts'
  velocities are not comparable, so neither are scores across the switch);
* an HSA budget b applies to the whole chain: every span gets b of its own cost, except a span
  too short to go below some larger minimum, which gets that minimum while the others pay for it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from ..adapters.base import DenoiserAdapter, TokenGrid
from ..errors import BudgetInfeasibleError, ConfigError
from ..schedule import FlowMatchSchedule
from .base import Conditioning, Sampler, SampleResult, StepCallback
from .hsa import HSASampler


@dataclass(frozen=True)
class Expert:
    """One model of a mixture and the conditioning (guidance scale included) it denoises with."""

    adapter: DenoiserAdapter
    conditioning: Conditioning


@dataclass(frozen=True)
class ScheduleSpan:
    """Steps [start, start + steps) of a schedule: the part of it one expert runs."""

    sigmas: torch.Tensor  # (steps + 1,) σ at the span's steps and at the step after its last
    start: int

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1


def expert_switch_step(schedule: FlowMatchSchedule, boundary_ratio: float) -> int:
    """The first step of the low-noise expert.

    diffusers' rule, with the same float32 comparison: the high-noise expert takes every step whose
    timestep t satisfies t ≥ boundary_ratio · num_train_timesteps. Timesteps decrease, so those
    steps come first.
    """
    if not 0 < boundary_ratio < 1:
        raise ConfigError(f"boundary_ratio must be in (0, 1), got {boundary_ratio!r}")
    high_noise = schedule.timesteps >= boundary_ratio * schedule.num_train_timesteps
    return int(high_noise.sum())


def chain_min_budget(config, span_steps: list[int], num_tokens: int, frozen_tokens: int = 0,
                     cost_model=None) -> float:
    """The smallest budget a chain of expert spans of ``span_steps`` steps can honour: every span at its own
    minimum (a span too short for a caching window costs its whole share), weighted by its steps."""
    minimums = [config.min_budget(steps, num_tokens, cost_model, frozen_tokens) for steps in span_steps]
    return sum(m * steps for m, steps in zip(minimums, span_steps)) / sum(span_steps)


def span_budgets(sampler: HSASampler, spans: list[ScheduleSpan], num_tokens: int, frozen_tokens: int) -> list[float]:
    """Per-span budgets whose cost-weighted mean is the sampler's budget, none below its span's minimum.

    Spans of one model family cost the same per step, so a span's share of the chain is its share of
    the steps. Spans whose minimum exceeds the common budget are pinned at their minimum and the
    common budget of the others is lowered to compensate, until no span is below its minimum.
    """
    target = sampler.budget * sum(span.steps for span in spans)
    minimums = [
        sampler.config.min_budget(span.steps, num_tokens, sampler.cost_model, frozen_tokens) if sampler.budget < 1
        else 1.0
        for span in spans
    ]
    pinned: set[int] = set()
    while True:
        free_steps = sum(span.steps for k, span in enumerate(spans) if k not in pinned)
        pinned_cost = sum(minimums[k] * spans[k].steps for k in pinned)
        common = (target - pinned_cost) / free_steps if free_steps else None
        newly_pinned = {k for k in range(len(spans)) if k not in pinned and (common is None or common < minimums[k])}
        if not newly_pinned:
            break
        pinned |= newly_pinned
    if common is None:  # every span is at its minimum and the chain still costs more than the budget
        chain_minimum = chain_min_budget(sampler.config, [span.steps for span in spans], num_tokens, frozen_tokens,
                                         sampler.cost_model)
        raise BudgetInfeasibleError(
            f"budget {sampler.budget:g} is below the minimum {chain_minimum:.3f} of this two-expert schedule "
            f"(expert spans of {', '.join(str(s.steps) for s in spans)} steps)",
            chain_minimum,
        )
    return [minimums[k] if k in pinned else min(1.0, common) for k in range(len(spans))]


def sample_with_experts(
    sampler: Sampler,
    experts: list[Expert],
    switch_steps: list[int],
    x: torch.Tensor,
    grid: TokenGrid,
    schedule: FlowMatchSchedule,
    frozen: torch.Tensor | None = None,
    callback: StepCallback | None = None,
    before_expert: Callable[[int], None] | None = None,
) -> SampleResult:
    """Sample with ``experts[k]`` on steps [switch_steps[k − 1], switch_steps[k]) (the first from step 0).

    ``switch_steps`` has one entry fewer than ``experts``; an expert whose span is empty is skipped.
    ``before_expert(k)`` runs before expert k's span (e.g. to move it onto the device).
    """
    if len(switch_steps) != len(experts) - 1 or sorted(switch_steps) != list(switch_steps):
        raise ConfigError("switch_steps must be sorted and one shorter than experts")
    bounds = [0, *switch_steps, schedule.steps]
    sigmas = schedule.sigmas
    stages = [
        (index, expert, ScheduleSpan(sigmas[start : stop + 1], start))
        for index, (expert, start, stop) in enumerate(zip(experts, bounds, bounds[1:]))
        if stop > start
    ]
    samplers = [sampler] * len(stages)
    if isinstance(sampler, HSASampler) and len(stages) > 1:
        frozen_tokens = 0 if frozen is None else int(frozen.sum())
        budgets = span_budgets(sampler, [span for _, _, span in stages], grid.num_tokens, frozen_tokens)
        samplers = [HSASampler(b, sampler.config, sampler.cost_model, sampler.replan) for b in budgets]

    results: list[SampleResult] = []
    for (index, expert, span), span_sampler in zip(stages, samplers):
        if before_expert is not None:
            before_expert(index)

        def shifted(stats, offset=span.start):  # step numbers of the whole schedule, not of the span
            callback(replace(stats, step=stats.step + offset))

        result = span_sampler.sample(expert.adapter, x, grid, expert.conditioning, span, frozen=frozen,
                                     callback=shifted if callback is not None else None)
        for stats in result.steps:
            stats.step += span.start
        results.append(result)
        x = result.tokens
    return _chain(results, schedule.steps, grid.num_tokens)


def _chain(results: list[SampleResult], steps: int, num_tokens: int) -> SampleResult:
    """One result for consecutive runs over one schedule; fractions are step-weighted means."""
    def weighted(values: list[float]) -> float:
        return sum(v * len(r.steps) for v, r in zip(values, results)) / steps

    predicted = [r.predicted_seconds for r in results]
    all_steps = [s for r in results for s in r.steps]
    return SampleResult(
        tokens=results[-1].tokens,
        steps=all_steps,
        num_tokens=num_tokens,
        token_fraction=sum(s.active_tokens for s in all_steps) / (steps * num_tokens),
        predicted_compute_fraction=weighted([r.predicted_compute_fraction for r in results]),
        achieved_compute_fraction=weighted([r.achieved_compute_fraction for r in results]),
        predicted_seconds=None if None in predicted else sum(predicted),
        seconds=sum(r.seconds for r in results),
        kv_cache_bytes=max(r.kv_cache_bytes for r in results),  # one expert's caches are freed before the next
        extra={"experts": [{"first_step": r.steps[0].step, "steps": len(r.steps), **r.extra} for r in results]},
    )


__all__ = ["Expert", "ScheduleSpan", "chain_min_budget", "expert_switch_step", "sample_with_experts", "span_budgets"]
