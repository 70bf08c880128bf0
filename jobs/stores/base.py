"""The ``JobStore`` protocol: job records, their status transitions, idempotency keys, model cards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..records import JobRecord, JobStatus, ModelCard

# status transitions a store performs atomically (compare-and-set on the current status)
ACTIVE = (JobStatus.queued, JobStatus.in_progress)


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different request body."""

    def __init__(self, job_id: str):
        super().__init__(job_id)
        self.job_id = job_id


class ActiveJobLimit(Exception):
    """The owner already has its maximum of queued + running jobs."""

    def __init__(self, limit: int):
        super().__init__(limit)
        self.limit = limit


@dataclass(frozen=True)
class PlannerView:
    """One model's queue as the SLA planner reads it at every create."""

    queued_work: dict[int, float]  # predicted service seconds of the queued jobs, per priority
    queued_floor_work: dict[int, float]  # the same at each job's smallest budget
    running: list[JobRecord]


class JobStore(Protocol):
    def ping(self) -> None:
        """Raise if the store cannot be reached."""

    def create(self, record: JobRecord, idempotency_key: str | None = None, body_hash: str | None = None,
               max_active: int = 0) -> tuple[JobRecord, bool]:
        """Store a new job; with a key seen before, return that job and False (or raise
        ``IdempotencyConflict`` if it came with a different body hash). With ``max_active`` > 0, raise
        ``ActiveJobLimit`` instead when ``record.owner`` already has that many active jobs (atomic:
        concurrent creates cannot overshoot)."""

    async def create_async(self, record: JobRecord, idempotency_key: str | None = None, body_hash: str | None = None,
                           max_active: int = 0) -> tuple[JobRecord, bool]:
        """``create`` for the gateway's event loop."""

    def get(self, job_id: str) -> JobRecord | None: ...

    async def get_async(self, job_id: str) -> JobRecord | None:
        """``get`` on the event loop: the status poll, the gateway's most frequent call, without a
        trip to the thread pool."""

    def list(self, limit: int, after: str | None = None, newest_first: bool = True,
             owner: str | None = None) -> tuple[list[JobRecord], bool]:
        """One page of jobs (of ``owner`` only, when given) after the job ``after`` (exclusive) and
        whether more follow."""

    def start(self, job_id: str, generation: int | None = None) -> JobRecord | None:
        """queued/in_progress → in_progress (a re-delivered job restarts); None if the job is terminal or
        gone, or when ``generation`` is not the job's current one (a stale message)."""

    def set_progress(self, job_id: str, progress: float) -> None: ...

    def finish(self, record: JobRecord) -> bool:
        """in_progress → record.status (completed/failed) with its fields; False if it was cancelled meanwhile."""

    def cancel(self, job_id: str) -> JobRecord | None:
        """queued/in_progress → cancelled; returns the job as it now is (None if unknown)."""

    def is_cancelled(self, job_id: str) -> bool: ...

    def update(self, record: JobRecord) -> None:
        """Rewrite a job's fields without changing its status (never its webhook outcome: that is
        ``record_webhook``'s, so neither write can undo the other)."""

    # the webhook outbox: a job's event waits here until it is delivered or given up, whatever
    # becomes of the worker that finished the job
    def schedule_webhook(self, job_id: str, due_at: float) -> None:
        """Put the job's webhook in the outbox, due at ``due_at`` (a worker does this before it stores
        the job's end, so no crash in between can lose the event)."""

    def claim_webhooks(self, now: float, lease_seconds: float, limit: int) -> list[str]:
        """Up to ``limit`` ids of jobs whose webhook is due, each pushed ``lease_seconds`` into the future
        so that no other dispatcher takes it meanwhile."""

    def record_webhook(self, job_id: str, outcome: dict | None, due_at: float | None) -> None:
        """Store the delivery outcome the video object shows (None: leave it); keep the webhook in the
        outbox, due at ``due_at``, or with None take it out."""

    def delete(self, job_id: str) -> bool: ...

    def register_model(self, card: ModelCard, worker_id: str, ttl_seconds: float) -> None:
        """Heartbeat: the worker ``worker_id`` serves ``card`` for the next ``ttl_seconds``."""

    def models(self) -> list[ModelCard]:
        """Cards of the models live workers serve (one per model id; ``workers`` counts them)."""

    def last_card(self, model: str) -> ModelCard | None:
        """The card a worker last published for ``model``, live or not (``workers`` 0): what a restarting
        worker will serve again."""

    def queue_depth(self, model: str) -> int: ...

    def queued_work(self, model: str, at_floor: bool = False) -> dict[int, float]:
        """Predicted service seconds of ``model``'s queued jobs, summed per priority (the SLA planner's
        queue, read in constant time on Redis); ``at_floor``: each job at its smallest budget
        (the plans' ``predicted_floor_seconds``), what the queue shrinks to once workers re-plan it."""

    def running_jobs(self, model: str) -> list[JobRecord]: ...

    async def planner_view_async(self, model: str) -> PlannerView:
        """``queued_work`` at both budgets and ``running_jobs``, read together on the gateway's event
        loop: on Redis one script, one round trip however many jobs run."""

    def active_jobs(self, model: str) -> list[JobRecord]:
        """Queued and in-progress jobs of ``model`` (the SLA planner's view of the queue)."""

    def close(self) -> None: ...

    async def close_async(self) -> None:
        """Close what ``get_async`` opened on the event loop (before ``close``)."""


def merge_cards(cards: list[ModelCard]) -> list[ModelCard]:
    """One card per model over its live workers. Workers of a model share its queue, so the merged card
    offers what every one of them serves (sizes and frame counts they all accept, each shape as the
    first worker describes it): a job the gateway accepts can run wherever it lands."""
    by_id: dict[str, ModelCard] = {}
    for card in cards:
        if card.id not in by_id:
            by_id[card.id] = card.model_copy(update={"workers": 1}, deep=True)
            continue
        merged = by_id[card.id]
        merged.workers += 1
        if card.arrival_rate is not None:  # the busiest estimate: the cap errs towards keeping up
            merged.arrival_rate = max(merged.arrival_rate or 0.0, card.arrival_rate)
        limits = merged.limits
        limits.sizes = [size for size in limits.sizes if size in card.limits.sizes]
        limits.num_frames = [frames for frames in limits.num_frames if frames in card.limits.num_frames]
        merged.shapes = {key: shape for key, shape in merged.shapes.items() if key in card.shapes}
    for card in by_id.values():
        if card.limits.default_size not in card.limits.sizes and card.limits.sizes:
            card.limits.default_size = card.limits.sizes[0]
    return sorted((card for card in by_id.values() if card.limits.sizes and card.limits.num_frames),
                  key=lambda card: card.id)
