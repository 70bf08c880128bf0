"""``JobQueue``: how a stored job reaches a worker.

- ``CeleryJobQueue``: ``send_task("hsa.generate_video", [JobSpec JSON], queue="hsa.<model>")`` over
  Redis. The gateway sends by name and never imports the worker (nor torch).
- ``EmbeddedJobQueue``: the one-process default. The job row in the SQLite store *is* the queue
  entry; the embedded worker claims it, so submitting has nothing left to do.
"""

from __future__ import annotations

from typing import Protocol

from .jobs import JobSpec
from .sla import PRIORITY_STEPS

# kombu emulates priorities on Redis with one list per step; producer and consumer must agree
BROKER_TRANSPORT_OPTIONS = {
    "priority_steps": PRIORITY_STEPS,
    "sep": ":",
    "queue_order_strategy": "priority",
    "visibility_timeout": 6 * 3600,  # Redis re-delivers unacknowledged tasks after this; longer than any job
}

TASK_NAME = "hsa.generate_video"
SHADOW_TASK_NAME = "hsa.shadow_reference"  # worker-to-worker: full-budget re-runs for quality metrics
HARD_LIMIT_GRACE_SECONDS = 30.0


def queue_name(model: str) -> str:
    return f"hsa.{model}"


class JobQueue(Protocol):
    def submit(self, spec: JobSpec) -> None: ...

    def ping(self) -> None:
        """Raise if the broker cannot be reached."""

    def close(self) -> None: ...


class CeleryJobQueue:
    def __init__(self, broker_url: str):
        from celery import Celery

        self.app = Celery("hsa-gateway", broker=broker_url)
        self.app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True,
                             broker_transport_options=BROKER_TRANSPORT_OPTIONS)

    def submit(self, spec: JobSpec) -> None:
        options = {}
        if spec.soft_time_limit is not None:
            options = dict(soft_time_limit=spec.soft_time_limit,
                           time_limit=spec.soft_time_limit + HARD_LIMIT_GRACE_SECONDS)
        # argsrepr: Celery would otherwise repr the whole spec (the prompt too) into the message headers
        # and its logs, which is also about a third of the publish time
        self.app.send_task(TASK_NAME, args=[spec.model_dump(mode="json")], queue=queue_name(spec.model),
                           task_id=spec.job_id, priority=spec.priority, argsrepr=f"[{spec.job_id}]", **options)

    def ping(self) -> None:
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=5)

    def close(self) -> None:
        self.app.close()


class EmbeddedJobQueue:
    def submit(self, spec: JobSpec) -> None:
        return None

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None
