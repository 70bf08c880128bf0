"""Budget 1.0 on the GPU: HSA is the plain Euler sampler bit for bit, and a WanVideoModel reproduces
diffusers' own pipeline (the tiny random-init pipelines of tests/models/tiny.py moved to the GPU)."""

import diffusers
import pytest
import torch

from hsa_core import Conditioning, EulerSampler, FlowMatchSchedule, HSASampler
from hsa_core.adapters.wan import WanAdapter
from hsa_core.models import get_model_spec
from hsa_core.models.wan import WanVideoModel
from tests.models.tiny import FAMILIES, HEIGHT, NUM_FRAMES, WIDTH, build_pipeline, text_embeddings, tiny_image

from .medium import build_wan, cast, in_dtype, job, relative_error

pytestmark = pytest.mark.gpu

GUIDANCE, GUIDANCE_2 = 5.0, 3.0
STEPS, SHIFT, SEED = 8, 3.0, 7


@pytest.mark.parametrize("frozen_first_frame", [False, True])
def test_full_budget_hsa_is_euler_bit_for_bit(device, frozen_first_frame):
    adapter, inputs = WanAdapter(in_dtype(build_wan(device=device), torch.bfloat16)), job(device=device)
    grid = adapter.token_grid(inputs["latents"].shape)
    frozen = grid.frame_mask([0]) if frozen_first_frame else None
    conditioning = Conditioning(inputs["prompt"], inputs["negative"], guidance_scale=GUIDANCE)
    x, schedule = grid.patchify(inputs["latents"]), FlowMatchSchedule(STEPS, SHIFT)
    euler = EulerSampler().sample(adapter, x, grid, conditioning, schedule, frozen=frozen)
    hsa = HSASampler(1.0).sample(adapter, x, grid, conditioning, schedule, frozen=frozen)
    assert hsa.token_fraction == 1.0 and hsa.kv_cache_bytes == 0
    assert torch.isfinite(euler.tokens).all()
    assert torch.equal(hsa.tokens, euler.tokens)


def diffusers_latents(name, with_image, device, transformer_dtype=None):
    pipeline = build_pipeline(name, SHIFT)
    if with_image and not isinstance(pipeline, diffusers.WanImageToVideoPipeline):
        # TI2V checkpoints ship as a WanPipeline; diffusers runs their image-to-video with this one
        pipeline = diffusers.WanImageToVideoPipeline(**pipeline.components, expand_timesteps=True)
        pipeline.set_progress_bar_config(disable=True)
    pipeline.to(device)
    if transformer_dtype is not None:
        cast(pipeline.transformer, transformer_dtype, keep_fp32=True)
    prompt, negative = (t.to(device) for t in text_embeddings())
    request = dict(prompt_embeds=prompt, negative_prompt_embeds=negative, height=HEIGHT, width=WIDTH,
                   num_frames=NUM_FRAMES, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                   generator=torch.Generator().manual_seed(SEED), output_type="latent", return_dict=False)
    if FAMILIES[name][2] == 2:
        request["guidance_scale_2"] = GUIDANCE_2
    if with_image:
        request["image"] = tiny_image()
    return pipeline(**request)[0].float()


def our_latents(name, with_image, device, transformer_dtype=None):
    pipeline = build_pipeline(name, SHIFT).to(device)
    if transformer_dtype is not None:
        cast(pipeline.transformer, transformer_dtype, keep_fp32=True)
    model = WanVideoModel(pipeline, get_model_spec(name))
    prompt, negative = (t.to(device) for t in text_embeddings())
    job = model.prepare(prompt_embeds=prompt, negative_prompt_embeds=negative,
                        image=tiny_image() if with_image else None, height=HEIGHT, width=WIDTH,
                        num_frames=NUM_FRAMES, steps=STEPS, shift=SHIFT, guidance_scale=GUIDANCE,
                        guidance_scale_2=GUIDANCE_2, seed=SEED)
    result = model.denoise(job, HSASampler(1.0))
    assert result.token_fraction == 1.0 and result.tokens.device.type == device.type
    return job.grid.unpatchify(result.tokens)


@pytest.mark.parametrize("name, with_image", [("wan2.1-t2v-1.3b", False), ("wan2.1-i2v-14b-480p", True),
                                              ("wan2.2-ti2v-5b", True), ("wan2.2-t2v-a14b", False)])
def test_a_float32_wan_model_reproduces_the_diffusers_pipeline(device, no_tf32, name, with_image):
    reference = diffusers_latents(name, with_image, device)
    ours = our_latents(name, with_image, device)
    assert ours.shape == reference.shape
    print(f"{name} image={with_image}: max |ours − diffusers| = {float((ours - reference).abs().max()):.2e}")
    assert float((ours - reference).abs().max()) <= 1e-4


def test_a_bfloat16_wan_model_is_as_close_to_float32_as_the_diffusers_pipeline(device):
    """diffusers keeps its latents in the transformer's dtype between steps, hsa_core in float32: ours may
    be no further from the float32 run than diffusers' own bf16 run is."""
    exact = diffusers_latents("wan2.1-t2v-1.3b", False, device)
    theirs = diffusers_latents("wan2.1-t2v-1.3b", False, device, torch.bfloat16)
    ours = our_latents("wan2.1-t2v-1.3b", False, device, torch.bfloat16)
    rounding = relative_error(theirs, exact)
    print(f"bf16 vs fp32: diffusers {rounding:.2e}, ours {relative_error(ours, exact):.2e}")
    assert 0 < rounding <= 0.1
    assert relative_error(ours, exact) <= 1.5 * rounding + 1e-3
