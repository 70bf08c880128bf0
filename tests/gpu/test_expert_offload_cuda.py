"""Wan 2.2 A14B's two experts with ``expert_offload`` on the GPU: only the expert sampling is on the device,
the other waits on the CPU, and the result is the one both experts resident give."""

import copy

import diffusers
import pytest
import torch

from hsa_core import HSASampler
from hsa_core.models import get_model_spec
from hsa_core.models.wan import WanVideoModel
from tests.models.tiny import BOUNDARY_RATIO, HEIGHT, NUM_FRAMES, TEXT_DIM, WIDTH, text_embeddings, tiny_vae

from .medium import build_wan

pytestmark = pytest.mark.gpu

# Experts wide enough that one expert's weights (tens of MB) dwarf what a step keeps between steps (the
# text K/V of both CFG branches, the velocity buffers), so memory_allocated tells one expert from two.
EXPERT = dict(text_dim=TEXT_DIM, num_layers=2, num_attention_heads=8, attention_head_dim=64, ffn_dim=2048,
              rope_max_seq_len=32)


def two_expert_model(experts, device, offload: bool) -> WanVideoModel:
    high, low = (copy.deepcopy(expert) for expert in experts)
    pipeline = diffusers.WanPipeline(
        tokenizer=None, text_encoder=None, vae=tiny_vae().to(device),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=high.to(device), transformer_2=low.to("cpu" if offload else device),  # as load_model places them
        boundary_ratio=BOUNDARY_RATIO,
    )
    pipeline.set_progress_bar_config(disable=True)
    return WanVideoModel(pipeline, get_model_spec("wan2.2-t2v-a14b"), expert_offload=offload)


def run(model: WanVideoModel, device, probe=None):
    prompt, negative = (t.to(device) for t in text_embeddings())
    job = model.prepare(prompt_embeds=prompt, negative_prompt_embeds=negative, height=HEIGHT, width=WIDTH,
                        num_frames=NUM_FRAMES, steps=20, shift=3.0, guidance_scale=4.0, guidance_scale_2=3.0,
                        seed=7)
    return job, model.denoise(job, HSASampler(0.5), callback=probe)


def parameter_bytes_on(module, device_type: str) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters() if p.device.type == device_type)


def test_only_the_sampling_expert_is_on_the_gpu_and_the_result_is_unchanged(device, cuda_only):
    experts = [build_wan(seed, device=device, **EXPERT).cpu() for seed in (0, 1)]  # each model takes copies
    expert_bytes = parameter_bytes_on(experts[0], "cpu")

    model = two_expert_model(experts, device, offload=True)
    torch.cuda.synchronize(device)
    resident = torch.cuda.memory_allocated(device)  # the high-noise expert, the VAE
    seen = []

    def probe(stats):
        on_gpu = [parameter_bytes_on(adapter.transformer, "cuda") for adapter in model.adapters]
        seen.append((stats.step, on_gpu, torch.cuda.memory_allocated(device)))

    job, offloaded = run(model, device, probe)
    switch = job.switch_steps[0]
    assert 0 < switch < len(seen) == 20
    for step, on_gpu, allocated in seen:
        sampling = 0 if step < switch else 1
        assert on_gpu[sampling] == expert_bytes and on_gpu[1 - sampling] == 0, (step, on_gpu)
        assert allocated - resident < expert_bytes / 2, (step, allocated, resident, expert_bytes)
    assert [e["sparse"] for e in offloaded.extra["experts"]] == [True, True]

    both = two_expert_model(experts, device, offload=False)
    assert all(parameter_bytes_on(adapter.transformer, "cuda") == expert_bytes for adapter in both.adapters)
    _, resident_result = run(both, device)
    assert torch.equal(offloaded.tokens, resident_result.tokens)
