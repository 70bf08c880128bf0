"""Random-init Wan transformers and jobs for the GPU checks, larger than tests/core's tiny one.

Three layers of four 32-wide heads (width 128) over 3 072 tokens: big enough that attention, the
GEMMs and the K/V cache take the kernels a real checkpoint takes on a GPU, small enough that every
test runs in seconds. Built directly on the device (no weights).
"""

from __future__ import annotations

import copy
import os

import torch

# HSA_GPU_TESTS_DEVICE=cpu runs the numerics on the CPU for a dry run (see cpu_dry_run.py).
DEVICE = torch.device(os.environ.get("HSA_GPU_TESTS_DEVICE", "cuda"))

MEDIUM_WAN = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=4,
    attention_head_dim=32,
    in_channels=16,
    out_channels=16,
    text_dim=64,
    freq_dim=64,
    ffn_dim=512,
    num_layers=3,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
LATENT_SHAPE = (1, 16, 6, 32, 64)  # 6 latent frames of 32×64 → 6 × 16 × 32 = 3 072 tokens
TEXT_SHAPE = (1, 64, 64)
# Random init leaves self-attention nearly uniform, so which keys a query sees would hardly change its
# output and a wrong cache row or RoPE position could pass unseen. Scaling the query and key norms' gains
# makes the logits about this² times larger: peaked attention, as in a trained model.
ATTENTION_SHARPNESS = 3.0


def build_wan(seed: int = 0, device: torch.device = DEVICE, **overrides):
    """A float32 WanTransformer3DModel initialised on ``device`` from ``seed``."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    with torch.device(device):
        model = WanTransformer3DModel(**{**MEDIUM_WAN, **overrides}).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn1.norm_q.weight.mul_(ATTENTION_SHARPNESS)
            block.attn1.norm_k.weight.mul_(ATTENTION_SHARPNESS)
    return model


def cast(model, dtype: torch.dtype, keep_fp32: bool = False):
    """``model`` in ``dtype``, in place; ``keep_fp32`` leaves the parameters of diffusers'
    ``_keep_in_fp32_modules`` (time embedder, norms, modulation tables) in float32, as ``from_pretrained``
    loads a bf16 checkpoint."""
    model.to(dtype)
    if keep_fp32:
        kept = set(type(model)._keep_in_fp32_modules or ())
        for name, parameter in model.named_parameters():
            if kept & set(name.split(".")):
                parameter.data = parameter.data.float()
    return model


def in_dtype(model, dtype: torch.dtype, keep_fp32: bool = False):
    """A copy of ``model`` in ``dtype`` (see ``cast``)."""
    return cast(copy.deepcopy(model), dtype, keep_fp32)


def job(seed: int = 1, device: torch.device = DEVICE) -> dict[str, torch.Tensor]:
    """Noise latents and prompt / negative-prompt embeddings (float32, on ``device``)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "latents": torch.randn(LATENT_SHAPE, generator=generator).to(device),
        "prompt": torch.randn(TEXT_SHAPE, generator=generator).to(device),
        "negative": torch.randn(TEXT_SHAPE, generator=generator).to(device),
    }


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max |value − reference| / max |reference|, in float32."""
    value, reference = value.float(), reference.float()
    return float((value - reference).abs().max() / reference.abs().max().clamp_min(1e-12))
