"""Job stores: where job state lives, so the gateway stays stateless.

``RedisJobStore`` (production, next to Celery) and ``SqliteJobStore`` (the one-process default,
which doubles as its own queue). Both implement ``JobStore`` and pass the same contract tests.
"""

from .base import ActiveJobLimit, IdempotencyConflict, JobStore, PlannerView, open_job_store

__all__ = ["ActiveJobLimit", "IdempotencyConflict", "JobStore", "PlannerView", "open_job_store"]
