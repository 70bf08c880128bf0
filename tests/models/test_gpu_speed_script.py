"""benchmarks/gpu_speed.py at toy size on the CPU, its memory pre-checks at full size, and a dry run of
scripts/gpu-checks, so the GPU checks cannot rot and a typo cannot waste a GPU run."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_speed.py"
GIB = 1024**3


@pytest.fixture(scope="module")
def gpu_speed():
    spec = importlib.util.spec_from_file_location("gpu_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through sys.modules
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def rows_of(configuration: dict) -> dict:
    return {(row["method"], row["budget"]): row for row in configuration["results"]}


def test_the_gpu_benchmark_runs_at_toy_size_and_writes_its_reports(gpu_speed, tmp_path):
    out = tmp_path / "gpu_speed.json"
    assert gpu_speed.main(["--tiny", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["steps"] == 20 and report["uniform_steps"] == 3 and report["diffusers"]
    assert [c["name"] for c in report["configurations"]] == ["wan2.1-1.3b", "wan2.1-14b"]
    for configuration in report["configurations"]:
        assert configuration["tokens"] == 48 and configuration["branches"] == 2
        rows = rows_of(configuration)
        assert list(rows) == [("euler", 1.0), ("hsa", 1.0), ("hsa", 0.5), ("hsa", 0.25)]
        euler = rows[("euler", 1.0)]
        assert euler["time_fraction"] == 1.0 and euler["steps_run"] == 3 and euler["scaled_to_steps"] == 20
        full = rows[("hsa", 1.0)]
        assert full["token_fraction"] == 1.0 and full["kv_cache_bytes"] == 0 and full["steps_run"] == 3
        for budget in (0.5, 0.25):
            row = rows[("hsa", budget)]
            assert abs(row["token_fraction"] - budget) <= 0.03 and row["steps_run"] == 20
            assert row["kv_cache_bytes"] > 0 and row["kv_cache_dtype"] == "float32" and row["finite"]
            assert row["time_fraction"] > 0
        assert configuration["solve_divisors_ms"] > 0
    markdown = out.with_suffix(".md").read_text()
    assert "## wan2.1-14b" in markdown and "| hsa | 0.25 |" in markdown


def test_a_second_run_merges_into_the_first_report(gpu_speed, tmp_path):
    out = tmp_path / "gpu_speed.json"
    gpu_speed.main(["--tiny", "--configs", "wan2.1-14b", "--budgets", "0.5", "--out", str(out)])
    gpu_speed.main(["--tiny", "--configs", "wan2.1-1.3b", "--budgets", "0.25", "--merge", "--out", str(out)])
    first, second = json.loads(out.read_text())["configurations"]
    assert (first["name"], second["name"]) == ("wan2.1-1.3b", "wan2.1-14b")
    assert "run" not in first and second["run"]["arguments"].endswith("--budgets 0.5 --out " + str(out))
    assert [row["budget"] for row in second["results"]] == [1.0, 0.5]


def test_the_full_sizes_are_the_wan_1_3b_and_14b_architectures_at_480p_81_frames(gpu_speed):
    assert gpu_speed.WAN21_1_3B["num_layers"] == 30 and gpu_speed.WAN21_1_3B["ffn_dim"] == 8960
    big = gpu_speed.WAN21_14B
    assert (big["num_layers"], big["num_attention_heads"] * big["attention_head_dim"], big["ffn_dim"]) == \
        (40, 5120, 13824)
    _, _, frames, height, width = gpu_speed.LATENT_480P_81
    assert frames * (height // 2) * (width // 2) == 32760  # (81 − 1)/4 + 1 frames, 480/8 × 832/8 latents


def test_ten_steps_cannot_reach_a_fifth_of_the_budget_and_say_so(gpu_speed, tmp_path):
    out = tmp_path / "gpu_speed.json"
    gpu_speed.main(["--tiny", "--configs", "wan2.1-1.3b", "--steps", "10", "--budgets", "0.2", "--out", str(out)])
    skipped = json.loads(out.read_text())["configurations"][0]["results"][-1]
    assert skipped["budget"] == 0.2 and skipped["skipped"].startswith("below the minimum budget 0.25")


@pytest.mark.parametrize("free_gib, expected", [(139.0, "bfloat16"), (79.0, "float8_e4m3fn"), (39.0, None)],
                         ids=["h200", "h100", "40gb"])
def test_the_14b_cache_at_480p_is_bf16_on_an_h200_float8_on_an_h100_and_refused_below(gpu_speed, free_gib,
                                                                                     expected):
    big = gpu_speed.WAN21_14B
    weights = gpu_speed.parameter_count(big) * 2
    assert 26 * GIB < weights < 27 * GIB
    plan = gpu_speed.MemoryPlan(weights, gpu_speed.working_bytes(big, 32760, 512, torch.bfloat16, 2, True),
                                int(free_gib * GIB), GIB)
    assert plan.model_refusal() is None
    adapter = SimpleNamespace(num_layers=40, width=5120)
    dtype, note = gpu_speed.choose_cache_dtype(None, adapter, 32760, 2, big, 512, torch.bfloat16,
                                               plan.free_bytes - weights, GIB, torch.device("cuda"))
    assert dtype == expected
    if expected == "bfloat16":
        assert note is None
    elif expected == "float8_e4m3fn":
        assert note.startswith("bfloat16 cache refused (the K/V cache needs") and note.endswith("float8_e4m3fn instead")
    else:
        assert "the K/V cache needs" in note and "float8_e4m3fn" in note


def test_a_model_that_cannot_fit_is_skipped_with_the_numbers(gpu_speed):
    big = gpu_speed.WAN21_14B
    plan = gpu_speed.MemoryPlan(gpu_speed.parameter_count(big) * 2,
                                gpu_speed.working_bytes(big, 32760, 512, torch.bfloat16, 2, True), 24 * GIB, GIB)
    assert plan.model_refusal().startswith("weights 26.61 GiB + a forward's working memory")


def test_the_pre_check_falls_back_to_a_float8_cache_and_skips_what_cannot_fit(gpu_speed, tmp_path):
    """--free-bytes pretends the device has that much free: the toy model's own numbers decide."""
    shape = gpu_speed.TINY_SHAPES["wan2.1-1.3b"]
    weights = gpu_speed.parameter_count(shape.config) * 4
    working = gpu_speed.working_bytes(shape.config, 48, 8, torch.float32, 2, True)
    float32_cache = 2 * 48 * 24 * 2 * 4 * 2  # layers × tokens × width × (K, V) × bytes × branches
    out = tmp_path / "gpu_speed.json"
    common = ["--tiny", "--configs", "wan2.1-1.3b", "--budgets", "1.0", "0.5", "--memory-margin-gib", "0",
              "--out", str(out)]

    gpu_speed.main([*common, "--free-bytes", str(weights + working + float32_cache // 2)])
    rows = rows_of(json.loads(out.read_text())["configurations"][0])
    assert rows[("hsa", 0.5)]["kv_cache_dtype"] == "float8_e4m3fn"
    assert rows[("hsa", 0.5)]["kv_cache_bytes"] == float32_cache // 4
    assert rows[("hsa", 0.5)]["kv_cache_note"].startswith("float32 cache refused")

    gpu_speed.main([*common, "--free-bytes", str(weights + working)])
    rows = rows_of(json.loads(out.read_text())["configurations"][0])
    assert "seconds_per_step" in rows[("euler", 1.0)] and "seconds_per_step" in rows[("hsa", 1.0)]
    assert "the K/V cache needs" in rows[("hsa", 0.5)]["skipped"]

    gpu_speed.main([*common, "--free-bytes", str(weights)])
    configuration = json.loads(out.read_text())["configurations"][0]
    assert configuration["skipped"].startswith("weights") and configuration["results"] == []


def test_the_gpu_scripts_parse():
    for script in ("scripts/gpu-checks", "scripts/gpu-wheels"):
        subprocess.run(["bash", "-n", script], cwd=ROOT, check=True)


def test_a_dry_run_of_the_gpu_checks_writes_every_report(tmp_path):
    """The whole script without a GPU: whatever wheels .whl/ holds installed into a scratch folder, the gpu
    tests collected and skipped, the benchmark at toy size, the reports written outside the repository."""
    out, reports = tmp_path / "out", tmp_path / "reports"
    out.mkdir()
    environment = {**os.environ, "OUT": str(out), "GPU_CHECKS_REPORTS": str(reports),
                   "GPU_CHECKS_SITE": str(tmp_path / "site"), "GPU_CHECKS_PYTHON": sys.executable,
                   "GPU_CHECKS_BENCH_ARGS": "--tiny --configs wan2.1-1.3b", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", "scripts/gpu-checks"], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {"gpu_checks.json", "gpu_speed.json", "gpu_speed.md",
                                               "gpu_tests.log", "gpu_tests.xml", "gpu_speed.log"}
    summary = json.loads((out / "gpu_checks.json").read_text())
    assert summary["tests_exit_code"] == 0 and summary["benchmark_exit_code"] == 0
    assert summary["counts"]["skipped"] > 0 and summary["counts"]["failure"] == summary["counts"]["error"] == 0
    assert any(t["test"].startswith("tests.gpu.") for t in summary["tests"])
    speed = json.loads((out / "gpu_speed.json").read_text())
    assert [c["name"] for c in speed["configurations"]] == ["wan2.1-1.3b"]
    assert "tests: 0 passed, 0 failed, 0 errors" in (out / "gpu_tests.log").read_text() + done.stdout
