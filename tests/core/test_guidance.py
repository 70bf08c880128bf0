"""GuidedDenoiser with guidance terms besides CFG and with guidance rescaling, against closed forms and
diffusers' ``rescale_noise_cfg``, on a model whose velocity is a per-branch multiple of x."""

import pytest
import torch

from hsa_core import Conditioning, ConfigError
from hsa_core.adapters.base import TokenGrid
from hsa_core.samplers import GuidanceRescale, GuidanceTerm, GuidedDenoiser

NUM_TOKENS, DIM = 6, 3
GRID = TokenGrid((1, DIM, 1, 1, NUM_TOKENS), (1, 1, 1))


class BranchMultiple:
    """v = c·x, c being the branch's prompt "embedding", or ``weakened_to`` for a guidance term's branch."""

    num_layers = width = 1

    def prepare_branch(self, grid, prompt_embeds, weakened_to=None):
        return prompt_embeds if weakened_to is None else weakened_to

    def new_kv_cache(self, grid, dtype=None):
        return None

    def velocity(self, x, sigma, branch, active=None, kv_cache=None):
        return branch * x


def test_terms_add_their_scaled_difference_to_the_conditional_velocity_on_the_computed_tokens():
    cfg_scale = torch.linspace(1.5, 4.0, NUM_TOKENS)
    term_scale = torch.linspace(-1.0, 1.0, NUM_TOKENS)
    conditioning = Conditioning(2.0, 0.5, cfg_scale, extra_guidance=(
        GuidanceTerm("constant", 0.3, {"weakened_to": 1.5}),
        GuidanceTerm("per token", term_scale, {"weakened_to": -1.0})))
    denoiser = GuidedDenoiser(BranchMultiple(), GRID, conditioning)
    assert denoiser.num_branches == conditioning.num_branches == 4
    active = torch.tensor([1, 4])
    x = torch.randn(1, 2, DIM)
    w, s = cfg_scale[active, None], term_scale[active, None]
    # v_u + w·(v_c − v_u) + 0.3·(v_c − v_constant) + s·(v_c − v_per_token)
    expected = 0.5 * x + w * 1.5 * x + 0.3 * 0.5 * x + s * 3.0 * x
    assert torch.allclose(denoiser(x, torch.full((1,), 0.5), active), expected, atol=1e-6)


def test_without_cfg_the_terms_guide_the_conditional_velocity():
    conditioning = Conditioning(2.0, extra_guidance=(GuidanceTerm("weaker", 0.5, {"weakened_to": 1.0}),))
    denoiser = GuidedDenoiser(BranchMultiple(), GRID, conditioning)
    x = torch.randn(1, NUM_TOKENS, DIM)
    assert denoiser.num_branches == 2
    assert torch.allclose(denoiser(x, torch.full((1,), 0.5)), 2.0 * x + 0.5 * 1.0 * x)


def rescaled_like_diffusers(x0_guided, x0_conditional, groups, factors):
    """diffusers' LTX-2 loop: ``rescale_noise_cfg`` on the x̂₀ predictions of each stream (group)."""
    from diffusers.pipelines.ltx2.pipeline_ltx2 import rescale_noise_cfg

    out = x0_guided.clone()
    for group, factor in enumerate(factors):
        members = groups == group
        out[:, members] = rescale_noise_cfg(x0_guided[:, members], x0_conditional[:, members], factor)
    return out


def test_rescaling_is_diffusers_per_group_and_reads_the_last_predictions_of_tokens_not_computed():
    groups = torch.tensor([0, 0, 0, 0, 1, 1])
    factors = (0.7, 0.4)
    conditioning = Conditioning(2.0, 0.5, 3.0, guidance_rescale=GuidanceRescale(factors, groups))
    denoiser = GuidedDenoiser(BranchMultiple(), GRID, conditioning)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, NUM_TOKENS, DIM, generator=generator) + torch.arange(NUM_TOKENS)[None, :, None]
    conditional, guided = 2.0 * x, 0.5 * x + 3.0 * 1.5 * x  # v_c, v_u + w·(v_c − v_u)

    # a full step; the frozen token 0 sees σ = 0 but is converted with the step's σ, 0.8, as diffusers does
    sigma = torch.tensor([[0.0, 0.8, 0.8, 0.8, 0.8, 0.8]])
    x0_conditional, x0_guided = x - 0.8 * conditional, x - 0.8 * guided
    expected = (x - rescaled_like_diffusers(x0_guided, x0_conditional, groups, factors)) / 0.8
    assert torch.allclose(denoiser(x, sigma), expected, atol=1e-5)

    # a subset step at σ = 0.6: the statistics span its fresh predictions and every other token's from the full step
    active = torch.tensor([2, 5])
    x_active = 0.9 * x[:, active]
    x0_conditional[:, active] = x_active - 0.6 * 2.0 * x_active
    x0_guided[:, active] = x_active - 0.6 * 5.0 * x_active
    expected = (x_active - rescaled_like_diffusers(x0_guided, x0_conditional, groups, factors)[:, active]) / 0.6
    assert torch.allclose(denoiser(x_active, torch.full((1,), 0.6), active), expected, atol=1e-5)


def test_rescaling_needs_a_full_step_before_a_subset():
    one_group = torch.zeros(NUM_TOKENS, dtype=torch.long)
    conditioning = Conditioning(2.0, 0.5, 3.0, guidance_rescale=GuidanceRescale((0.7,), one_group))
    denoiser = GuidedDenoiser(BranchMultiple(), GRID, conditioning)
    with pytest.raises(ConfigError, match="needs a full step"):
        denoiser(torch.ones(1, 2, DIM), torch.full((1,), 0.5), torch.tensor([0, 1]))
