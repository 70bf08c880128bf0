"""``hsa-video bench reliability``'s load part, small: real gateway processes, its report's shape."""

import json

from tests.services import ROOT, require_binary


def test_the_load_bench_writes_the_documented_figures(tmp_path):
    import subprocess
    import sys

    require_binary("redis-server")
    result = subprocess.run([sys.executable, "-m", "hsa_video.cli", "bench", "reliability", "--skip", "faults", "fuzz",
                             "--gateway-processes", "2", "--rates", "20", "40", "--stage-seconds", "1",
                             "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    load = json.loads((tmp_path / "reliability.json").read_text())["load"]
    assert set(load) >= {"submit_rps", "submit_p50_ms", "submit_p99_ms", "status_p99_ms", "saturation_rps"}
    assert load["redis_appendfsync"] == "everysec" and load["gateway_processes"] == 2
    assert load["saturated"] is False  # a light load: saturation_rps is only a lower bound, and says so
    stages = load["configurations"]["2"]["stages"]
    assert [stage["offered_rps"] for stage in stages] == [20, 40]
    for stage in stages:  # a light load is served in full, without errors
        assert stage["errors"] == {} and stage["not_sent"] == 0 and stage["achieved_rps"] > 0.8 * stage["offered_rps"]
        assert stage["gateway_cpu_ms_per_request"] > 0 and stage["submit_p50_ms"] > 0
        # the host's CPU steal beside the latencies (Linux: /proc/stat)
        assert 0 <= stage["host_steal_percent"] <= 100 and 0 <= stage["steal_free_share"] <= 1
    report = (tmp_path / "reliability.md").read_text()
    assert "`appendfsync everysec`" in report and "| 40 |" in report and "host steal %" in report
    assert "kept up with every rate offered" in report
