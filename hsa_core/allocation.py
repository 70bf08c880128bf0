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
(docs/benchmarks.md, Pareto, "Cache staleness").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

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
        order = torch.argsort(closeness, descending=True)
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
