"""A frozen first frame (Wan 2.2 TI2V's image) at budget 0.5 on the GPU: its tokens come back bit-identical,
and the run computes the budget's share of the token evaluations."""

import pytest
import torch

from hsa_core import Conditioning, FlowMatchSchedule, HSAConfig, HSASampler
from hsa_core.adapters.wan import WanAdapter
from hsa_core.models import get_model_spec
from hsa_core.models.wan import WanVideoModel
from tests.models.tiny import HEIGHT, NUM_FRAMES, WIDTH, build_pipeline, text_embeddings, tiny_image

from .medium import build_wan, in_dtype, job

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("stagger", [False, True], ids=["aligned", "staggered"])
def test_the_first_frame_stays_bit_identical_at_half_budget(device, stagger):
    adapter, inputs = WanAdapter(in_dtype(build_wan(device=device), torch.bfloat16)), job(device=device)
    grid = adapter.token_grid(inputs["latents"].shape)
    frozen = grid.frame_mask([0])  # (N,) on the CPU, as WanVideoModel builds it
    x = grid.patchify(inputs["latents"])
    conditioning = Conditioning(inputs["prompt"], inputs["negative"], guidance_scale=5.0)
    result = HSASampler(0.5, HSAConfig(stagger_phases=stagger)).sample(
        adapter, x, grid, conditioning, FlowMatchSchedule(20, 3.0), frozen=frozen)
    print(f"token fraction {result.token_fraction:.4f}")
    assert result.extra["sparse"] and result.kv_cache_bytes > 0
    assert torch.equal(result.tokens[:, frozen], x[:, frozen].float())
    assert torch.isfinite(result.tokens).all() and not torch.equal(result.tokens[:, ~frozen], x[:, ~frozen])
    # the frozen frame is context at every window step and counts towards the budget; aligned phases never
    # overspend, and the last plan's slowest groups may not fire before the final window
    if stagger:
        assert abs(result.token_fraction - 0.5) <= 0.02
    else:
        assert 0.5 - 0.05 <= result.token_fraction <= 0.5 + 0.01


def test_wan_ti2v_image_to_video_keeps_the_image_latent(device):
    model = WanVideoModel(build_pipeline("wan2.2-ti2v-5b").to(device), get_model_spec("wan2.2-ti2v-5b"))
    prompt, negative = (t.to(device) for t in text_embeddings())
    job = model.prepare(prompt_embeds=prompt, negative_prompt_embeds=negative, image=tiny_image(), height=HEIGHT,
                        width=WIDTH, num_frames=NUM_FRAMES, steps=20, shift=3.0, seed=7)
    result = model.denoise(job, HSASampler(0.5))
    assert job.frozen is not None and int(job.frozen.sum()) > 0
    assert result.kv_cache_bytes > 0 and result.tokens.device.type == device.type  # the caching window ran
    assert torch.equal(result.tokens[:, job.frozen], job.tokens[:, job.frozen])
