"""``JobQueue``: how a stored job reaches a worker.

- ``CeleryJobQueue``: the Celery task ``hsa.generate_video`` on queue ``hsa.<model>``, published with
  Celery's public API (``send_task``) once the job is stored. The message names the job and its
  generation only; the worker reads everything else from the job store. A job whose message was lost
  (the gateway died between storing and publishing, the broker dropped it) stays ``queued``: the
  workers' reconciler publishes it again under a new generation (``worker/reconciler.py``), and a
  message of an older generation is skipped, so a job never runs twice for one queue entry.
- ``EmbeddedJobQueue``: the one-process default. The job row in the SQLite store *is* the queue
  entry; the embedded worker claims it, so there is nothing to publish.
"""

from __future__ import annotations

from typing import Protocol

from .records import JobRecord
from .sla import PRIORITY_STEPS

# kombu emulates priorities on Redis with one list per step; producer and consumer must agree
BROKER_TRANSPORT_OPTIONS = {
    "priority_steps": PRIORITY_STEPS,
    "queue_order_strategy": "priority",
    "visibility_timeout": 6 * 3600,  # Redis re-delivers unacknowledged tasks after this; longer than any job
}

TASK_NAME = "hsa.generate_video"
SHADOW_TASK_NAME = "hsa.shadow_reference"  # worker-to-worker: full-budget re-runs for quality metrics
HARD_LIMIT_GRACE_SECONDS = 30.0


def queue_name(model: str) -> str:
    return f"hsa.{model}"


def task_message(record: JobRecord) -> dict:
    """What the task carries: the job and the generation of its queue entry (JSON only)."""
    return {"job_id": record.id, "generation": record.generation}


def publish_job(app, record: JobRecord) -> None:
    """Send ``record``'s task with ``app`` (a Celery app on the broker): its model's queue, its priority,
    and Celery's soft and hard time limits from the job's own."""
    spec, soft_limit = record.spec, record.plan.soft_time_limit
    limits = {}
    if soft_limit is not None:
        limits = dict(soft_time_limit=soft_limit, time_limit=soft_limit + HARD_LIMIT_GRACE_SECONDS)
    app.send_task(TASK_NAME, args=[task_message(record)], queue=queue_name(spec.model), priority=spec.priority,
                  task_id=f"{record.id}-{record.generation}", **limits)


class JobQueue(Protocol):
    def publish(self, record: JobRecord) -> None:
        """Queue the stored job ``record`` for a worker (nothing where the store is the queue)."""

    def ping(self) -> None:
        """Raise if the broker cannot be reached."""

    def close(self) -> None: ...


def broker_app(broker_url: str, name: str):
    """A Celery app that publishes JSON tasks with this project's transport options (no task code)."""
    from celery import Celery

    app = Celery(name, broker=broker_url)
    app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True,
                    broker_transport_options=BROKER_TRANSPORT_OPTIONS)
    return app


class CeleryJobQueue:
    def __init__(self, broker_url: str):
        self.app = broker_app(broker_url, "hsa-gateway")

    def publish(self, record: JobRecord) -> None:
        publish_job(self.app, record)

    def ping(self) -> None:
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=5)

    def close(self) -> None:
        self.app.close()


class EmbeddedJobQueue:
    def publish(self, record: JobRecord) -> None:
        return None

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None


def open_job_queue(settings) -> JobQueue:
    return CeleryJobQueue(settings.redis_url) if settings.redis_url else EmbeddedJobQueue()
