"""Job stores: where job state lives, so the gateway stays stateless.

``RedisJobStore`` (production, next to Celery) and ``SqliteJobStore`` (the one-process default,
which doubles as its own queue). Both implement ``JobStore`` and pass the same contract tests.
"""

from .base import ActiveJobLimit, IdempotencyConflict, JobStore, PlannerView

__all__ = ["ActiveJobLimit", "IdempotencyConflict", "JobStore", "PlannerView", "open_job_store"]


def open_job_store(redis_url: str | None, database_path: str | None, idempotency_ttl: int = 24 * 3600) -> JobStore:
    if redis_url:
        from .redis_store import RedisJobStore

        return RedisJobStore(redis_url, idempotency_ttl=idempotency_ttl)
    from .sqlite_store import SqliteJobStore

    return SqliteJobStore(database_path or "hsa-jobs.sqlite3", idempotency_ttl=idempotency_ttl)
