"""``hsa-video bench pareto``: quality against wall time and against compute, HSA and the baselines, one run.

On the built-in tiny model (the only model whose outputs we can score here), for T2V and I2V
prompts from the synthetic domain, split into a tuning half and a held-out half:

1. The reference: plain Euler, 40 steps, CFG — its clip and sampler wall time per prompt.
2. Calibration (tuning prompts only): each method's knob is swept and its time fraction and compute
   fraction measured; the knob is then chosen per target, once to land on each target *time* fraction
   and once on each target *compute* fraction (``methods.knob_for_target``).
3. HSA tuning (tuning prompts only): one-knob-at-a-time search over HSAConfig at the compute targets;
   a winner that differs from the defaults runs as ``hsa_tuned``.
4. Evaluation (every prompt): each method at each target of both kinds — time fraction (its sampler
   wall time / the reference's, same prompt, same run), compute fraction (token evaluations as a
   fraction of the reference's; for step caches the fraction of full forwards), PSNR and SSIM of the
   decoded frames against the reference (scikit-image), prompt adherence (the tiny model's checker),
   and for I2V the first-frame error. Methods run interleaved per prompt, so drift hits all of them
   alike; a knob that lands on two targets runs once.
5. Where the reference trajectory changes (tuning prompts): how much room token-level, step-level and
   joint allocation have under the skip-cost model, and how well each step's |Δ log(1 − σ)| predicts
   the change of the velocity over it (``heterogeneity``).

Writes ``pareto.json`` (rows per method × match × target × split × mode), ``pareto.md`` (tables, mean ±
95% CI, HSA against the best baseline at matched time and at matched compute), ``pareto.png``
(held-out PSNR vs time fraction and vs compute fraction) and ``pareto_strip.png`` (frames of the
reference, HSA and the best baseline at the lowest time target).
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
MATCHES = ("time", "compute")  # what a row's target fraction is a fraction of
AXIS = {"time": "time_fraction", "compute": "compute_fraction"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--t2v", type=int, default=32, help="T2V prompt/seed pairs, half tuning (default 32)")
    parser.add_argument("--i2v", type=int, default=16, help="I2V prompt/seed pairs, half tuning (default 16)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.75, 0.5, 0.25],
                        help="target time fractions (default 0.75 0.5 0.25)")
    parser.add_argument("--compute-fractions", type=float, nargs="*", default=[0.5, 0.25],
                        help="target compute fractions (default 0.5 0.25; none to skip)")
    parser.add_argument("--steps", type=int, default=40, help="reference steps (default 40)")
    parser.add_argument("--methods", nargs="+", default=None, help="subset of methods (default: methods.DEFAULT_METHODS)")
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
        from hsa_video.tiny.checker import check_clip

        result = check_clip(clip, caption, first_frame=image)
        scores = {a: float(getattr(result, a)) for a in ATTRIBUTES}
        return float(np.mean(list(scores.values()))), scores, result.first_frame_max_abs_error


def prompts(count: int, mode: str, seed: int):
    """(caption, seed, split, first frame or None) — alternating tuning / held-out."""
    from hsa_video.tiny.domain import render, sample_spec

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
    """knob → median time fraction and knob → median compute fraction over the calibration prompts, per
    method: {"time": {...}, "compute": {...}}. Each measurement is paired with a reference run of the
    same prompt right before it, so machine drift cancels."""
    from hsa_core import ConfigError, EulerSampler

    curves = {}
    for method in methods:
        if method.knob == "fraction" or method.knob_from:
            continue
        measured: dict[float, list[tuple[float, float]]] = {}
        for value in method.sweep:
            for caption, seed, _, image in calibration:
                ref_seconds = harness.run(EulerSampler(), caption, seed, image)[1].seconds
                try:
                    _, result, used = timed_run(harness, method, value, context, caption, seed, image)
                except ConfigError:  # e.g. a budget that leaves this schedule no tokens to compute
                    continue
                measured.setdefault(used, []).append((result.seconds / ref_seconds, result.achieved_compute_fraction))
            progress()
        if not measured:
            raise ValueError(f"no knob value of {method.name} is feasible at this step count")
        curves[method.name] = {match: {k: float(np.median([m[index] for m in v])) for k, v in measured.items()}
                               for index, match in enumerate(MATCHES)}
    return curves


def choose_knob(method, curves: dict, match: str, target: float) -> float:
    """The knob that lands ``method`` on ``target`` of the ``match`` fraction. A budget or a step fraction
    *is* the compute fraction (the cost model's), so it is taken as it is."""
    from .methods import knob_for_target

    if match == "compute" and method.knob in ("budget", "fraction"):
        return target
    return knob_for_target(method, curves.get(method.name, {}).get(match, {}), target)


TUNING_GRID = {
    "refresh_interval": (4, 8),
    "rate_exponent": (0.0, 0.25, 0.5),
    "step_budget_exponent": (0.5, 0.75, 1.0),
    "warmup_fraction": (0.05, 0.075, 0.1),
    "final_fraction": (0.0, 0.025),
    "extrapolation_limit": (0.5, 1.0, 2.0),
}


def tune_hsa(harness, context, tuning, references, budgets: list[float], progress) -> tuple[object, list[dict]]:
    """One knob at a time from the defaults, keeping changes that raise the mean PSNR over the tuning prompts
    and ``budgets`` (the compute targets) by more than 0.05 dB."""
    from hsa_core import BudgetInfeasibleError, HSAConfig, HSASampler
    from hsa_core.quality import clip_fidelity

    scores: dict[str, float] = {}

    def score(config) -> float:
        key = json.dumps(_config_dict(config), sort_keys=True)
        if key not in scores:
            scores[key] = measure(config)
        return scores[key]

    def measure(config) -> float:
        values = []
        for budget in budgets:
            for (caption, seed, _, image), (reference, _) in zip(tuning, references):
                try:
                    clip, _ = harness.run(HSASampler(budget, config), caption, seed, image)
                except BudgetInfeasibleError:  # this window / divisor choice cannot go that low
                    return -math.inf
                values.append(clip_fidelity(clip, reference)[0])
                progress()
        return float(np.mean(values))

    best = context.hsa_config or HSAConfig()
    best_score = score(best)
    log = [{"config": _config_dict(best), "psnr": best_score}]
    for name, values in TUNING_GRID.items():
        for value in values:
            candidate = replace(best, **{name: value})
            if json.dumps(_config_dict(candidate), sort_keys=True) in scores:
                continue
            candidate_score = score(candidate)
            log.append({"config": _config_dict(candidate), "psnr": candidate_score})
            if candidate_score > best_score + 0.05:
                best, best_score = candidate, candidate_score
    return best, log


def tuning_runs(budgets: list[float], prompts_count: int) -> int:
    """Sampler runs ``tune_hsa`` makes at most (for the progress bar)."""
    configs = 1 + sum(len(values) - 1 for values in TUNING_GRID.values())
    return configs * len(budgets) * prompts_count


def _config_dict(config) -> dict:
    data = asdict(config)
    data["divisors"] = list(data["divisors"])
    return data


def heterogeneity(model, items, steps: int) -> dict:
    """Where the reference trajectory changes, and how much room each kind of allocation has there.

    On the reference runs (plain Euler, guided velocity v_t,n of token n at step t), inside the default
    HSA config's caching window [w, T − f):

    Skip-cost model. Skipping token n at step t costs about c[t, n] = |σ_t+1 − σ_t|·‖v_t,n − v_t−1,n‖₁.
    Give each cell (or token, or step) a rate r; if the error of a rate-r schedule is c/r, the best
    rates under a fixed number of evaluations are r ∝ √c and cut the error of uniform rates by
    1 − (mean √c)² / mean c (Cauchy–Schwarz; 0 when all costs are equal). ``bound_token``: one rate per
    token over the window (costs summed per token); ``bound_token_in_plans``: one rate per token and
    re-allocation interval, each interval with an even share; ``bound_step``: one rate per step for all
    tokens; ``bound_joint``: one rate per (step, token) cell. What HSA can gain from allocation alone.

    Step change. g_t = mean over tokens of ‖v_t,n − v_t−1,n‖₁, against the log-signal span
    s_t = |log(1 − σ_t) − log(1 − σ_t−1)| that the default step split spends by: the ratio g/s per
    step (``step_change``: σ, g, g/s), and its coefficient of variation above and below σ = 0.3 — a
    flat ratio means the span predicts where the trajectory changes.

    Also: coefficients of variation of the per-token and the per-step mean relative changes
    (``token_cv``, ``step_cv``), the share of the skip cost carried by the quarter of tokens with the
    most (``skip_error_top_quarter``), and how many of the quarter that change most at step t the
    previous step's score already ranked there (``score_top_quarter_hit``; 0.25 by chance).
    """
    import torch

    from hsa_core import EulerSampler, HSAConfig
    from hsa_core.allocation import log_signal_steps
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

    config = HSAConfig()
    warmup, final = config.windows(steps)
    sigmas = np.asarray(FlowMatchSchedule(steps, model.config.shift).sigmas, dtype=np.float64)
    step_sizes = np.abs(np.diff(sigmas))
    spans = np.asarray(log_signal_steps(sigmas.tolist()))  # spans[t]: step t → t + 1
    token_cv, step_cv, top_share, hits, step_means = [], [], [], [], []
    bounds = {"bound_token": [], "bound_token_in_plans": [], "bound_step": [], "bound_joint": []}

    def room(costs: np.ndarray) -> float:  # 1 − (mean √c)² / mean c over the cells of ``costs``
        return float(1 - np.mean(np.sqrt(costs)) ** 2 / np.mean(costs))

    for caption, seed, _, image in items:
        sampler = Recording()
        model.generate(caption, sampler, image=image, steps=steps, seed=seed)
        raw = torch.stack(sampler.outputs).numpy()
        if sampler.guidance is not None:  # guided velocity: v_u + w·(v_c − v_u)
            cond, uncond = raw[0::2], raw[1::2]
            raw = uncond + sampler.guidance * (cond - uncond)
        change = np.abs(np.diff(raw, axis=0)).sum(-1) / (np.abs(raw[:-1]).sum(-1) + 1e-6)  # (T-1, N)
        window = change[warmup - 1: steps - final - 1]  # row t-1: the change into step t, for t in the window
        token_means, step_means_relative = window.mean(0), window.mean(1)
        token_cv.append(float(token_means.std() / token_means.mean()))
        step_cv.append(float(step_means_relative.std() / step_means_relative.mean()))

        moved = np.abs(np.diff(raw, axis=0)).sum(-1)  # (T-1, N): row t-1 is ‖v_t − v_t−1‖₁
        step_means.append(moved.mean(1))
        costs = step_sizes[1:steps, None] * moved  # row t-1: skipping step t
        cells = costs[warmup - 1: steps - final - 1]  # the window's steps
        bounds["bound_joint"].append(room(cells))
        bounds["bound_token"].append(room(cells.sum(0)))
        bounds["bound_step"].append(room(cells.sum(1)))
        plans = [cells[k: k + config.refresh_interval].sum(0) for k in range(0, len(cells), config.refresh_interval)]
        bounds["bound_token_in_plans"].append(
            float(1 - sum(np.sqrt(p).sum() ** 2 for p in plans) / (cells.shape[1] * sum(p.sum() for p in plans))))

        skip_cost = cells.sum(0)
        quarter = max(1, skip_cost.size // 4)
        top_share.append(float(np.sort(skip_cost)[::-1][:quarter].sum() / skip_cost.sum()))
        for t in range(max(warmup, 1), steps - final - 1):  # score from steps t-1→t, change at t→t+1
            predicted = set(np.argsort(-change[t - 1])[:quarter].tolist())
            actual = set(np.argsort(-moved[t])[:quarter].tolist())
            hits.append(len(predicted & actual) / quarter)

    g = np.mean(step_means, axis=0)  # (T-1,): g[t-1] = mean change into step t, over σ_t-1 → σ_t
    ratio = g / spans[:-1]
    profile = [(round(float(sigmas[t]), 3), round(float(g[t - 1]), 3), round(float(ratio[t - 1]), 2))
               for t in range(1, steps)]
    high = np.array([r for s, _, r in profile if s >= 0.3])
    low = np.array([r for s, _, r in profile if s < 0.3])

    def cv(values: np.ndarray) -> float:
        return round(float(values.std() / values.mean()), 3) if values.size > 1 else float("nan")

    return {"token_cv": round(float(np.mean(token_cv)), 4), "step_cv": round(float(np.mean(step_cv)), 4),
            "skip_error_top_quarter": round(float(np.mean(top_share)), 4),
            "score_top_quarter_hit": round(float(np.mean(hits)), 4),
            **{name: round(float(np.mean(values)), 4) for name, values in bounds.items()},
            "step_change": profile, "step_change_cv_above_0.3": cv(high), "step_change_cv_below_0.3": cv(low),
            "window": [warmup, steps - final], "refresh_interval": config.refresh_interval, "prompts": len(items)}


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
    keys = sorted({(s["mode"], s["method"], s["match"], s["target_fraction"], s["split"]) for s in samples},
                  key=lambda k: (k[0], k[1], k[2], -k[3], k[4]))
    for mode, method, match, target, split in keys:
        group = [s for s in samples if (s["mode"], s["method"], s["match"], s["target_fraction"], s["split"]) ==
                 (mode, method, match, target, split)]
        row = {
            "mode": mode, "method": method, "match": match, "target_fraction": target, "split": split,
            "n": len(group), "knob": group[0]["knob"],
            "time_fraction": round(float(np.median([s["time_fraction"] for s in group])), 4),
            "token_fraction": round(float(np.mean([s["token_fraction"] for s in group])), 4),
            "compute_fraction": round(float(np.mean([s["compute_fraction"] for s in group])), 4),
        }
        for metric in ("psnr", "ssim", "adherence"):
            values = [s[metric] for s in group]
            row[metric] = round(float(np.mean(values)), 4)
            row[f"{metric}_ci95"] = round(ci95(values), 4)
        if mode == "i2v":
            row["first_frame_max_abs_error"] = round(float(np.max([s["first_frame_error"] for s in group])), 5)
        rows.append(row)
    return rows


def is_baseline(method: str) -> bool:
    return not method.startswith("hsa")


def baseline_curves(rows: list[dict], mode: str, axis: str) -> dict[str, list[tuple[float, float]]]:
    """Each baseline's held-out (fraction, PSNR) points on ``axis`` (both matches' rows), sorted, one per fraction."""
    curves: dict[str, dict[float, float]] = {}
    for row in rows:
        if row["mode"] == mode and row["split"] == "heldout" and is_baseline(row["method"]):
            curves.setdefault(row["method"], {})[row[axis]] = row["psnr"]
    return {name: sorted(points.items()) for name, points in curves.items()}


SAME_FRACTION = 0.01  # fractions this close count as the same (a budget lands within it of its target)


def against_baselines(row: dict, curves: dict[str, list[tuple[float, float]]], axis: str) -> dict[str, dict]:
    """Each baseline against ``row`` at the row's measured ``axis`` fraction x: where the baseline's measured
    points bracket x (within ``SAME_FRACTION``), its PSNR interpolated there and the difference; otherwise
    its nearest point decides only when it used at least as much and scored no better (``row`` wins) or
    used no more and scored no worse (``row`` loses)."""
    x, psnr = row[axis], row["psnr"]
    out = {}
    for name, points in curves.items():
        fractions = [p[0] for p in points]
        if fractions[0] - SAME_FRACTION <= x <= fractions[-1] + SAME_FRACTION:
            value = float(np.interp(x, fractions, [p[1] for p in points]))
            out[name] = {"psnr": round(value, 2), "delta": round(psnr - value, 2), "interpolated": True}
            continue
        nearest_x, nearest_psnr = min(points, key=lambda p: abs(p[0] - x))
        if nearest_x >= x and nearest_psnr <= psnr:
            verdict = "beats"
        elif nearest_x <= x and nearest_psnr >= psnr:
            verdict = "loses"
        else:
            verdict = "no comparable point"
        out[name] = {"psnr": nearest_psnr, "at": nearest_x, "delta": round(psnr - nearest_psnr, 2),
                     "interpolated": False, "verdict": verdict}
    return out


def comparisons(report: dict) -> list[dict]:
    """Every HSA row (held-out) against every baseline at its own match: time rows at their measured time
    fraction, compute rows at their measured compute fraction."""
    out = []
    rows = report["rows"]
    for mode in ("t2v", "i2v"):
        for match in MATCHES:
            axis = AXIS[match]
            curves = baseline_curves(rows, mode, axis)
            for row in rows:
                if (row["mode"], row["match"], row["split"]) != (mode, match, "heldout") or is_baseline(row["method"]):
                    continue
                versus = against_baselines(row, curves, axis)
                decided = {n: v for n, v in versus.items() if v["interpolated"] or v["verdict"] != "no comparable point"}
                losses = {n: v for n, v in decided.items() if v["delta"] < 0}
                interpolated = {n: v for n, v in versus.items() if v["interpolated"]}
                best = max(interpolated, key=lambda n: interpolated[n]["psnr"]) if interpolated else None
                out.append({"mode": mode, "match": match, "method": row["method"], "target": row["target_fraction"],
                            "x": row[axis], "psnr": row["psnr"], "best": best,
                            "best_psnr": interpolated[best]["psnr"] if best else None,
                            "delta_best": interpolated[best]["delta"] if best else None,
                            "beats_all": not losses and len(decided) == len(versus),
                            "losses": {n: v["delta"] for n, v in losses.items()},
                            "undecided": sorted(set(versus) - set(decided)), "versus": versus})
    return out


def render_markdown(report: dict) -> str:
    rows = report["rows"]
    env = report["environment"]
    lines = [
        "# Quality–runtime Pareto benchmark (tiny model)", "",
        f"`{report.get('command', 'hsa-video bench pareto')}` — {env['cpu']}, {env['threads']} threads, "
        f"torch {env['torch']}, {report['date']}. Reference: plain Euler, {report['steps']} steps, CFG "
        f"{report['guidance_scale']}. {report['prompts']['t2v']} T2V and {report['prompts']['i2v']} I2V "
        "prompt/seed pairs, half tuning, half held-out; every table below is held-out.",
        "",
        "*Time fraction*: the method's sampler wall time / the reference's on the same prompt in the same "
        "run (median). *Compute fraction*: token evaluations as a fraction of the reference's (HSA, RAS, "
        "fewer steps), or the fraction of full forwards (EasyCache, FirstBlockCache, MagCache, "
        "TaylorSeer: transformer blocks run / blocks of the reference). PSNR / SSIM: decoded frames against "
        "the reference's (mean ± 95% CI). Adherence: the tiny model's checker (colour, shape, direction, "
        "background colour and kind; mean). Each method's knob is calibrated on tuning prompts twice: to "
        "land on target time fractions (*matched wall time*) and on target compute fractions (*matched "
        f"compute*). Reference sampler time: {report['reference_seconds_median']:.2f} s per clip (median).",
    ]
    if report.get("load"):
        lines += ["", f"Machine load (1-minute load average) at the start of the run: {report['load']['start']}, "
                      f"at the end: {report['load']['end']}."]
    if report.get("notes"):  # the reading of this run, written into its JSON by whoever ran it
        lines += ["", "## What this run says", ""] + [f"- {note}" for note in report["notes"]]
    lines += render_picks(report)
    lines += render_verdicts(report)
    for match in MATCHES:
        for mode in ("t2v", "i2v"):
            for target in report["targets"][match]:
                selected = [r for r in rows if (r["mode"], r["match"], r["split"], r["target_fraction"]) ==
                            (mode, match, "heldout", target)]
                if not selected:
                    continue
                lines += ["", f"## {mode.upper()}, matched {match}: target {match} fraction {target:g}", "",
                          "| method | knob | time fraction | compute fraction | PSNR (dB) | SSIM | adherence |"
                          + (" frame-0 err |" if mode == "i2v" else ""),
                          "|---|---|---|---|---|---|---|" + ("---|" if mode == "i2v" else "")]
                for r in sorted(selected, key=lambda r: -r["psnr"]):
                    line = (f"| {r['method']} | {r['knob']:.4g} | {r['time_fraction']:.3f} | {r['compute_fraction']:.3f} | "
                            f"{r['psnr']:.2f} ± {r['psnr_ci95']:.2f} | {r['ssim']:.3f} ± {r['ssim_ci95']:.3f} | "
                            f"{r['adherence']:.3f} |")
                    if mode == "i2v":
                        line += f" {r['first_frame_max_abs_error']:.4f} |"
                    lines.append(line)
    lines += ["", "## Reference adherence", "",
              f"T2V {report['reference_adherence']['t2v']:.3f}, I2V {report['reference_adherence']['i2v']:.3f} "
              "(the ceiling a faithful accelerator can reach).", ""]
    if report.get("heterogeneity"):
        lines += render_heterogeneity(report["heterogeneity"])
    if report.get("hsa_tuning"):
        tuning = report["hsa_tuning"]
        changes = {k: v for k, v in tuning["best"].items() if v != tuning["log"][0]["config"].get(k)}
        lines += ["## HSA tuning (tuning prompts, T2V, budgets " +
                  ", ".join(f"{b:g}" for b in tuning["budgets"]) + ")", "",
                  f"{len(tuning['log'])} configs tried, one knob at a time from the defaults; mean PSNR of the "
                  f"defaults {tuning['log'][0]['psnr']:.2f} dB, best {tuning['best_psnr']:.2f} dB.", "",
                  ("Chosen: `" + json.dumps(changes) + "` (changes from the defaults; row `hsa_tuned`)."
                   if changes else "The defaults were the best config tried."), ""]
    lines += ["## Methods", ""]
    for name, description in report["methods"].items():
        lines.append(f"- `{name}`: {description}")
    lines += ["", "Knob → time- and compute-fraction calibration (tuning prompts): see `calibration` in "
              "pareto.json. Every HSA row against every baseline: `comparisons` in pareto.json.", ""]
    return "\n".join(lines)


PICKABLE_EXCLUDED = ("hsa_fresh_context",)  # an oracle: it computes every token at every step
# what each method keeps besides the model, per guidance branch (L layers, N tokens, width d)
MEMORY_NOTES = {"hsa_kv_forecast": "2 × HSA's K/V cache (4·L·N·d)", "ras": "a K/V cache (2·L·N·d)",
                "taylorseer": "order-0 and order-1 factors of 3 modules per block (6·L·N·d)",
                "first_block_cache": "two hidden states (2·N·d)", "mag_cache": "a hidden-state residual (N·d)",
                "easycache": "one output per branch (N·D)", "fewer_steps": "nothing"}


def memory_note(method: str) -> str:
    return MEMORY_NOTES.get(method, "HSA's K/V cache (2·L·N·d)" if method.startswith("hsa") else "?")


def curve_at(rows: list[dict], mode: str, method: str, axis: str, x: float) -> float | None:
    """``method``'s held-out PSNR interpolated at ``axis`` fraction x (None where its points do not bracket x)."""
    points = sorted({r[axis]: r["psnr"] for r in rows if (r["mode"], r["method"], r["split"]) ==
                     (mode, method, "heldout")}.items())
    if not points or not points[0][0] - SAME_FRACTION <= x <= points[-1][0] + SAME_FRACTION:
        return None
    return float(np.interp(x, [p[0] for p in points], [p[1] for p in points]))


def render_picks(report: dict) -> list[str]:
    """Which method to pick at each wall-time and compute budget, read off the held-out curves."""
    rows = report["rows"]
    methods = sorted({r["method"] for r in rows} - set(PICKABLE_EXCLUDED))
    lines = ["", "## Which method to pick (this model)", "",
             "Each method's held-out PSNR curve interpolated at the budget (a method whose measured points do "
             "not reach that fraction is left out); the best two, and the baselines' best:", "",
             "| mode | budget | pick | runner-up | best baseline | pick keeps, per branch |", "|---|---|---|---|---|---|"]
    for mode in ("t2v", "i2v"):
        for match in MATCHES:
            for target in report["targets"][match]:
                scores = {m: curve_at(rows, mode, m, AXIS[match], target) for m in methods}
                scores = {m: v for m, v in scores.items() if v is not None}
                if not scores:
                    continue
                ranked = sorted(scores, key=lambda m: -scores[m])
                baselines = [m for m in ranked if is_baseline(m)]
                runner = f"{ranked[1]} {scores[ranked[1]]:.1f} dB" if len(ranked) > 1 else "—"
                baseline = f"{baselines[0]} {scores[baselines[0]]:.1f} dB" if baselines else "—"
                lines.append(f"| {mode.upper()} | {match} {target:g} | **{ranked[0]}** {scores[ranked[0]]:.1f} dB | "
                             f"{runner} | {baseline} | {memory_note(ranked[0])} |")
    return lines


def render_verdicts(report: dict) -> list[str]:
    """HSA (defaults) against the best baseline, per mode, match and target."""
    lines = ["", "## HSA against the baselines (held-out)", "",
             "Each HSA row against every baseline's PSNR curve (all its held-out rows on the same axis), "
             "interpolated at HSA's measured fraction where the baseline's points bracket it. *Beats every "
             "baseline*: no baseline is ahead at that fraction (a baseline whose points do not bracket it "
             "counts only if its nearest point used at least as much and scored no better).", "",
             "| mode | matched | target | method | fraction | PSNR (dB) | best baseline there | Δ (dB) | beats every baseline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for entry in report.get("comparisons", []):
        if entry["method"] not in ("hsa", "hsa_kv_forecast", "hsa_paper", "hsa_tuned"):
            continue
        best = f"{entry['best']} {entry['best_psnr']:.2f}" if entry["best"] else "—"
        delta = f"{entry['delta_best']:+.2f}" if entry["delta_best"] is not None else "—"
        verdict = "yes" if entry["beats_all"] else (
            "no: " + ", ".join(f"{n} {d:+.2f}" for n, d in entry["losses"].items()) if entry["losses"]
            else "undecided: " + ", ".join(entry["undecided"]))
        lines.append(f"| {entry['mode'].upper()} | {entry['match']} | {entry['target']:g} | {entry['method']} | "
                     f"{entry['x']:.3f} | {entry['psnr']:.2f} | {best} | {delta} | {verdict} |")
    return lines


def render_heterogeneity(h: dict) -> list[str]:
    lines = ["## Where the reference trajectory changes", "",
             f"On the 40-step reference of {h['prompts']} T2V tuning prompts, inside the default caching window "
             f"(steps {h['window'][0]}–{h['window'][1] - 1}). Skip-cost model: skipping token n at step t costs "
             "c = |Δσ_t|·‖v_t,n − v_t−1,n‖₁; with rates r ∝ √c the error Σ c/r falls below uniform rates' by "
             "1 − (mean √c)²/mean c — the most any allocation can gain:", "",
             "| allocation | best cut of the skip error vs uniform |", "|---|---|",
             f"| per token, over the whole window | {h['bound_token']:.1%} |",
             f"| per token, within each {h['refresh_interval']}-step plan | {h['bound_token_in_plans']:.1%} |",
             f"| per step (all tokens alike) | {h['bound_step']:.1%} |",
             f"| per step and token | {h['bound_joint']:.1%} |", "",
             "Token-level allocation has little room on this model; where the budget goes across steps has "
             "several times more.", "",
             f"Coefficient of variation of the per-token mean relative change {h['token_cv']:.2f}, of the per-step "
             f"mean {h['step_cv']:.2f}. The quarter of tokens that change most carries "
             f"{h['skip_error_top_quarter']:.0%} of the skip cost (25% if all were alike); the previous step's "
             f"score ranks {h['score_top_quarter_hit']:.0%} of the next step's top quarter there (25% by chance).", "",
             "Step change: g = mean ‖v_t − v_t−1‖₁ per step against the step's log-signal span "
             "s = |Δ log(1 − σ)| that the default step split spends by. The ratio g/s varies by "
             f"{h['step_change_cv_above_0.3']:.0%} (coefficient of variation) over the steps with σ ≥ 0.3 and by "
             f"{h['step_change_cv_below_0.3']:.0%} below:", "",
             "| σ | g | g / s |", "|---|---|---|"]
    profile = h["step_change"]
    for sigma, g, ratio in profile[:: max(1, len(profile) // 10)] + [profile[-1]]:
        lines.append(f"| {sigma:.3f} | {g:.2f} | {ratio:.1f} |")
    return lines + [""]


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 10))
    methods = sorted({r["method"] for r in report["rows"]})
    colours = plt.get_cmap("tab20")  # one colour per method: there are more methods than tab10 has
    for row_axes, mode in zip(axes, ("t2v", "i2v")):
        for axis, match in zip(row_axes, MATCHES):
            key = AXIS[match]
            rows = [r for r in report["rows"] if r["mode"] == mode and r["split"] == "heldout"]
            for method in sorted({r["method"] for r in rows}):
                points = sorted({(r[key], r["psnr"], r["psnr_ci95"]) for r in rows if r["method"] == method})
                strong = method in ("hsa", "hsa_tuned")
                axis.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                              fmt="-o" if strong else "--.", label=method, capsize=2,
                              color={"hsa": "black", "hsa_tuned": "0.5"}.get(method, colours(methods.index(method) % 20)),
                              linewidth=2.2 if strong else 1.2)
            axis.set_title(f"{mode.upper()} held-out: PSNR vs {match} fraction")
            axis.set_xlabel(f"{match} fraction (method / reference)")
            axis.set_ylabel("PSNR vs the 40-step reference (dB)")
            axis.grid(alpha=0.3)
    axes[1][1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
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
        report["comparisons"] = comparisons(report)
        write_reports(report, args.out)
        print(render_markdown(report))
        return 0

    import os

    import torch
    from tqdm import tqdm

    from hsa_core import EulerSampler, HSAConfig
    from hsa_core.models.tiny.model import WEIGHTS_DIR, TinyVideoModel
    from hsa_core.quality import clip_fidelity

    from .methods import DEFAULT_METHODS, METHODS, Method, MethodContext

    torch.set_num_threads(args.threads)
    unknown = set(args.methods or []) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; known: {', '.join(METHODS)}")
    if any(not 0 < f <= 1 for f in args.fractions + args.compute_fractions):
        raise ValueError("--fractions and --compute-fractions must be in (0, 1]")
    methods = [METHODS[name] for name in (args.methods or DEFAULT_METHODS)]
    missing = {m.knob_from for m in methods if m.knob_from} - {m.name for m in methods}
    if missing:
        raise ValueError(f"--methods: {', '.join(m.name for m in methods if m.knob_from in missing)} "
                         f"run at the knob of {', '.join(sorted(missing))}; add it")
    load_start = round(os.getloadavg()[0], 2)
    model = TinyVideoModel.load(args.weights or WEIGHTS_DIR)
    harness = Harness(model, args.steps)
    targets = {"time": sorted(args.fractions, reverse=True), "compute": sorted(args.compute_fractions, reverse=True)}
    t2v, i2v = prompts(args.t2v, "t2v", 0), prompts(args.i2v, "i2v", 1)
    everything = [("t2v", p) for p in t2v] + [("i2v", p) for p in i2v]
    context = MethodContext(hsa_config=HSAConfig())

    calibration = [p for p in t2v if p[2] == "tuning"][: args.calibration_prompts]
    sweeps = sum(len(m.sweep) for m in methods if m.knob != "fraction" and not m.knob_from)
    tuning_prompts = [p for p in t2v if p[2] == "tuning"]
    tune = not args.no_tune and any(m.name == "hsa" for m in methods) and targets["compute"]
    slots = sum(len(t) for t in targets.values())
    total = (len(everything) * 2 + sweeps + (tuning_runs(targets["compute"], len(tuning_prompts)) if tune else 0)
             + len(everything) * slots * (len(methods) + bool(tune)))
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

    tuning_report, contexts = None, {m.name: context for m in methods}
    if tune:
        tuned, log = tune_hsa(harness, context, tuning_prompts, [references[("t2v", p[1])] for p in tuning_prompts],
                              targets["compute"], bar.update)
        tuning_report = {"budgets": targets["compute"], "best": _config_dict(tuned),
                         "best_psnr": max(e["psnr"] for e in log), "log": log}
        if tuned != context.hsa_config:
            tuned_method = Method("hsa_tuned", "budget", METHODS["hsa"].build, METHODS["hsa"].sweep,
                                  "HSA with the config tuned on the tuning prompts")
            contexts["hsa_tuned"] = MethodContext(hsa_config=tuned, mag_ratios=context.mag_ratios)
            curves.update(calibrate(harness, [tuned_method], contexts["hsa_tuned"], calibration, bar.update))
            methods = methods + [tuned_method]
    knob_source = {m.name: METHODS.get(m.knob_from, m) if m.knob_from else m for m in methods}
    knobs = {(m.name, match, t): choose_knob(knob_source[m.name], curves, match, t)
             for m in methods for match in MATCHES for t in targets[match]}

    samples, strip_clips = [], {}
    for mode, (caption, seed, split, image) in everything:
        reference = references[(mode, seed)][0]
        # the denominator is timed again here, next to the methods, not at the start of the run
        ref_seconds = harness.run(euler, caption, seed, image)[1].seconds
        done: dict[tuple[str, float], dict] = {}  # (method, knob) → its measurement on this prompt
        clips: dict[tuple[str, float], np.ndarray] = {}
        for match in MATCHES:
            for target in targets[match]:
                for method in methods:
                    knob = knobs[(method.name, match, target)]
                    key = (method.name, round(knob, 6))
                    if key not in done:
                        clip, result, used = timed_run(harness, method, knob, contexts[method.name], caption, seed,
                                                       image)
                        psnr, ssim = clip_fidelity(clip, reference)
                        adherence, _, first_error = Harness.adherence(clip, caption, image)
                        done[key] = {"knob": used, "seed": seed, "time_fraction": result.seconds / ref_seconds,
                                     "token_fraction": result.token_fraction,
                                     "compute_fraction": result.achieved_compute_fraction, "psnr": psnr, "ssim": ssim,
                                     "adherence": adherence, "first_frame_error": first_error or 0.0}
                        clips[key] = clip
                    if (mode, split, match, target) == ("t2v", "heldout", "time", targets["time"][-1]) \
                            and not strip_clips.get("caption"):  # a knob met at an earlier target ran once
                        strip_clips.setdefault("clips", {})[method.name] = clips[key]
                    samples.append({"mode": mode, "method": method.name, "match": match, "target_fraction": target,
                                    "split": split, **done[key]})
                    bar.update()
        if strip_clips.get("clips") and not strip_clips.get("caption"):
            strip_clips.update(caption=caption, reference=reference)
    bar.close()

    report = {
        "benchmark": "pareto",
        "command": "hsa-video bench pareto " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["bench", "pareto"]
        else "hsa-video bench pareto",
        "date": time.strftime("%Y-%m-%d"),
        "environment": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                        "torch": torch.__version__},
        "steps": args.steps, "guidance_scale": model.config.guidance_scale,
        "prompts": {"t2v": len(t2v), "i2v": len(i2v)},
        "targets": targets,
        "reference_seconds_median": float(np.median([s for _, s in references.values()])),
        "reference_adherence": {m: float(np.mean(v)) if v else float("nan") for m, v in reference_adherence.items()},
        "methods": {m.name: m.description for m in methods},
        "calibration": {name: {match: {f"{k:g}": round(v, 4) for k, v in curve.items()} for match, curve in c.items()}
                        for name, c in curves.items()},
        "hsa_tuning": tuning_report,
        "rows": summarise(samples),
        "samples": samples,
    }
    report["heterogeneity"] = heterogeneity(model, [p for p in t2v if p[2] == "tuning"][:4], args.steps)
    report["load"] = {"start": load_start, "end": round(os.getloadavg()[0], 2)}
    report["comparisons"] = comparisons(report)
    write_reports(report, args.out)
    if strip_clips.get("caption"):
        chosen = best_rows(report, "t2v", targets["time"][-1])
        order = [("reference (Euler 40)", strip_clips["reference"])]
        for name in [n for n in ("hsa_tuned", "hsa") if n in strip_clips["clips"]][:1] + chosen[:1]:
            order.append((f"{name} @ time {targets['time'][-1]:g}", strip_clips["clips"][name]))
        strip(order, strip_clips["caption"], args.out / "pareto_strip.png")
    print(render_markdown(report))
    print(f"wrote {args.out / 'pareto.json'}, pareto.md, pareto.png, pareto_strip.png", file=sys.stderr)
    return 0


def best_rows(report: dict, mode: str, target: float) -> list[str]:
    """Baseline methods at time ``target`` (held-out), best PSNR first."""
    rows = [r for r in report["rows"] if (r["mode"], r["split"], r["match"], r["target_fraction"]) ==
            (mode, "heldout", "time", target) and is_baseline(r["method"])]
    return [r["method"] for r in sorted(rows, key=lambda r: -r["psnr"])]
