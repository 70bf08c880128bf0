import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from hsa_core import ConfigError, FlowMatchSchedule, shift_sigmas


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
@pytest.mark.parametrize("steps", [1, 2, 10, 40])
def test_matches_diffusers_flow_match_euler_scheduler_exactly(shift, steps):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    schedule = FlowMatchSchedule(steps, shift)
    assert torch.equal(schedule.sigmas, scheduler.sigmas)
    assert torch.equal(schedule.timesteps, scheduler.timesteps)


def test_sigmas_run_from_one_to_zero_monotonically():
    sigmas = FlowMatchSchedule(40, 5.0).sigmas
    assert sigmas[0] == 1 and sigmas[-1] == 0 and len(sigmas) == 41
    assert torch.all(sigmas[1:] < sigmas[:-1])


def test_shift_closed_form():
    assert shift_sigmas(0.5, 3.0) == pytest.approx(1.5 / 2.0)
    assert shift_sigmas(0.25, 1.0) == 0.25


@pytest.mark.parametrize("steps", [0, -1, 2.5, True])
def test_steps_below_one_or_not_integer_are_rejected(steps):
    with pytest.raises(ConfigError, match="steps must be an integer"):
        FlowMatchSchedule(steps)


@pytest.mark.parametrize("shift", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_shift_is_rejected(shift):
    with pytest.raises(ConfigError, match="shift"):
        FlowMatchSchedule(10, shift)
