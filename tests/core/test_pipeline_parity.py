"""Budget 1.0 reproduces the plain Euler sampler and diffusers' own WanPipeline (fp32, ≤ 1e-4)."""

import pytest
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline

from hsa_core import Conditioning, EulerSampler, FlowMatchSchedule, HSASampler
from hsa_core.adapters.wan import WanAdapter

from .tiny import build_tiny_wan

TOLERANCE = 1e-4


def tiny_vae():
    torch.manual_seed(0)
    return AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()


def run_diffusers_pipeline(job, steps, shift, guidance, expand_timesteps=False):
    pipe = WanPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=tiny_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
        transformer=build_tiny_wan(),
        expand_timesteps=expand_timesteps,
    )
    pipe.set_progress_bar_config(disable=True)
    _, _, frames, height, width = job["latents"].shape
    return pipe(
        prompt_embeds=job["prompt"],
        negative_prompt_embeds=job["negative"],
        latents=job["latents"].clone(),
        num_frames=(frames - 1) * 4 + 1,
        height=height * 8,
        width=width * 8,
        num_inference_steps=steps,
        guidance_scale=guidance,
        output_type="latent",
        return_dict=False,
    )[0]


def run_ours(sampler, job, steps, shift, guidance):
    adapter = WanAdapter(build_tiny_wan())
    grid = adapter.token_grid(job["latents"].shape)
    conditioning = Conditioning(job["prompt"], job["negative"], guidance_scale=guidance)
    result = sampler.sample(adapter, grid.patchify(job["latents"]), grid, conditioning, FlowMatchSchedule(steps, shift))
    return grid.unpatchify(result.tokens), result


@pytest.mark.parametrize("steps, shift, guidance", [(8, 3.0, 5.0), (12, 5.0, 1.0)])
def test_euler_and_hsa_at_full_budget_match_wan_pipeline(job, steps, shift, guidance):
    reference = run_diffusers_pipeline(job, steps, shift, guidance)
    euler, _ = run_ours(EulerSampler(), job, steps, shift, guidance)
    hsa, result = run_ours(HSASampler(budget=1.0), job, steps, shift, guidance)
    assert (euler - reference).abs().max() <= TOLERANCE
    assert (hsa - reference).abs().max() <= TOLERANCE
    assert torch.equal(hsa, euler)  # the same arithmetic, not merely close
    assert result.token_fraction == 1.0 and result.kv_cache_bytes == 0


def test_pipeline_with_per_token_timesteps_matches_too(job):
    """diffusers' Wan 2.2 TI2V timestep path (one timestep per token) gives the same latents."""
    reference = run_diffusers_pipeline(job, 6, 3.0, 4.0, expand_timesteps=True)
    euler, _ = run_ours(EulerSampler(), job, 6, 3.0, 4.0)
    assert (euler - reference).abs().max() <= TOLERANCE
