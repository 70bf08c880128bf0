"""The Pareto benchmark's other samplers: each reduces to plain Euler at its no-skip setting, and
skips what it claims to skip. Plus HSA's ablation switches."""

import pytest
import torch

from hsa_core import Conditioning, ConfigError, EulerSampler, FlowMatchSchedule, HSAConfig, HSASampler
from hsa_core.samplers.diffusers_cache import DiffusersCacheSampler
from hsa_core.samplers.easycache import EasyCacheSampler
from hsa_core.samplers.fewer_steps import FewerStepsSampler
from hsa_core.samplers.ras import RASSampler

from .test_hsa import gaussian_job


@pytest.fixture
def wan_job(wan_adapter, job):
    grid = wan_adapter.token_grid(job["latents"].shape)
    conditioning = Conditioning(job["prompt"], job["negative"], guidance_scale=4.0)
    return wan_adapter, grid.patchify(job["latents"]), grid, conditioning


def euler(adapter, x, grid, conditioning, steps):
    return EulerSampler().sample(adapter, x, grid, conditioning, FlowMatchSchedule(steps)).tokens


def test_fewer_steps_is_euler_on_the_shorter_schedule(wan_job):
    adapter, x, grid, conditioning = wan_job
    result = FewerStepsSampler(0.5).sample(adapter, x, grid, conditioning, FlowMatchSchedule(20))
    assert torch.equal(result.tokens, euler(adapter, x, grid, conditioning, 10))
    assert result.token_fraction == result.achieved_compute_fraction == 0.5 and len(result.steps) == 10
    with pytest.raises(ConfigError):
        FewerStepsSampler(0)


def test_easycache_at_threshold_zero_is_euler_and_skips_only_inside_the_window(wan_job):
    adapter, x, grid, conditioning = wan_job
    exact = EasyCacheSampler(0.0).sample(adapter, x, grid, conditioning, FlowMatchSchedule(20))
    assert torch.allclose(exact.tokens, euler(adapter, x, grid, conditioning, 20), atol=1e-5)
    assert exact.token_fraction == 1.0
    fast = EasyCacheSampler(1.0).sample(adapter, x, grid, conditioning, FlowMatchSchedule(20))
    computed = [s.active_tokens > 0 for s in fast.steps]
    assert all(computed[:2]) and computed[-1]  # warm-up and the last step are always computed
    assert fast.token_fraction == sum(computed) / 20 < 0.8


def test_ras_at_full_budget_is_euler_and_spends_its_budget_evenly():
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=1024)
    schedule = FlowMatchSchedule(40)
    full = RASSampler(1.0).sample(adapter, noise, grid, conditioning, schedule)
    assert torch.equal(full.tokens, EulerSampler().sample(adapter, noise, grid, conditioning, schedule).tokens)
    half = RASSampler(0.5, max_staleness=8).sample(adapter, noise, grid, conditioning, schedule)
    assert abs(half.token_fraction - 0.5) < 0.02
    warmup, final = HSAConfig().windows(40)
    window = [s.active_tokens for s in half.steps[warmup: 40 - final]]
    assert len(set(window)) == 1  # the same k every step


def longest_wait(max_staleness: int) -> int:
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=256)

    class Recorder:
        def __init__(self):
            self.last = torch.zeros(256, dtype=torch.long)
            self.longest_wait = 0
            self.step = 0

        def __getattr__(self, name):
            return getattr(adapter, name)

        def velocity(self, x, sigma, branch, active=None, kv_cache=None):
            index = torch.arange(256) if active is None else active
            self.longest_wait = max(self.longest_wait, int((self.step - self.last[index]).max()))
            self.last[index] = self.step
            self.step += 1
            return adapter.velocity(x, sigma, branch, active=active, kv_cache=kv_cache)

    recorder = Recorder()
    RASSampler(0.5, max_staleness=max_staleness).sample(recorder, noise, grid, conditioning, FlowMatchSchedule(40))
    return recorder.longest_wait


def test_ras_forces_starving_tokens_in():
    unguarded, guarded = longest_wait(max_staleness=40), longest_wait(max_staleness=6)
    # pure top-k leaves low-uncertainty tokens waiting; forced in once stale, they wait at most a
    # step or two more (when more tokens starve at once than one step computes)
    assert guarded <= 8 < unguarded


@pytest.mark.parametrize("method, params", [("first_block_cache", {"threshold": 0.0}),
                                            ("taylorseer", {"cache_interval": 1, "disable_cache_before_step": 40})])
def test_diffusers_hooks_without_skipping_match_euler(wan_job, method, params):
    adapter, x, grid, conditioning = wan_job
    result = DiffusersCacheSampler(method, **params).sample(adapter, x, grid, conditioning, FlowMatchSchedule(12))
    assert torch.allclose(result.tokens, euler(adapter, x, grid, conditioning, 12), atol=1e-5)
    assert result.extra["layer_fraction"] == 1.0


@pytest.mark.parametrize("method, params", [("first_block_cache", {"threshold": 10.0}),
                                            ("taylorseer", {"cache_interval": 4})])
def test_diffusers_hooks_skip_layers_and_are_removed_afterwards(wan_job, method, params):
    adapter, x, grid, conditioning = wan_job
    result = DiffusersCacheSampler(method, **params).sample(adapter, x, grid, conditioning, FlowMatchSchedule(12))
    assert result.extra["layer_fraction"] < 0.9
    assert not adapter.transformer.is_cache_enabled
    # the model is plain again: Euler after a cached run is Euler
    assert torch.equal(euler(adapter, x, grid, conditioning, 6), euler(adapter, x, grid, conditioning, 6))


def test_mag_cache_needs_ratios():
    with pytest.raises(ConfigError, match="mag_ratios"):
        DiffusersCacheSampler("mag_cache", threshold=0.1)
    with pytest.raises(ConfigError, match="unknown diffusers cache method"):
        DiffusersCacheSampler("teacache")


def test_mag_cache_calibration_then_skipping(wan_job):
    from hsa_core.samplers.diffusers_cache import calibrate_mag_ratios

    adapter, x, grid, conditioning = wan_job
    ratios = calibrate_mag_ratios(adapter, x, grid, conditioning, FlowMatchSchedule(12))
    assert len(ratios) == 12 and ratios[0] == 1.0
    result = DiffusersCacheSampler("mag_cache", threshold=5.0, mag_ratios=ratios).sample(
        adapter, x, grid, conditioning, FlowMatchSchedule(12))
    assert result.extra["layer_fraction"] < 1.0


@pytest.mark.parametrize("overrides", [{"skipped_update": "frozen"}, {"score": "random"}])
def test_hsa_ablations_keep_the_budget_and_change_the_result(overrides):
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=1024)
    schedule = FlowMatchSchedule(40)
    default = HSASampler(0.5).sample(adapter, noise, grid, conditioning, schedule)
    ablated = HSASampler(0.5, HSAConfig(**overrides)).sample(adapter, noise, grid, conditioning, schedule)
    assert abs(ablated.token_fraction - 0.5) < 0.02
    assert not torch.equal(ablated.tokens, default.tokens)


def test_no_kv_sync_ablation_drops_inactive_tokens_from_attention(wan_job):
    # (the closed-form field has no attention, so this ablation only shows on a transformer)
    adapter, x, grid, conditioning = wan_job
    schedule = FlowMatchSchedule(20)
    synced = HSASampler(0.5).sample(adapter, x, grid, conditioning, schedule)
    dropped = HSASampler(0.5, HSAConfig(kv_sync=False)).sample(adapter, x, grid, conditioning, schedule)
    assert dropped.kv_cache_bytes == 0 < synced.kv_cache_bytes
    assert dropped.token_fraction == synced.token_fraction
    assert torch.isfinite(dropped.tokens).all() and not torch.allclose(dropped.tokens, synced.tokens)


def test_frozen_skips_are_worse_than_the_cached_euler_update_on_a_closed_form_field():
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=1024)
    schedule = FlowMatchSchedule(40)
    exact = adapter.exact_solution(noise) if hasattr(adapter, "exact_solution") else None
    reference = EulerSampler().sample(adapter, noise, grid, conditioning, schedule).tokens if exact is None else exact
    cached = HSASampler(0.4).sample(adapter, noise, grid, conditioning, schedule).tokens
    frozen = HSASampler(0.4, HSAConfig(skipped_update="frozen")).sample(adapter, noise, grid, conditioning, schedule).tokens
    assert (frozen - reference).abs().mean() > 2 * (cached - reference).abs().mean()


@pytest.mark.parametrize("field, value", [("skipped_update", "teleport"), ("score", "oracle")])
def test_bad_ablation_values_are_rejected(field, value):
    with pytest.raises(ConfigError, match=field):
        HSAConfig(**{field: value})
