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

    def observe(self, steps: int, budget: float, actual_denoise_seconds: float, weight: float = 0.2) -> "TimingModel":
        """A copy refined by one finished job (EWMA of the actual / predicted denoise time)."""
        predicted = steps * (self.step_seconds_fixed + self.step_seconds_per_budget * budget)
        if predicted <= 0 or actual_denoise_seconds <= 0:
            return self
        ratio = actual_denoise_seconds / predicted
        factor = ratio if self.samples == 0 else (1 - weight) * self.factor + weight * ratio
        return self.model_copy(update={"factor": factor, "samples": self.samples + 1})


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


def plan_job(spec, timing: TimingModel, active_jobs, workers: int, now: float) -> Plan:
    """Budget and predicted completion of a new job (``spec``: a JobSpec) on the live queue."""
    wait = queue_wait(remaining_ahead(active_jobs, spec.priority, timing, now), workers)
    fastest = now + wait + timing.service_seconds(spec.steps, spec.min_budget or 1.0)
    if spec.budget_source == "explicit":
        budget = spec.budget
    else:
        budget = choose_budget(spec.deadline_at - now, wait, timing, spec.steps, spec.min_budget or 1.0)
    service = timing.service_seconds(spec.steps, budget if budget is not None else spec.min_budget or 1.0)
    return Plan(budget, wait, service, now + wait + service, fastest)
