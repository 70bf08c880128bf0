"""Step allocation: which tokens are computed at which step inside HSA's caching window.

Tokens get a *step divisor* d from a set D (default {1, 2, 4, 8, 16}); a token with divisor d is
active on every d-th step, so its rate is 1/d evaluations per step.

Rates from scores. Skipping a token for d steps leaves it on a velocity that is d steps stale;
if the error of that staleness grows like sₙ·dₙ (sₙ its velocity-change score), minimising
Σₙ sₙ·dₙ subject to the evaluation budget Σₙ 1/dₙ = E gives 1/dₙ ∝ √sₙ (Lagrange). The rate
exponent α (default ½) generalises this: ρₙ = clip(λ·sₙ^α, 1/d_max, 1), quantised to the nearest
divisor rate in log space, with the multiplier λ solved by bisection so that Σₙ 1/dₙ meets the
budget; the remainder left by quantisation is filled by promoting the tokens that were closest to
the next rate up.

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

from dataclasses import dataclass

import torch


def solve_divisors(
    scores: torch.Tensor,
    target_rate: float,
    divisors: tuple[int, ...],
    rate_exponent: float = 0.5,
    eps: float = 1e-12,
) -> torch.Tensor:
    """One divisor per token so that the mean rate mean(1/dₙ) ≈ ``target_rate``.

    scores: (n,) non-negative; higher means more dynamic. Returns (n,) int64 divisors.
    """
    n = scores.numel()
    ordered = sorted(divisors)
    rates = torch.tensor([1.0 / d for d in ordered], dtype=torch.float64)  # descending
    divisor_values = torch.tensor(ordered, dtype=torch.int64)
    min_rate, max_rate = float(rates[-1]), float(rates[0])
    target_total = min(max(target_rate, min_rate), max_rate) * n

    log_rates = rates.log()
    boundaries = ((log_rates[:-1] + log_rates[1:]) / 2).flip(0)  # ascending log-rate midpoints
    weights = (scores.to(torch.float64).clamp_min(0) + eps) ** rate_exponent
    weights = weights / weights.mean()

    def level(multiplier: float) -> tuple[torch.Tensor, torch.Tensor]:
        desired = (multiplier * weights).clamp(min_rate, max_rate)
        # index into ``rates`` (0 = fastest) of the divisor rate nearest in log space
        index = len(ordered) - 1 - torch.bucketize(desired.log(), boundaries)
        return index, desired

    low, high = min_rate / weights.max().item() / 2, max_rate / weights.min().item() * 2
    for _ in range(100):  # geometric bisection on λ; the total rate is monotone in it
        middle = (low * high) ** 0.5
        if rates[level(middle)[0]].sum().item() <= target_total:
            low = middle
        else:
            high = middle
    index, desired = level(low)
    total = rates[index].sum().item()

    deficit = target_total - total
    if deficit > 0:
        # Promote tokens one rate level up, those whose desired rate was nearest the next level first.
        can_promote = index > 0
        next_rate = rates[(index - 1).clamp_min(0)]
        gain = torch.where(can_promote, next_rate - rates[index], torch.zeros(()))
        closeness = torch.where(can_promote, desired / next_rate, torch.full((), -1.0))
        order = torch.argsort(closeness, descending=True)
        cumulative = torch.cumsum(gain[order], 0)
        count = int(torch.searchsorted(cumulative, torch.tensor(deficit, dtype=torch.float64)).item())
        # take one more promotion when it lands nearer the target than stopping short does
        if count < n and gain[order[count]] > 0:
            short = deficit - (cumulative[count - 1].item() if count else 0.0)
            if cumulative[count].item() - deficit < short:
                count += 1
        index[order[:count]] -= 1
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
        phases[members] = ((offset + torch.arange(members.numel())) % d).sort().values
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
