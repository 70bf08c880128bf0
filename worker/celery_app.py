"""The Celery worker: task ``hsa.generate_video`` on queue ``hsa.<model>``, one model per worker.

Started by ``hsa-video worker --model tiny`` (or ``celery -A worker.celery_app worker -Q hsa.tiny``
with ``HSA_MODEL=tiny``). Delivery is at-least-once: ``acks_late`` + reject on worker lost
re-queue a job whose pool process died, prefetch 1 keeps queued jobs visible to other workers, and
the pipeline's deterministic output keys make a re-run idempotent. A message is JSON naming the job
and its queue entry's generation; the job itself is read from the store. What Celery cannot do
itself (a message lost before it was queued, a whole worker lost) the main process's reconciler
does (``worker/reconciler.py``).

Each worker process loads its model once, in a thread started by ``worker_process_init`` (so the
process answers the parent's liveness check while weights load), then heartbeats its model card.
A model that fails to load stops the whole worker (a worker that cannot serve must not take jobs).
A pool process that dies (OOM kill, hard time limit) is replaced quickly: the model code is imported
once in the main process before the pool forks, and the replacement reads the timing models from
the host's timing cache instead of probing again (``worker/runners/timing.py``).

A job stuck past its hard time limit (a step that never returns, so the pipeline's own per-step
limit check cannot fire) is killed with its pool process by Celery; the worker's main process then
fails the job as ``timeout`` (``GenerateVideoTask.on_failure``) and Celery starts a fresh process.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

from celery import Celery, Task, signals
from celery.exceptions import TimeLimitExceeded

from jobs.queues import BROKER_TRANSPORT_OPTIONS, SHADOW_TASK_NAME, TASK_NAME
from jobs.settings import ServiceSettings

log = logging.getLogger("hsa.worker")

WORKER_IDENTITY_ENV = "HSA_WORKER_IDENTITY"  # set by the main process itself, not by operators
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
    # a broker reconnect re-queues the running job's message; the run in progress is kept (not
    # cancelled) and a duplicate delivery finds the job finished and skips it, or finishes second
    # and changes nothing (same output key, compare-and-set finish)
    worker_cancel_long_running_tasks_on_connection_loss=False,
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
            from jobs import metrics
            from jobs.settings import open_job_store_for, open_object_store

            from .pipeline import JobPipeline
            from .registration import Heartbeat
            from .runners import load_runner
            from .shadow import ShadowReference

            settings = ServiceSettings()
            model = settings.model
            started = time.perf_counter()
            runner = load_runner(settings)
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
            # the main process says why on its way out (hsa-video worker exits 2 with this line)
            failure = load_failure_file(ServiceSettings(), _main_pid)
            failure.parent.mkdir(parents=True, exist_ok=True)
            failure.write_text(f"{type(error).__name__}: {error}")
            os.kill(_main_pid, signal.SIGTERM)
        finally:
            self.ready.set()


def load_failure_file(settings: ServiceSettings, main_pid: int):
    """Where a pool process that could not load the model leaves the reason for its worker's main process."""
    return settings.data_dir / "worker-failures" / f"{socket.gethostname()}-{main_pid}.txt"


def worker_identity() -> str:
    """This worker as running jobs name it (``claim``): host and main process id. Set in the main
    process before the pool forks, so pool processes (and the solo pool's main process) agree."""
    return os.environ.setdefault(WORKER_IDENTITY_ENV, f"{socket.gethostname()}-{os.getpid()}")


_state = _ProcessState()


_main_pid = os.getpid()  # the worker's main process: set again at worker_init, inherited by the pool


@signals.worker_init.connect
def _import_model_code_before_forking(**_) -> None:
    global _main_pid
    _main_pid = os.getpid()
    worker_identity()  # fixed here, in the main process, for every pool process it forks
    # torch, diffusers' Wan model and the rest of the job's code, once in the main process: every pool
    # process, first or replacement, inherits them instead of spending seconds importing (importing
    # starts no torch threads, so forking after it is safe)
    from diffusers import WanTransformer3DModel  # noqa: F401  (resolved lazily by diffusers: the slow part)

    import hsa_core.adapters.wan  # noqa: F401
    import hsa_core.media  # noqa: F401
    import hsa_core.models  # noqa: F401
    import hsa_core.models.tiny.model  # noqa: F401

    from . import pipeline, runners  # noqa: F401


_main_process_threads: list = []


@signals.worker_ready.connect
def _reconcile_and_deliver_while_alive(**_) -> None:
    """The main process's own work: reconciling the queue and sending webhooks from the outbox."""
    from jobs.settings import open_job_store_for

    from .reconciler import Reconciler
    from .webhook_dispatcher import WebhookDispatcher

    settings = ServiceSettings()
    if settings.redis_url:  # the Celery deployment's: the embedded worker's store is its queue
        Reconciler(settings, settings.model, worker_identity()).start()
    _main_process_threads.append(WebhookDispatcher(open_job_store_for(settings), settings).start())


@signals.worker_shutdown.connect
def _stop_delivering(**_) -> None:
    for dispatcher in _main_process_threads:
        dispatcher.stop()  # what it has not sent stays in the outbox for the other workers


@signals.worker_process_init.connect
def _load_model_in_child(**_) -> None:
    _state.start_loading()


@signals.worker_process_shutdown.connect
def _stop_heartbeat(**_) -> None:
    if _state.heartbeat is not None:
        _state.heartbeat.stop()


class GenerateVideoTask(Task):
    _store = None  # the main process's own job store connection, opened on the first hard timeout

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        # Celery calls this in the worker's main process after killing a pool process at the hard
        # limit; the job would otherwise stay in_progress forever (the task is acknowledged, not retried)
        if isinstance(exc, TimeLimitExceeded):
            fail_after_hard_time_limit(self, args[0]["job_id"], exc)


def fail_after_hard_time_limit(task: GenerateVideoTask, job_id: str, exc: TimeLimitExceeded) -> None:
    from jobs import metrics
    from jobs.records import ErrorInfo, JobStatus
    from jobs.settings import open_job_store_for

    settings = ServiceSettings()
    if task._store is None:
        task._store = open_job_store_for(settings)
    record = task._store.get(job_id)
    if record is None or record.status != JobStatus.in_progress:
        return
    record.status = JobStatus.failed
    record.error = ErrorInfo(code="timeout", message=f"the job ran past its hard time limit of {exc.args[0]} s "
                             "inside one step; its worker process was replaced")
    record.completed_at = time.time()
    if record.spec.webhook_url:  # the outbox first, as the pipeline does; a dispatcher sends it
        task._store.schedule_webhook(job_id, time.time())
    if not task._store.finish(record):  # cancelled meanwhile
        return
    log.error("job %s failed: hard time limit (%s s) exceeded", job_id, exc.args[0])
    metrics.observe_job(record)


@app.task(name=TASK_NAME, bind=True, ignore_result=True, base=GenerateVideoTask)
def generate_video(self, message: dict) -> str:
    _state.start_loading()  # solo/threads pools have no worker_process_init: load on first use
    if not _state.ready.wait(MODEL_LOAD_TIMEOUT_SECONDS) or _state.pipeline is None:
        raise RuntimeError(f"model not available in this worker: {_state.error}")
    _state.pipeline.store.claim(message["job_id"], worker_identity())  # for the reconciler's orphan check
    return _state.pipeline.run(message["job_id"], message.get("generation"))


def _queue_shadow(spec) -> None:
    from jobs.queues import queue_name

    from .shadow import SHADOW_PRIORITY

    shadow_reference.apply_async(args=[{"job_id": spec.job_id}], queue=queue_name(spec.model),
                                 priority=SHADOW_PRIORITY)


@app.task(name=SHADOW_TASK_NAME, ignore_result=True)
def shadow_reference(message: dict) -> None:
    """The low-priority full-budget re-run of a served job (worker/shadow.py); scores go to metrics."""
    _state.start_loading()
    if not _state.ready.wait(MODEL_LOAD_TIMEOUT_SECONDS) or _state.shadow is None:
        raise RuntimeError(f"model not available in this worker: {_state.error}")
    _state.shadow.run(message["job_id"])
