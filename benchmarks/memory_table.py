"""What fits on a 24, 48 or 80 GB GPU, per registered model and clip shape — computed, not measured.

    python benchmarks/memory_table.py     # writes docs/benchmarks/memory.{json,md}

Every figure comes from an architecture, not from a run: parameter counts of the diffusers / transformers
classes built from the released configurations on the ``meta`` device (no weights, no memory), the K/V
cache from ``hsa_core.memory.KVCacheEstimate`` (the size sampling allocates, tested), and a forward's
working memory from the same estimate the worker's fit check uses (its largest activation: an
underestimate of a real forward's peak). The VAE decode is left out: it runs after the cache is freed,
and an out-of-memory decode retries tiled, then on the CPU. A GPU's usable memory is taken as its size
less 1.5 GiB for the CUDA context and allocator slack.

For each GPU the table names the first setup, in this order, that runs budgets below 1: everything on the
device with a bf16 cache; the text encoder off the device between encodings (``--text-encoder offload``);
then a float8 cache (``--kv-cache-dtype float8_e4m3fn``); then the cache in host memory
(``--kv-cache-location host``); else budget 1 only (no cache), else nothing. Two-expert models keep their
idle expert on the CPU (the default).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3
GPUS = (24, 48, 80)
CONTEXT_GIB = 1.5
BF16, FP32 = 2, 4


def parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def wan_transformer(**config) -> int:
    from diffusers import WanTransformer3DModel

    base = dict(patch_size=(1, 2, 2), attention_head_dim=128, text_dim=4096, freq_dim=256, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6)
    with torch.device("meta"):
        return parameters(WanTransformer3DModel(**{**base, **config}))


def component_parameters() -> dict[str, int]:
    """Parameter counts of the released architectures (configurations of the diffusers-format checkpoints)."""
    from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, AutoencoderKLWan, LTX2VideoTransformer3DModel
    from transformers import (CLIPVisionConfig, CLIPVisionModel, Gemma3Config, Gemma3ForConditionalGeneration,
                              Gemma3TextConfig, SiglipVisionConfig, UMT5Config, UMT5EncoderModel)

    counts = {
        "wan-1.3b": wan_transformer(num_attention_heads=12, in_channels=16, out_channels=16, ffn_dim=8960,
                                    num_layers=30),
        "wan-14b": wan_transformer(num_attention_heads=40, in_channels=16, out_channels=16, ffn_dim=13824,
                                   num_layers=40),
        "wan-14b-i2v-clip": wan_transformer(num_attention_heads=40, in_channels=36, out_channels=16, ffn_dim=13824,
                                            num_layers=40, image_dim=1280, added_kv_proj_dim=5120),
        "wan-14b-i2v": wan_transformer(num_attention_heads=40, in_channels=36, out_channels=16, ffn_dim=13824,
                                       num_layers=40),
        "wan-5b": wan_transformer(num_attention_heads=24, in_channels=48, out_channels=48, ffn_dim=14336,
                                  num_layers=30),
    }
    with torch.device("meta"):
        counts["ltx2"] = parameters(LTX2VideoTransformer3DModel())  # diffusers' defaults are LTX-2's release
        counts["wan-vae"] = parameters(AutoencoderKLWan())
        counts["wan22-vae"] = parameters(AutoencoderKLWan(
            base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12, out_channels=12,
            patch_size=2, scale_factor_spatial=16, latents_mean=[0.0] * 48, latents_std=[1.0] * 48))
        counts["ltx2-vaes"] = parameters(AutoencoderKLLTX2Video()) + parameters(AutoencoderKLLTX2Audio())
        counts["umt5-xxl"] = parameters(UMT5EncoderModel(UMT5Config(
            vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)))
        counts["clip-vit-h"] = parameters(CLIPVisionModel(CLIPVisionConfig(
            hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
            patch_size=14)))
        counts["gemma3-12b"] = parameters(Gemma3ForConditionalGeneration(Gemma3Config(
            text_config=Gemma3TextConfig(vocab_size=262208, hidden_size=3840, intermediate_size=15360,
                                         num_hidden_layers=48, num_attention_heads=16, num_key_value_heads=8,
                                         head_dim=256),
            vision_config=SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                             num_attention_heads=16, image_size=896, patch_size=14))))
    return counts


@dataclass(frozen=True)
class Served:
    model: str
    size: str  # WIDTHxHEIGHT
    frames: int
    transformer: str  # component_parameters key; one expert of a two-expert model
    decoders: tuple[str, ...]  # fp32 components on the device (VAEs, the CLIP image encoder)
    text_encoder: str
    layers: int
    width: int  # cached K/V width per token and layer
    ffn: int
    branches: int  # guidance branches, each with its own cache
    family: str = "wan"
    vae_spatial: int = 8


SERVED = [
    Served("wan2.1-t2v-1.3b", "832x480", 81, "wan-1.3b", ("wan-vae",), "umt5-xxl", 30, 1536, 8960, 2),
    Served("wan2.1-t2v-14b", "832x480", 81, "wan-14b", ("wan-vae",), "umt5-xxl", 40, 5120, 13824, 2),
    Served("wan2.1-t2v-14b", "1280x720", 81, "wan-14b", ("wan-vae",), "umt5-xxl", 40, 5120, 13824, 2),
    Served("wan2.1-i2v-14b-480p", "832x480", 81, "wan-14b-i2v-clip", ("wan-vae", "clip-vit-h"), "umt5-xxl", 40,
           5120, 13824, 2),
    Served("wan2.1-flf2v-14b-720p", "1280x720", 81, "wan-14b-i2v-clip", ("wan-vae", "clip-vit-h"), "umt5-xxl", 40,
           5120, 13824, 2),
    Served("wan2.2-ti2v-5b", "1280x704", 121, "wan-5b", ("wan22-vae",), "umt5-xxl", 30, 3072, 14336, 2,
           vae_spatial=16),
    Served("wan2.2-t2v-a14b", "832x480", 81, "wan-14b", ("wan-vae",), "umt5-xxl", 40, 5120, 13824, 2),
    Served("wan2.2-t2v-a14b", "1280x720", 81, "wan-14b", ("wan-vae",), "umt5-xxl", 40, 5120, 13824, 2),
    Served("wan2.2-i2v-a14b", "1280x720", 81, "wan-14b-i2v", ("wan-vae",), "umt5-xxl", 40, 5120, 13824, 2),
    Served("ltx-2", "768x512", 121, "ltx2", ("ltx2-vaes",), "gemma3-12b", 48, 6144, 4096 * 4, 3, family="ltx2"),
    Served("ltx-2", "1280x704", 121, "ltx2", ("ltx2-vaes",), "gemma3-12b", 48, 6144, 4096 * 4, 3, family="ltx2"),
]


def tokens(served: Served) -> int:
    """Cached tokens: Wan's patches (1×2×2 after the VAE), LTX-2's video latents (32× spatial, 8× temporal)."""
    width, height = map(int, served.size.split("x"))
    if served.family == "ltx2":
        return ((served.frames - 1) // 8 + 1) * (height // 32) * (width // 32)
    return ((served.frames - 1) // 4 + 1) * (height // served.vae_spatial // 2) * (width // served.vae_spatial // 2)


def setup_that_fits(gpu_gib: float, weights: float, text_encoder: float, cache_bf16: float, working: float) -> str:
    usable = gpu_gib - CONTEXT_GIB
    if weights + text_encoder + cache_bf16 + working <= usable:
        return "all on the GPU, bf16 cache"
    if weights + cache_bf16 + working <= usable:
        return "text encoder offload, bf16 cache"
    if weights + cache_bf16 / 2 + working <= usable:
        return "text encoder offload, float8 cache"
    if weights + working + cache_bf16 / 40 <= usable:  # one layer's rows on the device at a time (≥ 30 layers)
        return f"text encoder offload, cache on the host ({cache_bf16:.0f} GiB of host memory)"
    if weights + working <= usable:
        return "budget 1 only"
    return "does not fit"


def main() -> int:
    from hsa_core.memory import KVCacheEstimate

    counts = component_parameters()
    rows = []
    for served in SERVED:
        n = tokens(served)
        weights = (counts[served.transformer] * BF16 + sum(counts[d] * FP32 for d in served.decoders)) / GIB
        text_encoder = counts[served.text_encoder] * BF16 / GIB
        cache = KVCacheEstimate(served.layers, n, served.width, torch.bfloat16, served.branches).total_bytes / GIB
        working = 2 * n * served.ffn * BF16 / GIB
        rows.append({**asdict(served), "tokens": n, "weights_gib": round(weights, 1),
                     "text_encoder_gib": round(text_encoder, 1), "kv_cache_bf16_gib": round(cache, 1),
                     "kv_cache_float8_gib": round(cache / 2, 1), "working_gib": round(working, 1),
                     **{f"{gpu}gb": setup_that_fits(gpu, weights, text_encoder, cache, working) for gpu in GPUS}})
    report = {"what": __doc__.split("\n\n")[0], "parameters": counts, "rows": rows}
    out = ROOT / "docs" / "benchmarks" / "memory.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# What fits on a 24 / 48 / 80 GB GPU (computed)", "",
             "From `python benchmarks/memory_table.py`: parameter counts of the released architectures, the K/V "
             "cache HSA allocates below budget 1 (bf16, every guidance branch), a forward's working-memory estimate. "
             "Not measured on a GPU. Weights: the transformer (one expert) in bf16, VAEs and image encoder in fp32.",
             "", "| model | size × frames | tokens | weights GiB | text encoder GiB | K/V bf16 / float8 GiB | "
             + " | ".join(f"{gpu} GB" for gpu in GPUS) + " |", "|---" * (6 + len(GPUS)) + "|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['size']} × {row['frames']} | {row['tokens']} | {row['weights_gib']} | "
                     f"{row['text_encoder_gib']} | {row['kv_cache_bf16_gib']} / {row['kv_cache_float8_gib']} | "
                     + " | ".join(row[f"{gpu}gb"] for gpu in GPUS) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
