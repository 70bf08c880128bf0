"""What Celery on Redis cannot do by itself, done from each Celery worker's main process.

- **A lost message.** The gateway stores a job, then publishes its task; a gateway that dies in
  between, or a broker that loses the message, leaves the job ``queued`` with nothing in the queue.
  A worker that has been idle for ``grace`` seconds would have received any message of its model
  published before that, so a job of its model still queued then has none: the reconciler publishes
  it again under the next generation. Should the old message turn up after all, the worker skips it
  (``JobStore.start`` runs only the current generation), so the job still runs once.
- **A whole worker lost** (every process of it, or its host): Celery re-queues the job of a lost
  *pool* process itself (``task_reject_on_worker_lost``), but when the main process dies too the
  message waits for the Redis visibility timeout (hours). Running jobs name the worker that runs
  them (``claim``); the main process keeps its own heartbeat alive, and once a worker's heartbeat
  has expired any live worker of the model re-queues its job under the next generation and publishes
  it. The stale message, re-delivered hours later, is skipped.

Both moves are compare-and-sets on the job's generation: when several workers reconcile at once,
one wins and the job gets one new message.
"""

from __future__ import annotations

import logging
import threading
import time

from jobs.queues import broker_app, publish_job
from jobs.records import ErrorInfo, JobStatus
from jobs.settings import ServiceSettings, open_job_store_for

log = logging.getLogger("hsa.worker")

MAX_GENERATIONS = 10  # a job published this many times without ever running is failed, not published forever


class Reconciler:
    def __init__(self, settings: ServiceSettings, model: str, identity: str, grace_seconds: float | None = None):
        self.store, self.model, self.identity = open_job_store_for(settings), model, identity
        self.app = broker_app(settings.redis_url, "hsa-reconciler")
        self.interval = settings.worker_heartbeat_seconds
        # long enough for a published message to reach an idle worker several times over
        self.grace = grace_seconds if grace_seconds is not None else 2 * self.interval
        self.idle_since: float | None = None
        self._stop = threading.Event()

    def start(self) -> "Reconciler":
        threading.Thread(target=self._loop, name="hsa-reconciler", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while True:
            for step in (self.beat, self.requeue_orphans, self.republish_lost):
                try:
                    step()
                except Exception as error:  # the store or broker may be briefly unreachable; try next beat
                    log.warning("%s failed: %s", step.__name__, error)
            if self._stop.wait(self.interval):
                return

    def beat(self) -> None:
        """This worker is alive for three more intervals: its claimed jobs are not orphans."""
        self.store.mark_worker_alive(self.identity, ttl_seconds=3 * self.interval)

    def requeue_orphans(self) -> None:
        for record in self.store.orphaned_jobs(self.model):
            if self.store.requeue(record):
                publish_job(self.app, record)
                log.warning("job %s re-queued: its worker stopped heartbeating", record.id)

    def republish_lost(self, now: float | None = None, busy: bool | None = None) -> None:
        """Publish again the queued jobs no message of which reached this worker in ``grace`` idle seconds."""
        now = time.time() if now is None else now
        if worker_busy() if busy is None else busy:
            self.idle_since = None
            return
        if self.idle_since is None:
            self.idle_since = now
        for record in self.store.queued_jobs(self.model):
            published = record.published_at or record.created_at
            if now - max(published, self.idle_since) < self.grace:
                continue
            if record.generation >= MAX_GENERATIONS:
                self._give_up(record)
            elif self.store.republish(record):
                publish_job(self.app, record)
                log.warning("job %s published again (generation %d): no message of it reached an idle worker",
                            record.id, record.generation)

    def _give_up(self, record) -> None:
        record.status, record.completed_at = JobStatus.failed, time.time()
        record.error = ErrorInfo(code="queue_lost", message=f"the job was published {record.generation} times and "
                                 "no message of it reached a worker")
        if self.store.fail_queued(record):
            log.error("job %s failed: %s", record.id, record.error.message)


def worker_busy() -> bool:
    """Whether this Celery worker holds a task (running, or prefetched for its pool)."""
    from celery.worker import state

    return bool(state.active_requests or state.reserved_requests)
