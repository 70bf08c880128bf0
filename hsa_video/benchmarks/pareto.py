"""``hsa-video bench pareto``: quality against wall time for HSA and the baselines, in one run.

On the built-in tiny model (the only model whose outputs we can score here), for T2V and I2V
prompts from the synthetic domain, split into a tuning half and a held-out half:

1. The reference: plain Euler, 40 steps, CFG — its clip and sampler wall time per prompt.
2. Calibration (tuning prompts only): each method's knob is swept and its time fraction measured,
   then the knob is chosen per target time fraction (``methods.knob_for_target``).
3. HSA tuning (tuning prompts only): one-knob-at-a-time search over HSAConfig at the 0.5 target;
   the winner runs as ``hsa_tuned``.
4. Evaluation (every prompt): each method at each target — time fraction (its sampler wall time /
   the reference's, same prompt, same run), compute fraction, PSNR and SSIM of the decoded frames
   against the reference (scikit-image), prompt adherence (the tiny model's checker), and for I2V
   the first-frame error. Methods run interleaved per prompt, so drift hits all of them alike.

Writes ``pareto.json`` (rows per method × target × split × mode), ``pareto.md`` (tables, mean ±
95% CI), ``pareto.png`` (held-out PSNR vs time fraction) and ``pareto_strip.png`` (frames of the
reference, HSA and the best baseline at the lowest target).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

ATTRIBUTES = ("color", "shape", "direction", "background", "background_kind")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--t2v", type=int, default=32, help="T2V prompt/seed pairs, half tuning (default 32)")
    parser.add_argument("--i2v", type=int, default=16, help="I2V prompt/seed pairs, half tuning (default 16)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.75, 0.5, 0.25, 0.15],
                        help="target time fractions (default 0.75 0.5 0.25 0.15)")
    parser.add_argument("--steps", type=int, default=40, help="reference steps (default 40)")
    parser.add_argument("--methods", nargs="+", default=None, help="subset of methods (default all)")
    parser.add_argument("--calibration-prompts", type=int, default=4, help="tuning prompts used to map knobs to time")
    parser.add_argument("--no-tune", action="store_true", help="skip the HSA config search")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", type=Path, default=None, help="tiny-model weights directory")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="report directory")
    parser.add_argument("--render-only", action="store_true",
                        help="re-render pareto.md / pareto.png from an existing pareto.json")


# ------------------------------------------------------------------------------------------------
# measurement


class Harness:
    """Runs one sampler on one prompt and scores it against that prompt's reference."""

    def __init__(self, model, steps: int):
        self.model, self.steps = model, steps

    def run(self, sampler, caption: str, seed: int, image=None):
        clip, result = self.model.generate(caption, sampler, image=image, steps=self.steps, seed=seed)
        return clip, result

    @staticmethod
    def adherence(clip: np.ndarray, caption: str, image=None) -> tuple[float, dict, float | None]:
        from hsa_core.tiny.checker import check_clip

        result = check_clip(clip, caption, first_frame=image)
        scores = {a: float(getattr(result, a)) for a in ATTRIBUTES}
        return float(np.mean(list(scores.values()))), scores, result.first_frame_max_abs_error


def prompts(count: int, mode: str, seed: int):
    """(caption, seed, split, first frame or None) — alternating tuning / held-out."""
    from hsa_core.tiny.domain import render, sample_spec

    rng = np.random.default_rng(seed)
    items = []
    for index in range(count):
        spec = sample_spec(rng, "held_out" if index % 4 == 3 else "train")
        image = render(spec)[0] if mode == "i2v" else None
        items.append((spec.caption, 1000 * (mode == "i2v") + index, "tuning" if index % 2 == 0 else "heldout", image))
    return items


def timed_run(harness, method, knob, context, caption, seed, image=None):
    from hsa_core import BudgetInfeasibleError

    try:
        clip, result = harness.run(method.build(knob, context), caption, seed, image)
    except BudgetInfeasibleError as error:  # below the schedule's floor: run at the floor, report it
        knob = math.ceil(error.min_budget * 1000) / 1000
        clip, result = harness.run(method.build(knob, context), caption, seed, image)
    return clip, result, knob


def calibrate(harness, methods, context, calibration, progress) -> dict:
    """knob → median time fraction over the calibration prompts, per method. Each measurement is
    paired with a reference run of the same prompt right before it, so machine drift cancels."""
    from hsa_core import ConfigError, EulerSampler

    curves = {}
    for method in methods:
        if method.knob == "fraction" or method.knob_from:
            continue
        measured: dict[float, list[float]] = {}
        for value in method.sweep:
            for caption, seed, _, image in calibration:
                ref_seconds = harness.run(EulerSampler(), caption, seed, image)[1].seconds
                try:
                    _, result, used = timed_run(harness, method, value, context, caption, seed, image)
                except ConfigError:  # e.g. a budget that leaves this schedule no tokens to compute
                    continue
                measured.setdefault(used, []).append(result.seconds / ref_seconds)
            progress()
        if not measured:
            raise ValueError(f"no knob value of {method.name} is feasible at this step count")
        curves[method.name] = {k: float(np.median(v)) for k, v in measured.items()}
    return curves


def tune_hsa(harness, context, tuning, references, budget: float, progress) -> tuple[object, list[dict]]:
    """One knob at a time from the defaults, keeping changes that raise mean PSNR on the tuning prompts."""
    from hsa_core import HSAConfig, HSASampler
    from hsa_core.quality import clip_fidelity

    grid = {
        "stagger_phases": (False, True),
        "warmup_fraction": (0.05, 0.1, 0.2),
        "final_fraction": (0.025, 0.05, 0.1),
        "refresh_interval": (2, 4, 8),
        "score_normalization": ("sigma_gap", "none"),
        "rate_exponent": (0.5, 1.0),
        "divisors": ((1, 2, 4, 8, 16), (1, 2, 4, 8), (1, 2, 3, 4, 6, 8, 12, 16)),
    }

    scores: dict[str, float] = {}

    def score(config) -> float:
        key = json.dumps(_config_dict(config), sort_keys=True)
        if key not in scores:
            scores[key] = measure(config)
        return scores[key]

    def measure(config) -> float:
        values = []
        for (caption, seed, _, image), (reference, _) in zip(tuning, references):
            try:
                clip, _ = harness.run(HSASampler(budget, config), caption, seed, image)
            except ValueError:  # an infeasible budget for this window/divisor choice
                return -math.inf
            values.append(clip_fidelity(clip, reference)[0])
            progress()
        return float(np.mean(values))

    best = context.hsa_config or HSAConfig()
    best_score = score(best)
    log = [{"config": _config_dict(best), "psnr": best_score}]
    for name, values in grid.items():
        for value in values:
            candidate = replace(best, **{name: value})
            if json.dumps(_config_dict(candidate), sort_keys=True) in scores:
                continue
            candidate_score = score(candidate)
            log.append({"config": _config_dict(candidate), "psnr": candidate_score})
            if candidate_score > best_score + 0.05:
                best, best_score = candidate, candidate_score
    return best, log


def _config_dict(config) -> dict:
    data = asdict(config)
    data["divisors"] = list(data["divisors"])
    return data


def heterogeneity(model, items, steps: int) -> dict:
    """Where the reference trajectory changes: across tokens or across steps?

    r[t, n] = ‖v_t,n − v_t−1,n‖₁ / ‖v_t−1,n‖₁ (guided velocity of token n, consecutive steps) on the
    reference runs. HSA exploits spread across tokens (some settle early); step-level caches exploit
    spread across steps (some steps change little for everyone). Reported as coefficients of
    variation of the per-token means and of the per-step means (inside HSA's caching window).

    Two sharper measures of HSA's room, inside the window: ``skip_error_top_quarter`` — skipping token
    n at step t costs about |σ_t+1 − σ_t|·‖v_t,n − v_t−1,n‖₁; the share of that cost carried by the
    quarter of tokens with the most (0.25 if all tokens were alike; near 1 if a few tokens did all the
    changing) — and ``score_top_quarter_hit`` — how many of the quarter that change most at step t the
    previous step's score already ranked in its top quarter (0.25 by chance; 1: the score knows).
    """
    import torch

    from hsa_core import EulerSampler, HSAConfig
    from hsa_core.schedule import FlowMatchSchedule

    class Recording(EulerSampler):
        """Plain Euler whose adapter calls are recorded (cond and uncond branch, in that order)."""

        def sample(self, adapter, x, grid, conditioning, schedule, frozen=None, callback=None):
            outputs = self.outputs = []

            class Spy:
                def __getattr__(self, name):
                    return getattr(adapter, name)

                def velocity(self, tokens, sigma, branch, active=None, kv_cache=None):
                    out = adapter.velocity(tokens, sigma, branch, active=active, kv_cache=kv_cache)
                    # one call per branch, or one call with the branches stacked along the batch
                    outputs.extend(row.float().clone() for row in out)
                    return out

            self.guidance = conditioning.guidance_scale if conditioning.uses_guidance else None
            return super().sample(Spy(), x, grid, conditioning, schedule, frozen, callback)

    warmup, final = HSAConfig().windows(steps)
    step_sizes = np.abs(np.diff(np.asarray(FlowMatchSchedule(steps, model.config.shift).sigmas)))
    token_cv, step_cv, top_share, hits = [], [], [], []
    for caption, seed, _, image in items:
        sampler = Recording()
        model.generate(caption, sampler, image=image, steps=steps, seed=seed)
        raw = torch.stack(sampler.outputs).numpy()
        if sampler.guidance is not None:  # guided velocity: v_u + w·(v_c − v_u)
            cond, uncond = raw[0::2], raw[1::2]
            raw = uncond + sampler.guidance * (cond - uncond)
        change = np.abs(np.diff(raw, axis=0)).sum(-1) / (np.abs(raw[:-1]).sum(-1) + 1e-6)  # (T-1, N)
        window = change[warmup: steps - final]
        token_means, step_means = window.mean(0), window.mean(1)
        token_cv.append(float(token_means.std() / token_means.mean()))
        step_cv.append(float(step_means.std() / step_means.mean()))

        moved = np.abs(np.diff(raw, axis=0)).sum(-1)  # (T-1, N): row t-1 is ‖v_t − v_t−1‖₁
        skip_cost = (step_sizes[1:steps, None] * moved)[warmup: steps - final].sum(0)  # (N,)
        quarter = max(1, skip_cost.size // 4)
        top_share.append(float(np.sort(skip_cost)[::-1][:quarter].sum() / skip_cost.sum()))
        for t in range(max(warmup, 1), steps - final - 1):  # score from steps t-1→t, change at t→t+1
            predicted = set(np.argsort(-change[t - 1])[:quarter].tolist())
            actual = set(np.argsort(-moved[t])[:quarter].tolist())
            hits.append(len(predicted & actual) / quarter)
    return {"token_cv": round(float(np.mean(token_cv)), 4), "step_cv": round(float(np.mean(step_cv)), 4),
            "skip_error_top_quarter": round(float(np.mean(top_share)), 4),
            "score_top_quarter_hit": round(float(np.mean(hits)), 4), "prompts": len(items)}


# ------------------------------------------------------------------------------------------------
# statistics and reports


def ci95(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan")
    from scipy import stats

    return float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))


def summarise(samples: list[dict]) -> list[dict]:
    rows = []
    keys = sorted({(s["mode"], s["method"], s["target_fraction"], s["split"]) for s in samples},
                  key=lambda k: (k[0], k[1], -k[2], k[3]))
    for mode, method, target, split in keys:
        group = [s for s in samples if (s["mode"], s["method"], s["target_fraction"], s["split"]) ==
                 (mode, method, target, split)]
        row = {
            "mode": mode, "method": method, "target_fraction": target, "split": split, "n": len(group),
            "knob": group[0]["knob"],
            "time_fraction": round(float(np.median([s["time_fraction"] for s in group])), 4),
            "token_fraction": round(float(np.mean([s["token_fraction"] for s in group])), 4),
        }
        for metric in ("psnr", "ssim", "adherence"):
            values = [s[metric] for s in group]
            row[metric] = round(float(np.mean(values)), 4)
            row[f"{metric}_ci95"] = round(ci95(values), 4)
        if mode == "i2v":
            row["first_frame_max_abs_error"] = round(float(np.max([s["first_frame_error"] for s in group])), 5)
        rows.append(row)
    return rows


def render_markdown(report: dict) -> str:
    rows = report["rows"]
    lines = [
        "# Quality–runtime Pareto benchmark (tiny model)", "",
        f"`hsa-video bench pareto` — {report['environment']['cpu']}, {report['environment']['threads']} threads, "
        f"torch {report['environment']['torch']}, {report['date']}. Reference: plain Euler, "
        f"{report['steps']} steps, CFG {report['guidance_scale']}. {report['prompts']['t2v']} T2V and "
        f"{report['prompts']['i2v']} I2V prompt/seed pairs, half tuning, half held-out.",
        "",
        "Time fraction = the method's sampler wall time / the reference's on the same prompt in the same "
        "run (median). PSNR / SSIM: decoded frames against the reference's (mean ± 95% CI). Adherence: the "
        "tiny model's checker (colour, shape, direction, background colour and kind; mean). Reference "
        f"sampler time: {report['reference_seconds_median']:.2f} s per clip (median).",
        "",
        "## How much do fewer steps lose? (held-out, T2V)", "",
        "| target | steps | PSNR (dB) | SSIM |", "|---|---|---|---|",
    ]
    for row in rows:
        if row["method"] == "fewer_steps" and row["split"] == "heldout" and row["mode"] == "t2v":
            lines.append(f"| {row['target_fraction']:g} | {round(row['target_fraction'] * report['steps'])} | "
                         f"{row['psnr']:.2f} ± {row['psnr_ci95']:.2f} | {row['ssim']:.3f} |")
    for mode in ("t2v", "i2v"):
        for target in report["targets"]:
            selected = [r for r in rows if r["mode"] == mode and r["split"] == "heldout" and r["target_fraction"] == target]
            if not selected:
                continue
            lines += ["", f"## {mode.upper()} held-out, target time fraction {target:g}", "",
                      "| method | knob | time fraction | compute fraction | PSNR (dB) | SSIM | adherence |"
                      + (" frame-0 err |" if mode == "i2v" else ""),
                      "|---|---|---|---|---|---|---|" + ("---|" if mode == "i2v" else "")]
            for r in sorted(selected, key=lambda r: -r["psnr"]):
                line = (f"| {r['method']} | {r['knob']:.4g} | {r['time_fraction']:.3f} | {r['token_fraction']:.3f} | "
                        f"{r['psnr']:.2f} ± {r['psnr_ci95']:.2f} | {r['ssim']:.3f} ± {r['ssim_ci95']:.3f} | "
                        f"{r['adherence']:.3f} |")
                if mode == "i2v":
                    line += f" {r['first_frame_max_abs_error']:.4f} |"
                lines.append(line)
    lines += ["", "## Reference adherence", "",
              f"T2V {report['reference_adherence']['t2v']:.3f}, I2V {report['reference_adherence']['i2v']:.3f} "
              "(the ceiling a faithful accelerator can reach).", ""]
    if report.get("hsa_tuning"):
        tuning = report["hsa_tuning"]
        lines += ["## HSA tuning (tuning prompts, T2V, budget for the 0.5 target)", "",
                  f"{len(tuning['log'])} configs tried, one knob at a time from the defaults; "
                  f"default PSNR {tuning['log'][0]['psnr']:.2f} dB → tuned {tuning['best_psnr']:.2f} dB.", "",
                  "Chosen: `" + json.dumps({k: v for k, v in tuning["best"].items()
                                              if v != tuning["log"][0]["config"].get(k)}) + "` (changes from the defaults).", ""]
    if report.get("heterogeneity"):
        h = report["heterogeneity"]
        lines += ["## Where the reference trajectory changes", "",
                  "Relative change of each token's guided velocity between consecutive reference steps, inside "
                  f"HSA's caching window ({h['prompts']} T2V prompts): coefficient of variation of the per-token "
                  f"means **{h['token_cv']:.2f}** (what token-level allocation such as HSA exploits) vs of the "
                  f"per-step means **{h['step_cv']:.2f}** (what step-level caches exploit).", ""]
        if "skip_error_top_quarter" in h:
            lines += [f"The quarter of tokens that change most carries **{h['skip_error_top_quarter']:.0%}** of the "
                      "cost of skipping a step (25% if all tokens were alike): skipping the other three quarters "
                      f"still costs {1 - h['skip_error_top_quarter']:.0%} of it. The score picks them: the previous "
                      f"step's top quarter holds **{h['score_top_quarter_hit']:.0%}** of the next step's (25% by "
                      "chance).", ""]
    lines += ["## Methods", ""]
    for name, description in report["methods"].items():
        lines.append(f"- `{name}`: {description}")
    lines += ["", "Knob → time-fraction calibration (tuning prompts): see `calibration` in pareto.json.", ""]
    if report.get("findings"):
        lines += ["## Findings", ""] + [f"- {f}" for f in report["findings"]] + [""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    methods = sorted({r["method"] for r in report["rows"]})
    colours = plt.get_cmap("tab20")  # one colour per method: there are more methods than tab10 has
    for axis, mode in zip(axes, ("t2v", "i2v")):
        rows = [r for r in report["rows"] if r["mode"] == mode and r["split"] == "heldout"]
        for method in sorted({r["method"] for r in rows}):
            points = sorted((r for r in rows if r["method"] == method), key=lambda r: r["time_fraction"])
            style = "-o" if method in ("hsa", "hsa_tuned") else "--."
            axis.errorbar([p["time_fraction"] for p in points], [p["psnr"] for p in points],
                          yerr=[p["psnr_ci95"] for p in points], fmt=style, label=method, capsize=2,
                          color={"hsa": "black", "hsa_tuned": "0.5"}.get(method, colours(methods.index(method) % 20)),
                          linewidth=2.2 if method in ("hsa", "hsa_tuned") else 1.2)
        axis.set_title(f"{mode.upper()} held-out: fidelity to the 40-step reference")
        axis.set_xlabel("time fraction (method / reference wall time)")
        axis.set_ylabel("PSNR vs reference (dB)")
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def strip(clips: list[tuple[str, np.ndarray]], caption: str, path: Path, frames=(0, 5, 10, 15), scale=4) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(clips), len(frames), figsize=(1.6 * len(frames), 1.7 * len(clips)))
    for row, (label, clip) in enumerate(clips):
        for col, frame in enumerate(frames):
            axis = axes[row, col]
            axis.imshow(np.clip(clip[frame], 0, 1).repeat(scale, 0).repeat(scale, 1), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if col == 0:
                axis.set_ylabel(label, fontsize=7)
            if row == 0:
                axis.set_title(f"frame {frame}", fontsize=8)
    fig.suptitle(caption, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------


def write_reports(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "pareto.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "pareto.md").write_text(render_markdown(report))
    plot(report, out / "pareto.png")


def run(args: argparse.Namespace) -> int:
    if args.render_only:
        report = json.loads((args.out / "pareto.json").read_text())
        report["findings"] = findings(report)
        write_reports(report, args.out)
        print(render_markdown(report))
        return 0

    import torch
    from tqdm import tqdm

    from hsa_core.quality import clip_fidelity

    from hsa_core import EulerSampler, HSAConfig
    from hsa_core.tiny.model import WEIGHTS_DIR, TinyVideoModel

    from .methods import METHODS, Method, MethodContext, knob_for_target

    torch.set_num_threads(args.threads)
    unknown = set(args.methods or []) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; known: {', '.join(METHODS)}")
    if any(not 0 < f <= 1 for f in args.fractions):
        raise ValueError("--fractions must be in (0, 1]")
    methods = [METHODS[name] for name in (args.methods or METHODS)]
    missing = {m.knob_from for m in methods if m.knob_from} - {m.name for m in methods}
    if missing:
        raise ValueError(f"--methods: {', '.join(m.name for m in methods if m.knob_from in missing)} "
                         f"run at the knob of {', '.join(sorted(missing))}; add it")
    model = TinyVideoModel.load(args.weights or WEIGHTS_DIR)
    harness = Harness(model, args.steps)
    targets = sorted(args.fractions, reverse=True)
    t2v, i2v = prompts(args.t2v, "t2v", 0), prompts(args.i2v, "i2v", 1)
    everything = [("t2v", p) for p in t2v] + [("i2v", p) for p in i2v]
    context = MethodContext(hsa_config=HSAConfig())

    calibration = [p for p in t2v if p[2] == "tuning"][: args.calibration_prompts]
    sweeps = sum(len(m.sweep) for m in methods if m.knob != "fraction" and not m.knob_from)
    tuning_prompts = [p for p in t2v if p[2] == "tuning"]
    tune = not args.no_tune and any(m.name == "hsa" for m in methods)
    total = (len(everything) + sweeps + (15 * len(tuning_prompts) if tune else 0)
             + len(everything) * len(targets) * (len(methods) + tune))
    bar = tqdm(total=total, unit="run", desc="bench pareto", file=sys.stderr)

    references: dict[tuple[str, int], tuple[np.ndarray, float]] = {}
    reference_adherence = {"t2v": [], "i2v": []}
    euler = EulerSampler()
    for mode, (caption, seed, _, image) in everything:
        clip, result = harness.run(euler, caption, seed, image)
        references[(mode, seed)] = (clip, result.seconds)
        reference_adherence[mode].append(Harness.adherence(clip, caption, image)[0])
        bar.update()

    if any(m.name == "mag_cache" for m in methods):
        from hsa_core.samplers.diffusers_cache import calibrate_mag_ratios

        caption, seed, _, image = calibration[0]

        class MagCalibration:  # calibration runs through the model's own generate path
            def sample(self, adapter, x, grid, conditioning, schedule, frozen=None, callback=None):
                context.mag_ratios = calibrate_mag_ratios(adapter, x, grid, conditioning, schedule, frozen)
                return euler.sample(adapter, x, grid, conditioning, schedule, frozen)

        harness.run(MagCalibration(), caption, seed, image)

    for caption, seed, _, image in calibration[:1] * 2:  # warm caches before anything is timed
        harness.run(euler, caption, seed, image)
    curves = calibrate(harness, methods, context, calibration, bar.update)

    tuning_report = None
    if tune:
        hsa = METHODS["hsa"]
        budget = knob_for_target(hsa, curves["hsa"], 0.5)
        tuned, log = tune_hsa(harness, context, tuning_prompts, [references[("t2v", p[1])] for p in tuning_prompts],
                              budget, bar.update)
        tuning_report = {"budget": budget, "best": _config_dict(tuned), "best_psnr": max(e["psnr"] for e in log),
                         "log": log}
        tuned_method = Method("hsa_tuned", "budget", METHODS["hsa"].build, METHODS["hsa"].sweep,
                              "HSA with the config tuned on the tuning prompts")
        tuned_context = MethodContext(hsa_config=tuned, mag_ratios=context.mag_ratios)
        curves["hsa_tuned"] = calibrate(harness, [tuned_method], tuned_context, calibration, bar.update)["hsa_tuned"]
        methods = methods + [tuned_method]
    contexts = {m.name: (tuned_context if m.name == "hsa_tuned" else context) for m in methods}
    knob_source = {m.name: METHODS.get(m.knob_from, m) if m.knob_from else m for m in methods}
    knobs = {(m.name, t): knob_for_target(knob_source[m.name], curves.get(knob_source[m.name].name, {}), t)
             for m in methods for t in targets}

    samples, strip_clips = [], {}
    for mode, (caption, seed, split, image) in everything:
        reference = references[(mode, seed)][0]
        # the denominator is timed again here, next to the methods, not at the start of the run
        ref_seconds = harness.run(euler, caption, seed, image)[1].seconds
        for target in targets:
            for method in methods:
                clip, result, knob = timed_run(harness, method, knobs[(method.name, target)], contexts[method.name],
                                               caption, seed, image)
                psnr, ssim = clip_fidelity(clip, reference)
                adherence, _, first_error = Harness.adherence(clip, caption, image)
                samples.append({"mode": mode, "method": method.name, "target_fraction": target, "split": split,
                                "knob": knob, "seed": seed, "time_fraction": result.seconds / ref_seconds,
                                "token_fraction": result.achieved_compute_fraction, "psnr": psnr, "ssim": ssim,
                                "adherence": adherence, "first_frame_error": first_error or 0.0})
                if mode == "t2v" and split == "heldout" and target == targets[-1] and not strip_clips.get("caption"):
                    strip_clips.setdefault("clips", {})[method.name] = clip
                bar.update()
        if strip_clips.get("clips") and not strip_clips.get("caption"):
            strip_clips.update(caption=caption, reference=reference)
    bar.close()

    rows = summarise(samples)
    report = {
        "benchmark": "pareto",
        "date": time.strftime("%Y-%m-%d"),
        "environment": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                        "torch": torch.__version__},
        "steps": args.steps, "guidance_scale": model.config.guidance_scale,
        "prompts": {"t2v": len(t2v), "i2v": len(i2v)},
        "targets": targets,
        "reference_seconds_median": float(np.median([s for _, s in references.values()])),
        "reference_adherence": {m: float(np.mean(v)) if v else float("nan") for m, v in reference_adherence.items()},
        "methods": {m.name: m.description for m in methods},
        "calibration": {name: {f"{k:g}": round(v, 4) for k, v in curve.items()} for name, curve in curves.items()},
        "hsa_tuning": tuning_report,
        "rows": rows,
        "samples": samples,
    }
    report["heterogeneity"] = heterogeneity(model, [p for p in t2v if p[2] == "tuning"][:4], args.steps)
    report["findings"] = findings(report)
    write_reports(report, args.out)
    if strip_clips.get("caption"):
        chosen = best_rows(report, "t2v", targets[-1])
        order = [("reference (Euler 40)", strip_clips["reference"])]
        for name in [n for n in ("hsa_tuned", "hsa") if n in strip_clips["clips"]][:1] + chosen[:1]:
            order.append((f"{name} @ {targets[-1]:g}", strip_clips["clips"][name]))
        strip(order, strip_clips["caption"], args.out / "pareto_strip.png")
    print(render_markdown(report))
    print(f"wrote {args.out / 'pareto.json'}, pareto.md, pareto.png, pareto_strip.png", file=sys.stderr)
    return 0


def best_rows(report: dict, mode: str, target: float) -> list[str]:
    """Baseline methods at ``target`` (held-out), best PSNR first."""
    rows = [r for r in report["rows"] if r["mode"] == mode and r["split"] == "heldout" and r["target_fraction"] == target
            and not r["method"].startswith("hsa")]
    return [r["method"] for r in sorted(rows, key=lambda r: -r["psnr"])]


def findings(report: dict) -> list[str]:
    """Plain statements read off the held-out rows, at *matched measured* time fraction: each HSA
    point against every baseline's PSNR-vs-time curve interpolated at the same time fraction (only
    where the baseline's measured points bracket it)."""
    out = []
    for mode in ("t2v", "i2v"):
        rows = [r for r in report["rows"] if r["mode"] == mode and r["split"] == "heldout"]
        curves = {}
        for row in rows:
            if not row["method"].startswith("hsa") and row["method"] != "ras":
                curves.setdefault(row["method"], []).append((row["time_fraction"], row["psnr"]))
        for row in sorted((r for r in rows if r["method"] in ("hsa", "hsa_tuned")),
                          key=lambda r: (r["method"], -r["target_fraction"])):
            t = row["time_fraction"]
            matched = {}
            for name, points in curves.items():
                points = sorted(points)
                times = [p[0] for p in points]
                if times[0] <= t <= times[-1]:
                    matched[name] = float(np.interp(t, times, [p[1] for p in points]))
            if not matched:
                continue
            best = max(matched, key=matched.get)
            delta = row["psnr"] - matched[best]
            out.append(f"{mode.upper()} {row['method']} (budget {row['knob']:.3g}): {row['psnr']:.2f} dB at measured "
                       f"time fraction {t:.2f}; best baseline at that time: {best} {matched[best]:.2f} dB "
                       f"(Δ {delta:+.2f} dB).")
    return out
