"""Tiny random-init Wan components, built from configs (no downloads)."""

import torch

TINY_WAN = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=16,
    out_channels=16,
    text_dim=32,
    freq_dim=32,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=32,
)
LATENT_SHAPE = (1, 16, 3, 8, 8)  # 3 latent frames of 8×8 → 48 tokens with 1×2×2 patches
TEXT_SHAPE = (1, 7, 32)


def build_tiny_wan(seed: int = 0):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(**TINY_WAN).eval()
