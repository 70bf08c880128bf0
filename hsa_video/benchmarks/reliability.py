"""``hsa-video bench reliability``: faults survived, bad input refused, and the gateway's load figures.

Runs on the production stack, every part a real process on loopback: redis-server with its
append-only file, a moto S3 server, Celery workers (``hsa-video worker``) and the gateway (``hsa-video
serve`` with ``HSA_REDIS_URL``: uvicorn, Redis job store, Celery queue, S3 storage). It drives the same
harness as ``tests/reliability`` (``hsa_video.harness``), so it runs from a source checkout with the
``dev`` extra installed and redis-server on PATH.

1. Faults: ``--kills`` rounds of "SIGKILL the pool process computing a job" on two workers, then
   ``--redis-restarts`` restarts of Redis with jobs queued and one running. Every job must complete
   exactly once with one MP4 (lost: not completed; duplicate: completed twice or more than one
   object). Recovery: kill → the job completed elsewhere; Redis back → the gateway answers and the
   queue moves again.
2. Fuzz: schemathesis over the gateway's OpenAPI schema (valid and schema-violating requests); any
   5xx is a server error.
3. Load: an open-loop generator (requests leave on a fixed schedule, latency counts from the
   scheduled time, so a slow server is not hidden by a slow client) offers a submit/status mix at
   increasing rates. No worker runs (a stand-in model card is registered): the figures are the
   gateway's, and queued jobs pile up in Redis as they would under a burst. Beside each stage's
   latencies, the CPU time the host took from this virtual machine (steal, ``host_steal.py``) and the
   p99 of the requests that ran while it took none.

Writes ``reliability.json`` and ``reliability.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from .host_steal import StealSampler

SUBMIT_BODY = json.dumps({"prompt": "a red circle moving left on a plain blue background", "size": "32x32",
                          "steps": 20, "seed": 1}).encode()
LOAD_KEYS = 100  # tenants of the load test: each gets its own rate-limit bucket, as in production
TARGET_RPS, TARGET_SUBMIT_P99_MS = 500, 25.0
LOAD_REDIS_FSYNC = "everysec"  # docker-compose.yml's appendfsync
SATURATION_P99_MS = 100.0  # past this p99 the gateway no longer keeps up: requests wait in its backlog


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kills", type=int, default=50, help="worker pool processes SIGKILLed mid-job (default 50)")
    parser.add_argument("--redis-restarts", type=int, default=3, help="Redis restarts under load (default 3)")
    parser.add_argument("--fuzz-examples", type=int, default=150,
                        help="schemathesis examples per operation and mode (default 150: > 1000 cases)")
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 200, 300, 400, 500, 700, 900, 1100, 1300],
                        help="offered request rates of the load stages, req/s (default 100 … 1300)")
    parser.add_argument("--stage-seconds", type=float, default=8.0, help="seconds per load stage (default 8)")
    parser.add_argument("--target-stage-seconds", type=float, default=30.0,
                        help=f"seconds of the stage at the target rate, {TARGET_RPS} req/s, whose p99 is the "
                             "headline: long enough for a p99 over thousands of submits (default 30)")
    parser.add_argument("--submit-fraction", type=float, default=0.2,
                        help="share of submits in the load mix; the rest polls status (default 0.2)")
    parser.add_argument("--gateway-processes", type=int, nargs="+", default=[1, 2],
                        help="gateway process counts to load (hsa-video serve --workers; default 1 2)")
    parser.add_argument("--no-access-log", action="store_true",
                        help="load gateways started with `hsa-video serve --no-access-log`")
    parser.add_argument("--skip", nargs="*", default=[], choices=["faults", "fuzz", "load"], help="parts to skip")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="report directory")


# ------------------------------------------------------------------------------------------------
# faults


def run_faults(args, folder: Path, s3_endpoint: str) -> dict:
    from ..harness.processes import wait_until
    from ..harness.stack import Stack, kill_mid_job

    stack = Stack(folder / "faults", s3_endpoint)
    recoveries: list[float] = []
    jobs: list[str] = []
    try:
        stack.start_worker()
        stack.start_worker()
        stack.start_gateway()
        stack.wait_for_workers(2)
        for seed in range(args.kills):
            job_id, recovery = kill_mid_job(stack, seed)
            jobs.append(job_id)
            recoveries.append(recovery)
            print(f"kill {seed + 1}/{args.kills}: recovered in {recovery:.1f} s", flush=True)
        kill_recoveries = list(recoveries)
        for restart in range(args.redis_restarts):
            batch = [stack.submit(seed=1000 + 10 * restart + i) for i in range(5)]
            jobs += batch
            stack.wait_until_computing(batch[0])
            stack.restart_redis()
            back = time.monotonic()
            wait_until(lambda: stack.http.get(f"/v1/videos/{batch[-1]}").status_code == 200, 60, "gateway back")
            after = stack.submit(seed=2000 + restart)  # new work is accepted and runs after the queue
            jobs.append(after)
            stack.wait_terminal(after, timeout=180)
            recoveries.append(time.monotonic() - back)
            print(f"redis restart {restart + 1}/{args.redis_restarts}: queue drained in {recoveries[-1]:.1f} s",
                  flush=True)
        for job_id in jobs:
            stack.wait_terminal(job_id, timeout=180)
        records = {job_id: stack.record(job_id) for job_id in jobs}
        objects = stack.objects()
        lost = [job_id for job_id, record in records.items() if record.status.value != "completed"]
        duplicates = [job_id for job_id in jobs if stack.completions(job_id) > 1
                      or sum(key.startswith(f"videos/{job_id}/") for key in objects) > 1]
        return {
            "worker_kills": args.kills,
            "redis_restarts": args.redis_restarts,
            "jobs_submitted": len(jobs),
            "jobs_lost": len(lost),
            "duplicate_outputs": len(duplicates),
            "max_recovery_s": round(max(recoveries), 2) if recoveries else None,
            "kill_recovery_s": _summary(kill_recoveries),
            "redis_recovery_s": _summary(recoveries[len(kill_recoveries):]),
            "attempts": dict(sorted(Counter(record.attempts for record in records.values()).items())),
            "lost_ids": lost,
            "duplicate_ids": duplicates,
        }
    finally:
        stack.close()


# ------------------------------------------------------------------------------------------------
# fuzz


def run_fuzz(args, folder: Path, s3_endpoint: str) -> dict:
    from ..harness.cards import stand_in_card
    from ..harness.fuzz import fuzz_gateway
    from ..harness.stack import API_KEY, Stack

    stack = Stack(folder / "fuzz", s3_endpoint, max_active_jobs_per_key="0")
    try:
        stack.store.register_model(stand_in_card(), "stand-in", ttl_seconds=3600)
        stack.start_gateway()
        started = time.monotonic()
        result = fuzz_gateway(stack.base_url, API_KEY, args.fuzz_examples)
        return {"cases": result.cases, "server_errors": len(result.server_errors),
                "undocumented_errors": len(result.unstable_errors), "nonconforming": len(result.nonconforming),
                "seconds": round(time.monotonic() - started, 1),
                "examples": (result.server_errors + result.unstable_errors + result.nonconforming)[:10]}
    finally:
        stack.close()


# ------------------------------------------------------------------------------------------------
# load


@dataclass
class Stage:
    offered_rps: int
    seconds: float
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {"submit": [], "status": []})
    errors: dict[str, int] = field(default_factory=dict)
    not_sent: int = 0  # requests still unsent when the stage ran out of time (the gateway fell behind)
    # each request's scheduled send and its completion (time.perf_counter()), in latencies_ms's order
    spans: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: {"submit": [], "status": []})
    elapsed: float = 0.0
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # per process group, over the stage
    steal: StealSampler = field(default_factory=StealSampler)

    def figures(self) -> dict:
        done = sum(len(values) for values in self.latencies_ms.values())
        row = {"offered_rps": self.offered_rps, "achieved_rps": round(done / self.elapsed, 1),
               "errors": self.errors, "not_sent": self.not_sent}
        for name, seconds in self.cpu_seconds.items():  # what one request costs, where
            row[f"{name}_cpu_ms_per_request"] = round(1000 * seconds / max(1, done), 2)
        for kind, values in self.latencies_ms.items():
            row[f"{kind}_rps"] = round(len(values) / self.elapsed, 1)
            row[f"{kind}_p50_ms"] = round(_percentile(values, 50), 2)
            row[f"{kind}_p99_ms"] = round(_percentile(values, 99), 2)
        if self.steal.available and done:
            # the host's share, and the tail of the requests that ran while it took nothing: what the
            # gateway does on its own, beside what the shared machine did to it
            spans = [span for kind_spans in self.spans.values() for span in kind_spans]
            row["host_steal_percent"] = self.steal.steal_percent(min(s for s, _ in spans), max(e for _, e in spans))
            calm = 0
            for kind, values in self.latencies_ms.items():
                unstolen = [value for value, span in zip(values, self.spans[kind])
                            if not self.steal.stolen_during(*span)]
                calm += len(unstolen)
                row[f"{kind}_p99_ms_steal_free"] = round(_percentile(unstolen, 99), 2) if unstolen else None
            row["steal_free_share"] = round(calm / done, 3)
        return row


class Connection:
    """One keep-alive HTTP/1.1 connection: a bare request/response loop, so the generator costs the
    CPU the gateway is being measured for as little as possible (a tenth of an HTTP client library's)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "Connection":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, method: str, path: str, key: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def offer_load(port: int, keys: list[str], stage: Stage, submit_fraction: float, known_jobs: deque,
                     connections: int = 64) -> None:
    """Requests leave at ``offered_rps`` on a fixed schedule; each one's latency counts from its
    scheduled time (no coordinated omission: a backed-up server shows as latency, not as fewer sends)."""
    rng = random.Random(stage.offered_rps)
    total = int(stage.offered_rps * stage.seconds)
    kinds = ["submit" if rng.random() < submit_fraction else "status" for _ in range(total)]
    pool = [await Connection.open(port) for _ in range(connections)]
    # the generator must not pause itself: a full collection of this process's heap (the harness,
    # boto3, Celery) would delay every request in flight and read as the gateway's p99. Nothing collectable piles up in one stage.
    gc.collect()
    gc.disable()
    next_index = 0
    start = time.perf_counter() + 0.05
    give_up = start + 2 * stage.seconds  # an overloaded gateway would otherwise stretch the stage without end

    async def client(connection: Connection) -> None:
        nonlocal next_index
        while next_index < total and time.perf_counter() < give_up:
            index = next_index
            next_index += 1
            scheduled = start + index / stage.offered_rps
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            kind = kinds[index]
            if kind == "submit":
                key = keys[index % len(keys)]
                status, body = await connection.request("POST", "/v1/videos", key, SUBMIT_BODY)
            else:  # a recent job, polled by the key that owns it
                job_id, key = rng.choice(known_jobs)
                status, body = await connection.request("GET", f"/v1/videos/{job_id}", key)
            finished = time.perf_counter()
            stage.latencies_ms[kind].append((finished - scheduled) * 1000)
            stage.spans[kind].append((scheduled, finished))
            if status != 200:
                stage.errors[str(status)] = stage.errors.get(str(status), 0) + 1
            elif kind == "submit":
                known_jobs.append((json.loads(body)["id"], key))

    sampling = asyncio.create_task(stage.steal.run())
    try:
        await asyncio.gather(*(client(connection) for connection in pool))
    finally:
        sampling.cancel()
        gc.enable()
    stage.elapsed = time.perf_counter() - start
    stage.not_sent = total - next_index
    for connection in pool:
        connection.close()


def run_load(args, folder: Path, s3_endpoint: str) -> dict:
    """Every stage for each gateway process count; the headline figures are the best configuration's."""
    configurations = {str(processes): load_gateway(args, folder / f"load-{processes}", s3_endpoint, processes)
                      for processes in args.gateway_processes}
    best = max(configurations, key=lambda name: configurations[name]["saturation_rps"])
    headline = {key: value for key, value in configurations[best].items() if key != "stages"}
    return {**headline, "gateway_processes": int(best), "submit_fraction": args.submit_fraction,
            "access_log": not args.no_access_log, "redis_appendfsync": LOAD_REDIS_FSYNC,
            "configurations": configurations}


def load_gateway(args, folder: Path, s3_endpoint: str, processes: int) -> dict:
    import httpx
    import uvloop  # the generator shares the gateway's CPUs: the cheaper its event loop, the less it takes

    from jobs.settings import hash_api_key

    from ..harness.cards import stand_in_card
    from ..harness.stack import Stack

    keys = [f"sk-load-{index}" for index in range(LOAD_KEYS)]
    # per-key limits stay on (their Redis round trip is in every request) but out of the way: the
    # question is what the gateway sustains, not how fast one tenant is refused
    # Redis as docker-compose.yml runs it (AOF fsynced once a second): fsync on every write, as the fault
    # runs use it, blocks Redis on each write and would measure a durability setting we do not ship
    stack = Stack(folder, s3_endpoint, redis_fsync=LOAD_REDIS_FSYNC,
                  api_key_sha256=",".join(hash_api_key(key) for key in keys),
                  rate_limit_per_second="1000", rate_limit_burst="1000", max_active_jobs_per_key="0")
    try:
        stack.store.register_model(stand_in_card(), "stand-in", ttl_seconds=3600)
        stack.start_gateway(processes, ("--no-access-log",) if args.no_access_log else ())
        warm = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {keys[0]}"})
        known_jobs = deque([(warm.post("/v1/videos", content=SUBMIT_BODY).json()["id"], keys[0]) for _ in range(50)],
                           maxlen=1000)
        warm.close()
        # warm-up, not recorded: every gateway process has its connections open and its code paths run
        uvloop.run(offer_load(stack.gateway_port, keys, Stage(min(args.rates), 2.0), args.submit_fraction,
                               known_jobs))
        stages = []
        pids = {"gateway": stack.gateway.popen.pid, "redis": stack.redis.popen.pid}
        for rate in args.rates:
            stage = Stage(rate, max(args.stage_seconds, args.target_stage_seconds) if rate == TARGET_RPS
                          else args.stage_seconds)
            before = {name: _tree_cpu_seconds(pid) for name, pid in pids.items()}
            generator_before = time.process_time()
            uvloop.run(offer_load(stack.gateway_port, keys, stage, args.submit_fraction, known_jobs))
            stage.cpu_seconds = {name: _tree_cpu_seconds(pid) - before[name] for name, pid in pids.items()}
            # the load generator shares the CPUs it is measuring: its own share, to say what was left
            stage.cpu_seconds["generator"] = time.process_time() - generator_before
            stages.append(stage.figures())
            print(f"{processes} gateway process(es):", json.dumps(stages[-1]), flush=True)
        queued = stack.store.queue_depth("tiny")
    finally:
        stack.close()
    # sustained: served in full without a queue building up in front of the gateway
    sustained = [s for s in stages if not s["errors"] and not s["not_sent"]
                 and s["achieved_rps"] >= 0.95 * s["offered_rps"]
                 and max(s["submit_p99_ms"], s["status_p99_ms"]) <= SATURATION_P99_MS]
    at_target = next((s for s in stages if s["offered_rps"] == TARGET_RPS), stages[-1])
    return {
        "submit_rps": at_target["submit_rps"],
        "submit_p50_ms": at_target["submit_p50_ms"],
        "submit_p99_ms": at_target["submit_p99_ms"],
        "status_p99_ms": at_target["status_p99_ms"],
        # the shared machine's part: CPU time the hypervisor took during that stage, and the submit p99 of
        # the requests that ran while it took none (None where /proc/stat is not there to read)
        "host_steal_percent": at_target.get("host_steal_percent"),
        "submit_p99_ms_steal_free": at_target.get("submit_p99_ms_steal_free"),
        "steal_free_share": at_target.get("steal_free_share"),
        # saturation: the most the gateway completed per second at any offered rate (beyond it, it falls
        # behind); sustained: the highest offered rate served in full without a backlog building up
        "saturation_rps": max(s["achieved_rps"] for s in stages),
        # False when it kept up with every offered rate: saturation_rps is then only a lower bound
        "saturated": any(s["not_sent"] or s["achieved_rps"] < 0.95 * s["offered_rps"] for s in stages),
        "sustained_rps": max(s["offered_rps"] for s in sustained) if sustained else None,
        "at_offered_rps": at_target["offered_rps"],
        "stages": stages,
        "jobs_queued_at_end": queued,
    }


# ------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from ..harness.processes import start_moto

    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / "reliability.json", args.out / "reliability.md"
    # a skipped part keeps its figures from the previous report (each part records its own run)
    previous = json.loads(json_path.read_text()) if json_path.exists() else {}
    report: dict = {"machine": _machine(), "command": " ".join(["hsa-video bench reliability", *sys.argv[3:]])}
    report.update({part: previous[part] for part in args.skip if part in previous})
    with tempfile.TemporaryDirectory(prefix="hsa-reliability-") as temporary:
        folder = Path(temporary)
        moto, s3_endpoint = start_moto(folder)
        try:
            for part, runner in (("faults", run_faults), ("fuzz", run_fuzz), ("load", run_load)):
                if part not in args.skip:
                    print(f"--- {part}", flush=True)
                    started = {"date": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg()[0]}
                    report[part] = {**runner(args, folder, s3_endpoint), "run": started}
                    json_path.write_text(json.dumps(report, indent=2) + "\n")  # a part done is a part kept
        finally:
            moto.stop()
    md_path.write_text(render_markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0


def render_markdown(report: dict) -> str:
    lines = ["# Reliability: faults, hostile input, load", "",
             f"`{report['command']}` on {report['machine']['processor']} ({report['machine']['cpus']} CPUs); each "
             "part names when it ran and the machine's load average then. Every part is a real process on loopback: redis-server (AOF), moto S3, Celery "
             "workers with the tiny model, the gateway (uvicorn, Redis job store, Celery queue). "
             "Reproduce: `hsa-video bench reliability` from a source checkout (`pip install -e .[dev]`, "
             "redis-server on PATH).", ""]
    if "faults" in report:
        faults = report["faults"]
        lines += [f"## Faults ({faults['run']['date']}, load average {faults['run']['load_average']:.1f})", "",
                  "| faults injected | jobs | lost | duplicate outputs | max recovery |", "|---|---|---|---|---|",
                  f"| {faults['worker_kills']} pool processes SIGKILLed mid-job, {faults['redis_restarts']} Redis "
                  f"restarts with jobs queued and running | {faults['jobs_submitted']} | {faults['jobs_lost']} | "
                  f"{faults['duplicate_outputs']} | {faults['max_recovery_s']} s |", "",
                  f"Kill → job completed on another pool process: {_describe(faults['kill_recovery_s'])}. Redis "
                  f"back → gateway answering and a new job completed behind the queue: "
                  f"{_describe(faults['redis_recovery_s'])}. Deliveries per job: "
                  + ", ".join(f"{count} jobs ran {attempts}×" for attempts, count in faults["attempts"].items()) + ".", ""]
    if "fuzz" in report:
        fuzz = report["fuzz"]
        lines += [f"## Hostile input ({fuzz['run']['date']})", "",
                  f"schemathesis, valid and schema-violating requests to every operation of the OpenAPI schema: "
                  f"**{fuzz['cases']} cases, {fuzz['server_errors']} server errors**, {fuzz['undocumented_errors']} "
                  f"errors without a documented code ({fuzz['seconds']} s). Images, prompts, paths and body sizes "
                  "are covered case by case in `tests/reliability/test_hostile_input.py`.", ""]
    if "load" in report:
        load = report["load"]
        verdict = "met" if load["submit_p99_ms"] <= TARGET_SUBMIT_P99_MS and load["at_offered_rps"] == TARGET_RPS \
            else "missed"
        lines += [f"## Load ({load['run']['date']}, load average {load['run']['load_average']:.1f})", ""]
        if load.get("conditions"):  # what else ran, when the machine could not be had quiet
            lines += [f"Conditions: {load['conditions']}", ""]
        lines += [
                  f"Open loop, {int(load['submit_fraction'] * 100)}% submits and the rest status polls, {LOAD_KEYS} API "
                  "keys, latency from each request's scheduled send time; the load generator, Redis (AOF, "
                  f"`appendfsync {load.get('redis_appendfsync', 'always')}`) and the gateway share the machine's "
                  "CPUs. Target: submit p99 ≤ "
                  f"{TARGET_SUBMIT_P99_MS:g} ms at {TARGET_RPS} req/s — **{verdict}** (best configuration: "
                  f"{load['gateway_processes']} gateway process(es), submit p99 {load['submit_p99_ms']} ms at "
                  f"{load['at_offered_rps']} req/s offered). " + _saturation(load) + " and sustains "
                  f"{load['sustained_rps'] or 'no stage'}{' req/s' if load['sustained_rps'] else ''} with every request "
                  f"served and p99 ≤ {SATURATION_P99_MS:g} ms.", ""]
        if load.get("host_steal_percent") is not None:
            lines += [f"The machine is a virtual one on a shared host: during the {load['at_offered_rps']} req/s stage "
                      f"the hypervisor took **{load['host_steal_percent']}%** of its CPU time (steal, `/proc/stat`, "
                      f"read every {StealSampler.interval:g} s). The {load['steal_free_share'] * 100:.0f}% of requests "
                      "that ran in windows where it took nothing had a submit p99 of "
                      f"**{load['submit_p99_ms_steal_free']} ms**; the headline p99 above counts every request.", ""]
        # the busiest stage: at low rates idle timers and wake-ups inflate the CPU per request
        busiest = max(next(iter(load["configurations"].values()))["stages"], key=lambda stage: stage["achieved_rps"])
        lines += [f"Where the time goes (one process, at its busiest: {busiest['achieved_rps']} req/s): the gateway "
                  f"spends {busiest['gateway_cpu_ms_per_request']} ms of CPU per request and Redis "
                  f"{busiest['redis_cpu_ms_per_request']} ms (the load generator "
                  f"{busiest.get('generator_cpu_ms_per_request', '—')} ms), so one gateway process tops out near "
                  f"{1000 / max(busiest['gateway_cpu_ms_per_request'], 0.01):.0f} req/s on a free core; the machine has "
                  f"{report['machine']['cpus']} cores for the gateway, Redis and the load generator together. A "
                  "submit costs more than a status poll: its rate-limit token, the deadline planner's queue view, "
                  "the job record and Celery's publish are separate Redis round trips, with the request's validation and "
                  "planning between them, against a poll's two (the token and the record)."]
        costs = [stage["gateway_cpu_ms_per_request"] for stage in next(iter(load["configurations"].values()))["stages"]]
        if max(costs) > 1.5 * costs[0]:
            lines[-1] += (f" Past saturation the gateway's CPU per request rises ({costs[0]} → {max(costs)} ms), so "
                          "throughput falls instead of levelling off: a congestion collapse not yet explained (first "
                          "suspect: GIL contention among the requests waiting in the thread pool).")
        lines.append("")
        for processes, figures in load["configurations"].items():
            flags = "" if load.get("access_log", True) else " --no-access-log"
            saturation = (f"saturates at {figures['saturation_rps']} req/s" if figures.get("saturated", True)
                          else f"keeps up with every rate offered (up to {figures['saturation_rps']} req/s)")
            lines += [f"{processes} gateway process(es) (`hsa-video serve --workers {processes}{flags}`): {saturation}, "
                      f"sustains {figures['sustained_rps'] or '—'}; "
                      f"{figures['jobs_queued_at_end']} jobs queued at the end (no worker consumed them):", "",
                      "| offered req/s | achieved req/s | submit req/s | submit p50 / p99 ms | status p50 / p99 ms | "
                      "gateway / Redis / generator CPU ms per request | host steal % | submit / status p99 ms "
                      "steal-free (share) | errors / not sent |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for stage in figures["stages"]:
                steal_free = (f"{_or_dash(stage['submit_p99_ms_steal_free'])} / "
                              f"{_or_dash(stage['status_p99_ms_steal_free'])} ({stage['steal_free_share']})"
                              if "steal_free_share" in stage else "—")
                lines.append(f"| {stage['offered_rps']} | {stage['achieved_rps']} | {stage['submit_rps']} | "
                             f"{stage['submit_p50_ms']} / {stage['submit_p99_ms']} | {stage['status_p50_ms']} / "
                             f"{stage['status_p99_ms']} | {stage['gateway_cpu_ms_per_request']} / "
                             f"{stage['redis_cpu_ms_per_request']} / {stage.get('generator_cpu_ms_per_request', '—')} | "
                             f"{stage.get('host_steal_percent', '—')} | {steal_free} | "
                             f"{stage['errors'] or '—'} / "
                             f"{stage['not_sent'] or '—'} |")
            lines.append("")
            lines += ["`not sent`: requests of the stage's schedule still unsent at twice its length, when the "
                      "generator stops (the gateway had fallen that far behind).", ""] if any(
                          stage["not_sent"] for stage in figures["stages"]) else []
    return "\n".join(lines)


def _or_dash(value) -> str:
    return "—" if value is None else str(value)


def _saturation(load: dict) -> str:
    if load.get("saturated", True):
        return (f"It saturates at **{load['saturation_rps']} req/s** (the most it completed per second at any "
                "offered rate)")
    return (f"It kept up with every rate offered, up to **{load['saturation_rps']} req/s** completed per second "
            "(saturation lies beyond: offer higher `--rates`)")


def _tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children, e.g. uvicorn's worker processes."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # gone
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(_tree_cpu_seconds(int(child)) for child in children)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def _summary(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"median": round(statistics.median(values), 2), "max": round(max(values), 2)}


def _describe(summary: dict | None) -> str:
    return "—" if summary is None else f"median {summary['median']} s, max {summary['max']} s"


def _machine() -> dict:
    processor = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "processor": processor, "cpus": os.cpu_count(),
            "python": platform.python_version(), "load_average_at_start": os.getloadavg()[0]}
