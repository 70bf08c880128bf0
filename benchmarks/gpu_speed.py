"""Plain Euler vs HSA on one GPU at the Wan 2.1 1.3B and 14B architectures, 480p × 81 frames (32 760 tokens).

    python benchmarks/gpu_speed.py                          # one GPU; writes docs/benchmarks/gpu_speed.{json,md}
    python benchmarks/gpu_speed.py --time-budget 270        # skip (and say so) what would end later
    python benchmarks/gpu_speed.py --tiny --out /tmp/x.json  # toy sizes on the CPU in seconds (a test runs it)

Models: random-init ``WanTransformer3DModel``s with the exact Wan 2.1 T2V 1.3B config (30 layers, width
1536, FFN 8960) and 14B config (40 layers, width 5120 = 40 heads × 128, FFN 13824), UMT5 text width 4096,
initialised directly on the GPU in bf16 with diffusers' float32 modules (time embedder, norms, modulation
tables, RoPE) in float32, as ``from_pretrained`` loads a bf16 checkpoint. Wall time does not depend on the
weights. Latent (1, 16, 21, 60, 104) = 480×832 pixels × 81 frames → 21 × 30 × 52 tokens; 512 text tokens;
CFG on (two branches, each with its own K/V cache), as Wan samples.

What is measured, per configuration (the report records each number's basis):

* Every step of Euler and of HSA at budget 1.0 does the same work, so they run the first
  ``--uniform-steps`` steps of the schedule and their time is scaled to the whole schedule.
* HSA below budget 1.0 runs the whole ``--steps``-step schedule (20: HSA runs its 2 warm-up and 1 final
  steps full, so at 10 steps its smallest budget is 0.34 and 0.25 cannot run; at 20 it is 0.20).
* ``solve_divisors`` (the allocation HSA re-solves every 8 steps) is timed at the configuration's tokens.

HSA turns budgets into token evaluations with a cost model calibrated on the device at start, as a worker
does (``--tiny`` uses the proportional default).

Memory pre-check: before a model is built, its weights plus a forward's working memory must fit in what the
device has free, or the configuration is skipped with the numbers. Before each HSA run below budget 1.0 its
K/V cache (``hsa_core.memory``'s estimate, all guidance branches) must fit next to the working memory; a
cache in the model's dtype that does not fit falls back to float8 when that does, and the report says so;
otherwise the run is skipped with the refusal's reason. With ``--time-budget`` a run whose predicted end
(from the times measured so far) is past the budget is skipped and recorded, never cut off half way.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
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
# Wan-AI/Wan2.1-T2V-14B-Diffusers, transformer/config.json
WAN21_14B = dict(WAN21_1_3B, num_attention_heads=40, ffn_dim=13824, num_layers=40)
LATENT_480P_81 = (1, 16, 21, 60, 104)
TEXT_TOKENS = 512

TINY = dict(WAN21_1_3B, num_attention_heads=2, attention_head_dim=12, text_dim=32, freq_dim=32, ffn_dim=32,
            num_layers=2, rope_max_seq_len=32)
TINY_LATENT = (1, 16, 3, 8, 8)
TINY_TEXT_TOKENS = 8

GIB = 1024**3


@dataclass(frozen=True)
class Shape:
    """One benchmark configuration: a transformer config at a latent shape."""

    name: str
    title: str
    config: dict
    latent_shape: tuple[int, int, int, int, int]
    text_tokens: int


SHAPES = {
    "wan2.1-1.3b": Shape("wan2.1-1.3b", "Wan 2.1 T2V 1.3B config", WAN21_1_3B, LATENT_480P_81, TEXT_TOKENS),
    "wan2.1-14b": Shape("wan2.1-14b", "Wan 2.1 T2V 14B config", WAN21_14B, LATENT_480P_81, TEXT_TOKENS),
}
TINY_SHAPES = {
    "wan2.1-1.3b": Shape("wan2.1-1.3b", "toy config standing in for 1.3B", TINY, TINY_LATENT, TINY_TEXT_TOKENS),
    "wan2.1-14b": Shape("wan2.1-14b", "toy config standing in for 14B", dict(TINY, num_layers=3), TINY_LATENT,
                        TINY_TEXT_TOKENS),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy models and latents on the CPU (a smoke test)")
    parser.add_argument("--configs", nargs="+", choices=list(SHAPES), default=list(SHAPES),
                        help="configurations, run in this order (default: all)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps of the schedule (default 20)")
    parser.add_argument("--uniform-steps", type=int, default=3,
                        help="steps Euler and HSA at 1.0 run, scaled to --steps (default 3; every step the same work)")
    parser.add_argument("--budgets", type=float, nargs="+", default=[1.0, 0.5, 0.25], help="HSA budgets")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per method (default 1)")
    parser.add_argument("--calibration-repeats", type=int, default=1,
                        help="timed forwards per active fraction when calibrating the cost model (default 1)")
    parser.add_argument("--guidance", type=float, default=5.0, help="CFG scale (default 5: two branches)")
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--kv-cache-dtype", default=None,
                        help="HSA's K/V cache dtype (default: the model's, float8_e4m3fn where that does not fit)")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds for the whole benchmark: runs predicted to end later are skipped")
    parser.add_argument("--free-bytes", type=float, default=None,
                        help="pretend the device has this many bytes free before a model is built (tests the "
                             "pre-checks; default: what the device reports)")
    parser.add_argument("--memory-margin-gib", type=float, default=1.0,
                        help="room the memory pre-checks leave beyond their estimates (default 1 GiB)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the configurations of an existing --out report that this run does not measure")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/gpu_speed.json"),
                        help="JSON report; the Markdown one goes beside it with the suffix .md")
    args = parser.parse_args(argv)
    if args.uniform_steps < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--steps, --uniform-steps and --repeats must be ≥ 1")
    args.uniform_steps = min(args.uniform_steps, args.steps)
    return args


class Deadline:
    """The benchmark's time budget: whether a run predicted to take ``seconds`` still ends inside it."""

    def __init__(self, seconds: float | None):
        self.start, self.seconds = time.perf_counter(), seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def refuses(self, seconds: float) -> str | None:
        if self.seconds is None or self.elapsed() + seconds <= self.seconds:
            return None
        return (f"predicted to take {seconds:.0f} s with {max(0.0, self.seconds - self.elapsed()):.0f} s of the "
                f"{self.seconds:.0f} s time budget left")


@dataclass
class MemoryPlan:
    """Device memory around one configuration (None where the device does not say: the CPU)."""

    weights_bytes: int
    working_bytes: int
    free_bytes: int | None  # before the model is built
    margin_bytes: int  # room beyond the estimates: allocator fragmentation, cuBLAS and attention workspaces

    def model_refusal(self) -> str | None:
        need = self.weights_bytes + self.working_bytes + self.margin_bytes
        if self.free_bytes is None or need <= self.free_bytes:
            return None
        return (f"weights {self.weights_bytes / GIB:.2f} GiB + a forward's working memory "
                f"{self.working_bytes / GIB:.2f} GiB + {self.margin_bytes / GIB:.2f} GiB margin exceed the "
                f"{self.free_bytes / GIB:.2f} GiB free")


def working_bytes(config: dict, tokens: int, text_tokens: int, dtype, branches: int, cast_cache: bool) -> int:
    """Peak transient memory of one forward at ``tokens`` tokens, from the activations alive at once.

    Per block: diffusers' norms and modulation run in float32 (a few N × d float32 tensors), the FFN's hidden
    layer before and after its GELU (2 × N × ffn), self-attention's Q, K, V, RoPE temporaries and output
    (about 6 × N × d); a cache in a narrower dtype than the model's is cast back for attention (K and V, N × d
    each). Each guidance branch also holds its text K/V for the whole job.
    """
    import torch

    element = torch.empty((), dtype=dtype).element_size()
    width = config["num_attention_heads"] * config["attention_head_dim"]
    per_forward = 4 * tokens * width * 4 + 2 * tokens * config["ffn_dim"] * element + 6 * tokens * width * element
    if cast_cache:
        per_forward += 2 * tokens * width * element
    text_kv = branches * config["num_layers"] * text_tokens * width * 2 * element
    return per_forward + text_kv


def build_transformer(config: dict, device, dtype):
    """A random-init WanTransformer3DModel made on ``device`` in ``dtype`` (never a float32 copy first: 14B in
    float32 would not fit an 80 GB GPU), diffusers' float32 modules kept in float32 as ``from_pretrained`` does."""
    import torch
    from diffusers import WanTransformer3DModel

    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = WanTransformer3DModel(**config).eval()
    finally:
        torch.set_default_dtype(default)
    kept = set(WanTransformer3DModel._keep_in_fp32_modules or ())
    for name, parameter in model.named_parameters():
        if kept & set(name.split(".")):
            parameter.data = parameter.data.float()
    return model


def parameter_count(config: dict) -> int:
    import torch
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        return sum(p.numel() for p in WanTransformer3DModel(**config).parameters())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    deadline = Deadline(args.time_budget)
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    if args.tiny:
        torch.set_num_threads(1)
    shapes = TINY_SHAPES if args.tiny else SHAPES
    report = header(args, sys.argv[1:] if argv is None else argv, device, dtype)
    kept = earlier_configurations(args.out, args.configs) if args.merge else []
    for name in args.configs:
        log(f"== {name}")
        report["configurations"].append(run_shape(shapes[name], args, device, dtype, deadline))
        report["elapsed_s"] = round(deadline.elapsed(), 1)
        # after every configuration: a later one cut short loses nothing
        write_reports({**report, "configurations": ordered(report["configurations"] + kept)}, args.out)
        release(device)
    for shape in report["configurations"]:  # this run's
        print(f"{shape['name']}: {shape.get('skipped') or str(shape['tokens']) + ' tokens'}")
        for row in shape.get("results", []):
            if "seconds_per_step" not in row:
                print(f"  {row['method']:>5} @ {row['budget']:<4g} {row.get('skipped') or row.get('error')}")
            else:
                print(f"  {row['method']:>5} @ {row['budget']:<4g} {row['seconds_per_step']:8.3f} s/step  "
                      f"time fraction {row['time_fraction']:.3f}  token fraction {row['token_fraction']:.3f}")
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


def earlier_configurations(out: Path, measuring: list[str]) -> list[dict]:
    """The configurations of the report at ``out`` that this run does not measure, each marked with its run."""
    if not out.is_file():
        return []
    earlier = json.loads(out.read_text())
    run = {key: earlier.get(key) for key in ("date", "device", "torch", "diffusers", "arguments")}
    return [{**shape, "run": shape.get("run", run)} for shape in earlier.get("configurations", [])
            if shape["name"] not in measuring]


def ordered(configurations: list[dict]) -> list[dict]:
    names = list(SHAPES)
    return sorted(configurations, key=lambda c: names.index(c["name"]) if c["name"] in names else len(names))


def header(args: argparse.Namespace, argv: list[str], device, dtype) -> dict:
    import torch

    import diffusers

    cuda = device.type == "cuda"
    return {
        "benchmark": "benchmarks/gpu_speed.py",
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "device_memory_bytes": torch.cuda.get_device_properties(device).total_memory if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "arguments": " ".join(argv),
        "dtype": str(dtype).removeprefix("torch."),
        "steps": args.steps,
        "uniform_steps": args.uniform_steps,
        "repeats": args.repeats,
        "guidance_scale": args.guidance,
        "shift": args.shift,
        "time_budget_s": args.time_budget,
        "measured": (f"Euler and HSA at budget 1.0: the first {args.uniform_steps} steps of the {args.steps}-step "
                     f"schedule, scaled to {args.steps}; HSA below 1.0: the whole {args.steps}-step schedule; "
                     f"{args.repeats} timed run(s) per method after the calibration's warm-up forwards; "
                     "the clock waits for the GPU (torch.cuda.synchronize) at every step"),
        "configurations": [],
    }


def run_shape(shape: Shape, args: argparse.Namespace, device, dtype, deadline: Deadline) -> dict:
    import torch

    from hsa_core import Conditioning, CostModel, EulerSampler, FlowMatchSchedule, HSAConfig, HSASampler, calibrate
    from hsa_core.adapters.wan import WanAdapter
    from hsa_core.memory import KVCacheEstimate, free_device_bytes
    from hsa_core.samplers.experts import ScheduleSpan

    config = shape.config
    grid_tokens = 1
    for size, patch in zip(shape.latent_shape[2:], config["patch_size"]):
        grid_tokens *= size // patch
    branches = 2 if args.guidance > 1 else 1
    parameters = parameter_count(config)
    element = torch.empty((), dtype=dtype).element_size()
    plan = MemoryPlan(
        weights_bytes=parameters * element,
        # a narrower cache may be chosen later: plan for its cast-back copies from the start
        working_bytes=working_bytes(config, grid_tokens, shape.text_tokens, dtype, branches, cast_cache=True),
        free_bytes=int(args.free_bytes) if args.free_bytes is not None else free_device_bytes(device),
        margin_bytes=int(args.memory_margin_gib * GIB),
    )
    report = {
        "name": shape.name,
        "model": f"random-init WanTransformer3DModel, {shape.title}",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
        "parameters": parameters,
        "latent_shape": list(shape.latent_shape),
        "tokens": grid_tokens,
        "text_tokens": shape.text_tokens,
        "steps": args.steps,
        "branches": branches,
        "memory": {"weights_bytes": plan.weights_bytes, "working_bytes_estimate": plan.working_bytes,
                   "free_bytes_before_model": plan.free_bytes},
        "results": [],
    }
    refusal = plan.model_refusal()
    if refusal is None and device.type == "cuda":
        # nothing is measured yet: the calibration's three or so forwards and Euler's uniform steps, at a
        # nominal bf16 rate
        refusal = deadline.refuses(forward_seconds_guess(config, grid_tokens) * (3 + args.uniform_steps * branches))
    if refusal is not None:
        report["skipped"] = refusal
        log(f"skipped: {refusal}")
        return report

    build_start = time.perf_counter()
    try:
        adapter = WanAdapter(build_transformer(config, device, dtype))
    except torch.cuda.OutOfMemoryError as error:
        report["skipped"] = f"out of memory building the model: {error}"
        log(report["skipped"])
        return report
    report["build_seconds"] = round(time.perf_counter() - build_start, 2)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(shape.latent_shape, generator=generator)
    grid = adapter.token_grid(latents.shape)
    assert grid.num_tokens == grid_tokens
    noise = grid.patchify(latents).to(device)
    prompt = torch.randn(1, shape.text_tokens, config["text_dim"], generator=generator).to(device, dtype)
    conditioning = Conditioning(prompt, torch.zeros_like(prompt) if branches > 1 else None, args.guidance)
    schedule = FlowMatchSchedule(args.steps, args.shift)
    uniform = ScheduleSpan(schedule.sigmas[: args.uniform_steps + 1], 0)  # the schedule's first steps
    free_with_model = (plan.free_bytes - plan.weights_bytes if args.free_bytes is not None
                       else free_device_bytes(device))
    report["memory"]["free_bytes_with_model"] = free_with_model
    log(f"{grid.num_tokens} tokens, {config['num_layers']} layers, {parameters / 1e9:.2f} B parameters, "
        f"{dtype} on {device}")

    # calibration fills one branch's K/V cache in the model's dtype
    calibration_cache = KVCacheEstimate(adapter.num_layers, grid.num_tokens, adapter.width, dtype, 1).total_bytes
    if args.tiny:  # at toy size a forward is all fixed overhead, which would put every budget below 1 out of reach
        report["cost_model_source"] = "proportional default (--tiny)"
    elif free_with_model is not None and calibration_cache + plan.working_bytes + plan.margin_bytes > free_with_model:
        report["cost_model_source"] = (f"proportional default: calibrating needs a {calibration_cache / GIB:.1f} GiB "
                                       f"cache that does not fit in {free_with_model / GIB:.1f} GiB")
    else:
        report["cost_model_source"] = f"calibrated on the device, {args.calibration_repeats} repeat(s) per fraction"
    if report["cost_model_source"].startswith("calibrated"):  # its forwards are the warm-up
        start = time.perf_counter()
        cost_model = calibrate(adapter, grid, adapter.prepare_branch(grid, prompt), repeats=args.calibration_repeats)
        report["calibration_seconds"] = round(time.perf_counter() - start, 2)
    else:
        cost_model = CostModel()
        EulerSampler().sample(adapter, noise, grid, conditioning, ScheduleSpan(schedule.sigmas[:2], 0))  # warm-up
    report["cost_model"] = {"overhead_s": cost_model.overhead, "per_token_s": cost_model.per_token,
                            "per_pair_s": cost_model.per_pair}
    report["solve_divisors_ms"] = time_solve_divisors(grid.num_tokens, device)

    methods: list[tuple[str, float]] = [("euler", 1.0)] + [("hsa", b) for b in args.budgets]
    rows: dict[tuple[str, float], dict] = {}
    whole_run: dict[tuple[str, float], float] = {}  # seconds for the whole schedule, unrounded
    euler_step_seconds: float | None = None
    # Euler first (every fraction is against it), then HSA from the cheapest budget up, HSA at 1.0 (Euler's
    # work again) last: a tight time budget drops the costliest and least informative runs
    for name, budget in sorted(methods, key=lambda m: (m[0] != "euler", m[1] >= 1, m[1])):
        key = (name, budget)
        full_steps = name == "euler" or budget >= 1
        run_schedule = uniform if full_steps else schedule
        if name == "euler":
            sampler, cache_dtype, note = EulerSampler(), None, None
        else:
            hsa_config = HSAConfig()
            min_budget = hsa_config.min_budget(args.steps, grid.num_tokens, cost_model)
            if budget < min_budget:
                rows[key] = skipped(name, budget, f"below the minimum budget {min_budget:.3f} at {args.steps} steps")
                continue
            cache_dtype, note = (None, None) if full_steps else choose_cache_dtype(
                args.kv_cache_dtype, adapter, grid.num_tokens, branches, config, shape.text_tokens, dtype,
                free_with_model, plan.margin_bytes, device)
            if not full_steps and cache_dtype is None:
                rows[key] = skipped(name, budget, note)
                continue
            sampler = HSASampler(budget, HSAConfig(kv_cache_dtype=cache_dtype), cost_model)
        predicted_step = euler_step_seconds or cost_model.step_seconds(grid.num_tokens, grid.num_tokens) * branches
        predicted = predicted_step * run_schedule.steps * (1 if full_steps else budget) * args.repeats * 1.2
        refusal = deadline.refuses(predicted)
        if refusal is not None:
            rows[key] = skipped(name, budget, refusal)
            continue
        try:
            samples, peaks = timed_runs(sampler, adapter, noise, grid, conditioning, run_schedule, args.repeats, device,
                                        f"{name} @ {budget:g}")
        except torch.cuda.OutOfMemoryError as error:  # the pre-check's estimate fell short: say so, go on
            rows[key] = {"method": name, "budget": budget, "error": f"out of memory: {error}"}
            log(f"{name} @ {budget:g}: {rows[key]['error']}")
            release(device)
            continue
        per_step = statistics.median(r.seconds for r in samples) / run_schedule.steps
        if name == "euler":
            euler_step_seconds = per_step
        whole_run[key] = per_step * args.steps
        rows[key] = {
            "method": name,
            "budget": budget,
            "steps_run": run_schedule.steps,
            "scaled_to_steps": args.steps,
            "seconds": [round(r.seconds, 4) for r in samples],
            "seconds_per_step": round(per_step, 5),
            "seconds_median": round(per_step * args.steps, 4),  # for the whole schedule
            "token_fraction": round(samples[0].token_fraction, 4),
            "predicted_seconds": None if samples[0].predicted_seconds is None else
            round(samples[0].predicted_seconds * (args.steps / run_schedule.steps), 4),
            "kv_cache_dtype": cache_dtype if samples[0].kv_cache_bytes else None,
            "kv_cache_note": note,
            "kv_cache_bytes": samples[0].kv_cache_bytes,
            "peak_memory_bytes": max(peaks) if peaks else None,
            "finite": all(bool(torch.isfinite(r.tokens).all()) for r in samples),
        }
    for key, row in rows.items():
        if key in whole_run and euler_step_seconds:
            row["time_fraction"] = round(whole_run[key] / (euler_step_seconds * args.steps), 4)
    report["results"] = [rows[key] for key in methods if key in rows]
    return report


def timed_runs(sampler, adapter, noise, grid, conditioning, schedule, repeats: int, device, label: str):
    """``repeats`` sampling runs and the peak device memory of each (None on the CPU)."""
    import torch

    samples, peaks = [], []
    for repeat in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        samples.append(sampler.sample(adapter, noise, grid, conditioning, schedule))
        if device.type == "cuda":
            peaks.append(torch.cuda.max_memory_allocated(device))
        log(f"{label}, run {repeat + 1}/{repeats}: {samples[-1].seconds:.2f} s over {schedule.steps} steps")
    return samples, peaks


def skipped(name: str, budget: float, reason: str) -> dict:
    log(f"{name} @ {budget:g} skipped: {reason}")
    return {"method": name, "budget": budget, "skipped": reason}


def choose_cache_dtype(requested: str | None, adapter, tokens: int, branches: int, config: dict, text_tokens: int,
                       dtype, free_bytes: int | None, margin_bytes: int, device) -> tuple[str | None, str | None]:
    """(cache dtype, note): the requested or the model's dtype if its cache fits, else float8 if that fits;
    (None, reason) when none does."""
    import torch

    from hsa_core.errors import InsufficientMemoryError
    from hsa_core.memory import KVCacheEstimate, check_kv_cache_fits

    model_dtype = str(dtype).removeprefix("torch.")
    candidates = [requested] if requested else [model_dtype] + (
        ["float8_e4m3fn"] if hasattr(torch, "float8_e4m3fn") and model_dtype != "float8_e4m3fn" else [])
    refusals = []
    for name in candidates:
        estimate = KVCacheEstimate(adapter.num_layers, tokens, adapter.width, getattr(torch, name), branches)
        working = working_bytes(config, tokens, text_tokens, dtype, branches, cast_cache=name != model_dtype)
        try:
            check_kv_cache_fits(estimate, working + margin_bytes, device, free_bytes)
        except InsufficientMemoryError as error:
            refusals.append(str(error))
            continue
        note = None if not refusals else f"{candidates[0]} cache refused ({refusals[0]}); {name} instead"
        return name, note
    return None, " / ".join(refusals)


def forward_seconds_guess(config: dict, tokens: int, flops_per_second: float = 300e12) -> float:
    """A forward's time before anything is measured: its matmul and attention FLOPs at a nominal rate."""
    width, ffn, layers = config["num_attention_heads"] * config["attention_head_dim"], config["ffn_dim"], \
        config["num_layers"]
    per_token = 2 * (6 * width**2 + 2 * width * ffn) + 4 * tokens * width + 4 * TEXT_TOKENS * width
    return layers * tokens * per_token / flops_per_second


def time_solve_divisors(tokens: int, device, repeats: int = 5) -> float:
    """Median milliseconds of one allocation solve over ``tokens`` velocity scores on ``device``."""
    import torch

    from hsa_core import solve_divisors
    from hsa_core.samplers.base import Stopwatch

    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(tokens, generator=generator).exp().to(device)  # log-normal, like velocity changes
    clock, times = Stopwatch(device), []
    solve_divisors(scores, 0.3, (1, 2, 4, 8, 16))  # warm-up
    for _ in range(repeats):
        start = clock.now()
        solve_divisors(scores, 0.3, (1, 2, 4, 8, 16))
        times.append(clock.now() - start)
    return round(statistics.median(times) * 1e3, 3)


def release(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def write_reports(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))


def _gib(value: int | None) -> str:
    return "" if value is None else f"{value / GIB:.2f}"


def markdown(report: dict) -> str:
    lines = [
        "# GPU speed: plain Euler vs HSA",
        "",
        f"Written by `python {report['benchmark']}` on {report['date']}: {report['device']}, torch "
        f"{report['torch']}" + (f" (CUDA {report['cuda']})" if report["cuda"] else "") +
        f", diffusers {report['diffusers']}, {report['dtype']}, CFG scale {report['guidance_scale']:g}.",
        "",
        f"Measured: {report['measured']}.",
        "",
    ]
    for shape in report["configurations"]:
        lines += [f"## {shape['name']}: {shape['model']}", ""]
        if "run" in shape:
            lines += [f"From an earlier run: {shape['run']['date']}, {shape['run']['device']}, arguments "
                      f"`{shape['run']['arguments']}`.", ""]
        lines.append(f"{shape['tokens']} tokens (latent {tuple(shape['latent_shape'])}), {shape['text_tokens']} text "
                     f"tokens, {shape['parameters'] / 1e9:.2f} B parameters, {shape['branches']} guidance branches.")
        memory = shape["memory"]
        lines.append(f"Memory: weights {_gib(memory['weights_bytes'])} GiB, working estimate "
                     f"{_gib(memory['working_bytes_estimate'])} GiB, free before the model "
                     f"{_gib(memory['free_bytes_before_model']) or '?'} GiB.")
        lines.append("")
        if "skipped" in shape:
            lines += [f"Skipped: {shape['skipped']}", ""]
            continue
        lines.append(f"Cost model: {shape['cost_model_source']}. `solve_divisors` over {shape['tokens']} tokens "
                     f"on the device: {shape['solve_divisors_ms']} ms.")
        lines += ["", "| method | budget | s / step | s / run | time fraction | token fraction | K/V cache | "
                      "K/V GiB | peak GiB | steps run |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        notes = []
        for row in shape["results"]:
            if "seconds_per_step" not in row:
                outcome = "skipped" if "skipped" in row else "failed"
                lines.append(f"| {row['method']} | {row['budget']:g} | {outcome} | | | | | | | |")
                notes.append(f"{row['method']} @ {row['budget']:g} {outcome}: {row.get('skipped') or row.get('error')}")
                continue
            lines.append(
                f"| {row['method']} | {row['budget']:g} | {row['seconds_per_step']:.3f} | {row['seconds_median']:.2f} | "
                f"{row.get('time_fraction', float('nan')):.3f} | {row['token_fraction']:.3f} | "
                f"{row['kv_cache_dtype'] or '–'} | {_gib(row['kv_cache_bytes'])} | {_gib(row['peak_memory_bytes'])} | "
                f"{row['steps_run']} of {row['scaled_to_steps']} |")
            if row.get("kv_cache_note"):
                notes.append(f"{row['method']} @ {row['budget']:g}: {row['kv_cache_note']}")
        lines.append("")
        lines += [f"- {note}" for note in notes]
        if notes:
            lines.append("")
    return "\n".join(lines)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
