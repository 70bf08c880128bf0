"""benchmarks/gpu_speed.py at toy size on the CPU, so the GPU check cannot rot."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_speed.py"


@pytest.fixture(scope="module")
def gpu_speed():
    spec = importlib.util.spec_from_file_location("gpu_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_benchmark_runs_at_toy_size_and_writes_its_report(gpu_speed, tmp_path):
    out = tmp_path / "gpu_speed.json"
    assert gpu_speed.main(["--tiny", "--repeats", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["tokens"] == 48 and report["steps"] == 20
    rows = {(row["method"], row["budget"]): row for row in report["results"]}
    assert list(rows) == [("euler", 1.0), ("hsa", 1.0), ("hsa", 0.5), ("hsa", 0.25)]
    assert rows[("euler", 1.0)]["time_fraction"] == 1.0
    assert rows[("hsa", 1.0)]["token_fraction"] == 1.0 and rows[("hsa", 1.0)]["kv_cache_bytes"] == 0
    for budget in (0.5, 0.25):
        assert abs(rows[("hsa", budget)]["token_fraction"] - budget) <= 0.03
        assert rows[("hsa", budget)]["kv_cache_bytes"] > 0


def test_the_full_size_is_the_wan_1_3b_architecture_at_480p_81_frames(gpu_speed):
    assert gpu_speed.WAN21_1_3B["num_layers"] == 30 and gpu_speed.WAN21_1_3B["ffn_dim"] == 8960
    _, _, frames, height, width = gpu_speed.LATENT_480P_81
    assert frames * (height // 2) * (width // 2) == 32760  # (81 − 1)/4 + 1 frames, 480/8 × 832/8 latents


def test_ten_steps_cannot_reach_a_quarter_budget_and_say_so(gpu_speed, tmp_path):
    out = tmp_path / "gpu_speed.json"
    gpu_speed.main(["--tiny", "--steps", "10", "--repeats", "1", "--budgets", "0.25", "--out", str(out)])
    skipped = json.loads(out.read_text())["results"][-1]
    assert skipped["budget"] == 0.25 and skipped["skipped"].startswith("below the minimum budget 0.34")
