"""One job, start to finish: the code both deployments run (Celery task and embedded worker).

    start (queued → in_progress; a cancelled job is skipped) → load the first frame → sample
    (progress + cancellation + deadline checked every step) → MP4 → object store under a
    deterministic key → finish (→ completed, unless cancelled meanwhile), its webhook in the store's
    outbox for a dispatcher to send (``webhook_dispatcher.py``)

Job-level failures fail the job with a stable error code and keep the worker alive. A job
re-delivered after a worker died simply runs again: its output key is the same, so it overwrites.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from jobs import metrics
from jobs.records import ErrorInfo, JobRecord, JobStatus, latents_key, output_key
from jobs.settings import ServiceSettings
from jobs.sla import budget_while_running, plan_at_start, recent_arrival_rate, replanned

from .runners import DecodeFailed, InputImages
from .shadow import wants_shadow

log = logging.getLogger("hsa.worker")

MAX_ATTEMPTS = 3  # deliveries of one job (worker crashes) before it is failed for good
DENOISE_PROGRESS = 95.0  # progress reached when sampling ends; MP4 encoding and upload fill the rest


class JobCancelled(Exception):
    """Raised from the step hook when the job was cancelled: sampling stops within one step."""


class JobDeadlineExceeded(Exception):
    code = "timeout"


def error_code(error: BaseException) -> str:
    code = getattr(error, "code", None)
    if isinstance(code, str):
        return code
    if type(error).__name__ == "SoftTimeLimitExceeded":
        return "timeout"
    if isinstance(error, (ValueError, KeyError)):
        return "invalid_request"
    return "internal_error"


class JobPipeline:
    def __init__(self, runner, store, storage, settings: ServiceSettings, submit_shadow=None,
                 webhook_scheduled=None):
        self.runner, self.store, self.storage, self.settings = runner, store, storage, settings
        self.submit_shadow = submit_shadow  # queues a shadow reference run (worker/shadow.py), if any
        self.webhook_scheduled = webhook_scheduled  # wakes a dispatcher in this process, if there is one

    def run(self, job_id: str, generation: int | None = None) -> str:
        """Run the stored job ``job_id`` (a message of queue-entry ``generation``; None: the store is the
        queue); returns its final status, or "skipped"."""
        status = self._run(job_id, generation)
        if status != "skipped":
            record = self.store.get(job_id)
            if record is not None:
                metrics.observe_job(record)
        return status

    def _run(self, job_id: str, generation: int | None) -> str:
        record = self.store.start(job_id, generation)
        if record is None:
            log.info("job %s skipped: cancelled, deleted or published again since this message", job_id)
            return "skipped"
        spec = record.spec
        if record.attempts > MAX_ATTEMPTS:
            return self._fail(record, "worker_lost", f"the job was started {MAX_ATTEMPTS} times and never finished")
        log.info("job %s started (attempt %d)", spec.job_id, record.attempts)
        record.timings = {"queued": round(record.started_at - record.created_at, 4)}
        try:
            self._generate(record)
        except JobCancelled:
            log.info("job %s cancelled while running", spec.job_id)
            self.storage.delete_prefix(output_key(spec.job_id))
            return JobStatus.cancelled.value
        except Exception as error:  # a job-level failure: fail the job, keep the worker
            if type(error).__name__ == "SoftTimeLimitExceeded" or isinstance(error, JobDeadlineExceeded):
                message = f"the job ran past its time limit of {record.plan.soft_time_limit} s"
            else:
                log.exception("job %s failed", spec.job_id)
                message = f"{type(error).__name__}: {error}"
            return self._fail(record, error_code(error), message)
        return record.status.value

    def _generate(self, record: JobRecord) -> None:
        spec = record.spec
        started = time.perf_counter()
        limit = record.plan.soft_time_limit
        deadline = None if limit is None else time.monotonic() + limit

        images = InputImages.from_storage(self.storage, spec)
        record.timings["load_input"] = round(time.perf_counter() - started, 4)

        def on_step(done: int, total: int) -> None:
            if self.store.is_cancelled(spec.job_id):
                raise JobCancelled(spec.job_id)
            if deadline is not None and time.monotonic() > deadline:
                raise JobDeadlineExceeded(spec.job_id)
            self.store.set_progress(spec.job_id, DENOISE_PROGRESS * done / total)

        submitted_budget = record.plan.budget
        replan = self._plan_at_start(record)
        mark = time.perf_counter()
        try:
            clip = self.runner.generate(spec, record.plan.budget, images, on_step, replan)
        except DecodeFailed as failure:  # the sampling work is kept: its latents go next to the video
            key = latents_key(spec.job_id)
            self.storage.put_bytes(key, failure.latents, "application/octet-stream")
            raise DecodeFailed(f"{failure}; the sampled latents are kept in storage at {key} (torch.load)",
                               b"") from failure
        record.timings["generate"] = round(time.perf_counter() - mark, 4)
        figures = clip.figures
        figures["budget_at_submission"] = submitted_budget

        from hsa_core.media import write_mp4

        mark = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="hsa-job-") as folder:
            path = write_mp4(clip.frames, Path(folder) / "video.mp4", fps=clip.fps, audio=clip.audio,
                             sample_rate=clip.sample_rate, lossless=self.settings.video_lossless)
            record.timings["encode"] = round(time.perf_counter() - mark, 4)
            mark = time.perf_counter()
            key = output_key(spec.job_id)
            self.storage.put_file(key, path, "video/mp4")
            record.output_bytes = path.stat().st_size
        record.timings["upload"] = round(time.perf_counter() - mark, 4)
        record.timings["total"] = round(time.perf_counter() - started, 4)
        self.runner.observe(spec, clip, record.timings["total"] - clip.denoise_seconds)

        now = time.time()
        record.status, record.progress = JobStatus.completed, 100.0
        record.output_key, record.stats = key, figures
        record.completed_at, record.expires_at = now, now + self.settings.output_ttl_seconds
        if not self._finish(record):
            # cancelled between the last step and here — or completed by a duplicate delivery (a
            # broker reconnect re-queues running jobs), whose MP4 under the same key must stay
            if self.store.is_cancelled(spec.job_id):
                self.storage.delete_prefix(key)
            raise JobCancelled(spec.job_id)
        log.info("job %s completed in %.2f s (compute fraction %s)", spec.job_id, record.timings["total"],
                 figures.get("achieved_compute_fraction"))
        if self.submit_shadow is not None and wants_shadow(record, self.settings.shadow_sample_rate):
            try:
                self.submit_shadow(spec)
            except Exception as error:  # a quality sample is never worth failing a served job
                log.warning("could not queue the shadow reference of job %s: %s", spec.job_id, error)

    def _plan_at_start(self, record: JobRecord):
        """Re-plan a deadline job's budget as it starts (``record.plan``), and return the controller that
        re-plans the rest of it at HSA's re-allocation points, if it needs one (``jobs/sla.py`` decides both)."""
        spec = record.spec
        timing = self.runner.timing_for(spec)
        if not replanned(spec, timing):
            return None
        now = time.time()
        record.plan, controlled = plan_at_start(spec, record.plan, timing, self.store.active_jobs(spec.model),
                                                self._workers(spec.model),
                                                recent_arrival_rate(self.store, spec.model, now), now)
        if not controlled:
            return None

        def replan(step: int, elapsed: float) -> float | None:
            return budget_while_running(spec, timing, step, self.store.active_jobs(spec.model),
                                        self._workers(spec.model), time.time())

        return replan

    def _workers(self, model: str) -> int:
        """Live workers serving ``model`` (their heartbeats), this one included."""
        try:
            return max(1, next((card.workers for card in self.store.models() if card.id == model), 1))
        except Exception:  # the store blinked: plan as if alone (conservative)
            return 1

    def _fail(self, record: JobRecord, code: str, message: str) -> str:
        record.status = JobStatus.failed
        record.error = ErrorInfo(code=code, message=message)
        record.completed_at = time.time()
        if self._finish(record):
            return JobStatus.failed.value
        return JobStatus.cancelled.value

    def _finish(self, record: JobRecord) -> bool:
        """Store the job's end (False: cancelled meanwhile). Its webhook goes into the outbox first, so
        no crash between the two can lose the event (the dispatcher waits for the end, and sends no
        event for a cancelled job)."""
        if record.spec.webhook_url:
            self.store.schedule_webhook(record.id, time.time())
        finished = self.store.finish(record)
        if finished and record.spec.webhook_url and self.webhook_scheduled is not None:
            self.webhook_scheduled()
        return finished
