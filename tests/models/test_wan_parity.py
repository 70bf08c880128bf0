"""Every registered Wan family against its diffusers pipeline, on tiny random-init components.

Budget 1.0 must reproduce diffusers' own loop with FlowMatchEulerDiscreteScheduler (same shift, same
seed, prompt embeddings passed in, compared on latents, fp32); budget 0.5 must spend half the token
evaluations; the first frame of TI2V image-to-video must come back bit-identical.
"""

import diffusers
import pytest
import torch

from hsa_core import BudgetInfeasibleError, HSAConfig, HSASampler
from hsa_core.models import get_model_spec
from hsa_core.models.wan import WanVideoModel

from .tiny import FAMILIES, HEIGHT, NUM_FRAMES, WIDTH, build_pipeline, text_embeddings, tiny_image

TOLERANCE = 1e-4
GUIDANCE, GUIDANCE_2 = 5.0, 3.0

# (model name, with an image): every family, TI2V both ways
CASES = [
    ("wan2.1-t2v-1.3b", False),
    ("wan2.1-i2v-14b-480p", True),
    ("wan2.2-ti2v-5b", True),
    ("wan2.2-ti2v-5b", False),
    ("wan2.2-t2v-a14b", False),
    ("wan2.2-i2v-a14b", True),
]


def reference_latents(name, with_image, steps, shift, seed, output_type="latent"):
    """diffusers' latents, or with another ``output_type`` its decoded video."""
    pipeline = build_pipeline(name, shift)
    if with_image and not isinstance(pipeline, diffusers.WanImageToVideoPipeline):
        # TI2V checkpoints ship as a WanPipeline; diffusers runs their image-to-video with this one
        pipeline = diffusers.WanImageToVideoPipeline(**pipeline.components, expand_timesteps=True)
        pipeline.set_progress_bar_config(disable=True)
    prompt, negative = text_embeddings()
    request = dict(prompt_embeds=prompt, negative_prompt_embeds=negative, height=HEIGHT, width=WIDTH,
                   num_frames=NUM_FRAMES, num_inference_steps=steps, guidance_scale=GUIDANCE,
                   generator=torch.Generator().manual_seed(seed), output_type=output_type, return_dict=False)
    if FAMILIES[name][2] == 2:
        request["guidance_scale_2"] = GUIDANCE_2
    if with_image:
        request["image"] = tiny_image()
    return pipeline(**request)[0]


def run_ours(name, with_image, sampler, steps, shift, seed):
    model = WanVideoModel(build_pipeline(name, shift), get_model_spec(name))
    prompt, negative = text_embeddings()
    job = model.prepare(prompt_embeds=prompt, negative_prompt_embeds=negative,
                        image=tiny_image() if with_image else None, height=HEIGHT, width=WIDTH,
                        num_frames=NUM_FRAMES, steps=steps, shift=shift, guidance_scale=GUIDANCE,
                        guidance_scale_2=GUIDANCE_2, seed=seed)
    result = model.denoise(job, sampler)
    return job, result, job.grid.unpatchify(result.tokens)


@pytest.mark.parametrize("name, with_image", CASES)
def test_full_budget_reproduces_the_diffusers_pipeline(name, with_image):
    steps, shift, seed = 8, 3.0, 7
    reference = reference_latents(name, with_image, steps, shift, seed)
    job, result, latents = run_ours(name, with_image, HSASampler(1.0), steps, shift, seed)
    assert latents.shape == reference.shape
    error = float((latents - reference).abs().max())
    print(f"{name} image={with_image}: max |ours − diffusers| = {error:.2e}")
    assert error <= TOLERANCE
    assert result.token_fraction == 1.0 and result.kv_cache_bytes == 0
    if FAMILIES[name][2] == 2:  # the boundary splits the 8 steps 4 + 4, as diffusers' t ≥ 750 rule does
        assert job.switch_steps == [4]
        assert [(e["first_step"], e["steps"]) for e in result.extra["experts"]] == [(0, 4), (4, 4)]


@pytest.mark.parametrize("with_image", [True, False])
def test_ti2v_runs_on_the_48_channel_vae_and_decodes_as_diffusers_does(with_image):
    """Wan 2.2 TI2V's own VAE: 48 latent channels, 16× spatial (2×2 pixel patches, then 8×), 4× temporal."""
    steps, shift, seed = 4, 3.0, 7
    reference = reference_latents("wan2.2-ti2v-5b", with_image, steps, shift, seed, output_type="np")[0]
    job, _, latents = run_ours("wan2.2-ti2v-5b", with_image, HSASampler(1.0), steps, shift, seed)
    latent_frames = (NUM_FRAMES - 1) // 4 + 1
    assert latents.shape == (1, 48, latent_frames, HEIGHT // 16, WIDTH // 16)
    assert job.grid.num_tokens == latent_frames * (HEIGHT // 32) * (WIDTH // 32)
    model = WanVideoModel(build_pipeline("wan2.2-ti2v-5b", shift), get_model_spec("wan2.2-ti2v-5b"))
    frames, decoded_with = model.decode(latents)
    assert frames.shape == reference.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3) and decoded_with == "device"
    assert abs(frames - reference).max() <= TOLERANCE


def test_the_parity_check_can_fail():
    """A wrong guidance scale on the low-noise expert is visible at the tolerance the tests use."""
    reference = reference_latents("wan2.2-t2v-a14b", False, 8, 3.0, 7)
    model = WanVideoModel(build_pipeline("wan2.2-t2v-a14b"), get_model_spec("wan2.2-t2v-a14b"))
    prompt, negative = text_embeddings()
    job = model.prepare(prompt_embeds=prompt, negative_prompt_embeds=negative, height=HEIGHT, width=WIDTH,
                        num_frames=NUM_FRAMES, steps=8, guidance_scale=GUIDANCE, guidance_scale_2=GUIDANCE, seed=7)
    latents = job.grid.unpatchify(model.denoise(job, HSASampler(1.0)).tokens)
    assert (latents - reference).abs().max() > 100 * TOLERANCE


@pytest.mark.parametrize("name, with_image", CASES)
def test_half_budget_spends_half_the_token_evaluations(name, with_image):
    job, result, latents = run_ours(name, with_image, HSASampler(0.5), steps=20, shift=3.0, seed=7)
    # aligned phases (the default) never overspend; on a 20-step schedule the last plan's large-divisor
    # groups may not fire before the final window, and a two-expert schedule has two such tails
    assert 0.5 - 0.08 <= result.token_fraction <= 0.5 + 0.01
    staggered = run_ours(name, with_image, HSASampler(0.5, HSAConfig(stagger_phases=True)), steps=20, shift=3.0,
                         seed=7)[1]
    assert abs(staggered.token_fraction - 0.5) <= 0.02
    assert torch.isfinite(latents).all()
    assert result.kv_cache_bytes > 0  # the caching window ran on the K/V cache
    if job.frozen is not None:  # TI2V image-to-video: the image's latent frame is returned untouched
        assert torch.equal(result.tokens[:, job.frozen], job.tokens[:, job.frozen])
    if FAMILIES[name][2] == 2:  # both experts got a caching window of their own
        assert [e["sparse"] for e in result.extra["experts"]] == [True, True]


def test_a_short_expert_span_runs_at_its_minimum_and_the_other_pays_for_it():
    from hsa_core.samplers.experts import ScheduleSpan, span_budgets

    sampler = HSASampler(0.5)
    spans = [ScheduleSpan(torch.linspace(1, 0.8, 4), 0), ScheduleSpan(torch.linspace(0.8, 0, 18), 3)]
    short, long = span_budgets(sampler, spans, num_tokens=48, frozen_tokens=0)
    assert short == sampler.config.min_budget(3, 48) > 0.5  # 3 steps: two of them warm-up
    assert long == pytest.approx((0.5 * 20 - 3 * short) / 17)
    with pytest.raises(BudgetInfeasibleError, match="below the minimum .* of this two-expert schedule"):
        span_budgets(HSASampler(0.2), spans, num_tokens=48, frozen_tokens=0)


def test_an_image_conditioned_token_subset_equals_the_full_forward_on_those_tokens():
    """KV-cache synchronisation with the I2V condition and the CLIP context: rows gathered, nothing else."""
    model = WanVideoModel(build_pipeline("wan2.1-i2v-14b-480p"), get_model_spec("wan2.1-i2v-14b-480p"))
    prompt, negative = text_embeddings()
    job = model.prepare(prompt_embeds=prompt, negative_prompt_embeds=negative, image=tiny_image(), height=HEIGHT,
                        width=WIDTH, num_frames=NUM_FRAMES, steps=4)
    adapter, conditioning = job.experts[0].adapter, job.experts[0].conditioning
    branch = adapter.prepare_branch(job.grid, conditioning.prompt_embeds, **conditioning.model_inputs)
    cache = adapter.new_kv_cache(job.grid)
    sigma = torch.tensor([0.7])
    full = adapter.velocity(job.tokens, sigma, branch, kv_cache=cache)
    active = torch.tensor([0, 5, 17, 40])
    subset = adapter.velocity(job.tokens[:, active], sigma, branch, active=active, kv_cache=cache)
    assert (subset - full[:, active]).abs().max() <= 1e-5
    # the condition matters: the same tokens without the image latents give another velocity
    bare = adapter.prepare_branch(job.grid, conditioning.prompt_embeds, image_embeds=conditioning.model_inputs[
        "image_embeds"], condition=torch.zeros_like(conditioning.model_inputs["condition"]))
    assert (adapter.velocity(job.tokens, sigma, bare) - full).abs().max() > 1e-3
