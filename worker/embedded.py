"""The embedded worker of the one-process default: same pipeline, SQLite store as its queue.

``hsa-video serve`` (with no ``HSA_REDIS_URL``) starts it as a child process next to the gateway;
``hsa-video worker`` without ``HSA_REDIS_URL`` runs it in the foreground. It is the only consumer of
its store, so at start-up it re-queues jobs a previous run left in progress (crash recovery).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from jobs import metrics
from jobs.settings import ServiceSettings, open_object_store
from jobs.stores.sqlite_store import SqliteJobStore

from .pipeline import JobPipeline
from .registration import Heartbeat
from .runners import load_runner
from .shadow import ShadowReference
from .webhook_dispatcher import WebhookDispatcher

log = logging.getLogger("hsa.worker")

POLL_SECONDS = 0.1
MAX_PENDING_SHADOWS = 64  # a burst beyond this drops the oldest samples, not jobs


def run_embedded_worker(settings: ServiceSettings, stop: threading.Event | None = None, runner=None) -> None:
    stop = stop or threading.Event()
    model = settings.model
    if runner is None:
        started = time.perf_counter()
        runner = load_runner(settings)
        metrics.MODEL_LOAD_SECONDS.labels(model).set(time.perf_counter() - started)
    metrics.init_worker(model)
    store = SqliteJobStore(settings.database_path, settings.idempotency_ttl_seconds)
    storage = open_object_store(settings)
    # shadow references wait in memory and run only when no job is queued (the lowest priority); the
    # ones pending at shutdown are dropped — they are samples, not work anyone waits for
    shadows: deque[str] = deque(maxlen=MAX_PENDING_SHADOWS)  # job ids
    shadow = ShadowReference(runner, store, storage)
    dispatcher = WebhookDispatcher(store, settings).start()
    pipeline = JobPipeline(runner, store, storage, settings, submit_shadow=lambda spec: shadows.append(spec.job_id),
                           webhook_scheduled=dispatcher.wake)
    requeued = store.requeue_in_progress([model])
    if requeued:
        log.warning("re-queued %d job(s) left in progress by a previous run", requeued)
    heartbeat = Heartbeat(store, runner.card, settings.worker_heartbeat_seconds).start()
    log.info("embedded worker serving model %s", model)
    try:
        while not stop.is_set():
            record = store.next_queued([model])
            if record is None:
                if shadows:
                    shadow.run(shadows.popleft())
                else:
                    stop.wait(POLL_SECONDS)
                continue
            pipeline.run(record.id)
    finally:
        heartbeat.stop()
        dispatcher.stop()  # what it has not sent stays in the outbox for the next start
        store.close()
