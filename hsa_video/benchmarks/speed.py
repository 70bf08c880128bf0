"""``hsa-video bench speed``: wall time of plain Euler vs HSA at several budgets, in one run.

A random-init Wan transformer (diffusers' ``WanTransformer3DModel``) is enough here: speed does not
depend on the weights. Methods run round-robin within each repeat, so slow drift of the machine
(thermals, a neighbour process) hits all of them alike; the report quotes medians over repeats and
ratios to the Euler median from the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

DEFAULT_BUDGETS = (1.0, 0.75, 0.5, 0.25)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=16, help="latent frames (default 16)")
    parser.add_argument("--height", type=int, default=32, help="latent height (default 32)")
    parser.add_argument("--width", type=int, default=32, help="latent width (default 32)")
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks (default 4)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument("--head-dim", type=int, default=64, help="channels per head (default 64)")
    parser.add_argument("--text-tokens", type=int, default=128, help="prompt embedding length (default 128)")
    parser.add_argument("--steps", type=int, default=40, help="denoising steps (default 40)")
    parser.add_argument("--shift", type=float, default=3.0, help="schedule shift (default 3.0)")
    parser.add_argument(
        "--guidance", type=float, default=1.0, help="CFG scale; > 1 runs two branches (default 1: one branch)"
    )
    parser.add_argument("--budgets", type=float, nargs="+", default=list(DEFAULT_BUDGETS), help="HSA budgets")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="report directory")
    parser.add_argument("--name", default="hsa_speed", help="report file stem (default hsa_speed)")


def run(args: argparse.Namespace) -> int:
    import torch
    from diffusers import WanTransformer3DModel
    from tqdm import tqdm

    from hsa_core import Conditioning, EulerSampler, FlowMatchSchedule, HSAConfig, HSASampler, calibrate
    from hsa_core.adapters.wan import WanAdapter

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    width = args.heads * args.head_dim
    config = dict(
        patch_size=(1, 2, 2),
        num_attention_heads=args.heads,
        attention_head_dim=args.head_dim,
        in_channels=16,
        out_channels=16,
        text_dim=width,
        freq_dim=256,
        ffn_dim=4 * width,
        num_layers=args.layers,
        rope_max_seq_len=max(64, args.frames, args.height, args.width),
    )
    torch.manual_seed(args.seed)
    model = WanTransformer3DModel(**config).to(args.device).eval()
    if dtype != torch.float32:
        model = model.to(dtype)
    adapter = WanAdapter(model)
    generator = torch.Generator().manual_seed(args.seed)
    latents = torch.randn(1, 16, args.frames, args.height, args.width, generator=generator)
    grid = adapter.token_grid(latents.shape)
    noise = grid.patchify(latents).to(args.device)
    prompt = torch.randn(1, args.text_tokens, width, generator=generator).to(args.device, dtype)
    negative = torch.zeros_like(prompt)
    conditioning = Conditioning(prompt, negative if args.guidance > 1 else None, guidance_scale=args.guidance)
    schedule = FlowMatchSchedule(args.steps, args.shift)

    print(f"calibrating the cost model on {grid.num_tokens} tokens …", file=sys.stderr)
    cost_model = calibrate(adapter, grid, adapter.prepare_branch(grid, prompt))
    methods = [("euler", 1.0, EulerSampler())]
    infeasible = []
    min_budget = HSAConfig().min_budget(args.steps, grid.num_tokens, cost_model)
    for budget in args.budgets:
        if budget < min_budget:
            infeasible.append({"method": "hsa", "budget": budget, "skipped": f"below the minimum budget {min_budget:.3f}"})
            print(f"skipping HSA at budget {budget:g}: below the minimum {min_budget:.3f} here", file=sys.stderr)
        else:
            methods.append(("hsa", budget, HSASampler(budget, cost_model=cost_model)))

    runs: dict[tuple[str, float], list] = {(name, b): [] for name, b, _ in methods}
    total_steps = args.repeats * len(methods) * args.steps
    with tqdm(total=total_steps, unit="step", desc="bench speed", file=sys.stderr) as bar:
        for _ in range(args.repeats):
            for name, budget, sampler in methods:
                bar.set_postfix(method=f"{name}@{budget:g}")
                result = sampler.sample(
                    adapter, noise, grid, conditioning, schedule, callback=lambda stats: bar.update()
                )
                runs[(name, budget)].append(result)

    euler_median = statistics.median(r.seconds for r in runs[("euler", 1.0)])
    results = []
    for name, budget, _ in methods:
        samples = runs[(name, budget)]
        median = statistics.median(r.seconds for r in samples)
        predicted = samples[0].predicted_seconds
        results.append(
            {
                "method": name,
                "budget": budget,
                "seconds_median": round(median, 4),
                "seconds": [round(r.seconds, 4) for r in samples],
                "time_fraction": round(median / euler_median, 4),
                "token_fraction": round(samples[0].token_fraction, 4),
                "predicted_seconds": None if predicted is None else round(predicted, 4),
                "kv_cache_bytes": samples[0].kv_cache_bytes,
            }
        )

    results.extend(infeasible)
    report = {
        "config": {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
            "latent_shape": list(latents.shape),
            "text_tokens": args.text_tokens,
            "guidance_scale": args.guidance,
            "shift": args.shift,
            "dtype": args.dtype,
            "device": args.device,
            "threads": args.threads,
            "repeats": args.repeats,
        },
        "tokens": grid.num_tokens,
        "steps": args.steps,
        "cost_model": {
            "overhead_s": cost_model.overhead,
            "per_token_s": cost_model.per_token,
            "per_pair_s": cost_model.per_pair,
        },
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu_name(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "command": "hsa-video " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("hsa-video") else None,
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / f"{args.name}.json", args.out / f"{args.name}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(render_markdown(report))
    print(render_table(results))
    print(f"wrote {json_path} and {md_path}")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def render_table(results: list[dict]) -> str:
    lines = [
        "| method | budget | median s | time fraction | token fraction | cost-model prediction s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['method']} | {r['budget']:g} | skipped: {r['skipped']} | | | |")
            continue
        predicted = "–" if r["predicted_seconds"] is None else f"{r['predicted_seconds']:.2f}"
        lines.append(
            f"| {r['method']} | {r['budget']:g} | {r['seconds_median']:.2f} | {r['time_fraction']:.3f} "
            f"| {r['token_fraction']:.3f} | {predicted} |"
        )
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    c = report["config"]
    cost = report["cost_model"]
    return f"""# HSA sampler speed

Plain Euler vs HSA at several budgets, timed in one run on one machine ({report['date']}).

- Model: random-init `WanTransformer3DModel`, {c['num_layers']} layers, hidden size
  {c['num_attention_heads'] * c['attention_head_dim']} ({c['num_attention_heads']} heads × {c['attention_head_dim']}),
  FFN {c['ffn_dim']}, patch {tuple(c['patch_size'])}, {c['dtype']} on {c['device']} with {c['threads']} threads.
- Latent {tuple(c['latent_shape'])} → **{report['tokens']} tokens**, {report['steps']} steps, shift {c['shift']},
  guidance {c['guidance_scale']:g} ({'two CFG branches' if c['guidance_scale'] > 1 else 'one branch'}),
  {c['text_tokens']} text tokens.
- Machine: {report['machine']['processor']}, torch {report['machine']['torch']}.
- Medians over {c['repeats']} repeats; methods interleaved within each repeat. Time fraction = median /
  Euler's median from the same run.
- HSA maps its budget to token evaluations with a cost model calibrated at start on this machine
  (overhead {cost['overhead_s'] * 1e3:.2f} ms/step, {cost['per_token_s'] * 1e6:.1f} µs/token), as a worker does;
  the last column is that model's prediction of the run's wall time.

{render_table(report['results'])}

Reproduce: `{report['command'] or 'hsa-video bench speed'}`
"""
