import time

import pytest
import torch

from hsa_core import ConfigError, CostModel, TokenGrid, calibrate
from hsa_core.adapters.analytic import GaussianFlowAdapter


def test_default_cost_is_proportional_to_active_tokens():
    cost = CostModel.from_architecture(num_layers=4, width=256)
    assert cost.overhead == 0
    assert cost.compute_fraction([4096] * 10 + [1024] * 30, 4096) == pytest.approx(0.25 + 0.75 * 0.25)


def test_from_architecture_counts_attention_per_key():
    cost = CostModel.from_architecture(num_layers=2, width=64, ffn_dim=256, text_tokens=10)
    flops_per_token = 2 * 2 * (6 * 64**2 + 2 * 10 * 64 + 2 * 64 * 256)
    assert cost.per_token == pytest.approx(flops_per_token / 1e12)
    assert cost.per_pair == pytest.approx(2 * 2 * 2 * 64 / 1e12)


@pytest.mark.parametrize("budget", [0.15, 0.25, 0.5, 0.9, 1.0])
def test_token_evaluations_and_budget_are_inverse(budget):
    cost = CostModel(overhead=0.02, per_token=1e-5, per_pair=1e-9)
    evaluations = cost.token_evaluations(budget, 40, 4096)
    assert cost.budget_for(evaluations, 40, 4096) == pytest.approx(budget)
    per_step = [evaluations / 40] * 40
    assert cost.compute_fraction(per_step, 4096) == pytest.approx(budget)


def test_fit_recovers_known_coefficients():
    truth = CostModel(overhead=0.01, per_token=2e-6, per_pair=3e-10)
    samples = [(a, n, truth.step_seconds(a, n)) for n in (1024, 4096) for a in (n // 8, n // 2, n)]
    fitted = CostModel.fit(samples)
    assert fitted.overhead == pytest.approx(0.01, rel=1e-6)
    assert fitted.per_token == pytest.approx(2e-6, rel=1e-6)
    assert fitted.per_pair == pytest.approx(3e-10, rel=1e-6)


def test_fit_with_one_token_count_folds_attention_into_per_token():
    truth = CostModel(overhead=0.01, per_token=2e-6, per_pair=3e-10)
    fitted = CostModel.fit([(a, 4096, truth.step_seconds(a, 4096)) for a in (512, 2048, 4096)])
    assert fitted.per_pair == 0
    assert fitted.token_cost(4096) == pytest.approx(truth.token_cost(4096))


def test_fit_clamps_negative_overhead():
    fitted = CostModel.fit([(100, 1000, 1.0), (200, 1000, 2.2)])
    assert fitted.overhead == 0 and fitted.per_token > 0


@pytest.mark.parametrize(
    "samples, message",
    [([(10, 100, 1.0)], "at least two"), ([(10, 100, 1.0), (10, 100, 1.1)], "two distinct"), ([(10, 100, 1.0), (20, 100, 0.5)], "no cost")],
)
def test_fit_rejects_unusable_samples(samples, message):
    with pytest.raises(ConfigError, match=message):
        CostModel.fit(samples)


def test_negative_coefficients_are_rejected():
    with pytest.raises(ConfigError):
        CostModel(overhead=-1.0)


class SleepyAdapter(GaussianFlowAdapter):
    """A closed-form field whose forward takes 2 ms per active token: a cost law with a known slope."""

    def velocity(self, x, sigma, branch, active=None, kv_cache=None):
        time.sleep(2e-3 * x.shape[1])
        return super().velocity(x, sigma, branch, active=active, kv_cache=kv_cache)


def test_calibration_measures_the_cost_of_active_tokens():
    n = 64
    adapter = SleepyAdapter(torch.zeros(1, n, 2), torch.ones(1, n, 1))
    grid = TokenGrid((1, 2, 1, 1, n), (1, 1, 1))
    cost = calibrate(adapter, grid, torch.ones(1), active_fractions=(1.0, 0.5, 0.25), repeats=1)
    assert cost.token_cost(n) == pytest.approx(2e-3, rel=0.5)  # sleeps are lower bounds; noise only adds
    assert adapter.evaluated_tokens == n + n + n // 2 + n // 4  # fill + one timed forward per fraction


class ConstantTimeAdapter(GaussianFlowAdapter):
    """Costs the same whatever the active tokens: nothing for a slope to measure."""

    def velocity(self, x, sigma, branch, active=None, kv_cache=None):
        time.sleep(0.01 if x.shape[1] > 16 else 0.012)  # fewer tokens, *more* time: a negative slope
        return super().velocity(x, sigma, branch, active=active, kv_cache=kv_cache)


def test_calibration_falls_back_to_proportional_cost_when_noise_hides_the_slope():
    n = 64
    grid = TokenGrid((1, 2, 1, 1, n), (1, 1, 1))
    cost = calibrate(ConstantTimeAdapter(torch.zeros(1, n, 2), torch.ones(1, n, 1)), grid, torch.ones(1),
                     active_fractions=(1.0, 0.5, 0.125), repeats=1)
    assert cost.overhead == 0 and cost.per_pair == 0
    assert cost.token_cost(n) * n == pytest.approx(0.01, rel=0.5)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_calibration_times_a_tiny_wan_on_its_own_device(tiny_wan, job, device):
    from hsa_core.adapters.wan import WanAdapter

    adapter = WanAdapter(tiny_wan.to(device))
    grid = adapter.token_grid(job["latents"].shape)
    branch = adapter.prepare_branch(grid, job["prompt"].to(device))
    cost = calibrate(adapter, grid, branch, active_fractions=(1.0, 0.5, 0.25), repeats=2)
    assert isinstance(cost, CostModel) and cost.token_cost(grid.num_tokens) > 0
    assert adapter.self_attention_calls == adapter.num_layers * (1 + 3 * 2)  # fill + every timed forward
