"""Every Prometheus metric of the service, in one place, prefixed ``hsa_`` (docs/operations.md lists them).

Gateway metrics are observed by the HTTP middleware and the create route; worker metrics by the job
pipeline (``observe_job``); queue and worker gauges are read from the job store at scrape time.

Several processes serve at once (uvicorn workers, Celery prefork children, the embedded worker next
to the gateway), so with ``PROMETHEUS_MULTIPROC_DIR`` set — the CLI sets it and wipes it at start —
values live in that directory and every scrape merges them (prometheus_client's multiprocess mode).
The variable must be set before this module is imported.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
FRACTION_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
SLACK_BUCKETS = (-300.0, -60.0, -10.0, -1.0, 0.0, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
DRIFT_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
PSNR_BUCKETS = (15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 60.0, 100.0)
SSIM_BUCKETS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 1.0)
BYTES_BUCKETS = tuple(float(2**k) for k in range(16, 36, 2))  # 64 KiB … 16 GiB

# --- gateway -------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter("hsa_http_requests_total", "HTTP requests by route template, method and status",
                        ["route", "method", "status"])
HTTP_LATENCY = Histogram("hsa_http_request_duration_seconds", "HTTP request latency by route template",
                         ["route", "method"], buckets=LATENCY_BUCKETS)
SUBMISSIONS = Counter("hsa_video_submissions_total", "Accepted video jobs", ["model", "tier", "budget_source"])
REJECTIONS = Counter("hsa_video_rejections_total", "Refused create requests by error code", ["reason"])

# --- worker --------------------------------------------------------------------------------------
JOB_STAGE_SECONDS = Histogram("hsa_job_stage_seconds", "Job time by stage (queue, load_input, generate, "
                              "encode, upload, total)", ["model", "stage"], buckets=JOB_BUCKETS)
JOBS_FINISHED = Counter("hsa_jobs_finished_total", "Jobs that ended, by outcome", ["model", "status"])
JOB_FAILURES = Counter("hsa_job_failures_total", "Failed jobs by error code", ["model", "reason"])
TOKEN_STEPS = Counter("hsa_token_steps_total", "Token evaluations computed and skipped (per CFG branch)",
                      ["model", "kind"])
BUDGET = Histogram("hsa_budget", "Compute budget chosen for a job and the fraction achieved",
                   ["model", "kind"], buckets=FRACTION_BUCKETS)
SLA = Counter("hsa_sla_total", "Completed jobs that met or missed their deadline", ["model", "outcome"])
SLA_SLACK = Histogram("hsa_sla_slack_seconds", "Deadline minus completion time (negative: late)", ["model"],
                      buckets=SLACK_BUCKETS)
KV_CACHE_BYTES = Histogram("hsa_kv_cache_bytes", "K/V cache size of a job", ["model"], buckets=BYTES_BUCKETS)
VELOCITY_DRIFT = Histogram("hsa_velocity_drift", "Online quality proxy: relative velocity change of refreshed "
                           "skipped tokens, by budget bucket", ["model", "budget_bucket"], buckets=DRIFT_BUCKETS)
SHADOW_PSNR = Histogram("hsa_shadow_psnr_db", "Shadow reference: PSNR of the served video against the job re-run "
                        "at full budget, by budget bucket (the served MP4's codec loss included)", ["model", "budget_bucket"],
                        buckets=PSNR_BUCKETS)
SHADOW_SSIM = Histogram("hsa_shadow_ssim", "Shadow reference: mean SSIM of the served video against the job re-run "
                        "at full budget, by budget bucket", ["model", "budget_bucket"], buckets=SSIM_BUCKETS)
SHADOW_RUNS = Counter("hsa_shadow_runs_total", "Shadow reference runs by outcome (completed, skipped: the job "
                      "was deleted meanwhile, failed)", ["model", "outcome"])
MODEL_LOAD_SECONDS = Gauge("hsa_model_load_seconds", "Time to load and calibrate the model at worker start",
                           ["model"], multiprocess_mode="max")


FAILURE_REASONS = ("timeout", "worker_lost", "internal_error", "invalid_request", "budget_infeasible",
                   "invalid_config", "invalid_grid", "unsupported_model")


def init_worker(model: str) -> None:
    """Create the worker's labelled series at zero, so dashboards and rate() see them before the
    first failure or cancellation."""
    for status in ("completed", "failed", "cancelled"):
        JOBS_FINISHED.labels(model, status)
    for reason in FAILURE_REASONS:
        JOB_FAILURES.labels(model, reason)
    for outcome in ("met", "missed"):
        SLA.labels(model, outcome)
    for outcome in ("completed", "skipped", "failed"):
        SHADOW_RUNS.labels(model, outcome)


def budget_bucket(budget: float) -> str:
    """Coarse label for per-budget quality series: 0.25, 0.5, 0.75, 1.0 (upper edges)."""
    for edge in (0.25, 0.5, 0.75):
        if budget <= edge + 1e-9:
            return f"{edge:g}"
    return "1"


def observe_job(record) -> None:
    """Worker side: everything one finished job tells (``record``: its final JobRecord)."""
    spec, model = record.spec, record.spec.model
    status = record.status.value
    JOBS_FINISHED.labels(model, status).inc()
    for stage, seconds in record.timings.items():
        JOB_STAGE_SECONDS.labels(model, stage).observe(seconds)
    if status == "failed" and record.error is not None:
        JOB_FAILURES.labels(model, record.error.code).inc()
    if status != "completed":
        return
    stats = record.stats
    computed, total = stats.get("token_steps_computed"), stats.get("token_steps_total")
    if computed is not None and total is not None:
        TOKEN_STEPS.labels(model, "computed").inc(computed)
        TOKEN_STEPS.labels(model, "skipped").inc(max(0, total - computed))
    budget = stats.get("budget", record.plan.budget)
    BUDGET.labels(model, "chosen").observe(budget)
    if stats.get("achieved_compute_fraction") is not None:
        BUDGET.labels(model, "achieved").observe(stats["achieved_compute_fraction"])
    if stats.get("kv_cache_bytes"):
        KV_CACHE_BYTES.labels(model).observe(stats["kv_cache_bytes"])
    if stats.get("mean_velocity_drift") is not None:
        VELOCITY_DRIFT.labels(model, budget_bucket(budget)).observe(stats["mean_velocity_drift"])
    if spec.deadline_at is not None and record.completed_at is not None:
        slack = spec.deadline_at - record.completed_at
        SLA.labels(model, "met" if slack >= 0 else "missed").inc()
        SLA_SLACK.labels(model).observe(slack)


class StoreCollector:
    """Queue depth, active jobs and live workers per model, read from the job store at scrape time."""

    def __init__(self, store):
        self.store = store

    def collect(self):
        depth = GaugeMetricFamily("hsa_queue_depth", "Queued jobs per model", labels=["model"])
        running = GaugeMetricFamily("hsa_jobs_in_progress", "Running jobs per model", labels=["model"])
        workers = GaugeMetricFamily("hsa_live_workers", "Workers heartbeating per model", labels=["model"])
        for card in self.store.models():
            # a count, not the queued records: a scrape must stay cheap however deep the queue is
            depth.add_metric([card.id], self.store.queue_depth(card.id))
            running.add_metric([card.id], len(self.store.running_jobs(card.id)))
            workers.add_metric([card.id], card.workers)
        yield from (depth, running, workers)


def serve_on_port(port: int, store, host: str = "0.0.0.0") -> None:
    """What ``exposition`` returns, on a port of its own (prometheus_client's server, a daemon thread)."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    if store is not None:
        registry.register(StoreCollector(store))
    start_http_server(port, addr=host, registry=registry)


def exposition(store=None) -> tuple[bytes, str]:
    """The /metrics body: this process's metrics (or all processes' in multiprocess mode) plus the
    store-derived gauges."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if store is not None:
        gauges = CollectorRegistry()
        gauges.register(StoreCollector(store))
        body += generate_latest(gauges)
    return body, CONTENT_TYPE_LATEST
