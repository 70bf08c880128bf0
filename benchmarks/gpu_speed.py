"""Plain Euler vs HSA on one GPU at the Wan 2.1 1.3B architecture, 480p × 81 frames (32 760 tokens).

    python benchmarks/gpu_speed.py                          # one GPU; writes docs/benchmarks/gpu_speed.json
    python benchmarks/gpu_speed.py --tiny --out /tmp/x.json  # toy size on the CPU in seconds (a test runs it)

A random-init ``WanTransformer3DModel`` with the exact Wan 2.1 T2V 1.3B config (30 layers, width 1536,
FFN 8960, UMT5 text width 4096), bf16; wall time does not depend on the weights. Latent
(1, 16, 21, 60, 104) = 480×832 pixels × 81 frames → 21 × 30 × 52 tokens; 512 text tokens; CFG on
(two branches, each with its own K/V cache), as Wan samples.

Steps: 20, not 10. HSA always runs its 2 warm-up and 1 final steps full, so with 10 steps its
smallest budget is 0.3 + 0.7/16 ≈ 0.34 and budget 0.25 cannot run; at 20 steps the minimum is 0.20.
``--steps 10`` still works and reports 0.25 as skipped.

HSA turns budgets into token evaluations with a cost model calibrated on this GPU at start, as a
worker does (``--tiny`` uses the proportional default instead). Methods run round-robin within each repeat, after one untimed warm-up run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

# run from a bare checkout too (the GPU machine gets the working tree, not an installed package)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WAN21_1_3B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
LATENT_480P_81 = (1, 16, 21, 60, 104)
TEXT_TOKENS = 512

TINY = dict(WAN21_1_3B, num_attention_heads=2, attention_head_dim=12, text_dim=32, freq_dim=32, ffn_dim=32,
            num_layers=2, rope_max_seq_len=32)
TINY_LATENT = (1, 16, 3, 8, 8)
TINY_TEXT_TOKENS = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy model and latent on the CPU (a smoke test)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per run (default 20)")
    parser.add_argument("--budgets", type=float, nargs="+", default=[1.0, 0.5, 0.25], help="HSA budgets")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per method (default 2)")
    parser.add_argument("--guidance", type=float, default=5.0, help="CFG scale (default 5: two branches)")
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--kv-cache-dtype", default=None, help="HSA's K/V cache dtype (default: the model's)")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/gpu_speed.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from diffusers import WanTransformer3DModel

    from hsa_core import Conditioning, CostModel, EulerSampler, FlowMatchSchedule, HSAConfig, HSASampler, calibrate
    from hsa_core.adapters.wan import WanAdapter

    config, latent_shape, text_tokens = (TINY, TINY_LATENT, TINY_TEXT_TOKENS) if args.tiny else \
        (WAN21_1_3B, LATENT_480P_81, TEXT_TOKENS)
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    if args.tiny:
        torch.set_num_threads(1)

    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: a CPU init of 1.3B parameters takes minutes
        model = WanTransformer3DModel(**config).to(dtype).eval()
    adapter = WanAdapter(model)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(latent_shape, generator=generator)
    grid = adapter.token_grid(latents.shape)
    noise = grid.patchify(latents).to(device)
    prompt = torch.randn(1, text_tokens, config["text_dim"], generator=generator).to(device, dtype)
    conditioning = Conditioning(prompt, torch.zeros_like(prompt) if args.guidance > 1 else None, args.guidance)
    schedule = FlowMatchSchedule(args.steps, args.shift)
    hsa_config = HSAConfig(kv_cache_dtype=args.kv_cache_dtype)

    log(f"{grid.num_tokens} tokens, {config['num_layers']} layers, {dtype} on {device}")
    # at toy size a forward is all fixed overhead, which would put every budget below 1 out of reach
    cost_model = CostModel() if args.tiny else calibrate(adapter, grid, adapter.prepare_branch(grid, prompt))
    min_budget = hsa_config.min_budget(args.steps, grid.num_tokens, cost_model)
    methods, skipped = [("euler", 1.0, EulerSampler())], []
    for budget in args.budgets:
        if budget < min_budget:
            skipped.append({"method": "hsa", "budget": budget,
                            "skipped": f"below the minimum budget {min_budget:.3f} at {args.steps} steps"})
        else:
            methods.append(("hsa", budget, HSASampler(budget, hsa_config, cost_model)))

    EulerSampler().sample(adapter, noise, grid, conditioning, FlowMatchSchedule(2, args.shift))  # warm-up
    runs: dict[tuple[str, float], list] = {(name, budget): [] for name, budget, _ in methods}
    peak_memory: dict[tuple[str, float], int] = {}
    for repeat in range(args.repeats):
        for name, budget, sampler in methods:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            result = sampler.sample(adapter, noise, grid, conditioning, schedule)
            runs[(name, budget)].append(result)
            if device.type == "cuda":
                peak_memory[(name, budget)] = torch.cuda.max_memory_allocated(device)
            log(f"repeat {repeat + 1}/{args.repeats}  {name} @ {budget:g}: {result.seconds:.2f} s")

    euler_median = statistics.median(r.seconds for r in runs[("euler", 1.0)])
    results = []
    for name, budget, _ in methods:
        samples = runs[(name, budget)]
        median = statistics.median(r.seconds for r in samples)
        predicted = samples[0].predicted_seconds  # the calibrated cost model's forecast (HSA only)
        results.append({
            "method": name,
            "budget": budget,
            "seconds_median": round(median, 4),
            "seconds": [round(r.seconds, 4) for r in samples],
            "time_fraction": round(median / euler_median, 4),
            "token_fraction": round(samples[0].token_fraction, 4),
            "predicted_seconds": None if predicted is None else round(predicted, 4),
            "kv_cache_bytes": samples[0].kv_cache_bytes,
            "peak_memory_bytes": peak_memory.get((name, budget)),
        })
    report = {
        "model": "random-init WanTransformer3DModel, " + ("toy config" if args.tiny else "Wan 2.1 T2V 1.3B config"),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
        "latent_shape": list(latent_shape),
        "tokens": grid.num_tokens,
        "text_tokens": text_tokens,
        "steps": args.steps,
        "shift": args.shift,
        "guidance_scale": args.guidance,
        "dtype": str(dtype).removeprefix("torch."),
        "kv_cache_dtype": args.kv_cache_dtype or str(dtype).removeprefix("torch."),
        "repeats": args.repeats,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cost_model": {"overhead_s": cost_model.overhead, "per_token_s": cost_model.per_token,
                       "per_pair_s": cost_model.per_pair},
        "date": time.strftime("%Y-%m-%d"),
        "results": results + skipped,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for row in results:
        print(f"{row['method']:>5} @ {row['budget']:<4g} {row['seconds_median']:8.2f} s  time fraction "
              f"{row['time_fraction']:.3f}  token fraction {row['token_fraction']:.3f}")
    for row in skipped:
        print(f"  hsa @ {row['budget']:<4g} skipped: {row['skipped']}")
    print(f"wrote {args.out}")
    return 0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
