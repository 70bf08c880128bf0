"""Latency SLAs → HSA budgets: the largest budget whose predicted completion meets the deadline.

Predicted completion of a job submitted now::

    wait(queue ahead of it) + fixed (first frame, VAE decode, MP4, upload) + factor · steps · (α + β·b)

α, β: seconds per step at budget 0 and per unit of budget, measured by each worker at start-up for its
model (``TimingModel``) and corrected by an EWMA of actual / predicted from finished jobs (``factor``).
The wait is the predicted remaining service time of the jobs that will run before this one (same or
higher priority), spread over the workers serving the model.

A job's budget is decided here and nowhere else, in three moments, each a pure function the gateway or
the worker calls with what it read from the store: ``plan_at_submit`` (the gateway: the budget, the
predicted completion, or 429 when the deadline cannot be met), ``plan_at_start`` (the worker, from the
time actually left and the jobs queued behind) and ``budget_while_running`` (the worker again, at HSA's
re-allocation points, when the job runs late). The result is a ``JobPlan``, stored with the job as a
value of its own; the request (``JobSpec``) never changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict


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


class JobPlan(BaseModel):
    """How a job runs, as planned at submission and re-planned when it starts."""

    model_config = ConfigDict(frozen=True)

    budget: float  # the compute budget it runs at
    predicted_service_seconds: float | None = None  # on a worker, the planner's prediction
    predicted_floor_seconds: float | None = None  # the same at the smallest budget it may be re-planned to
    predicted_completion_at: float | None = None  # unix time, queue wait included
    soft_time_limit: float | None = None  # seconds; the worker stops the job past it


class DeadlineUnreachable(Exception):
    """Even the smallest budget cannot meet the deadline behind the current queue."""

    def __init__(self, seconds_left: float, fastest_seconds: float, wait_seconds: float, min_budget: float):
        super().__init__(f"the deadline ({seconds_left:.1f} s) cannot be met: the fastest this job can finish is "
                         f"in {fastest_seconds:.1f} s (queue wait {wait_seconds:.1f} s at budget {min_budget:g})")
        self.seconds_left, self.fastest_seconds = seconds_left, fastest_seconds

    @property
    def retry_after(self) -> int:
        return retry_after(self.fastest_seconds, self.seconds_left)


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
        service = record.plan.predicted_service_seconds or timing.service_seconds(spec.steps, record.plan.budget)
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
             budget_cap: float = 1.0, fixed_budget: float | None = None) -> Plan:
    """Budget and predicted completion of a new job (``spec``: a JobSpec) behind ``ahead`` (the
    remaining service seconds of the work that runs first). An SLA budget is at most ``budget_cap``
    (``load_capped_budget``: what the workers will cap it to when it starts); ``fixed_budget`` (or the
    request's own) is taken as it is."""
    wait = queue_wait(ahead, workers)
    fastest = now + wait + timing.service_seconds(spec.steps, spec.min_budget or 1.0)
    if fixed_budget is not None or spec.budget is not None:
        budget = fixed_budget if fixed_budget is not None else spec.budget
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
            service = record.plan.predicted_service_seconds or timing.service_seconds(spec.steps, record.plan.budget)
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
    return spec.budget if spec.budget is not None else (spec.min_budget or 1.0)


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


def time_limit(service_seconds: float, factor: float) -> float:
    """A job's soft time limit: ``factor`` × its predicted service time, and a minute for the unforeseen."""
    return round(factor * service_seconds + 60.0, 1)


def plan_at_submit(spec, timing: TimingModel | None, view, workers: int, arrival_rate: float | None, now: float,
                   time_limit_factor: float, seconds_per_step: float | None = None) -> JobPlan:
    """The gateway's plan for a new job (``view``: the model's queue, a ``PlannerView``): the largest budget
    whose predicted completion meets the deadline, capped as the workers will cap it at start; or, when
    even the smallest budget cannot, the smallest one (``best_effort``) or ``DeadlineUnreachable``.

    If the queue leaves no room, it is checked as it will be once its SLA jobs shrink to their smallest
    budgets (the workers re-plan them at start): a job that fits there is admitted at its own smallest
    budget. Without a timing model (a worker that publishes none) there is no planning, only a
    generous time limit from the seconds per step."""
    if timing is None:
        limit = time_limit(seconds_per_step * spec.steps, time_limit_factor) if seconds_per_step else None
        return JobPlan(budget=1.0 if spec.budget is None else spec.budget, soft_time_limit=limit)
    floor = spec.min_budget or 1.0
    ahead = work_ahead(view.queued_work, view.running, spec.priority, timing, now)
    cap = load_capped_budget(arrival_rate, workers, timing, spec.steps, floor)
    plan = plan_job(spec, timing, ahead, workers, now, budget_cap=cap)
    if plan.budget is None:
        floor_ahead = work_ahead(view.queued_floor_work, view.running, spec.priority, timing, now)
        floor_plan = plan_job(spec, timing, floor_ahead, workers, now, fixed_budget=floor)
        if floor_plan.completion_at <= spec.deadline_at:
            plan = floor_plan
    if plan.budget is None:
        if not spec.best_effort:
            raise DeadlineUnreachable(spec.deadline_at - now, plan.fastest_completion_at - now, plan.wait_seconds,
                                      floor)
        plan = plan_job(spec, timing, ahead, workers, now, fixed_budget=floor)
    return JobPlan(budget=plan.budget, predicted_service_seconds=round(plan.service_seconds, 3),
                   predicted_floor_seconds=round(timing.service_seconds(spec.steps, floor_budget(spec)), 3),
                   predicted_completion_at=plan.completion_at,
                   soft_time_limit=time_limit(plan.service_seconds, time_limit_factor))


def _time_allowed(spec, timing: TimingModel, active_jobs, workers: int, now: float,
                  own_min_seconds: float) -> tuple[float, bool]:
    """``seconds_allowed`` for ``spec``'s job among ``active_jobs``, and whether any job is queued behind it."""
    queued, running = queued_behind(active_jobs, spec.job_id, timing, now)
    return seconds_allowed(now, spec.deadline_at, own_min_seconds, queued, running, workers), bool(queued)


def replanned(spec, timing: TimingModel | None) -> bool:
    """Whether a worker re-plans the job: a deadline job whose budget the request left to the planner,
    on a worker with a timing model."""
    return spec.budget is None and timing is not None and spec.deadline_at is not None


def plan_at_start(spec, plan: JobPlan, timing: TimingModel | None, active_jobs, workers: int,
                  arrival_rate: float | None, now: float) -> tuple[JobPlan, bool]:
    """The worker's plan as a deadline job starts, and whether it needs re-planning while it runs.

    The largest budget that meets its own deadline from the time actually left, leaves every job queued
    behind it time to meet *its* deadline at its smallest budget (``seconds_allowed``), and lets the
    model's workers keep up with the arrival rate (``load_capped_budget``). A job with a budget of its own,
    or without a deadline or a timing model, runs as planned. An idle queue with plenty of time runs the
    plain full-budget path, with nothing to re-plan."""
    if not replanned(spec, timing):
        return plan, False
    floor = spec.min_budget or 1.0
    allowed, queue_behind = _time_allowed(spec, timing, active_jobs, workers, now,
                                          timing.service_seconds(spec.steps, floor))
    budget = min(choose_budget(allowed, 0.0, timing, spec.steps, floor) or floor,
                 load_capped_budget(arrival_rate, workers, timing, spec.steps, floor))
    relaxed = budget >= 1.0 and not queue_behind and timing.service_seconds(spec.steps, 1.0) < 0.5 * allowed
    return plan.model_copy(update={"budget": budget}), not relaxed


def budget_while_running(spec, timing: TimingModel, step: int, active_jobs, workers: int, now: float) -> float | None:
    """The budget for a running deadline job's remaining steps (from ``step``), re-planned as at its start
    from the time left now; None when the budget does not change its speed (no controller)."""
    if timing.step_seconds_per_budget <= 0:
        return None
    floor, remaining = spec.min_budget or 1.0, spec.steps - step
    allowed, _ = _time_allowed(spec, timing, active_jobs, workers, now,
                               timing.denoise_seconds(remaining, floor) + timing.job_seconds_fixed)
    return choose_budget(allowed, 0.0, timing, remaining, floor) or floor

