"""The installed ``hsa-video`` entry point, run as users run it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXE = shutil.which("hsa-video") or f"{sys.executable} -m hsa_video.cli"


def hsa_video(*args, check=True):
    return subprocess.run([*EXE.split(), *args], capture_output=True, text=True, check=check, timeout=600)


def test_help_lists_the_commands():
    out = hsa_video("--help").stdout
    for command in ("serve", "worker", "hash-key", "generate", "train-tiny", "eval-tiny", "bench"):
        assert command in out
    assert "speed" in hsa_video("bench", "--help").stdout


def test_hash_key_prints_the_digest_settings_expect():
    import hashlib

    assert hsa_video("hash-key", "sk-abc").stdout.strip() == hashlib.sha256(b"sk-abc").hexdigest()
    generated = hsa_video("hash-key")
    key = generated.stderr.split("key:")[1].strip()
    assert generated.stdout.strip() == hashlib.sha256(key.encode()).hexdigest()


def test_worker_refuses_an_unknown_model():
    result = hsa_video("worker", "--model", "sora-2", check=False)
    assert result.returncode == 2 and "unknown model 'sora-2'; known: tiny" in result.stderr


def test_version():
    assert hsa_video("--version").stdout.startswith("hsa-video ")


def test_bench_speed_writes_its_report_in_the_documented_shape(tmp_path):
    result = hsa_video(
        "bench", "speed", "--frames", "2", "--height", "8", "--width", "8", "--layers", "1", "--heads", "1",
        "--head-dim", "24", "--text-tokens", "4", "--steps", "20", "--repeats", "1", "--budgets", "1.0", "0.05",
        "--out", str(tmp_path),
    )
    report = json.loads((tmp_path / "hsa_speed.json").read_text())
    assert report["tokens"] == 2 * 4 * 4 and report["steps"] == 20
    methods = [(r["method"], r["budget"]) for r in report["results"]]
    assert methods == [("euler", 1.0), ("hsa", 1.0), ("hsa", 0.05)]
    for row in report["results"][:2]:
        assert set(row) >= {"method", "budget", "seconds_median", "time_fraction", "token_fraction"}
    assert report["results"][0]["time_fraction"] == 1.0
    assert "below the minimum budget" in report["results"][2]["skipped"]
    assert "| euler | 1 |" in (tmp_path / "hsa_speed.md").read_text()
    assert "| euler | 1 |" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "speed", "--height", "7", "--repeats", "1"], "error [invalid_grid]: latent height 7"),
        (["generate", "--prompt", "x", "--budget", "1.5"], r"error [invalid_config]: budget must be in (0, 1]"),
        (["generate", "--prompt", "x", "--weights", "/nonexistent"], "no tiny-model weights in /nonexistent"),
    ],
)
def test_user_errors_are_one_clear_line_and_exit_2(args, message):
    result = hsa_video(*args, check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("flags, logged", [((), True), (("--no-access-log",), False)])
def test_serve_logs_each_request_unless_told_not_to(tmp_path, flags, logged):
    import httpx

    from tests.services import Process, free_port, hsa_video_command, service_env, wait_until

    port = free_port()
    gateway = Process(hsa_video_command("serve", "--no-worker", "--port", str(port), *flags), tmp_path / "gateway.log",
                      env=service_env(data_dir=str(tmp_path / "data")))
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200, 60,
                   "gateway up", gateway)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/videos/video_0123456789abcdef").status_code == 404
    finally:
        gateway.stop()
    log = (tmp_path / "gateway.log").read_text()
    assert "Application startup complete" in log  # the gateway's own log stays on either way
    assert ('"GET /v1/videos/video_0123456789abcdef HTTP/1.1" 404' in log) == logged


def test_sigterm_to_serve_stops_its_embedded_worker(tmp_path):
    """SIGTERM to the serve process alone (as `kill PID` or a process manager sends it), not to its
    group: the gateway shuts down, stops the worker it supervises and exits 0, leaving no orphan."""
    import os
    import signal

    import httpx

    from tests.services import Process, free_port, hsa_video_command, service_env, wait_until

    port = free_port()
    serve = Process(hsa_video_command("serve", "--port", str(port)), tmp_path / "serve.log",
                    env=service_env(data_dir=str(tmp_path / "data")))
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()["models"] == {"tiny": 1},
                   180, "the embedded worker ready", serve)
        pid = serve.popen.pid
        [worker] = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        os.kill(pid, signal.SIGTERM)
        assert serve.popen.wait(60) == 0, serve.tail()
        assert not Path(f"/proc/{worker}").exists() or "zombie" in Path(f"/proc/{worker}/status").read_text()
    finally:
        serve.kill()
        try:  # a worker the serve process left behind (the failure this test is for) is still in its group
            os.killpg(serve.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
