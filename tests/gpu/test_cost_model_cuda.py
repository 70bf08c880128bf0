"""The cost model calibrated on the GPU predicts the full forward it measured."""

import statistics

import pytest
import torch

from hsa_core import calibrate
from hsa_core.adapters.wan import WanAdapter
from hsa_core.samplers.base import Stopwatch

from .medium import build_wan, in_dtype, job

pytestmark = pytest.mark.gpu


def test_calibration_predicts_a_full_forward(device):
    adapter, inputs = WanAdapter(in_dtype(build_wan(device=device), torch.bfloat16)), job(device=device)
    grid = adapter.token_grid(inputs["latents"].shape)
    branch = adapter.prepare_branch(grid, inputs["prompt"])
    cost = calibrate(adapter, grid, branch, repeats=3)
    x, sigma, clock = grid.patchify(inputs["latents"]), torch.tensor([0.5], device=device), Stopwatch(device)
    times = []
    for _ in range(5):
        start = clock.now()
        adapter.velocity(x, sigma, branch)
        times.append(clock.now() - start)
    measured, predicted = statistics.median(times), cost.step_seconds(grid.num_tokens, grid.num_tokens)
    print(f"full forward {measured * 1e3:.2f} ms, predicted {predicted * 1e3:.2f} ms; {cost}")
    assert cost.token_cost(grid.num_tokens) > 0
    assert 0.5 * measured <= predicted <= 2 * measured
