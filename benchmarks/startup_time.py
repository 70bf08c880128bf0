"""Seconds from ``hsa-video serve`` to a listed model: what a newcomer waits before its first request.

    python benchmarks/startup_time.py                      # this checkout: cold and warm starts
    python benchmarks/startup_time.py --checkout /tmp/old  # another checkout's code, for a before/after

Each run starts ``serve`` (gateway + embedded worker) on a free port, polls ``GET /v1/models`` every
50 ms until the model is listed (before that, a create gets 404 ``model_not_found``), then submits a
2-step video and waits for it to complete. A cold run
starts from an empty data directory; a warm run reuses the previous run's (its timing cache). With
``--checkpoint`` it also serves a tiny random-init Wan 2.1 T2V checkpoint written by the tests'
fixture (``--model wan2.1-t2v-1.3b --model-path DIR``). Runs alternate between the configurations,
and the report gives every run and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def time_to_serve(checkout: Path, data_dir: Path, model: str, size: str, extra: list[str],
                  timeout: float) -> tuple[float, float]:
    """Seconds from spawning ``serve`` until ``model`` is listed, and until a first 2-step video is done.

    Listed can be early on a warm start: the previous run's card stays in the store until it expires,
    so the first finished video is the figure a newcomer waits for."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("HSA_")}
    env.update(PYTHONPATH=str(checkout), HSA_DATA_DIR=str(data_dir), OMP_NUM_THREADS="2")
    base = f"http://127.0.0.1:{port}/v1"
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "hsa_video.cli", "serve", "--port", str(port),
                                "--log-level", "warning", *extra], cwd=checkout, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    listed = video_id = None
    try:
        while time.perf_counter() - started < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited with code {process.returncode}")
            try:
                if listed is None and any(card["id"] == model for card in
                                          httpx.get(f"{base}/models", timeout=2).json()["data"]):
                    listed = time.perf_counter() - started
                if listed is not None and video_id is None:
                    created = httpx.post(f"{base}/videos", timeout=5, json={
                        "prompt": "a red car", "model": model, "size": size, "steps": 2, "budget": 1.0, "seed": 1})
                    video_id = created.json()["id"] if created.status_code == 200 else None
                if video_id is not None:
                    status = httpx.get(f"{base}/videos/{video_id}", timeout=2).json()["status"]
                    if status == "completed":
                        return listed, time.perf_counter() - started
                    if status in ("failed", "cancelled"):
                        raise RuntimeError(f"the first video {status}")
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"no video from {model} after {timeout} s")
    finally:
        os.killpg(process.pid, 15)
        process.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the code to start (default: this checkout)")
    parser.add_argument("--label", default=None, help="name of this checkout in the report (default: its commit)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each configuration (default 3)")
    parser.add_argument("--checkpoint", action="store_true", help="also serve a tiny Wan 2.1 T2V checkpoint")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "startup.json",
                        help="JSON report; rows of the same label are replaced, others kept (Markdown beside it)")
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    label = args.label or subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                                         capture_output=True, text=True).stdout.strip()

    with tempfile.TemporaryDirectory(prefix="hsa-startup-") as folder:
        folder = Path(folder)
        configurations = {"tiny": ("tiny", "32x32", [])}
        if args.checkpoint:
            sys.path.insert(0, str(ROOT))
            from tests.models.checkpoints import write_checkpoint

            directory = write_checkpoint("wan2.1-t2v-1.3b", folder / "wan")
            configurations["wan2.1-t2v-1.3b (tiny random checkpoint)"] = (
                "wan2.1-t2v-1.3b", "64x64", ["--model", "wan2.1-t2v-1.3b", "--model-path", str(directory),
                                    "--sizes", "64x64", "--num-frames", "9"])
        runs: list[dict] = []
        for run in range(args.runs):
            for name, (model, size, extra) in configurations.items():
                data_dir = folder / f"{name.split()[0]}-{run}"
                for start in ("cold", "warm"):  # warm: the same data directory again
                    listed, first_video = time_to_serve(checkout, data_dir, model, size, extra, args.timeout)
                    runs.append({"checkout": label, "configuration": name, "start": start,
                                 "listed": round(listed, 2), "first_video": round(first_video, 2)})
                    print(f"{label} {name} {start}: listed {listed:.2f} s, first video {first_video:.2f} s", flush=True)

    rows = []
    for name in dict.fromkeys(run["configuration"] for run in runs):
        for start in ("cold", "warm"):
            chosen = [run for run in runs if run["configuration"] == name and run["start"] == start]
            rows.append({"checkout": label, "configuration": name, "start": start,
                         "listed_median_s": round(statistics.median(run["listed"] for run in chosen), 2),
                         "first_video_median_s": round(statistics.median(run["first_video"] for run in chosen), 2),
                         "first_video_s": [run["first_video"] for run in chosen]})
    previous = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    report = {
        "benchmark": "seconds from `hsa-video serve` to the model listed by GET /v1/models and to a first "
                     "finished 2-step video",
        "command": f"python benchmarks/startup_time.py --checkout <dir> --runs {args.runs}"
                   + (" --checkpoint" if args.checkpoint else ""),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": [row for row in previous["rows"] if row["checkout"] != label] + rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# Start-up time", "", f"{report['benchmark']}; `{report['command']}`, "
             f"{report['machine']['cores']} cores, updated {report['updated']}.", "",
             "| checkout | configuration | start | listed (median s) | first video (median s) "
             "| first video, each run (s) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {row['checkout']} | {row['configuration']} | {row['start']} | {row['listed_median_s']} | "
              f"{row['first_video_median_s']} | {', '.join(map(str, row['first_video_s']))} |"
              for row in report["rows"]]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
