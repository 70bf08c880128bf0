"""``JobQueue``: how a stored job reaches a worker.

- ``CeleryJobQueue``: a Celery task ``hsa.generate_video([JobSpec JSON])`` on the Redis list of
  queue ``hsa.<model>``. The gateway never imports the worker (nor torch), and it does not publish
  through Celery: ``message`` renders the task exactly as ``send_task`` would put it on the list, and
  the job store pushes it *in the same Redis transaction that stores the job*. A job is then queued
  if and only if it is stored — a gateway dying between the two can leave neither a record no
  worker will ever run nor a message for a job nobody can see — and a create costs one round trip
  instead of kombu's publish (~1.2 ms of CPU, measured: about a fifth of a whole create).
- ``EmbeddedJobQueue``: the one-process default. The job row in the SQLite store *is* the queue
  entry; the embedded worker claims it, so there is no message to write.
"""

from __future__ import annotations

import base64
import json
import uuid
from bisect import bisect
from dataclasses import dataclass
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


@dataclass(frozen=True)
class QueueMessage:
    """A task as kombu's Redis transport stores it: ``payload`` LPUSHed onto the list ``key``."""

    key: str
    payload: str


class JobQueue(Protocol):
    def message(self, spec: JobSpec) -> QueueMessage | None:
        """The message the job store writes with the job, atomically; None where the stored job is
        itself the queue entry."""

    def ping(self) -> None:
        """Raise if the broker cannot be reached."""

    def close(self) -> None: ...


def priority_list(queue: str, priority: int) -> str:
    """The Redis list kombu's transport reads ``priority`` from: the queue's own list for the first
    step, ``<queue>:<step>`` for the others (a priority between steps falls to the step below)."""
    step = PRIORITY_STEPS[bisect(PRIORITY_STEPS, min(max(priority, 0), 9)) - 1]
    return f"{queue}{BROKER_TRANSPORT_OPTIONS['sep']}{step}" if step else queue


class CeleryJobQueue:
    def __init__(self, broker_url: str):
        from celery import Celery

        self.app = Celery("hsa-gateway", broker=broker_url)
        self.app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True,
                             broker_transport_options=BROKER_TRANSPORT_OPTIONS)

    def message(self, spec: JobSpec) -> QueueMessage:
        limits = {}
        if spec.soft_time_limit is not None:
            limits = dict(soft_time_limit=spec.soft_time_limit,
                          time_limit=spec.soft_time_limit + HARD_LIMIT_GRACE_SECONDS)
        # Celery's own protocol-2 headers and body (what send_task builds); argsrepr: Celery would
        # otherwise repr the whole spec (the prompt too) into the headers and its logs
        task = self.app.amqp.as_task_v2(spec.job_id, TASK_NAME, args=[spec.model_dump(mode="json")],
                                        argsrepr=f"[{spec.job_id}]", ignore_result=None, **limits)
        queue = queue_name(spec.model)
        # kombu's envelope for a virtual transport (Channel.prepare_message + basic_publish), JSON-serialised
        # and base64-bodied as its Redis transport writes it; tests/server/test_queue_message.py holds
        # it equal to what send_task pushes
        envelope = {
            "body": base64.b64encode(json.dumps(task.body).encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": task.headers,
            "properties": {
                **task.properties,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": spec.priority,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        return QueueMessage(priority_list(queue, spec.priority), json.dumps(envelope))

    def ping(self) -> None:
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=5)

    def close(self) -> None:
        self.app.close()


class EmbeddedJobQueue:
    def message(self, spec: JobSpec) -> None:
        return None

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None
