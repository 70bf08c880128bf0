"""``hsa-video bench sla``: deadline attainment under open-loop load, fixed budgets against SLA budgets.

The real stack on loopback (redis-server, a Celery worker with 1 or 2 prefork processes serving the
tiny model, the gateway), driven over HTTP. For each worker count, each load and each policy:

1. Arrivals: a Poisson process at ``rate`` jobs/s for ``--duration`` seconds — the same arrival times
   (seeded) for every policy at that load, so the policies face identical traffic. Rates are given
   as loads relative to the capacity at full budget (the throughput of the workers kept busy with a
   backlog of full-budget jobs, measured first on the same stack), so the benchmark means the same on
   any machine.
2. Every request carries the same deadline (``--deadline-factor`` × the service time at b = 1).
   Policies: ``fixed-1.0`` and ``fixed-0.5`` send an explicit budget (always accepted, never adapted);
   ``sla`` sends only the deadline: the gateway picks the budget, rejects with 429 when even the
   smallest budget cannot make it, and the worker re-plans at start and while sampling.
3. Once every accepted job is terminal, the job records (float timestamps) are read from Redis.

Per row: attainment (jobs completed by their deadline / jobs submitted — a rejection counts as a
miss), the same over accepted jobs, mean budget run and compute fraction achieved, p50/p95
completion time (submission → downloadable video), rejections; and the cost model's prediction
error |predicted − actual| / actual of the completion time the gateway predicted at submission.
Writes ``sla.json``, ``sla.md`` and ``sla.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

POLICIES = {"fixed-1.0": {"budget": 1.0}, "fixed-0.5": {"budget": 0.5}, "sla": {}}
PROMPTS = [
    "a red circle moving left on a plain blue background",
    "a yellow square moving up on a green striped background",
    "a white triangle moving right on an orange checkered background",
    "a cyan circle moving down on a purple gradient background",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker process counts, one stack each (default 1 2)")
    parser.add_argument("--loads", type=float, nargs="+", default=[0.7, 1.4],
                        help="arrival rates as multiples of the capacity at budget 1.0 (default 0.7 1.4)")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of arrivals per cell (default 60)")
    parser.add_argument("--deadline-factor", type=float, default=3.0,
                        help="deadline = this × the measured service time at budget 1.0 (default 3)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--size", default="128x128")
    parser.add_argument("--seed", type=int, default=0, help="seeds the arrival times")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="report directory")
    parser.add_argument("--render-only", action="store_true", help="re-render sla.md/.png from sla.json")


def poisson_arrivals(rate: float, duration: float, seed: int) -> list[float]:
    """Arrival offsets (s) of a Poisson process at ``rate`` per second over ``duration`` seconds."""
    rng, times, now = random.Random(seed), [], 0.0
    while True:
        now += rng.expovariate(rate)
        if now >= duration:
            return times
        times.append(now)


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Submission:
    index: int
    status_code: int
    job_id: str | None = None
    error_code: str | None = None


def drive(base_url: str, arrivals: list[float], body_for) -> list[Submission]:
    """Open loop: POST request ``i`` at ``arrivals[i]`` seconds from now, whatever the responses do."""
    import httpx

    local = threading.local()

    def post(index: int) -> Submission:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base_url, timeout=30)
        response = local.client.post("/v1/videos", json=body_for(index))
        body = response.json()
        if response.status_code == 200:
            return Submission(index, 200, job_id=body["id"])
        return Submission(index, response.status_code, error_code=(body.get("error") or {}).get("code"))

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=32) as pool:
        futures = []
        for index, offset in enumerate(arrivals):
            delay = start + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(post, index))
        return [future.result() for future in futures]


def wait_terminal(store, job_ids: list[str], timeout: float) -> list:
    """The job records once all are terminal (completed, failed, cancelled)."""
    deadline = time.monotonic() + timeout
    while True:
        records = [store.get(job_id) for job_id in job_ids]
        if all(record is not None and record.status.terminal for record in records):
            return records
        if time.monotonic() > deadline:
            pending = sum(1 for r in records if r is None or not r.status.terminal)
            raise TimeoutError(f"{pending} jobs still not finished after {timeout:.0f} s")
        time.sleep(0.5)


def summarise(rate: float, load: float, workers: int, policy: str, submissions: list[Submission],
              records: list) -> dict:
    completed = [r for r in records if r.status.value == "completed"]
    durations = [r.completed_at - r.created_at for r in completed]
    met = [r for r in completed if r.completed_at <= r.spec.deadline_at]
    errors = prediction_errors(completed)
    rejected = sum(1 for s in submissions if s.status_code == 429)
    return {
        "rate": round(rate, 4), "load": load, "workers": workers, "policy": policy,
        "submitted": len(submissions), "accepted": len(records), "rejected": rejected,
        "other_errors": len(submissions) - len(records) - rejected,
        "completed": len(completed), "failed": sum(1 for r in records if r.status.value == "failed"),
        "met": len(met),
        "attainment": round(len(met) / len(submissions), 4) if submissions else None,
        "attainment_of_accepted": round(len(met) / len(records), 4) if records else None,
        "mean_budget": _mean([r.stats.get("budget", r.plan.budget) for r in completed]),
        "mean_budget_at_submission": _mean([r.stats.get("budget_at_submission", r.plan.budget) for r in completed]),
        "mean_achieved_compute_fraction": _mean([r.stats.get("achieved_compute_fraction") for r in completed]),
        "p50_s": _round(percentile(durations, 50)), "p95_s": _round(percentile(durations, 95)),
        "prediction_error_p50": _round(percentile(errors, 50)), "prediction_error_p95": _round(percentile(errors, 95)),
        "prediction_errors": [round(e, 4) for e in errors],
    }


def prediction_errors(completed: list) -> list[float]:
    """|predicted − actual| / actual of each job's completion time, as predicted at submission."""
    errors = []
    for record in completed:
        if record.plan.predicted_completion_at is None:
            continue
        actual = record.completed_at - record.created_at
        predicted = record.plan.predicted_completion_at - record.created_at
        errors.append(abs(predicted - actual) / actual)
    return errors


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 4) if values else None


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def measure_service(base_url: str, store, workers: int, args, jobs_per_worker: int = 4) -> float:
    """Seconds of worker time per job at budget 1.0 when the workers are kept busy: a backlog of
    ``jobs_per_worker`` × ``workers`` jobs submitted at once, service = workers × (last completion −
    first start) / jobs — the sustained throughput the loads are multiples of. (Timing jobs one at a
    time, or one per worker, overstated the service time by ~30%: the loads were lighter
    than labelled.) A first round of one job per worker warms each process up, unmeasured. The
    workers' own start-up calibration is not trusted for this: a noisy neighbour during those few
    seconds skews it (the EWMA corrects the workers' predictions later, not the benchmark's rates)."""
    import httpx

    def submit(client, count: int, first_seed: int) -> list[str]:
        return [client.post("/v1/videos", json={"prompt": PROMPTS[k % len(PROMPTS)], "model": "tiny",
                                                "size": args.size, "steps": args.steps, "budget": 1.0,
                                                "seed": first_seed + k}).json()["id"] for k in range(count)]

    with httpx.Client(base_url=base_url, timeout=30) as client:
        for rounds, count in ((0, workers), (1, jobs_per_worker * workers)):
            records = wait_terminal(store, submit(client, count, 10_000 + 100 * rounds), timeout=600)
            for record in records:
                if record.status.value != "completed":
                    raise RuntimeError(f"warm-up job {record.id} {record.status.value}: {record.error}")
    busy = max(r.completed_at for r in records) - min(r.started_at for r in records)
    return workers * busy / len(records)


def served_timing(store, size: str):
    """The tiny worker's timing model of the benchmark's clips (``size`` × the model's 16 frames)."""
    card = next(card for card in store.models() if card.id == "tiny")
    width, height = map(int, size.split("x"))
    return card.shape(width, height, card.limits.num_frames[0]).timing


def run_stack(workers: int, args, progress) -> tuple[list[dict], dict]:
    from ..harness.stack import started_stack

    with tempfile.TemporaryDirectory(prefix="hsa-bench-sla-") as folder, \
            started_stack(Path(folder), None, api_key=None) as stack:
        stack.start_worker(concurrency=workers)
        stack.wait_for_workers(workers)
        store = stack.store
        timing = served_timing(store, args.size)
        predicted_service = timing.service_seconds(args.steps, 1.0)
        full_service = measure_service(stack.base_url, store, workers, args)
        deadline_s = round(args.deadline_factor * full_service, 2)
        capacity = workers / full_service
        calibration = {"workers": workers, "timing_at_start": served_timing(store, args.size).model_dump(),
                       "predicted_service_s_at_start": round(predicted_service, 3),
                       "service_s_at_budget_1": round(full_service, 3),
                       "capacity_jobs_per_s_at_budget_1": round(capacity, 4), "deadline_s": deadline_s}
        rows = []
        for load_index, load in enumerate(args.loads):
            rate = load * capacity
            arrivals = poisson_arrivals(rate, args.duration, seed=args.seed * 1000 + load_index)
            for policy in args.policies:
                def body(index: int, policy=policy) -> dict:
                    return {"prompt": PROMPTS[index % len(PROMPTS)], "model": "tiny", "size": args.size,
                            "steps": args.steps, "seed": index, "deadline_s": deadline_s, **POLICIES[policy]}

                submissions = drive(stack.base_url, arrivals, body)
                job_ids = [s.job_id for s in submissions if s.job_id]
                records = wait_terminal(store, job_ids, timeout=args.duration * 4 + 120)
                row = summarise(rate, load, workers, policy, submissions, records)
                row["deadline_s"] = deadline_s
                rows.append(row)
                progress(row)
        return rows, calibration


def run(args: argparse.Namespace) -> int:
    json_path = args.out / "sla.json"
    if args.render_only:
        write_reports(json.loads(json_path.read_text()), args.out)
        return 0
    if any(policy not in POLICIES for policy in args.policies):
        raise ValueError(f"policies: choose from {', '.join(POLICIES)}")
    cells = len(args.workers) * len(args.loads) * len(args.policies)
    print(f"bench sla: {cells} cells of {args.duration:g} s arrivals each", file=sys.stderr)

    def progress(row: dict) -> None:
        print(f"  workers {row['workers']}  load {row['load']:.2f} ({row['rate']:.3f}/s)  {row['policy']:9s}  "
              f"attainment {row['attainment']:.1%}  rejected {row['rejected']:3d}  budget {row['mean_budget']}  "
              f"p50 {row['p50_s']} s  p95 {row['p95_s']} s", file=sys.stderr, flush=True)

    # a SIGTERM (timeout, CI cancel) unwinds like Ctrl-C, so the stack's processes are stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    rows, calibrations = [], []
    for workers in args.workers:
        stack_rows, calibration = run_stack(workers, args, progress)
        rows += stack_rows
        calibrations.append(calibration)
    all_errors = [e for row in rows for e in row["prediction_errors"]]
    report = {
        "benchmark": "sla",
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "config": {"duration_s": args.duration, "loads": args.loads, "policies": args.policies,
                   "deadline_factor": args.deadline_factor, "steps": args.steps, "size": args.size,
                   "seed": args.seed, "torch_threads_per_worker": 1},
        "calibration": calibrations,
        "rows": rows,
        "prediction_error": {"n": len(all_errors), "p50": _round(percentile(all_errors, 50), 4),
                             "p95": _round(percentile(all_errors, 95), 4)},
        "seconds": round(time.time() - started, 1),
    }
    write_reports(report, args.out)
    print(f"wrote {json_path}, sla.md, sla.png", file=sys.stderr)
    return 0


def write_reports(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "sla.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "sla.md").write_text(render_markdown(report))
    plot(report, out / "sla.png")


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _number(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_markdown(report: dict) -> str:
    config = report["config"]
    lines = [
        "# SLA budgets under load",
        "",
        f"`hsa-video bench sla` on {report['machine']['platform']}: the real stack on loopback (redis-server, "
        "Celery prefork workers with the tiny model, one torch thread each, the gateway), open-loop Poisson "
        f"arrivals for {config['duration_s']:g} s per cell, {config['steps']} steps at {config['size']}. The same "
        "arrival times for every policy at a load. Attainment counts a rejection as a miss; completion time is "
        "submission → downloadable video (job store timestamps). Total run "
        f"{report['seconds'] / 60:.1f} min.",
        "",
    ]
    for calibration in report["calibration"]:
        timing = calibration["timing_at_start"]
        lines.append(f"- {calibration['workers']} worker(s): measured service {calibration['service_s_at_budget_1']} s "
                     f"of worker time per job at b = 1 (throughput with a backlog; the workers' start-up calibration predicted "
                     f"{calibration['predicted_service_s_at_start']} s: α {timing['step_seconds_fixed']:.4f} s/step, "
                     f"β {timing['step_seconds_per_budget']:.4f} s/step per unit budget, fixed "
                     f"{timing['job_seconds_fixed']:.3f} s), capacity {calibration['capacity_jobs_per_s_at_budget_1']:.3f} "
                     f"jobs/s at b = 1, deadline {calibration['deadline_s']} s")
    lines += ["", "| workers | load | rate (jobs/s) | policy | submitted | attainment | of accepted | rejected | "
              "mean budget | compute fraction | p50 (s) | p95 (s) | prediction error p50 / p95 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(
            f"| {row['workers']} | {row['load']:g} | {row['rate']:.3f} | {row['policy']} | {row['submitted']} | "
            f"**{_percent(row['attainment'])}** | {_percent(row['attainment_of_accepted'])} | {row['rejected']} | "
            f"{_number(row['mean_budget'], 3)} | {_number(row['mean_achieved_compute_fraction'], 3)} | "
            f"{_number(row['p50_s'])} | {_number(row['p95_s'])} | "
            f"{_percent(row['prediction_error_p50'])} / {_percent(row['prediction_error_p95'])} |")
    error = report["prediction_error"]
    lines += ["", f"Cost-model prediction error of the completion time, all {error['n']} completed jobs: "
              f"p50 {_percent(error['p50'])}, p95 {_percent(error['p95'])}.", "", "## Findings", ""]
    lines += [f"- {finding}" for finding in findings(report)]
    lines += ["", "![attainment, budget and p95 completion time by load](sla.png)", ""]
    return "\n".join(lines)


def findings(report: dict) -> list[str]:
    out = []
    rows = report["rows"]
    for workers in sorted({row["workers"] for row in rows}):
        cells = {(row["load"], row["policy"]): row for row in rows if row["workers"] == workers}
        for load in sorted({load for load, _ in cells}):
            full, sla = cells.get((load, "fixed-1.0")), cells.get((load, "sla"))
            if full and sla and full["attainment"] is not None and full["attainment"] < 0.5:
                verdict = "meets" if sla["attainment"] >= 0.99 else "misses"
                out.append(f"{workers} worker(s), load {load:g}: fixed 1.0 attains {_percent(full['attainment'])}; "
                           f"SLA budgets attain {_percent(sla['attainment'])} ({verdict} the ≥ 99% target) at mean "
                           f"budget {_number(sla['mean_budget'], 3)}, {sla['rejected']} rejected.")
    if not out:
        out.append("No load in this run pushed fixed 1.0 below 50% attainment; raise --loads to test the target.")
    return out


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"fixed-1.0": "#d62728", "fixed-0.5": "#ff7f0e", "sla": "#1f77b4"}
    worker_counts = sorted({row["workers"] for row in report["rows"]})
    panels = [("attainment", "deadline attainment", 1.0), ("mean_budget", "mean budget run", 1.0),
              ("p95_s", "p95 completion (s)", None)]
    figure, axes = plt.subplots(len(worker_counts), len(panels), figsize=(4.2 * len(panels), 3.2 * len(worker_counts)),
                                squeeze=False)
    for r, workers in enumerate(worker_counts):
        for c, (key, label, top) in enumerate(panels):
            axis = axes[r][c]
            for policy, colour in colours.items():
                points = sorted((row["load"], row[key]) for row in report["rows"]
                                if row["workers"] == workers and row["policy"] == policy and row[key] is not None)
                if points:
                    axis.plot(*zip(*points), marker="o", color=colour, label=policy)
            if key == "p95_s":
                deadline = next(c["deadline_s"] for c in report["calibration"] if c["workers"] == workers)
                axis.axhline(deadline, color="grey", linestyle="--", linewidth=1, label="deadline")
            if top is not None:
                axis.set_ylim(0, top * 1.05)
            axis.set_xlabel("load (× capacity at budget 1.0)")
            axis.set_ylabel(label)
            axis.set_title(f"{workers} worker(s): {label}")
            axis.grid(alpha=0.3)
            if r == 0 and c == 0:
                axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
