"""The Celery worker: task ``hsa.generate_video`` on queue ``hsa.<model>``, one model per worker.

Started by ``hsa-video worker --model tiny`` (or ``celery -A worker.celery_app worker -Q hsa.tiny``
with ``HSA_WORKER_MODEL=tiny``). Delivery is at-least-once: ``acks_late`` + reject on worker lost
re-queue a job whose worker died, prefetch 1 keeps queued jobs visible to other workers, and the
pipeline's deterministic output keys make the re-run idempotent. Messages are JSON only.

Each worker process loads its model once, in a thread started by ``worker_process_init`` (so the
process answers the parent's liveness check while weights load), then heartbeats its model card.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from celery import Celery, signals

from server.queues import BROKER_TRANSPORT_OPTIONS, SHADOW_TASK_NAME, TASK_NAME
from server.settings import ServiceSettings

log = logging.getLogger("hsa.worker")

MODEL_ENV = "HSA_WORKER_MODEL"
MODEL_LOAD_TIMEOUT_SECONDS = 1800.0

app = Celery("hsa-worker")
app.conf.update(
    broker_url=os.environ.get("HSA_REDIS_URL", "redis://localhost:6379/0"),
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_ignore_result=True,  # job state lives in the job store, not in a result backend
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    broker_transport_options=BROKER_TRANSPORT_OPTIONS,  # priorities per tier, visibility timeout
)


class _ProcessState:
    """This process's model, pipeline and heartbeat, loaded once."""

    def __init__(self):
        self._started = False
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self.pipeline = None
        self.shadow = None
        self.heartbeat = None
        self.error: BaseException | None = None

    def start_loading(self) -> None:
        with self._lock:
            if not self._started:
                self._started = True
                threading.Thread(target=self._load, name="hsa-model-load", daemon=True).start()

    def _load(self) -> None:
        try:
            from server import metrics
            from server.settings import open_job_store_for, open_object_store

            from .pipeline import JobPipeline
            from .registration import Heartbeat
            from .runners import load_runner
            from .shadow import ShadowReference

            settings = ServiceSettings()
            model = os.environ.get(MODEL_ENV, settings.default_model)
            started = time.perf_counter()
            runner = load_runner(model, **_runner_options(model, settings))
            metrics.MODEL_LOAD_SECONDS.labels(model).set(time.perf_counter() - started)
            metrics.init_worker(model)
            store, storage = open_job_store_for(settings), open_object_store(settings)
            self.shadow = ShadowReference(runner, store, storage)
            self.pipeline = JobPipeline(runner, store, storage, settings, submit_shadow=_queue_shadow)
            self.heartbeat = Heartbeat(store, runner.card, settings.worker_heartbeat_seconds).start()
            log.info("model %s loaded; serving queue hsa.%s", model, model)
        except BaseException as error:
            log.exception("model failed to load")
            self.error = error
        finally:
            self.ready.set()


def _runner_options(model: str, settings: ServiceSettings) -> dict:
    if model == "tiny":
        return {"weights": settings.tiny_weights, "threads": settings.torch_threads}
    return {}


_state = _ProcessState()


@signals.worker_process_init.connect
def _load_model_in_child(**_) -> None:
    _state.start_loading()


@signals.worker_process_shutdown.connect
def _stop_heartbeat(**_) -> None:
    if _state.heartbeat is not None:
        _state.heartbeat.stop()


@app.task(name=TASK_NAME, bind=True, ignore_result=True)
def generate_video(self, message: dict) -> str:
    _state.start_loading()  # solo/threads pools have no worker_process_init: load on first use
    if not _state.ready.wait(MODEL_LOAD_TIMEOUT_SECONDS) or _state.pipeline is None:
        raise RuntimeError(f"model not available in this worker: {_state.error}")
    return _state.pipeline.run(message)


def _queue_shadow(spec) -> None:
    from server.queues import queue_name

    from .shadow import SHADOW_PRIORITY

    shadow_reference.apply_async(args=[spec.model_dump(mode="json")], queue=queue_name(spec.model),
                                 priority=SHADOW_PRIORITY)


@app.task(name=SHADOW_TASK_NAME, ignore_result=True)
def shadow_reference(message: dict) -> None:
    """The low-priority full-budget re-run of a served job (worker/shadow.py); scores go to metrics."""
    _state.start_loading()
    if not _state.ready.wait(MODEL_LOAD_TIMEOUT_SECONDS) or _state.shadow is None:
        raise RuntimeError(f"model not available in this worker: {_state.error}")
    _state.shadow.run(message)
