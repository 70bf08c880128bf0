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
    result = hsa_video("bench", "pareto", "--t2v", "2", "--i2v", "2", "--fractions", "0.5", "--steps", "8",
                       "--methods", "fewer_steps", "hsa", "hsa_fresh_context", "easycache", "--no-tune",
                       "--calibration-prompts", "1",
                       "--threads", "1", "--out", str(tmp_path))
    report = json.loads((tmp_path / "pareto.json").read_text())
    rows = report["rows"]
    assert {r["method"] for r in rows} == {"fewer_steps", "hsa", "hsa_fresh_context", "easycache"}
    # the fresh-context oracle is not calibrated to time: it runs at HSA's budget on every prompt
    knobs = {(s["method"], s["mode"], s["seed"]): s["knob"] for s in report["samples"]}
    assert all(knobs[("hsa_fresh_context", mode, seed)] == knob for (name, mode, seed), knob in knobs.items()
               if name == "hsa")
    assert "hsa_fresh_context" not in report["calibration"]
    assert {r["split"] for r in rows} == {"tuning", "heldout"} and {r["mode"] for r in rows} == {"t2v", "i2v"}
    for row in rows:
        assert set(row) >= {"method", "target_fraction", "time_fraction", "token_fraction", "psnr", "ssim",
                            "adherence", "split"}
        assert 0 < row["time_fraction"] < 2 and 0 <= row["adherence"] <= 1 and -1 <= row["ssim"] <= 1
    fewer = next(r for r in rows if r["method"] == "fewer_steps" and r["mode"] == "t2v")
    assert fewer["token_fraction"] == 0.5 and fewer["psnr"] < 60  # 4 of 8 steps is not the reference
    assert all(np.isfinite(r["psnr"]) for r in rows)
    assert "hsa" in report["calibration"] and "fewer_steps" not in report["calibration"]
    assert (tmp_path / "pareto.png").stat().st_size > 0 and (tmp_path / "pareto_strip.png").stat().st_size > 0
    assert "target time fraction 0.5" in (tmp_path / "pareto.md").read_text()
    assert "## Methods" in result.stdout and isinstance(report["findings"], list)
    heterogeneity = report["heterogeneity"]
    assert set(heterogeneity) == {"token_cv", "step_cv", "skip_error_top_quarter", "score_top_quarter_hit", "prompts"}
    assert 0.25 <= heterogeneity["skip_error_top_quarter"] <= 1  # the top quarter carries at least its share
    assert 0 <= heterogeneity["score_top_quarter_hit"] <= 1
    assert "of the cost of skipping a step" in (tmp_path / "pareto.md").read_text()


def test_bench_pareto_rejects_unknown_methods(tmp_path):
    result = hsa_video("bench", "pareto", "--methods", "teacache", "--out", str(tmp_path), check=False)
    assert result.returncode == 2 and "unknown methods ['teacache']" in result.stderr


def test_bench_pareto_refuses_an_oracle_without_its_method(tmp_path):
    result = hsa_video("bench", "pareto", "--methods", "fewer_steps", "hsa_fresh_context", "--out", str(tmp_path),
                       check=False)
    assert result.returncode == 2 and "hsa_fresh_context run at the knob of hsa; add it" in result.stderr
