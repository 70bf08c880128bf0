"""Step allocation: which tokens are computed at which step inside HSA's caching window.

Tokens get a *step divisor* d from a set D (default {1, 2, 4, 8, 16}); a token with divisor d is
active on every d-th step, so its rate is 1/d evaluations per step.

Rates from scores. Skipping a token for d steps leaves it on a velocity that is d steps stale;
if the error of that staleness grows like sₙ·dₙ (sₙ its velocity-change score), minimising
Σₙ sₙ·dₙ subject to the evaluation budget Σₙ 1/dₙ = E gives 1/dₙ ∝ √sₙ (Lagrange). The rate
exponent α (default ½) generalises this: ρₙ = clip(λ·sₙ^α, 1/d_max, 1), quantised to the nearest
divisor rate in log space, with λ the largest multiplier for which Σₙ 1/dₙ stays within the budget
(found exactly from the sorted multipliers at which tokens change rate); the remainder left by
quantisation is filled by promoting the tokens that were closest to the next rate up.

Phases. Staggered: a group of n_d tokens with divisor d is spread over d phases round-robin (the most
stale tokens first), with the phase counter running on across groups, so every step computes about
Σ_d n_d/d tokens — a steady per-step latency instead of bursts every d-th step. Aligned: every
token with divisor d fires on the steps k·d of one grid shared by all groups and all re-allocations
(anchored at the last full warm-up step), so the groups nest — a step that computes the d = 4 group
also computes d = 2 and d = 1 — and every d_max-th step is dense. Tokens computed together see each
other's fresh K/V; staggering instead mixes K/V of every age at every step, which costs fidelity
(docs/configuration.md, ``stagger_phases``).

Step-level budget. The rate above is a plan's mean; how much of the remaining budget each plan gets is
a step-level choice (``step_rates``). "even" gives every remaining step the same rate. "log_signal"
gives step t a rate ∝ |log(1 − σ_{t+1}) − log(1 − σ_t)|^γ ≈ (Δσ_t/(1 − σ_t))^γ, clipped to
[1/d_max, 1], with the multiplier solved so the rates still sum to the budget. That span predicts how
much the whole latent's velocity changes over the step: on the reference trajectories of the tiny
model the mean per-token change ‖v_t − v_{t−1}‖₁ stays close to c·Δσ_t/(1 − σ_t) from σ = 1 down to
σ ≈ 0.3 (docs/benchmarks/pareto.md, "Where the trajectory changes"), so the budget goes where the
trajectory bends — most at the start. Below σ ≈ 0.3 the velocity changes faster than the span says,
but an error made there is no longer carried through a long remaining trajectory; spending by the
span kept the benchmark's fidelity highest (by the change itself, the log-SNR span, it lost).
γ = 0 is "even".

Exact spending. A plan's divisors are solved for its mean rate, but with aligned phases a group of
divisor d fires ⌊L/d⌋ or ⌈L/d⌉ times in a plan of L steps, by where the grid falls, so a short plan
can spend well under (or over) rate × L. ``solve_plan`` therefore searches the rate whose plan spends
closest to, and not over, the plan's share of the budget, counting its steps exactly (and the
per-step extra tokens — conditioning context — that any computing step brings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

import torch


def solve_divisors(
    scores: torch.Tensor,
    target_rate: float,
    divisors: tuple[int, ...],
    rate_exponent: float = 0.5,
    eps: float = 1e-12,
) -> torch.Tensor:
    """One divisor per token so that the mean rate mean(1/dₙ) ≈ ``target_rate``.

    scores: (n,) non-negative; higher means more dynamic. Returns (n,) int64 divisors on
    ``scores.device``; the work stays on that device.
    """
    device = scores.device
    n = scores.numel()
    ordered = sorted(divisors)
    rates = torch.tensor([1.0 / d for d in ordered], dtype=torch.float64, device=device)  # descending
    divisor_values = torch.tensor(ordered, dtype=torch.int64, device=device)
    if len(ordered) == 1 or n == 0:
        return divisor_values[:1].expand(n).clone()
    min_rate, max_rate = 1.0 / ordered[-1], 1.0 / ordered[0]
    target_total = float(min(max(target_rate, min_rate), max_rate) * n)

    log_rates = rates.log()
    boundaries = ((log_rates[:-1] + log_rates[1:]) / 2).flip(0)  # ascending log-rate midpoints
    weights = (scores.to(torch.float64).clamp_min(0) + eps) ** rate_exponent
    weights = weights / weights.mean()

    # A token's quantised rate steps up one level each time λ·wₙ passes a boundary rate, at the
    # crossing λ = exp(boundaryₖ)/wₙ (ascending in k), so the total rate is a step function of λ that
    # rises at the sorted crossings: λ ends where the running total first overshoots the budget.
    crossings = boundaries.exp() / weights[:, None]  # (n, |D|-1)
    # Positive doubles order like their bit patterns, and integer keys take a faster sort on the CPU.
    keys, position = crossings.reshape(-1).view(torch.int64).sort(stable=True)
    values = keys.view(torch.float64)
    # Totals in units of 1/lcm(D), where every rate is an integer, so summing them is exact; a target
    # within rounding of a reachable total (rate 1/3 with divisor 3) counts as meeting it.
    unit = math.lcm(*ordered)
    unit_rates = [unit // d for d in reversed(ordered)]  # ascending
    steps = torch.tensor([b - a for a, b in zip(unit_rates, unit_rates[1:])], dtype=torch.float64, device=device)
    totals = n * unit_rates[0] + torch.cumsum(steps.expand(n, -1).reshape(-1)[position], 0)  # increasing
    bound = float(math.floor(Fraction(target_total + 4 * math.ulp(target_total)) * unit))
    # λ is the first crossing whose running total overshoots: the supremum of the feasible multipliers,
    # and the point the promotion below measures closeness from. Crossings equal to it (tokens of
    # equal weight) stay out with it, as no λ separates them. When every crossing fits, any
    # λ ≥ max_rate/min(w) puts every token at the fastest rate; 2·max_rate/min(w) is taken.
    first_over = torch.searchsorted(totals, bound, right=True)
    ceiling = max_rate / weights.min() * 2
    multiplier = torch.where(first_over < values.numel(), values[first_over.clamp_max(values.numel() - 1)], ceiling)
    level = (crossings < multiplier).sum(1)  # boundaries passed: 0 = slowest rate
    index = len(ordered) - 1 - level  # into ``rates``, 0 = fastest
    desired = (multiplier * weights).clamp(min_rate, max_rate)
    total = rates[index].sum().item()

    deficit = target_total - total
    if deficit > 0:
        # Promote tokens one rate level up, those whose desired rate was nearest the next level first.
        can_promote = index > 0
        next_rate = rates[(index - 1).clamp_min(0)]
        gain = torch.where(can_promote, next_rate - rates[index], 0.0)
        closeness = torch.where(can_promote, desired / next_rate, -1.0)
        order = torch.argsort(closeness, descending=True, stable=True)  # ties: the earlier token first
        cumulative = torch.cumsum(gain[order], 0)
        count = int(torch.searchsorted(cumulative, torch.tensor(deficit, dtype=torch.float64, device=device)).item())
        # take one more promotion when it lands nearer the target than stopping short does
        if count < n and gain[order[count]] > 0:
            short = deficit - (cumulative[count - 1].item() if count else 0.0)
            if cumulative[count].item() - deficit < short:
                count += 1
        promoted = order[:count]
        index[promoted] -= can_promote[promoted].long()  # rounding can leave count past the promotable tokens
    return divisor_values[index]


def assign_phases(divisors: torch.Tensor, staleness_order: torch.Tensor, stagger: bool = True,
                  steps_since_anchor: int = 0) -> torch.Tensor:
    """Phase φₙ ∈ [0, dₙ) for each token of a plan (its token fires at plan steps t ≡ φₙ mod dₙ).

    staleness_order: a permutation of token indices, most stale first; within a divisor group the
    earlier a token comes, the earlier its phase (staggered only).
    stagger=False aligns the phases instead: a token fires on the steps where the grid anchored
    ``steps_since_anchor`` steps before the plan's first step is a multiple of its divisor.
    """
    if not stagger:
        return (-steps_since_anchor) % divisors
    phases = torch.zeros_like(divisors)
    offset = 0
    ordered_divisors = divisors[staleness_order]
    for d in torch.unique(divisors).tolist():
        members = staleness_order[ordered_divisors == d]
        # the running offset spreads remainders across groups; sorting hands the earliest of this
        # group's phases to its most stale members without changing how many share each phase
        phases[members] = ((offset + torch.arange(members.numel(), device=divisors.device)) % d).sort().values
        offset += members.numel()
    return phases


@dataclass
class AllocationPlan:
    """Divisors and phases for one refresh interval, starting at step ``start``."""

    start: int
    divisors: torch.Tensor  # (n,) int64
    phases: torch.Tensor  # (n,) int64

    def active_mask(self, step: int) -> torch.Tensor:
        """(n,) bool: which tokens are computed at ``step``."""
        return (step - self.start - self.phases) % self.divisors == 0

    def evaluations(self, steps: int) -> int:
        """Token evaluations this plan makes over its first ``steps`` steps."""
        counts = torch.where(self.phases < steps, (steps - 1 - self.phases) // self.divisors + 1, 0)
        return int(counts.sum())

    def active_sets(self, steps: int) -> list[torch.Tensor]:
        """For each of the plan's first ``steps`` steps, the sorted indices (into the plan's tokens) computed
        there: one transfer to the host for the whole plan instead of one per step."""
        offsets = torch.arange(steps, device=self.divisors.device)[:, None]  # (L, 1)
        step, token = ((offsets - self.phases[None]) % self.divisors[None] == 0).nonzero(as_tuple=True)
        counts = torch.bincount(step, minlength=steps).tolist()
        return list(token.split(counts))


def log_signal_steps(sigmas: Sequence[float]) -> list[float]:
    """|log(1 − σ_{t+1}) − log(1 − σ_t)| for each step of a schedule: how much the log of the clean signal's
    share of x_σ = (1 − σ)·x₀ + σ·ε grows over the step (≈ Δσ/(1 − σ)). σ = 1, where it is infinite, is
    clamped just below."""
    def log_signal(sigma: float) -> float:
        return math.log(max(1.0 - sigma, 1e-6))

    return [abs(log_signal(b) - log_signal(a)) for a, b in zip(sigmas, sigmas[1:])]


def step_rates(weights: Sequence[float], total: float, min_rate: float, exponent: float = 1.0) -> list[float]:
    """Per-step rates rₜ = clip(μ·wₜ^γ, min_rate, 1) with Σ rₜ = ``total`` (as far as the bounds allow).

    weights: (T,) non-negative step weights (``log_signal_steps``); γ = ``exponent`` (0: every step alike).
    """
    count = len(weights)
    if count == 0:
        return []
    if total <= count * min_rate:
        return [min_rate] * count
    if total >= count:
        return [1.0] * count
    powered = [max(w, 1e-12) ** exponent for w in weights]

    def spent(multiplier: float) -> float:
        return sum(min(1.0, max(min_rate, multiplier * w)) for w in powered)

    # spent() rises monotonically from count·min_rate to count; bisect the multiplier in log space
    low, high = min_rate / max(powered), 1.0 / min(powered)
    for _ in range(100):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if spent(middle) <= total else (low, middle)
        if high / low < 1 + 1e-12:
            break
    return [min(1.0, max(min_rate, low * w)) for w in powered]


def solve_plan(
    scores: torch.Tensor,
    target: float,
    steps: int,
    start: int,
    divisors: tuple[int, ...],
    rate_exponent: float,
    phases_for: Callable[[torch.Tensor], torch.Tensor],
    extra_per_step: int = 0,
    priority: torch.Tensor | None = None,
    iterations: int = 12,
) -> AllocationPlan:
    """The plan for steps [start, start + ``steps``) whose evaluations come closest to ``target`` without
    exceeding it (within 0.5%, or one evaluation).

    scores: (n,) the tokens' scores; ``phases_for(divisors)`` gives their phases (``assign_phases``);
    ``extra_per_step``: tokens computed at every step that computes any of the n (conditioning context),
    counted in the cost. When even the slowest rate costs more than ``target``, that plan is returned.
    ``priority``: a permutation of the tokens; between tokens of equal scores the earlier one is promoted
    first (HSA passes the most stale first, so equal scores take turns instead of favouring low indices).
    """
    n = scores.numel()
    if priority is None:
        priority = torch.arange(n, device=scores.device)
    ordered_scores = scores[priority]
    min_rate, max_rate = 1.0 / max(divisors), 1.0 / min(divisors)
    offsets = torch.arange(steps, device=scores.device)[:, None]  # (L, 1)

    def plan_at(rate: float) -> tuple[AllocationPlan, float]:
        chosen = torch.empty_like(priority)
        chosen[priority] = solve_divisors(ordered_scores, rate, divisors, rate_exponent)
        plan = AllocationPlan(start, chosen, phases_for(chosen))
        per_step = ((offsets - plan.phases[None]) % plan.divisors[None] == 0).sum(1)  # (L,)
        return plan, float((per_step.sum() + extra_per_step * (per_step > 0).sum()).item())

    tolerance = max(1.0, 0.005 * target)
    low, high = min_rate, max_rate
    rate = min(max_rate, max(min_rate, (target / steps - extra_per_step) / max(n, 1)))  # the mean-rate guess
    feasible = None
    for _ in range(iterations):
        plan, cost = plan_at(rate)
        if cost <= target:
            if feasible is None or cost > feasible[1]:
                feasible = (plan, cost)
            if target - cost <= tolerance or rate >= max_rate:
                break
            low = rate
        else:
            high = rate
        rate = (low + high) / 2
    return feasible[0] if feasible is not None else plan_at(min_rate)[0]
