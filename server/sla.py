"""Latency SLAs → HSA budgets: the largest budget whose predicted completion meets the deadline.

Predicted completion of a job submitted now::

    wait(queue ahead of it) + fixed (first frame, VAE decode, MP4, upload) + factor · steps · (α + β·b)

α, β: seconds per step at budget 0 and per unit of budget, measured by each worker at start-up for its
model (``TimingModel``) and corrected by an EWMA of actual / predicted from finished jobs (``factor``).
The wait is the predicted remaining service time of the jobs that will run before this one (same or
higher priority), spread over the workers serving the model. All pure functions: the gateway and the
workers (which re-plan at job start) share them, and tests drive them with tables of cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel


class TimingModel(BaseModel):
    """A worker's service-time model for its model at its default shape."""

    step_seconds_fixed: float  # α: per-step cost that does not shrink with the budget
    step_seconds_per_budget: float  # β: per-step cost proportional to the budget
    job_seconds_fixed: float  # load input + decode + MP4 + upload
    factor: float = 1.0  # EWMA of actual / predicted over finished jobs
    samples: int = 0

    def denoise_seconds(self, steps: int, budget: float) -> float:
        return self.factor * steps * (self.step_seconds_fixed + self.step_seconds_per_budget * budget)

    def service_seconds(self, steps: int, budget: float) -> float:
        return self.job_seconds_fixed + self.denoise_seconds(steps, budget)

    def observe(self, steps: int, budget: float, actual_denoise_seconds: float,
                actual_fixed_seconds: float | None = None, weight: float = 0.2) -> "TimingModel":
        """A copy refined by one finished job: EWMAs of the actual / predicted denoise time and of the
        time outside denoising (``actual_fixed_seconds``: input, encoding, decoding, MP4, upload). The
        first job replaces the start-up probe's figures: it is the first measurement of a whole job."""
        predicted = steps * (self.step_seconds_fixed + self.step_seconds_per_budget * budget)
        if predicted <= 0 or actual_denoise_seconds <= 0:
            return self
        ratio = actual_denoise_seconds / predicted
        first = self.samples == 0
        factor = ratio if first else (1 - weight) * self.factor + weight * ratio
        fixed = self.job_seconds_fixed
        if actual_fixed_seconds is not None and actual_fixed_seconds >= 0:
            fixed = actual_fixed_seconds if first else (1 - weight) * fixed + weight * actual_fixed_seconds
        return self.model_copy(update={"factor": factor, "job_seconds_fixed": fixed, "samples": self.samples + 1})


@dataclass(frozen=True)
class Tier:
    name: str
    deadline_s: float  # default deadline from submission to a downloadable video
    priority: int  # queue priority: lower runs first (Redis transport convention)


TIERS: dict[str, Tier] = {tier.name: tier for tier in (
    Tier("interactive", 30.0, 0),
    Tier("standard", 120.0, 3),
    Tier("batch", 3600.0, 9),
)}
DEFAULT_TIER = "standard"
PRIORITY_STEPS = [0, 3, 6, 9]  # kombu's Redis priority lists


def choose_budget(time_left: float, wait_seconds: float, timing: TimingModel, steps: int,
                  min_budget: float) -> float | None:
    """The largest budget in [min_budget, 1] that finishes within ``time_left`` seconds after a
    ``wait_seconds`` queue wait, or None if even ``min_budget`` cannot."""
    slack = time_left - wait_seconds - timing.job_seconds_fixed
    per_step = slack / (timing.factor * steps) - timing.step_seconds_fixed
    if timing.step_seconds_per_budget <= 0:
        return 1.0 if per_step >= 0 else None
    budget = per_step / timing.step_seconds_per_budget
    if budget < min_budget - 1e-9:
        return None
    # rounded down to 0.001 (the 1e-6 absorbs float error: 0.4999999 is 0.5)
    return float(min(1.0, max(min_budget, math.floor(budget * 1000 + 1e-6) / 1000)))


def queue_wait(ahead: list[float], workers: int) -> float:
    """Seconds until a worker is free for a new job: remaining service of the jobs ahead of it, shared
    by ``workers`` (they drain the queue in parallel)."""
    if not ahead:
        return 0.0
    return sum(ahead) / max(1, workers)


def retry_after(fastest_completion: float, time_left: float) -> int:
    """How long to wait before the same request could meet its deadline (Retry-After, seconds)."""
    return max(1, math.ceil(fastest_completion - time_left))


@dataclass(frozen=True)
class Plan:
    budget: float | None  # None: the deadline cannot be met even at the smallest budget
    wait_seconds: float
    service_seconds: float
    completion_at: float
    fastest_completion_at: float


def remaining_ahead(active_jobs, priority: int, timing: TimingModel, now: float) -> list[float]:
    """Remaining service seconds of the jobs that run before a new job of ``priority``: every running
    job, and every queued job of the same or a higher priority (lower number)."""
    ahead = []
    for record in active_jobs:
        spec = record.spec
        service = record.predicted_service_seconds or timing.service_seconds(spec.steps, spec.budget)
        if record.status.value == "in_progress":
            ahead.append(max(0.0, service - (now - (record.started_at or now))))
        elif spec.priority <= priority:
            ahead.append(service)
    return ahead


def work_ahead(queued_work: dict[int, float], running_jobs, priority: int, timing: TimingModel,
               now: float) -> list[float]:
    """``remaining_ahead`` from the job store's queue summary: the running jobs one by one, the queued
    ones as the predicted seconds per priority (summed at submission; reading them is O(1))."""
    queued = [seconds for queued_priority, seconds in queued_work.items() if queued_priority <= priority]
    return remaining_ahead(running_jobs, priority, timing, now) + queued


def plan_job(spec, timing: TimingModel, ahead: list[float], workers: int, now: float,
             budget_cap: float = 1.0) -> Plan:
    """Budget and predicted completion of a new job (``spec``: a JobSpec) behind ``ahead`` (the
    remaining service seconds of the work that runs first). An SLA budget is at most ``budget_cap``
    (``load_capped_budget``: what the workers will cap it to when it starts)."""
    wait = queue_wait(ahead, workers)
    fastest = now + wait + timing.service_seconds(spec.steps, spec.min_budget or 1.0)
    if spec.budget_source == "explicit":
        budget = spec.budget
    else:
        budget = choose_budget(spec.deadline_at - now, wait, timing, spec.steps, spec.min_budget or 1.0)
        if budget is not None:
            budget = max(spec.min_budget or 0.0, min(budget, budget_cap))
    service = timing.service_seconds(spec.steps, budget if budget is not None else spec.min_budget or 1.0)
    return Plan(budget, wait, service, now + wait + service, fastest)


def queued_behind(active_jobs, job_id: str, timing: TimingModel, now: float) -> tuple[list[tuple[float, float]], float]:
    """The queue as a starting job sees it: ``(deadline_at, seconds at its smallest budget)`` of every
    queued job in run order (priority, then arrival), and the remaining seconds of the other running
    jobs. An explicit budget cannot shrink, so such a job counts at its own budget."""
    queued, running = [], 0.0
    for record in sorted(active_jobs, key=lambda r: (r.spec.priority, r.created_at)):
        spec = record.spec
        if spec.job_id == job_id:
            continue
        if record.status.value == "in_progress":
            service = record.predicted_service_seconds or timing.service_seconds(spec.steps, spec.budget)
            running += max(0.0, service - (now - (record.started_at or now)))
        elif spec.deadline_at is not None:
            queued.append((spec.deadline_at, timing.service_seconds(spec.steps, floor_budget(spec))))
    return queued, running


def seconds_allowed(now: float, deadline_at: float, own_min_seconds: float, queued: list[tuple[float, float]],
                    running_seconds: float, workers: int) -> float:
    """How long a starting (or running) job may still take so that it meets its own deadline *and*
    every job queued behind it can still meet its deadline at its smallest budget.

    Choosing each job's budget greedily — the largest that meets its own deadline — is what loses
    deadlines under load: the early jobs of a burst take full budgets and the later ones find no time
    left. Here queued job k finishes at ``now + (this job + other running + queued before k) / workers
    + its own seconds`` (the queue shares the workers, as in ``queue_wait``), which bounds this job's
    seconds. A queued job that would miss even if this one ran at its smallest budget is lost anyway
    and does not hold the others back.
    """
    allowed = deadline_at - now
    ahead_of_k = running_seconds
    for queued_deadline, queued_seconds in queued:
        bound = workers * (queued_deadline - now - queued_seconds) - ahead_of_k
        if bound >= own_min_seconds:
            allowed = min(allowed, bound)
        ahead_of_k += queued_seconds
    return allowed


def floor_budget(spec) -> float:
    """The smallest budget a worker may re-plan a job to: its own when the request set it explicitly."""
    return spec.budget if spec.budget_source == "explicit" else (spec.min_budget or 1.0)


TARGET_UTILIZATION = 0.85  # of a model's workers, when budgets are capped by the arrival rate
ARRIVAL_WINDOW_SECONDS = 60.0


def arrival_rate(created_at: list[float], now: float, window: float = ARRIVAL_WINDOW_SECONDS) -> float | None:
    """Recent jobs per second of a model, from its jobs' creation times: the ones created in the last
    ``window`` seconds over the time since the oldest of them; None with fewer than 3 (too little to
    go on, and too little load to need a cap)."""
    recent = [t for t in created_at if now - window <= t <= now]
    if len(recent) < 3:
        return None
    return len(recent) / max(now - min(recent), 1e-3)


ARRIVAL_SAMPLE = 100  # newest jobs read to estimate a model's arrival rate


def recent_arrival_rate(store, model: str, now: float) -> float | None:
    """``arrival_rate`` of ``model`` from the newest jobs in ``store`` (any JobStore); None when the
    store cannot be read (no estimate, no cap)."""
    try:
        records, _ = store.list(ARRIVAL_SAMPLE, newest_first=True)
    except Exception:
        return None
    return arrival_rate([r.created_at for r in records if r.spec.model == model], now)


def load_capped_budget(rate: float | None, workers: int, timing: TimingModel, steps: int, min_budget: float,
                       utilization: float = TARGET_UTILIZATION) -> float:
    """The largest budget at which the model's workers keep up with ``rate`` jobs/s at ``utilization``.

    Deadlines alone cannot see the jobs that have not arrived yet: under sustained load, jobs that
    each take the largest budget meeting their own deadline overload the workers, the queue grows
    and later jobs are refused. Capping the service time at utilization × workers / rate keeps the
    queue stable, and spends the spare capacity as budget when the load is light (no cap below
    one job per ``window``)."""
    if rate is None or rate <= 0:
        return 1.0
    return choose_budget(utilization * workers / rate, 0.0, timing, steps, min_budget) or min_budget
