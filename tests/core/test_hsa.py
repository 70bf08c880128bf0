"""HSA sampler invariants (HSA-METHOD.md): budget accounting, staggering, cached Euler, frozen tokens."""

import math

import pytest
import torch

from hsa_core import (
    BudgetInfeasibleError,
    Conditioning,
    ConfigError,
    CostModel,
    EulerSampler,
    FlowMatchSchedule,
    HSAConfig,
    HSASampler,
    TokenGrid,
)
from hsa_core.adapters.analytic import GaussianFlowAdapter


class Recorder:
    """Wraps an adapter and records every call: which tokens, at which σ, what velocity came back."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.calls = []

    def __getattr__(self, name):
        return getattr(self.adapter, name)

    def velocity(self, x, sigma, branch, active=None, kv_cache=None):
        out = self.adapter.velocity(x, sigma, branch, active=active, kv_cache=kv_cache)
        index = torch.arange(x.shape[1]) if active is None else active.clone()
        self.calls.append((index, float(sigma.flatten()[0]), out.clone()))
        return out


def gaussian_job(num_tokens=4096, dim=4, seed=0):
    """Heterogeneous closed-form flow: a quarter of the tokens straight (s = 0), the rest curved."""
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(1, num_tokens, dim, generator=generator)
    std = torch.rand(1, num_tokens, 1, generator=generator) * 3
    std[:, : num_tokens // 4] = 0
    adapter = GaussianFlowAdapter(mean, std)
    grid = TokenGrid((1, dim, 1, 1, num_tokens), (1, 1, 1))
    noise = torch.randn(1, num_tokens, dim, generator=generator)
    return adapter, grid, noise, Conditioning(torch.ones(1))


@pytest.mark.parametrize("budget", [0.75, 0.5, 0.25])
def test_token_evaluations_meet_the_budget_within_two_percent(budget):
    adapter, grid, noise, conditioning = gaussian_job()
    result = HSASampler(budget).sample(adapter, noise, grid, conditioning, FlowMatchSchedule(40))
    measured = adapter.evaluated_tokens / (40 * grid.num_tokens)  # counted by the model, not the sampler
    assert measured == pytest.approx(result.token_fraction)
    assert abs(measured - budget) <= 0.02 * budget
    assert abs(result.achieved_compute_fraction - budget) <= 0.02 * budget


@pytest.mark.parametrize("stagger", [False, True])
@pytest.mark.parametrize("budget", [0.75, 0.5, 0.25])
def test_token_evaluations_meet_the_budget_on_the_wan_model(wan_adapter, job, budget, stagger):
    grid = wan_adapter.token_grid(job["latents"].shape)
    rows = []
    hook = wan_adapter.transformer.blocks[0].ffn.register_forward_hook(lambda m, a, o: rows.append(a[0].shape[:2].numel()))
    conditioning = Conditioning(job["prompt"], job["negative"], guidance_scale=4.0)
    sampler = HSASampler(budget, HSAConfig(stagger_phases=stagger))
    sampler.sample(wan_adapter, grid.patchify(job["latents"]), grid, conditioning, FlowMatchSchedule(40))
    hook.remove()
    measured = sum(rows) / 2 / (40 * grid.num_tokens)  # two CFG branches (batched or not) share the active set
    # aligned phases: the last plan before the final window fires a large-divisor group once or not
    # at all, by where the grid falls, so it lands a little further from the budget than staggering
    assert abs(measured - budget) <= (0.02 if stagger else 0.03) * budget


@pytest.mark.parametrize("budget", [0.75, 0.5, 0.25])
def test_active_counts_are_staggered_inside_the_caching_window(budget):
    adapter, grid, noise, conditioning = gaussian_job()
    config = HSAConfig(stagger_phases=True, step_budget="even", final_fraction=0.05)
    result = HSASampler(budget, config).sample(adapter, noise, grid, conditioning, FlowMatchSchedule(40))
    warmup, final = config.windows(40)
    counts = torch.tensor([s.active_tokens for s in result.steps[warmup : 40 - final]], dtype=torch.float64)
    assert counts.max() / counts.mean() <= 1.25
    assert all(s.active_tokens == grid.num_tokens for s in result.steps[:warmup] + result.steps[40 - final :])


def test_without_staggering_the_load_bursts():
    """Aligned phases (the default) show the staggering test above can fail."""
    adapter, grid, noise, conditioning = gaussian_job()
    config = HSAConfig(stagger_phases=False, step_budget="even")
    result = HSASampler(0.25, config).sample(adapter, noise, grid, conditioning, FlowMatchSchedule(40))
    warmup, final = config.windows(40)
    counts = torch.tensor([s.active_tokens for s in result.steps[warmup : 40 - final]], dtype=torch.float64)
    assert counts.max() / counts.mean() > 2


@pytest.mark.parametrize("budget", [0.75, 0.5, 0.25])
def test_aligned_phases_share_one_grid_across_reallocations(budget):
    """Without staggering, every divisor group fires on one grid anchored at the last warm-up step:
    every max(divisors)-th step is dense, and a divisor larger than the refresh interval is honoured
    (were phases relative to each plan's start, every token would fire at every re-allocation)."""
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=1024)
    recorder = Recorder(adapter)
    config = HSAConfig(stagger_phases=False, refresh_interval=4)
    schedule = FlowMatchSchedule(40)
    result = HSASampler(budget, config).sample(recorder, noise, grid, conditioning, schedule)
    warmup, final = config.windows(40)
    anchor, window = warmup - 1, range(warmup, 40 - final)

    dense = [s.step for s in result.steps if s.step in window and (s.step - anchor) % max(config.divisors) == 0]
    assert dense and all(result.steps[t].active_tokens == grid.num_tokens for t in dense)
    sigma_index = {float(s): i for i, s in enumerate(schedule.sigmas.tolist())}
    evaluated = [[anchor] for _ in range(grid.num_tokens)]
    for index, sigma, _ in recorder.calls:
        if sigma_index[sigma] in window:
            for token in index.tolist():
                evaluated[token].append(sigma_index[sigma])
    longest_gap = max(b - a for steps in evaluated for a, b in zip(steps, steps[1:]))
    assert longest_gap > config.refresh_interval
    assert abs(result.token_fraction - budget) <= 0.03 * budget


def test_fresh_context_oracle_changes_only_the_context():
    """The closed-form flow's tokens do not attend to each other, so the oracle — every token computed
    at every step, only active velocities used — must land exactly where cached HSA does, having run
    the model on every token at every step."""
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=512)
    cached = HSASampler(0.3).sample(adapter, noise, grid, conditioning, FlowMatchSchedule(40))
    recorder = Recorder(adapter)
    oracle = HSASampler(0.3, HSAConfig(context="fresh")).sample(recorder, noise, grid, conditioning, FlowMatchSchedule(40))
    assert torch.equal(oracle.tokens, cached.tokens)
    assert oracle.token_fraction == cached.token_fraction  # the budget counts the tokens whose velocity is used
    assert all(index.numel() == grid.num_tokens for index, _, _ in recorder.calls)


def test_skipped_steps_then_one_jump_equal_the_cached_euler_steps():
    """Under the paper's zero-order hold each token's final state is x₁ + Σ_evaluations
    (σ_next_eval − σ_eval)·v_eval — one jump per gap."""
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=256)
    recorder = Recorder(adapter)
    schedule = FlowMatchSchedule(40)
    result = HSASampler(0.3, HSAConfig.paper()).sample(recorder, noise, grid, conditioning, schedule)

    sigma_index = {float(s): i for i, s in enumerate(schedule.sigmas.tolist())}
    evaluations = [[] for _ in range(grid.num_tokens)]  # per token: (step, velocity)
    for index, sigma, velocity in recorder.calls:
        for row, token in enumerate(index.tolist()):
            evaluations[token].append((sigma_index[sigma], velocity[0, row]))
    sigmas = schedule.sigmas.to(torch.float64)
    skipped_somewhere = 0
    for token, history in enumerate(evaluations):
        x = noise[0, token].to(torch.float64)
        steps = [s for s, _ in history] + [schedule.steps]
        skipped_somewhere += any(b - a > 1 for a, b in zip(steps, steps[1:]))
        for (step, velocity), next_step in zip(history, steps[1:]):
            x = x + (sigmas[next_step] - sigmas[step]) * velocity.to(torch.float64)
        assert torch.allclose(result.tokens[0, token].to(torch.float64), x, atol=1e-5)
    assert skipped_somewhere > grid.num_tokens // 2


def test_dynamic_tokens_get_more_steps_than_static_ones():
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=1024)
    recorder = Recorder(adapter)
    HSASampler(0.4).sample(recorder, noise, grid, conditioning, FlowMatchSchedule(40))
    counts = torch.zeros(grid.num_tokens)
    for index, _, _ in recorder.calls:
        counts[index] += 1
    straight, curved = counts[: grid.num_tokens // 4], counts[grid.num_tokens // 4 :]
    assert curved.mean() > 1.5 * straight.mean()


class WakingAdapter(GaussianFlowAdapter):
    """Straight-line tokens, except that tokens [0, 64) start to swirl once σ drops below 0.5."""

    def velocity(self, x, sigma, branch, active=None, kv_cache=None):
        velocity = super().velocity(x, sigma, branch, active=active, kv_cache=kv_cache)
        index = torch.arange(x.shape[1]) if active is None else active
        s = float(sigma.flatten()[0])
        if s < 0.5:
            waking = (index < 64).to(velocity.dtype)[None, :, None]
            velocity = velocity + waking * 5 * math.sin(40 * s)
        return velocity


def test_a_token_that_starts_moving_is_promoted_at_the_next_refresh():
    generator = torch.Generator().manual_seed(0)
    n = 512
    adapter = WakingAdapter(torch.randn(1, n, 4, generator=generator), torch.zeros(1, n, 1))
    recorder = Recorder(adapter)
    grid = TokenGrid((1, 4, 1, 1, n), (1, 1, 1))
    schedule = FlowMatchSchedule(40, shift=1.0)  # σ = 0.5 at step 20, mid-window
    config = HSAConfig()
    HSASampler(0.35, config).sample(recorder, torch.randn(1, n, 4, generator=generator), grid,
                                    Conditioning(torch.ones(1)), schedule)
    warmup, final = config.windows(40)
    sigmas = schedule.sigmas.tolist()
    steps = [(sigmas.index(sigma), index) for index, sigma, _ in recorder.calls]
    # the waking tokens' first evaluation below σ = 0.5 shows them moving; the next re-allocation knows it
    seen_moving = min(step for step, index in steps if sigmas[step] < 0.5 and bool((index < 64).any()))
    promoted_from = next(t for t in range(warmup, 40 - final, config.refresh_interval) if t > seen_moving)
    early, late = torch.zeros(n), torch.zeros(n)
    for step, index in steps:
        if warmup <= step < 40 - final and sigmas[step] >= 0.5:
            early[index] += 1
        elif promoted_from <= step < 40 - final:
            late[index] += 1
    early_steps = sum(1 for t in range(warmup, 40 - final) if sigmas[t] >= 0.5)
    late_steps = 40 - final - promoted_from
    # early, all tokens are straight lines and share the rate; once the waking tokens move they get more
    # than twice the calm tokens' (the step-level budget sets how much each step gets, for everyone alike)
    waking_early_rate, calm_early_rate = early[:64].mean() / early_steps, early[64:].mean() / early_steps
    waking_late_rate, calm_late_rate = late[:64].mean() / late_steps, late[64:].mean() / late_steps
    assert waking_early_rate < 1.5 * calm_early_rate
    assert waking_late_rate > 2 * calm_late_rate


@pytest.mark.parametrize("refresh", [True, False])
def test_conditioning_tokens_are_bit_identical_and_computed_as_context(wan_adapter, job, refresh):
    """Conditioning tokens are never stepped; as context they are computed (at σ = 0) at every
    caching-window step that computes anything — or, with refresh_conditioning=False, never there —
    and the budget counts them."""
    grid = wan_adapter.token_grid(job["latents"].shape)
    frozen = grid.frame_mask([0])  # Wan 2.2 TI2V: the first latent frame is the clean image
    x = grid.patchify(job["latents"])
    x[:, frozen] = torch.linspace(-1, 1, int(frozen.sum()) * grid.token_dim).reshape(1, -1, grid.token_dim)
    conditioning = Conditioning(job["prompt"], job["negative"], guidance_scale=4.0)
    recorder = Recorder(wan_adapter)
    schedule = FlowMatchSchedule(20)
    hsa = HSASampler(0.5, HSAConfig(refresh_conditioning=refresh))
    first_call = {}
    for sampler in (EulerSampler(), hsa):
        first_call[sampler] = len(recorder.calls)
        result = sampler.sample(recorder, x, grid, conditioning, schedule, frozen=frozen)
        assert torch.equal(result.tokens[:, frozen], x[:, frozen])
        assert not torch.equal(result.tokens[:, ~frozen], x[:, ~frozen])
    hsa_calls = recorder.calls[first_call[hsa]:]
    frozen_index = frozen.nonzero().squeeze(1)
    window_calls = [index for index, _, _ in hsa_calls if len(index) < grid.num_tokens]
    assert window_calls
    for index in window_calls:
        assert torch.isin(frozen_index, index).all() if refresh else not torch.isin(index, frozen_index).any()
    # never over budget; a step that computes no scheduled token skips the context refresh budgeted
    # for it, so a short schedule on a small grid lands a little under (the tiny model's I2V at 40
    # steps meets 0.75 / 0.57 / 0.37 within 0.005)
    assert 0.9 * 0.5 <= result.token_fraction <= 1.02 * 0.5


@pytest.mark.parametrize("config", [HSAConfig.paper(), HSAConfig()], ids=["paper", "default"])
def test_hsa_is_close_to_the_exact_flow_on_a_closed_form_field(config):
    """Sanity of the whole loop: with more budget, HSA approaches the exact ODE solution. (The extrapolated
    update is a two-step method for skipped tokens, so at half the budget it can land as close as Euler's
    full budget: only the zero-order hold is held to a strictly falling error.)"""
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=1024)
    exact = adapter.exact_solution(noise)
    errors = {}
    for budget in (0.25, 0.5, 1.0):
        result = HSASampler(budget, config).sample(adapter, noise, grid, conditioning, FlowMatchSchedule(40, shift=1.0))
        errors[budget] = (result.tokens - exact).abs().mean().item()
    assert errors[1.0] < 0.05
    if config.skipped_update == "cached_euler":
        assert errors[1.0] < errors[0.5] < errors[0.25]
    else:
        assert errors[0.5] < 1.2 * errors[1.0] and errors[0.25] < 2 * errors[1.0]


def test_euler_converges_to_the_exact_solution_at_first_order():
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=64)
    exact = adapter.exact_solution(noise)
    error = {}
    for steps in (20, 40, 80):
        result = EulerSampler().sample(adapter, noise, grid, conditioning, FlowMatchSchedule(steps, shift=1.0))
        error[steps] = (result.tokens - exact).abs().max().item()
    assert 1.6 < error[20] / error[40] < 2.4 and 1.6 < error[40] / error[80] < 2.4


def test_budget_after_cost_model_overhead_meets_the_compute_budget():
    """With a per-step overhead fewer tokens are computed, so that *cost* meets the budget."""
    adapter, grid, noise, conditioning = gaussian_job()
    cost = CostModel(overhead=1e-3, per_token=1e-6)
    result = HSASampler(0.5, cost_model=cost).sample(adapter, noise, grid, conditioning, FlowMatchSchedule(40))
    assert abs(result.achieved_compute_fraction - 0.5) <= 0.01
    assert abs(result.predicted_compute_fraction - 0.5) <= 1e-9
    assert result.token_fraction < 0.5
    full = cost.predict_seconds([grid.num_tokens] * 40, grid.num_tokens)
    assert result.predicted_seconds == pytest.approx(0.5 * full)


def test_stats_report_drift_of_refreshed_tokens():
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=512)
    result = HSASampler(0.5).sample(adapter, noise, grid, conditioning, FlowMatchSchedule(40))
    refreshed = [s for s in result.steps if s.refreshed_tokens]
    assert refreshed and all(s.velocity_drift is not None and s.velocity_drift >= 0 for s in refreshed)
    assert result.mean_velocity_drift is not None
    assert [s.step for s in result.steps] == list(range(40))


def test_callback_exception_cancels_sampling():
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=64)

    class Cancelled(Exception):
        pass

    def cancel_at_step_three(stats):
        if stats.step == 3:
            raise Cancelled

    seen = []

    def record_then_cancel(stats):
        seen.append(stats.active_tokens)
        cancel_at_step_three(stats)

    with pytest.raises(Cancelled):
        HSASampler(0.5).sample(adapter, noise, grid, conditioning, FlowMatchSchedule(40), callback=record_then_cancel)
    assert len(seen) == 4 and adapter.evaluated_tokens == sum(seen)  # nothing ran after step 3


@pytest.mark.parametrize("budget", [0, -0.5, 1.01, float("nan"), float("inf"), "0.5"])
def test_budget_outside_zero_one_is_rejected(budget):
    with pytest.raises(ConfigError, match=r"budget must be in \(0, 1\]"):
        HSASampler(budget)


def test_budget_below_what_the_schedule_allows_names_the_minimum():
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=64)
    minimum = HSAConfig().min_budget(40, 64)
    with pytest.raises(BudgetInfeasibleError, match=f"below the minimum {minimum:.3f}") as error:
        HSASampler(0.05).sample(adapter, noise, grid, conditioning, FlowMatchSchedule(40))
    assert error.value.code == "budget_infeasible"
    assert error.value.min_budget == pytest.approx(HSAConfig().min_budget(40, 64))
    HSASampler(error.value.min_budget).sample(adapter, noise, grid, conditioning, FlowMatchSchedule(40))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("warmup_fraction", 1.0, "warmup_fraction"),
        ("final_fraction", -0.1, "final_fraction"),
        ("divisors", (), "divisors"),
        ("divisors", (1, 0), "divisors"),
        ("divisors", (2, 2), "distinct"),
        ("refresh_interval", 0, "refresh_interval"),
        ("rate_exponent", -1.0, "rate_exponent"),
        ("score_normalization", "l2", "score_normalization"),
        ("kv_cache_dtype", "int8", "kv_cache_dtype"),
        ("context", "stale", "context must be 'cached' or 'fresh'"),
    ],
)
def test_bad_hsa_config_is_rejected(field, value, message):
    with pytest.raises(ConfigError, match=message):
        HSAConfig(**{field: value})


def test_guidance_without_negative_embeddings_is_rejected():
    with pytest.raises(ConfigError, match="negative_prompt_embeds"):
        Conditioning(torch.zeros(1, 2, 3), guidance_scale=5.0)


def test_initial_tokens_of_the_wrong_shape_are_rejected(wan_adapter, job):
    grid = wan_adapter.token_grid(job["latents"].shape)
    with pytest.raises(ConfigError, match="initial tokens must have shape"):
        HSASampler(0.5).sample(wan_adapter, job["latents"], grid, Conditioning(job["prompt"]), FlowMatchSchedule(4))


def test_short_schedules_run_full_when_no_window_is_left():
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=64)
    result = HSASampler(1.0).sample(adapter, noise, grid, conditioning, FlowMatchSchedule(3))
    assert result.token_fraction == 1.0
    with pytest.raises(BudgetInfeasibleError):
        HSASampler(0.5).sample(adapter, noise, grid, conditioning, FlowMatchSchedule(3))


def test_replan_lowers_the_remaining_budget_but_never_below_the_slowest_rate():
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=1024)
    schedule = FlowMatchSchedule(40)
    asked = []

    def late(step, elapsed):
        asked.append(step)
        return 0.3 if step >= 12 else None

    planned = HSASampler(0.8).sample(adapter, noise, grid, conditioning, schedule)
    replanned = HSASampler(0.8, replan=late).sample(adapter, noise, grid, conditioning, schedule)
    warmup, final = HSAConfig().windows(40)
    assert asked == list(range(warmup, 40 - final, HSAConfig().refresh_interval))
    assert replanned.token_fraction < planned.token_fraction - 0.1
    assert replanned.extra["replans"][0] == (min(t for t in asked if t >= 12), 0.3)  # where the controller said so
    floor = HSASampler(0.8, replan=lambda step, elapsed: 0.01).sample(adapter, noise, grid, conditioning, schedule)
    assert floor.token_fraction >= HSAConfig().min_budget(40, 1024) - 0.02  # every token at its slowest rate


def test_replan_never_raises_the_budget():
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=1024)
    schedule = FlowMatchSchedule(40)
    planned = HSASampler(0.5).sample(adapter, noise, grid, conditioning, schedule)
    eager = HSASampler(0.5, replan=lambda step, elapsed: 1.0).sample(adapter, noise, grid, conditioning, schedule)
    assert eager.token_fraction == pytest.approx(planned.token_fraction)


def test_full_budget_with_a_controller_matches_euler():
    # the window runs on the sparse path so a late job can shed work; at full rate it is still Euler
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=512)
    schedule = FlowMatchSchedule(40)
    euler = EulerSampler().sample(adapter, noise, grid, conditioning, schedule)
    controlled = HSASampler(1.0, replan=lambda step, elapsed: None).sample(adapter, noise, grid, conditioning, schedule)
    assert controlled.token_fraction == 1.0
    assert torch.allclose(controlled.tokens, euler.tokens, atol=1e-5)


class LinearInSigmaAdapter(GaussianFlowAdapter):
    """v(x, σ) = a + b·σ per token and channel: along any trajectory a token's velocity is a line in σ."""

    def __init__(self, intercept, slope):
        super().__init__(torch.zeros_like(intercept), torch.zeros(1, intercept.shape[1], 1))
        self.intercept, self.slope = intercept, slope

    def velocity(self, x, sigma, branch, active=None, kv_cache=None):
        intercept, slope = (self.intercept, self.slope) if active is None else (self.intercept[:, active],
                                                                                  self.slope[:, active])
        self.evaluated_tokens += x.shape[0] * x.shape[1]
        return intercept + slope * sigma.to(torch.float32).reshape(-1, 1, 1)


def test_the_extrapolated_update_is_exact_for_velocities_linear_in_sigma():
    """The extrapolation reads the line through a token's last two velocities at the step's σ: on a field
    whose velocities are lines in σ, HSA at a third of the budget lands where full Euler does (when the
    reach is not capped), while the zero-order hold does not."""
    generator = torch.Generator().manual_seed(3)
    n = 512
    adapter = LinearInSigmaAdapter(torch.randn(1, n, 4, generator=generator), 5 * torch.randn(1, n, 4, generator=generator))
    grid = TokenGrid((1, 4, 1, 1, n), (1, 1, 1))
    noise, schedule, conditioning = torch.randn(1, n, 4, generator=generator), FlowMatchSchedule(40), Conditioning(torch.ones(1))
    euler = EulerSampler().sample(adapter, noise, grid, conditioning, schedule).tokens
    extrapolated = HSASampler(0.3, HSAConfig(extrapolation_limit=100.0)).sample(adapter, noise, grid, conditioning, schedule)
    held = HSASampler(0.3, HSAConfig(skipped_update="cached_euler")).sample(adapter, noise, grid, conditioning, schedule)
    assert extrapolated.token_fraction == pytest.approx(0.3, abs=0.005)
    assert torch.allclose(extrapolated.tokens, euler, atol=1e-4)
    assert (held.tokens - euler).abs().max() > 0.05


def test_a_zero_reach_is_the_zero_order_hold():
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=512)
    schedule = FlowMatchSchedule(40)
    unreached = HSASampler(0.4, HSAConfig(extrapolation_limit=0.0)).sample(adapter, noise, grid, conditioning, schedule)
    held = HSASampler(0.4, HSAConfig(skipped_update="cached_euler")).sample(adapter, noise, grid, conditioning, schedule)
    default = HSASampler(0.4).sample(adapter, noise, grid, conditioning, schedule)
    assert torch.equal(unreached.tokens, held.tokens)
    assert not torch.equal(default.tokens, held.tokens)


def test_the_paper_configuration_is_the_zero_order_hold_with_an_even_split():
    paper = HSAConfig.paper()
    assert (paper.skipped_update, paper.step_budget, paper.windows(40), paper.refresh_interval) == \
        ("cached_euler", "even", (4, 2), 8)
    assert HSAConfig.paper(rate_exponent=0.0).rate_exponent == 0.0 and HSAConfig.paper(rate_exponent=0.0).step_budget == "even"


@pytest.mark.parametrize("budget", [0.75, 0.5, 0.3])
def test_the_log_signal_split_spends_more_where_the_trajectory_bends(budget):
    """Per-step evaluations follow |Δ log(1 − σ)|: the window's first third computes more than its last
    third; an even split computes about the same in both; both meet the budget."""
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=1024)
    counts = {}
    for split in ("log_signal", "even"):
        config = HSAConfig(step_budget=split)
        result = HSASampler(budget, config).sample(adapter, noise, grid, conditioning, FlowMatchSchedule(40))
        warmup, final = config.windows(40)
        window = [s.active_tokens for s in result.steps[warmup : 40 - final]]
        third = len(window) // 3
        counts[split] = (sum(window[:third]), sum(window[-third:]))
        assert budget - 0.01 <= result.token_fraction <= budget + 1e-9
    assert counts["log_signal"][0] > 1.3 * counts["log_signal"][1]
    assert counts["even"][0] < 1.15 * counts["even"][1]


@pytest.mark.parametrize("steps", [10, 20, 40])
@pytest.mark.parametrize("num_tokens", [48, 256])
@pytest.mark.parametrize("config", [HSAConfig(), HSAConfig.paper(), HSAConfig(stagger_phases=True)],
                         ids=["default", "paper", "staggered"])
def test_each_plan_spends_its_share_so_the_run_meets_the_budget(steps, num_tokens, config):
    """A plan's divisors are searched until its exact evaluation count meets its share: aligned phases no
    longer under-spend on short schedules (where a large-divisor group fires once or not at all)."""
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=num_tokens)
    for budget in (0.75, 0.5):
        result = HSASampler(budget, config).sample(adapter, noise, grid, conditioning, FlowMatchSchedule(steps))
        assert budget - 0.02 * budget <= result.token_fraction <= budget + 1e-9


def test_the_fresh_context_oracle_counts_the_context_a_cached_step_computes():
    """With conditioning tokens the oracle computes everything, but counts what the cached path computes —
    the active tokens and the context — so both land on the same budget (and, the closed-form field having no
    attention, on the same tokens)."""
    adapter, grid, noise, conditioning = gaussian_job(num_tokens=512)
    frozen = torch.zeros(grid.num_tokens, dtype=torch.bool)
    frozen[:32] = True
    schedule = FlowMatchSchedule(40)
    cached = HSASampler(0.4).sample(adapter, noise, grid, conditioning, schedule, frozen=frozen)
    oracle = HSASampler(0.4, HSAConfig(context="fresh")).sample(adapter, noise, grid, conditioning, schedule,
                                                                 frozen=frozen)
    assert torch.equal(oracle.tokens, cached.tokens)
    assert oracle.token_fraction == cached.token_fraction == pytest.approx(0.4, abs=0.01)


@pytest.mark.parametrize("layers", [1, 2, 100])
def test_kv_forecast_keeps_the_budget_and_costs_its_layers_share_of_the_cache(wan_adapter, job, layers):
    grid = wan_adapter.token_grid(job["latents"].shape)
    conditioning = Conditioning(job["prompt"], job["negative"], guidance_scale=4.0)
    x, schedule = grid.patchify(job["latents"]), FlowMatchSchedule(20)
    plain = HSASampler(0.5).sample(wan_adapter, x, grid, conditioning, schedule)
    forecast = HSASampler(0.5, HSAConfig(kv_forecast_layers=layers)).sample(wan_adapter, x, grid, conditioning, schedule)
    forecast_layers = min(layers, wan_adapter.num_layers)
    assert forecast.kv_cache_bytes == plain.kv_cache_bytes * (1 + forecast_layers / wan_adapter.num_layers)
    assert forecast.token_fraction == pytest.approx(0.5, abs=0.01)
    assert torch.isfinite(forecast.tokens).all() and not torch.allclose(forecast.tokens, plain.tokens)


def test_new_config_fields_are_validated():
    for field, value in [("skipped_update", "teleport"), ("extrapolation_limit", -1.0),
                         ("extrapolation_limit", float("inf")), ("step_budget", "log_snr"),
                         ("step_budget_exponent", -0.5), ("kv_forecast_layers", -1)]:
        with pytest.raises(ConfigError, match=field):
            HSAConfig(**{field: value})
    with pytest.raises(ConfigError, match="kv_forecast_layers .* needs skipped_update='extrapolated'"):
        HSAConfig(kv_forecast_layers=2, skipped_update="cached_euler")
