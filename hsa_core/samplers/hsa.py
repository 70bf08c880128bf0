"""HSA: Heterogeneous Step Allocation (Chu & Patel, arXiv 2605.06892; our reconstruction).

Steps 0 … T−1 fall into three windows:

    [0, w)        warm-up: every token computed; fills the K/V cache, gives each token two velocities
    [w, T − f)    caching window: only the tokens the allocation makes active are computed
    [T − f, T)    final window: every token computed, so every token ends on a fresh prediction

Velocity-dynamics score, refreshed whenever a token is computed (guided velocity, L1 over channels):

    sₙ = ‖vₙ(now) − vₙ(prev)‖₁ / (‖vₙ(prev)‖₁ + ε)            [/ (σ_prev − σ_now) with sigma_gap]

Every ``refresh_interval`` steps inside the window the remaining token-evaluation budget is split over
the remaining steps (``step_budget``: evenly, or by the predicted change of the velocity over each
step, |Δ log(1 − σ)|: the trajectory bends most at the start) and the plan's share is solved into step divisors and phases that spend it
(``allocation.py``; aligned by default), so a token that starts to move is promoted. Active tokens
attend over all N tokens through the per-layer K/V cache (the adapter's KV-cache synchronisation);
inactive tokens are not computed at all.

Skipped tokens still move at every step, x ← x + (σᵢ₊₁ − σᵢ)·ûₙ, with a velocity from their cache:

    cached_euler   ûₙ = vₙ(k)                                   (zero-order hold; the paper's update)
    extrapolated   ûₙ = vₙ(k) + τ·(vₙ(k) − vₙ(p)),  τ = min(limit, (σ_k − σᵢ)/(σ_p − σ_k))

k and p the token's last two evaluations: the line through them in σ, read at the step's σ, with the
reach τ capped (``extrapolation_limit``) so a token whose divisor grew is not pushed along one old
difference for many steps. Under the zero-order hold a token computed at step k and next at step j
moves in the single jump x_j = x_k + (σ_j − σ_k)·v_k. Computed tokens take the plain Euler step.

The budget b ∈ (0, 1] is a fraction of the full sampler's cost; the cost model turns it into an
exact number of token evaluations (``cost_model.py``). At b = 1 every step is full and the sampler
is the plain Euler sampler.

Guidance: every guidance branch (CFG's two, and further terms such as LTX-2's spatio-temporal and
modality guidance, ``GuidedDenoiser``) computes the same active set — a token's guided velocity needs
all of them — and each branch has its own K/V cache. Guidance rescaling's per-group statistics use
each skipped token's last predictions. Conditioning (frozen) tokens are never stepped, but they are
context: at every caching-window step that computes anything they are computed too (at σ = 0, their
velocities discarded) so their K/V follow the denoising tokens, and they count towards the budget.
Computed at full steps only (``refresh_conditioning=False``, an ablation), their K/V would stay at
the warm-up's for the whole window while every other token copies from them.

Always-active tokens (``grid.always_active``, LTX-2's audio) are computed at every step and take no
part in the allocation. They count towards the budget like any other token: the evaluations left
after theirs are what the allocation spreads over the other tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Literal

import torch

from ..adapters.base import DenoiserAdapter, TokenGrid
from ..allocation import AllocationPlan, assign_phases, log_signal_steps, solve_plan, step_rates
from ..cost_model import CostModel
from ..errors import BudgetInfeasibleError, ConfigError
from ..schedule import FlowMatchSchedule
from .base import (
    Conditioning,
    GuidedDenoiser,
    SampleResult,
    StepCallback,
    StepStats,
    Stopwatch,
    validate_inputs,
)
from .kv_forecast import ForecastKVCache

_CACHE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
if hasattr(torch, "float8_e4m3fn"):  # a float8 cache where this torch build has the dtype
    _CACHE_DTYPES["float8_e4m3fn"] = torch.float8_e4m3fn


@dataclass(frozen=True)
class HSAConfig:
    """Every choice the paper leaves open to us, with its default.

    warmup_fraction: share of the T steps run full at the start; w = max(2, round(fraction·T)) so
        every token has two velocities before it is scored.
    final_fraction: share of the T steps run full at the end; f = max(1, round(fraction·T)), and no final
        window at 0 (the last steps are then planned like the rest of the window).
    divisors: the step divisors d a token can get (active every d-th step).
    refresh_interval: steps between re-allocations inside the caching window.
    rate_exponent: α in rate ∝ score^α (½ minimises Σ score·divisor under the budget; 0 ignores the
        scores: every token gets the plan's rate).
    score_normalization: "sigma_gap" divides the relative velocity change by the σ distance between
        the two evaluations (a change per unit of σ, comparable across divisors); "none" does not.
    stagger_phases: True spreads each divisor group over its phases for a steady per-step load; False
        aligns every group on one grid (nested groups, a dense step every max(divisors) steps), so
        tokens computed together see each other's fresh K/V — bursty per-step load, better fidelity.
    skipped_update: how a skipped token moves. "extrapolated": along the line through its last two
        velocities, read at the step's σ (one more (B, N, D) float32 velocity buffer); "cached_euler":
        with its last velocity (the paper's cached Euler update, a zero-order hold); "frozen" (an
        ablation): not at all until it is computed again.
    extrapolation_limit: the reach τ of the extrapolation, in units of the σ gap between the token's
        last two evaluations (τ ≤ limit).
    step_budget: how the remaining budget is split over the remaining steps at each re-allocation:
        "log_signal" ∝ |Δ log(1 − σ)| of each step to the power ``step_budget_exponent`` (the predicted
        change of the whole latent's velocity over the step: most at the start, where the trajectory
        bends), "even" the same rate at every step.
    step_budget_exponent: γ of the "log_signal" split (0 is "even").
    kv_forecast_layers: with "extrapolated", also read skipped tokens' cached K/V of the first this many
        layers along the line through their last two evaluations (``kv_forecast.py``); 0: none. Keeps a
        second cache for those layers: k of L layers cost k/L of HSA's K/V memory more, all of them double it.
    kv_cache_dtype: dtype of cached K/V ("float32", "bfloat16", "float16", and "float8_e4m3fn" where
        torch has it: saturating, a quarter of an fp32 cache); None keeps the model's.
    kv_cache_location: "device" keeps the K/V cache where the model computes; "host" keeps it in CPU
        memory and moves one layer's rows to the device when that layer attends (a cache larger than
        the GPU runs, slower; the same arithmetic).
    score_eps: ε in the score's denominator.

    Ablations (the defaults are HSA; the others exist to measure what each part is worth):
    kv_sync: False drops inactive tokens from attention (active tokens attend to each other only)
        instead of reading their cached K/V.
    score: "random" allocates from random scores (redrawn at each re-allocation) instead of the
        velocity dynamics.
    refresh_conditioning: False computes conditioning tokens at full steps only (their K/V go stale
        for the whole caching window) instead of at every window step.
    context: "fresh" is an oracle, not a saving: every token is computed at every step, so active
        tokens attend to fresh K/V of all tokens, but only the active tokens' velocities are used (and
        counted, with the conditioning context a cached step would compute). Against "cached" it
        measures what stale K/V context costs.

    ``HSAConfig.paper()`` is the method as the paper describes it: zero-order cached Euler, the budget
    spread evenly over the window, the original windows.
    """

    warmup_fraction: float = 0.075
    final_fraction: float = 0.0
    divisors: tuple[int, ...] = (1, 2, 4, 8, 16)
    refresh_interval: int = 8
    rate_exponent: float = 0.25
    score_normalization: Literal["sigma_gap", "none"] = "sigma_gap"
    stagger_phases: bool = False
    skipped_update: Literal["extrapolated", "cached_euler", "frozen"] = "extrapolated"
    extrapolation_limit: float = 1.0
    step_budget: Literal["log_signal", "even"] = "log_signal"
    step_budget_exponent: float = 0.75
    kv_forecast_layers: int = 0
    kv_cache_dtype: str | None = None
    kv_cache_location: Literal["device", "host"] = "device"
    score_eps: float = 1e-6
    kv_sync: bool = True
    score: Literal["velocity", "random"] = "velocity"
    refresh_conditioning: bool = True
    context: Literal["cached", "fresh"] = "cached"

    def __post_init__(self) -> None:
        for name in ("warmup_fraction", "final_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        if not self.divisors or any(not isinstance(d, int) or d < 1 for d in self.divisors):
            raise ConfigError(f"divisors must be integers ≥ 1, got {self.divisors!r}")
        if len(set(self.divisors)) != len(self.divisors):
            raise ConfigError(f"divisors must be distinct, got {self.divisors!r}")
        if self.refresh_interval < 1:
            raise ConfigError(f"refresh_interval must be ≥ 1, got {self.refresh_interval!r}")
        if self.rate_exponent < 0:
            raise ConfigError(f"rate_exponent must be ≥ 0, got {self.rate_exponent!r}")
        if self.score_normalization not in ("sigma_gap", "none"):
            raise ConfigError(f"score_normalization must be 'sigma_gap' or 'none', got {self.score_normalization!r}")
        if self.skipped_update not in ("extrapolated", "cached_euler", "frozen"):
            raise ConfigError("skipped_update must be 'extrapolated', 'cached_euler' or 'frozen', "
                              f"got {self.skipped_update!r}")
        if not (math.isfinite(self.extrapolation_limit) and self.extrapolation_limit >= 0):
            raise ConfigError(f"extrapolation_limit must be a finite number ≥ 0, got {self.extrapolation_limit!r}")
        if self.step_budget not in ("log_signal", "even"):
            raise ConfigError(f"step_budget must be 'log_signal' or 'even', got {self.step_budget!r}")
        if not (math.isfinite(self.step_budget_exponent) and self.step_budget_exponent >= 0):
            raise ConfigError(f"step_budget_exponent must be a finite number ≥ 0, got {self.step_budget_exponent!r}")
        if not isinstance(self.kv_forecast_layers, int) or self.kv_forecast_layers < 0:
            raise ConfigError(f"kv_forecast_layers must be an integer ≥ 0, got {self.kv_forecast_layers!r}")
        if self.kv_forecast_layers and self.skipped_update != "extrapolated":
            raise ConfigError("kv_forecast_layers extrapolates K/V with the velocities: it needs "
                              "skipped_update='extrapolated'")
        if self.kv_cache_dtype is not None and self.kv_cache_dtype not in _CACHE_DTYPES:
            raise ConfigError(f"kv_cache_dtype must be one of {sorted(_CACHE_DTYPES)} or None")
        if self.kv_cache_location not in ("device", "host"):
            raise ConfigError(f"kv_cache_location must be 'device' or 'host', got {self.kv_cache_location!r}")
        if self.score not in ("velocity", "random"):
            raise ConfigError(f"score must be 'velocity' or 'random', got {self.score!r}")
        if self.context not in ("cached", "fresh"):
            raise ConfigError(f"context must be 'cached' or 'fresh', got {self.context!r}")

    @classmethod
    def paper(cls, **overrides) -> "HSAConfig":
        """The paper's method as we reconstruct it: zero-order cached Euler for skipped tokens, the budget
        spread evenly over the caching window, 10% warm-up and 5% final full steps, re-allocation every
        8 steps. ``overrides`` change any field."""
        return replace(cls(warmup_fraction=0.1, final_fraction=0.05, refresh_interval=8,
                           skipped_update="cached_euler", step_budget="even", rate_exponent=0.5), **overrides)

    @property
    def cache_dtype(self) -> torch.dtype | None:
        """The torch dtype of ``kv_cache_dtype`` (None: the model's)."""
        return _CACHE_DTYPES[self.kv_cache_dtype] if self.kv_cache_dtype else None

    def windows(self, steps: int) -> tuple[int, int]:
        """(w, f): full steps at the start and at the end of a T-step schedule."""
        warmup = min(steps, max(2, round(self.warmup_fraction * steps)))
        final = min(steps - warmup, max(1, round(self.final_fraction * steps)) if self.final_fraction > 0 else 0)
        return warmup, final

    def min_budget(self, steps: int, num_tokens: int, cost_model: CostModel | None = None,
                   frozen_tokens: int = 0, always_active_tokens: int = 0) -> float:
        """The smallest budget this config can honour: every scheduled token at its slowest rate."""
        warmup, final = self.windows(steps)
        window = steps - warmup - final
        scheduled = num_tokens - frozen_tokens - always_active_tokens
        every_step = always_active_tokens + (frozen_tokens if self.refresh_conditioning else 0)
        evaluations = (warmup + final) * num_tokens + window * (every_step + scheduled / max(self.divisors))
        return (cost_model or CostModel()).budget_for(evaluations, steps, num_tokens)


class HSASampler:
    """Heterogeneous Step Allocation at a budget b ∈ (0, 1]."""

    name = "hsa"

    def __init__(self, budget: float = 1.0, config: HSAConfig | None = None, cost_model: CostModel | None = None,
                 replan: Callable[[int, float], float | None] | None = None):
        """``replan(step, elapsed_seconds)`` is asked at every re-allocation inside the caching window
        for a budget for the remaining steps (a deadline controller running late returns a lower one);
        the remaining window budget only ever shrinks, and never below the slowest rate."""
        if not (isinstance(budget, (int, float)) and math.isfinite(budget) and 0 < budget <= 1):
            raise ConfigError(f"budget must be in (0, 1], got {budget!r}")
        self.budget = float(budget)
        self.config = config or HSAConfig()
        self.cost_model = cost_model
        self.replan = replan

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
        config, cost_model = self.config, self.cost_model or CostModel()
        steps, num_tokens = schedule.steps, grid.num_tokens
        device = x.device
        generated = torch.arange(num_tokens, device=device) if frozen is None else (~frozen).nonzero().squeeze(1)
        num_generated = generated.numel()
        always_active = grid.always_active
        if always_active is None:
            always_active = torch.zeros(num_tokens, dtype=torch.bool)
        always_active = always_active.to(device)
        pinned = always_active.nonzero().squeeze(1)  # computed at every step
        scheduled = generated[~always_active[generated]]  # the tokens the allocation spreads the budget over
        num_pinned, num_scheduled = pinned.numel(), scheduled.numel()
        # conditioning tokens recomputed as context at every window step (velocities discarded)
        context_tokens = frozen.nonzero().squeeze(1).to(device) if frozen is not None and config.refresh_conditioning \
            else torch.empty(0, dtype=torch.long, device=device)
        every_step = num_pinned + context_tokens.numel()  # budgeted at every window step

        warmup, final = config.windows(steps)
        window_steps = steps - warmup - final
        window_budget = cost_model.token_evaluations(self.budget, steps, num_tokens) - (warmup + final) * num_tokens
        if self.budget < 1:
            min_budget = config.min_budget(steps, num_tokens, self.cost_model, num_tokens - num_generated, num_pinned)
            if self.budget < min_budget - 1e-9:
                raise BudgetInfeasibleError(
                    f"budget {self.budget:g} is below the minimum {min_budget:.3f} for {steps} steps with "
                    f"{warmup} warm-up and {final} final full steps and largest divisor {max(config.divisors)}",
                    min_budget,
                )
        # with a replan callback the window runs on the sparse path even at full rate, so a late job
        # can still shed work (at b = 1 without one, HSA is bit-identical to Euler)
        sparse = window_steps > 0 and (
            (self.budget < 1 and window_budget < window_steps * num_generated) or self.replan is not None)
        window_budget = min(window_budget, window_steps * num_generated)
        planned = [num_tokens] * steps
        if sparse:
            planned[warmup : steps - final] = [window_budget / window_steps] * window_steps

        denoiser = GuidedDenoiser(adapter, grid, conditioning, with_kv_cache=sparse and config.kv_sync,
                                  cache_dtype=config.cache_dtype, cache_location=config.kv_cache_location)
        extrapolate = sparse and config.skipped_update == "extrapolated"
        forecast = extrapolate and config.kv_sync and config.kv_forecast_layers > 0 and config.context == "cached"
        if forecast:
            denoiser.caches = [ForecastKVCache(cache, config.kv_forecast_layers) for cache in denoiser.caches]
        random_scores = torch.Generator().manual_seed(0) if config.score == "random" else None
        clock = Stopwatch(device)
        sigmas = schedule.sigmas.tolist()
        step_weights = log_signal_steps(sigmas) if config.step_budget == "log_signal" else [1.0] * steps
        step_exponent = config.step_budget_exponent if config.step_budget == "log_signal" else 0.0
        sigma_rows = schedule.sigmas.to(device=device, dtype=torch.float32)[:, None].expand(-1, grid.batch)  # (T+1, B)
        conditioning_mask = frozen.to(device) if frozen is not None else None

        x = x.to(torch.float32).clone()  # (B, N, D)
        initial_frozen = x[:, frozen].clone() if frozen is not None else None
        velocity = torch.zeros_like(x)  # each token's latest guided velocity; 0 for frozen tokens
        last_step = torch.full((num_tokens,), -1, dtype=torch.long, device=device)
        last_sigma = torch.zeros(num_tokens, device=device)
        score = torch.zeros(num_tokens, device=device)
        if extrapolate:  # the evaluation before the latest, and its σ (NaN: none yet)
            previous_velocity = torch.zeros_like(x)  # (B, N, D)
            previous_sigma = torch.full((num_tokens,), math.nan, device=device)

        plan: AllocationPlan | None = None
        plan_sets: list[torch.Tensor] = []
        window_used = 0
        replans: list[tuple[int, float]] = []
        stats: list[StepStats] = []
        start = step_start = clock.now()
        for i in range(steps):
            in_window = sparse and warmup <= i < steps - final
            if in_window and (i - warmup) % config.refresh_interval == 0:
                if self.replan is not None:
                    new_budget = self.replan(i, clock.now() - start)
                    if new_budget is not None:
                        wanted = cost_model.token_evaluations(min(1.0, new_budget), steps - i, num_tokens)
                        floor = (steps - final - i) * (every_step + num_scheduled / max(config.divisors))
                        remaining_window = max(floor, wanted - final * num_tokens)
                        if window_used + remaining_window < window_budget:
                            window_budget = window_used + remaining_window
                            replans.append((i, float(new_budget)))
                remaining = steps - final - i
                length = min(config.refresh_interval, remaining)
                # the remaining scheduled-token evaluations, split over the remaining steps
                rates = step_rates(step_weights[i : steps - final],
                                   (window_budget - window_used - remaining * every_step) / max(num_scheduled, 1),
                                   1 / max(config.divisors), step_exponent)
                target = sum(rates[:length]) * num_scheduled  # scheduled-token evaluations for this plan
                if num_pinned:  # every step computes the pinned tokens, and the context with them
                    context_cost = 0
                else:  # context only at the steps that compute a scheduled token: the plan's cost counts them
                    target += length * every_step
                    context_cost = every_step
                # never spend what the steps after this plan need at their slowest rate
                target = min(target, window_budget - window_used - self._floor_cost(
                    i + length, steps - final, warmup - 1, num_scheduled, every_step, num_pinned > 0))
                scores = score[scheduled]
                if random_scores is not None:
                    scores = torch.rand(scores.shape, generator=random_scores).to(device)
                most_stale_first = torch.argsort(last_step[scheduled], stable=True)

                def phases_for(divisors, i=i, order=most_stale_first):
                    # aligned phases share one grid anchored at the last warm-up step, where every token was fresh
                    return assign_phases(divisors, order, config.stagger_phases, i - (warmup - 1))

                plan = solve_plan(scores, target, length, i, config.divisors, config.rate_exponent, phases_for,
                                  extra_per_step=context_cost, priority=most_stale_first)
                plan_sets = [scheduled[rows] for rows in plan.active_sets(length)]

            if in_window:
                active = plan_sets[i - plan.start]
                if num_pinned:
                    active = torch.sort(torch.cat([active, pinned])).values
                computed = active.numel()
                if forecast:  # stale rows along their last change; the rows computed now are fresh
                    kv_reach = self._reach(last_sigma, previous_sigma, sigmas[i])
                    kv_reach[active] = 0.0
                    for cache in denoiser.caches:
                        cache.reach = kv_reach
                if computed and config.context == "fresh":  # oracle: fresh context, active velocities only
                    fresh = denoiser(x, self._sigma(sigma_rows[i], conditioning_mask))[:, active]
                    computed += context_tokens.numel()  # what the cached path computes as context
                elif computed and context_tokens.numel():
                    forward = torch.sort(torch.cat([active, context_tokens])).values
                    is_context = conditioning_mask[forward]
                    fresh = self._subset(denoiser, x, sigma_rows[i], forward, is_context, num_tokens)[:, ~is_context]
                    computed = forward.numel()
                elif computed:
                    fresh = self._subset(denoiser, x, sigma_rows[i], active, None, num_tokens)
                window_used += computed
            else:
                active, computed = generated, num_tokens
                fresh = denoiser(x, self._sigma(sigma_rows[i], conditioning_mask))
                if frozen is not None:
                    fresh = fresh[:, generated]

            refreshed, drift = 0, None
            if computed and active.numel():
                latest = velocity[:, active]
                change = (fresh - latest).abs().sum(-1).mean(0) / (latest.abs().sum(-1).mean(0) + config.score_eps)
                seen = last_step[active] >= 0
                was_skipped = seen & (last_step[active] < i - 1)
                refreshed_count, drift_sum = torch.stack([was_skipped.sum().float(), change[was_skipped].sum()]).tolist()
                refreshed = int(refreshed_count)
                if refreshed:
                    drift = drift_sum / refreshed
                if config.score_normalization == "sigma_gap":
                    change = change / (last_sigma[active] - sigmas[i]).clamp_min(1e-12)
                score[active] = torch.where(seen, change, score[active])
                if extrapolate:
                    previous_velocity[:, active] = latest
                    previous_sigma[active] = torch.where(seen, last_sigma[active], math.nan)
                velocity[:, active] = fresh
                last_step[active] = i
                last_sigma[active] = sigmas[i]

            step = sigmas[i + 1] - sigmas[i]
            if config.skipped_update == "frozen" and in_window:
                x[:, active] += step * velocity[:, active]  # skipped tokens stay put
            elif extrapolate and in_window:
                reach = self._reach(last_sigma, previous_sigma, sigmas[i])[None, :, None]  # (1, N, 1); 0 if computed now
                x.add_(velocity + reach * (velocity - previous_velocity), alpha=step)
            else:
                x.add_(velocity, alpha=step)  # cached Euler update of every token
            now = clock.now()
            stats.append(StepStats(i, sigmas[i], computed, refreshed, drift, now - step_start))
            step_start = now
            if callback is not None:
                callback(stats[-1])

        if frozen is not None:
            x[:, frozen] = initial_frozen
        actual = [s.active_tokens for s in stats]
        return SampleResult(
            tokens=x,
            steps=stats,
            num_tokens=num_tokens,
            token_fraction=sum(actual) / (steps * num_tokens),
            predicted_compute_fraction=cost_model.compute_fraction(planned, num_tokens),
            achieved_compute_fraction=cost_model.compute_fraction(actual, num_tokens),
            predicted_seconds=(
                self.cost_model.predict_seconds(planned, num_tokens, denoiser.num_branches)
                if self.cost_model is not None else None
            ),
            seconds=clock.now() - start,
            kv_cache_bytes=denoiser.kv_cache_bytes,
            extra={"budget": self.budget, "warmup_steps": warmup, "final_steps": final, "sparse": sparse,
                   "replans": replans},
        )

    def _reach(self, last_sigma: torch.Tensor, previous_sigma: torch.Tensor, sigma: float) -> torch.Tensor:
        """τ per token (N,): how far along its last change a token's cache is read at σ, in units of the σ gap
        between its last two evaluations, capped at ``extrapolation_limit``; 0 for a token evaluated at σ and
        for one with a single evaluation (NaN)."""
        reach = ((last_sigma - sigma) / (previous_sigma - last_sigma)).nan_to_num(0.0)
        return reach.clamp(0.0, self.config.extrapolation_limit)

    def _floor_cost(self, first: int, stop: int, anchor: int, scheduled: int, every_step: int, pinned: bool) -> float:
        """Evaluations of steps [first, stop) with every scheduled token at the largest divisor: aligned, all
        of them at the grid's multiples of it (the context with them, or at every step with pinned
        tokens); staggered, an even share at every step."""
        if stop <= first:
            return 0.0
        slowest = max(self.config.divisors)
        if self.config.stagger_phases:
            return (stop - first) * (scheduled / slowest + every_step)
        grid_steps = sum(1 for t in range(first, stop) if (t - anchor) % slowest == 0)
        if pinned:
            return grid_steps * scheduled + (stop - first) * every_step
        return grid_steps * (scheduled + every_step)

    @staticmethod
    def _sigma(sigma: torch.Tensor, conditioning: torch.Tensor | None) -> torch.Tensor:
        """The model's σ, already on the device: (B,), or (B, N) with 0 at conditioning tokens."""
        if conditioning is None:
            return sigma
        return torch.where(conditioning, 0.0, sigma[:, None])

    @staticmethod
    def _subset(denoiser: GuidedDenoiser, x: torch.Tensor, sigma: torch.Tensor, tokens: torch.Tensor,
                is_context: torch.Tensor | None, num_tokens: int) -> torch.Tensor:
        """The guided velocity of ``tokens`` (sorted); a set that covers every token runs the full forward."""
        per_token = sigma if is_context is None else torch.where(is_context, 0.0, sigma[:, None])
        if tokens.numel() == num_tokens:
            return denoiser(x, per_token)
        return denoiser(x[:, tokens], per_token, tokens)
