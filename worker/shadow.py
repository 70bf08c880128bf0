"""Shadow reference: how far a served video is from what the full budget would have served.

For a sampled fraction of completed jobs that ran below full budget (``HSA_SHADOW_SAMPLE_RATE``),
the worker queues a low-priority shadow task that re-runs the job at budget 1.0 with the same
prompt, seed, first frame and steps, and records PSNR and SSIM of the served video (its MP4,
decoded) against the reference's frames — as Prometheus histograms labelled by model and budget
bucket, and on the job record (``shadow_reference`` on the video object). The served video's H.264
loss is in every score, a floor the budget's loss adds to: identical content scores that loss alone
(~38 dB PSNR, SSIM ~0.97 for a 64×64 tiny-model clip at the encoder's CRF 12).

The sample is a deterministic function of the job id, so a re-delivered job makes the same choice.
Shadow tasks take worker time the gateway's queue model does not see; keep the rate small.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Callable

from jobs import metrics
from jobs.records import JobRecord, JobSpec, JobStatus

from .runners import InputImages

log = logging.getLogger("hsa.worker")

SHADOW_PRIORITY = 9  # the lowest queue priority: after every interactive and standard job

ShadowSubmitter = Callable[[JobSpec], None]


def sampled(job_id: str, rate: float) -> bool:
    """Whether ``job_id`` falls in a ``rate`` sample (stable across processes and re-deliveries)."""
    if rate <= 0:
        return False
    draw = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big") / 2**64
    return draw < rate


def wants_shadow(record: JobRecord, rate: float) -> bool:
    """Completed below full compute (a full-budget job *is* its reference) and in the sample."""
    fraction = record.stats.get("achieved_compute_fraction")
    return (record.status == JobStatus.completed and fraction is not None and fraction < 1.0
            and sampled(record.id, rate))


class ShadowReference:
    def __init__(self, runner, store, storage):
        self.runner, self.store, self.storage = runner, store, storage

    def run(self, job_id: str) -> dict | None:
        """Re-run the job ``job_id`` at full budget and score its served video; returns the scores, or None
        when the job or its video is gone (deleted meanwhile)."""
        from hsa_core.media import read_mp4, to_uint8
        from hsa_core.quality import clip_fidelity

        record = self.store.get(job_id)
        if record is None or record.status != JobStatus.completed or record.output_key is None:
            metrics.SHADOW_RUNS.labels(self.runner.name, "skipped").inc()
            return None
        spec = record.spec
        started = time.perf_counter()
        try:
            served_bytes = self.storage.get_bytes(record.output_key)
        except Exception:  # deleted by its owner since it was queued
            metrics.SHADOW_RUNS.labels(spec.model, "skipped").inc()
            return None
        try:
            clip = self.runner.generate(spec, 1.0, InputImages.from_storage(self.storage, spec), lambda done, total: None).frames
            with tempfile.TemporaryDirectory(prefix="hsa-shadow-") as folder:
                served_path = Path(folder) / "served.mp4"
                served_path.write_bytes(served_bytes)
                served = read_mp4(served_path)
            # against the reference's own frames, not a second encode: libx264's output is not
            # bit-reproducible on every CPU (the same frames encoded twice decode up to 11 levels apart
            # on an Intel Xeon), so a re-encoded reference would score identical content anywhere
            # from ~45 to 100 dB; this way the served video's codec loss is a fixed floor
            psnr, ssim = clip_fidelity(served / 255.0, to_uint8(clip) / 255.0)
        except Exception:
            log.exception("shadow reference of job %s failed", spec.job_id)
            metrics.SHADOW_RUNS.labels(spec.model, "failed").inc()
            return None
        budget = record.stats.get("budget", record.plan.budget)
        bucket = metrics.budget_bucket(budget)
        metrics.SHADOW_PSNR.labels(spec.model, bucket).observe(psnr)
        metrics.SHADOW_SSIM.labels(spec.model, bucket).observe(ssim)
        metrics.SHADOW_RUNS.labels(spec.model, "completed").inc()
        scores = {"psnr_db": round(psnr, 3), "ssim": round(ssim, 5), "budget": budget,
                  "seconds": round(time.perf_counter() - started, 3)}
        record = self.store.get(spec.job_id)  # fresh: a webhook outcome may have landed meanwhile
        if record is not None:
            record.stats["shadow_reference"] = scores
            self.store.update(record)
        log.info("shadow reference of job %s at budget %s: PSNR %.2f dB, SSIM %.4f", spec.job_id, budget, psnr, ssim)
        return scores
