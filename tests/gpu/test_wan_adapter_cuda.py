"""The Wan adapter's full forward against diffusers' own ``WanTransformer3DModel.forward`` on the GPU.

float32 (TF32 off) must agree to float32 rounding. In bf16 the two forwards round differently (the
adapter embeds patches with a matmul, diffusers with a Conv3d), so each is compared with the float32
forward of the same weights: the adapter may be no further from it than diffusers' own bf16 forward is.
Both bf16 layouts are checked: every parameter in bf16, and the ``from_pretrained`` one that keeps the
time embedder, norms and modulation tables in float32.
"""

import copy

import pytest
import torch

from hsa_core.adapters.wan import WanAdapter

from .medium import build_wan, in_dtype, job, relative_error

pytestmark = pytest.mark.gpu


def diffusers_forward(model, latents, sigma, text):
    """diffusers' forward; ``sigma`` a float, or (1, N) per token (Wan 2.2 TI2V's expand_timesteps)."""
    dtype = model.patch_embedding.weight.dtype  # the compute dtype (never one of the float32-kept modules)
    timestep = torch.as_tensor(sigma, dtype=torch.float32, device=latents.device).reshape(1, -1) * 1000
    if timestep.shape[1] == 1:
        timestep = timestep.reshape(1)
    with torch.no_grad():
        return model(hidden_states=latents.to(dtype), timestep=timestep, encoder_hidden_states=text.to(dtype),
                     return_dict=False)[0].float()


def adapter_forward(adapter, latents, sigma, text):
    grid = adapter.token_grid(latents.shape)
    branch = adapter.prepare_branch(grid, text)
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=latents.device).reshape(1, -1)
    if sigma.shape[1] == 1:
        sigma = sigma.reshape(1)
    return grid.unpatchify(adapter.velocity(grid.patchify(latents), sigma, branch).float())


@pytest.mark.parametrize("per_token", [False, True], ids=["one-timestep", "first-frame-at-zero"])
def test_float32_full_forward_equals_diffusers(device, no_tf32, per_token):
    model, inputs = build_wan(device=device), job(device=device)
    adapter = WanAdapter(copy.deepcopy(model))
    sigma = 0.7
    if per_token:  # Wan 2.2 TI2V: the first latent frame's tokens at timestep 0
        grid = adapter.token_grid(inputs["latents"].shape)
        sigma = torch.where(grid.frame_mask([0]), 0.0, 0.7).to(device)[None]
    reference = diffusers_forward(model, inputs["latents"], sigma, inputs["prompt"])
    ours = adapter_forward(adapter, inputs["latents"], sigma, inputs["prompt"])
    assert relative_error(ours, reference) <= 1e-4


@pytest.mark.parametrize("keep_fp32", [False, True], ids=["all-bf16", "fp32-norms-and-modulation"])
def test_bfloat16_full_forward_is_as_close_to_float32_as_diffusers_own(device, keep_fp32):
    model, inputs = build_wan(device=device), job(device=device)
    exact = diffusers_forward(model, inputs["latents"], 0.7, inputs["prompt"])
    theirs = diffusers_forward(in_dtype(model, torch.bfloat16, keep_fp32), inputs["latents"], 0.7, inputs["prompt"])
    ours = adapter_forward(WanAdapter(in_dtype(model, torch.bfloat16, keep_fp32)), inputs["latents"], 0.7,
                           inputs["prompt"])
    rounding = relative_error(theirs, exact)  # what bf16 costs diffusers itself
    print(f"bf16 vs fp32: diffusers {rounding:.2e}, adapter {relative_error(ours, exact):.2e}; "
          f"adapter vs diffusers {relative_error(ours, theirs):.2e}")
    assert 0 < rounding <= 0.05
    assert relative_error(ours, exact) <= 1.5 * rounding + 1e-3
    assert relative_error(ours, theirs) <= 2 * rounding


def test_the_model_still_runs_diffusers_forward_after_the_swap(device, no_tf32):
    model, inputs = build_wan(device=device), job(device=device)
    adapter = WanAdapter(copy.deepcopy(model))
    stock = diffusers_forward(model, inputs["latents"], 0.3, inputs["prompt"])
    swapped = diffusers_forward(adapter.transformer, inputs["latents"], 0.3, inputs["prompt"])
    assert relative_error(swapped, stock) <= 1e-4
