import pytest
import torch

from hsa_core import AllocationPlan, assign_phases, solve_divisors

DIVISORS = (1, 2, 4, 8, 16)


@pytest.mark.parametrize("rate", [1 / 16, 0.1, 0.2, 0.35, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("scores", ["equal", "lognormal", "sparse"])
def test_solved_mean_rate_meets_the_target(rate, scores):
    generator = torch.Generator().manual_seed(0)
    n = 5000
    values = {
        "equal": torch.ones(n),
        "lognormal": torch.randn(n, generator=generator).exp(),
        "sparse": (torch.rand(n, generator=generator) < 0.05).float(),
    }[scores]
    divisors = solve_divisors(values, rate, DIVISORS)
    assert set(divisors.unique().tolist()) <= set(DIVISORS)
    assert (1.0 / divisors.double()).mean().item() == pytest.approx(rate, abs=1e-3)


def test_higher_scores_never_get_larger_divisors():
    generator = torch.Generator().manual_seed(1)
    scores = torch.rand(2000, generator=generator)
    divisors = solve_divisors(scores, 0.3, DIVISORS)
    by_score = divisors[torch.argsort(scores, descending=True)]
    assert torch.all(by_score[1:] >= by_score[:-1])


def test_square_root_rule_spreads_rates_across_divisors():
    """Scores spanning 4 decades map onto several divisor groups, not just two."""
    scores = torch.logspace(-4, 0, 4000)
    divisors = solve_divisors(scores, 0.3, DIVISORS)
    assert len(divisors.unique()) >= 4


def test_zero_exponent_ignores_scores():
    scores = torch.logspace(-4, 0, 1000)
    divisors = solve_divisors(scores, 0.5, DIVISORS, rate_exponent=0.0)
    assert set(divisors.unique().tolist()) == {2}


def test_phases_balance_each_step_and_respect_staleness():
    divisors = torch.tensor([1] * 10 + [4] * 37 + [16] * 100)
    staleness = torch.randperm(len(divisors), generator=torch.Generator().manual_seed(2))
    phases = assign_phases(divisors, staleness)
    assert torch.all((phases >= 0) & (phases < divisors))
    plan = AllocationPlan(start=5, divisors=divisors, phases=phases)
    counts = torch.tensor([int(plan.active_mask(5 + t).sum()) for t in range(16)], dtype=torch.float64)
    assert counts.max() - counts.min() <= 2
    assert counts.sum() == plan.evaluations(16) == 10 * 16 + 37 * 4 + 100
    # within a group, the most stale tokens fire first
    group = staleness[divisors[staleness] == 16]
    assert phases[group[:16]].tolist() == sorted(phases[group[:16]].tolist())


def test_plan_evaluation_count_for_partial_intervals():
    plan = AllocationPlan(start=0, divisors=torch.tensor([4, 4, 4, 4]), phases=torch.tensor([0, 1, 2, 3]))
    assert plan.evaluations(2) == 2
    assert plan.evaluations(5) == 5
    assert plan.evaluations(0) == 0
