"""``hsa-video bench pareto`` end to end at a toy size: knob calibration, rows, reports, plots."""

import json

import numpy as np
import pytest

from hsa_video.benchmarks.methods import METHODS, knob_for_target

from .test_cli import hsa_video


def test_knob_interpolation_inverts_monotone_curves():
    budget = METHODS["hsa"]
    assert knob_for_target(budget, {0.25: 0.4, 0.5: 0.6, 1.0: 1.0}, 0.6) == pytest.approx(0.5)
    assert knob_for_target(budget, {0.25: 0.4, 0.5: 0.6}, 0.1) == pytest.approx(0.25)  # clamps: the row shows the miss
    threshold = METHODS["easycache"]
    value = knob_for_target(threshold, {0.1: 0.8, 0.4: 0.5, 1.6: 0.3}, 0.5)
    assert value == pytest.approx(0.4)
    interval = METHODS["taylorseer"]
    assert knob_for_target(interval, {2: 0.7, 4: 0.45, 8: 0.3}, 0.4) == 4
    assert knob_for_target(METHODS["fewer_steps"], {}, 0.25) == 0.25


def test_bench_pareto_writes_rows_tables_and_plots(tmp_path):
    result = hsa_video("bench", "pareto", "--t2v", "2", "--i2v", "2", "--fractions", "0.5", "--compute-fractions", "0.5",
                       "--steps", "8", "--methods", "fewer_steps", "hsa", "hsa_fresh_context", "easycache", "taylorseer",
                       "--no-tune", "--calibration-prompts", "1", "--threads", "1", "--out", str(tmp_path))
    report = json.loads((tmp_path / "pareto.json").read_text())
    rows = report["rows"]
    assert {r["method"] for r in rows} == {"fewer_steps", "hsa", "hsa_fresh_context", "easycache", "taylorseer"}
    # the fresh-context oracle is not calibrated: it runs at HSA's knob on every prompt, for either match
    knobs = {(s["method"], s["mode"], s["seed"], s["match"]): s["knob"] for s in report["samples"]}
    assert all(knobs[("hsa_fresh_context", mode, seed, match)] == knob
               for (name, mode, seed, match), knob in knobs.items() if name == "hsa")
    assert "hsa_fresh_context" not in report["calibration"]
    assert {r["split"] for r in rows} == {"tuning", "heldout"} and {r["mode"] for r in rows} == {"t2v", "i2v"}
    assert {r["match"] for r in rows} == {"time", "compute"}
    for row in rows:
        assert set(row) >= {"mode", "method", "match", "split", "target_fraction", "time_fraction", "token_fraction",
                            "compute_fraction", "psnr", "ssim", "adherence"}
        assert 0 < row["time_fraction"] < 2 and 0 <= row["adherence"] <= 1 and -1 <= row["ssim"] <= 1
        assert 0 < row["compute_fraction"] <= 1
    fewer = next(r for r in rows if r["method"] == "fewer_steps" and r["mode"] == "t2v" and r["match"] == "time")
    assert fewer["token_fraction"] == fewer["compute_fraction"] == 0.5 and fewer["psnr"] < 60  # 4 of 8 steps
    # at matched compute a budget is its compute fraction; a knob that lands on both targets ran once
    hsa = [r for r in rows if r["method"] == "hsa" and r["match"] == "compute"]
    assert all(r["knob"] == 0.5 and abs(r["compute_fraction"] - 0.5) < 0.02 for r in hsa)
    fewer_runs = [s for s in report["samples"] if s["method"] == "fewer_steps" and s["seed"] == 0 and s["mode"] == "t2v"]
    assert len(fewer_runs) == 2 and fewer_runs[0]["time_fraction"] == fewer_runs[1]["time_fraction"]
    assert all(np.isfinite(r["psnr"]) for r in rows)
    assert set(report["calibration"]["hsa"]) == {"time", "compute"} and "fewer_steps" not in report["calibration"]
    assert (tmp_path / "pareto.png").stat().st_size > 0 and (tmp_path / "pareto_strip.png").stat().st_size > 0
    markdown = (tmp_path / "pareto.md").read_text()
    assert "matched time: target time fraction 0.5" in markdown and "matched compute: target compute fraction 0.5" in markdown
    assert "## HSA against the baselines" in markdown and "## Methods" in result.stdout
    entries = [c for c in report["comparisons"] if c["method"] == "hsa"]
    assert {(c["mode"], c["match"]) for c in entries} == {(m, k) for m in ("t2v", "i2v") for k in ("time", "compute")}
    heterogeneity = report["heterogeneity"]
    assert set(heterogeneity) >= {"token_cv", "step_cv", "skip_error_top_quarter", "score_top_quarter_hit",
                                  "bound_token", "bound_token_in_plans", "bound_step", "bound_joint", "step_change"}
    for name in ("bound_token", "bound_token_in_plans", "bound_step", "bound_joint"):
        assert 0 <= heterogeneity[name] < 1
    # more freedom never has less room: per (step, token) ≥ per step, and ≥ per token
    assert heterogeneity["bound_joint"] >= max(heterogeneity["bound_step"], heterogeneity["bound_token"]) - 1e-9
    assert 0.25 <= heterogeneity["skip_error_top_quarter"] <= 1  # the top quarter carries at least its share
    assert "best cut of the skip error" in markdown
    rendered = hsa_video("bench", "pareto", "--render-only", "--out", str(tmp_path))
    assert "## HSA against the baselines" in rendered.stdout


def test_bench_pareto_rejects_unknown_methods(tmp_path):
    result = hsa_video("bench", "pareto", "--methods", "teacache", "--out", str(tmp_path), check=False)
    assert result.returncode == 2 and "unknown methods ['teacache']" in result.stderr


def test_bench_pareto_refuses_an_oracle_without_its_method(tmp_path):
    result = hsa_video("bench", "pareto", "--methods", "fewer_steps", "hsa_fresh_context", "--out", str(tmp_path),
                       check=False)
    assert result.returncode == 2 and "hsa_fresh_context run at the knob of hsa; add it" in result.stderr
