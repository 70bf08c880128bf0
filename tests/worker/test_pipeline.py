"""The job pipeline in-process, with the real tiny model: progress, cancellation within one step,
failures that keep the worker, re-delivery limits."""

import numpy as np
import pytest

from hsa_core import BudgetInfeasibleError
from hsa_core.media import read_mp4
from jobs.records import JobStatus, output_key
from jobs.settings import ServiceSettings
from jobs.storage import LocalObjectStore
from jobs.stores.sqlite_store import SqliteJobStore
from tests.server.conftest import make_record, make_spec
from worker.pipeline import JobPipeline
from worker.runners.base import InputImages
from worker.runners.tiny import TinyRunner


@pytest.fixture(scope="module")
def runner():
    return TinyRunner(threads=1)


@pytest.fixture
def parts(tmp_path, runner):
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    storage = LocalObjectStore(tmp_path / "objects")
    settings = ServiceSettings(data_dir=tmp_path, _env_file=None)
    return store, storage, JobPipeline(runner, store, storage, settings)


def submit(store, **spec):
    record = make_record(**spec)
    store.create(record)
    return record


def test_the_k_v_forecast_setting_reaches_the_tiny_model_s_sampler(tmp_path, monkeypatch):
    from worker.runners import load_runner

    monkeypatch.setenv("HSA_KV_FORECAST_LAYERS", "999")
    settings = ServiceSettings(data_dir=tmp_path, torch_threads=1, _env_file=None)
    forecasting = load_runner(settings)
    assert forecasting.hsa_config.kv_forecast_layers == 999
    spec = make_spec(prompt="a red circle", budget=0.5, steps=8, seed=3)
    with_forecast = forecasting.generate(spec, 0.5, InputImages(), lambda *_: None)
    without = TinyRunner(threads=1, timing_dir=tmp_path / "timing").generate(spec, 0.5, InputImages(), lambda *_: None)
    assert not np.array_equal(with_forecast.frames, without.frames)  # the skipped tokens' K/V moved


def test_tiny_card_limits(runner):
    card = runner.card()
    assert card.id == "tiny" and card.image_input == "optional"
    assert card.limits.sizes == ["32x32", "64x64", "128x128", "256x256"] and card.limits.num_frames == [16]
    assert card.limits.seconds == ["2"] and card.seconds_per_step > 0
    # I2V recomputes its clean frame 0 as context at every caching-window step (HSAConfig's
    # refresh_conditioning), so its slowest-rate floor is above T2V's
    shape = card.shapes["128x128x16"]
    assert set(card.shapes) == {f"{size}x16" for size in card.limits.sizes}
    assert 0 < shape.min_budget_t2v[40] < shape.min_budget_i2v[40] < 1 and shape.kv_cache_refusal is None


def test_completed_job_writes_progress_and_a_decodable_mp4(parts, tmp_path):
    store, storage, pipeline = parts
    record = submit(store, steps=6, budget=1.0, width=64, height=64)
    seen = []
    original = store.set_progress
    store.set_progress = lambda job_id, progress: (seen.append(progress), original(job_id, progress))
    assert pipeline.run(record.id) == "completed"
    done = store.get(record.id)
    assert done.status == JobStatus.completed and done.progress == 100 and done.attempts == 1
    assert seen == pytest.approx([95 * k / 6 for k in range(1, 7)])  # one update per sampler step
    assert done.stats["achieved_compute_fraction"] == 1.0 and done.output_key == output_key(record.id)
    clip = read_mp4(storage.local_path(done.output_key))
    assert clip.shape == (16, 64, 64, 3)


def test_cancellation_stops_sampling_within_one_step(parts):
    store, storage, pipeline = parts
    record = submit(store, steps=30)
    steps_after_cancel = []
    original = store.set_progress

    def progress(job_id, value):
        original(job_id, value)
        if store.is_cancelled(job_id):
            steps_after_cancel.append(value)
        elif value > 95 * 3 / 30:
            store.cancel(job_id)  # the user cancels during step 4

    store.set_progress = progress
    assert pipeline.run(record.id) == "cancelled"
    assert steps_after_cancel == []  # the next step's check stopped it before any more progress
    assert store.get(record.id).status == JobStatus.cancelled
    assert storage.local_path(output_key(record.id)) is None


def test_cancelled_before_start_is_skipped(parts):
    store, _, pipeline = parts
    record = submit(store)
    store.cancel(record.id)
    assert pipeline.run(record.id) == "skipped"


class FailingRunner:
    """Failure injection: a runner whose sampler rejects the job."""

    def __init__(self, error):
        self.error = error

    def timing_for(self, spec):
        return None

    def generate(self, spec, budget, images, on_step, replan=None):
        on_step(1, spec.steps)
        raise self.error


@pytest.mark.parametrize("error, code", [
    (BudgetInfeasibleError("budget 0.01 is below 0.3", 0.3), "budget_infeasible"),
    (RuntimeError("CUDA error: device-side assert"), "internal_error"),
])
def test_a_failing_job_fails_with_a_stable_code_and_the_worker_goes_on(parts, error, code):
    store, storage, pipeline = parts
    pipeline.runner = FailingRunner(error)
    record = submit(store)
    assert pipeline.run(record.id) == "failed"
    failed = store.get(record.id)
    assert failed.status == JobStatus.failed and failed.error.code == code
    assert str(error) in failed.error.message and failed.completed_at


def test_deadline_fails_the_job_as_timeout(parts):
    store, _, pipeline = parts
    record = submit(store, steps=40, plan={"soft_time_limit": 0.001})
    assert pipeline.run(record.id) == "failed"
    assert store.get(record.id).error.code == "timeout"


def test_a_job_that_keeps_killing_workers_is_failed(parts):
    store, _, pipeline = parts
    record = submit(store)
    for _ in range(3):
        store.start(record.id)  # three deliveries that never finished
    assert pipeline.run(record.id) == "failed"
    assert store.get(record.id).error.code == "worker_lost"


def test_image_to_video_reads_the_stored_first_frame(parts):
    import io

    from PIL import Image

    store, storage, pipeline = parts
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (0, 0, 255)).save(buffer, format="PNG")
    spec = make_spec(steps=4, width=32, height=32)
    spec = spec.model_copy(update={"input_key": f"videos/{spec.job_id}/input.png"})
    record = make_record(**spec.model_dump())
    store.create(record)
    storage.put_bytes(record.spec.input_key, buffer.getvalue(), "image/png")
    assert pipeline.run(record.id) == "completed"
    clip = read_mp4(storage.local_path(output_key(record.id))).astype(np.float32) / 255
    assert np.abs(clip[0] - np.array([0, 0, 1.0])).mean() < 0.08


def test_tiny_runner_publishes_a_timing_model(runner):
    timing = runner.card().shapes["128x128x16"].timing
    assert timing == runner.timing_for(make_spec())
    assert timing.step_seconds_per_budget > 0 and timing.job_seconds_fixed > 0
    full = timing.service_seconds(40, 1.0)
    assert timing.service_seconds(40, 0.5) < full  # half the budget is predicted cheaper


def test_sla_job_is_replanned_from_the_time_actually_left(parts):
    import time

    store, _, pipeline = parts
    timing = pipeline.runner.timing_for(make_spec())
    # a deadline that only a low budget can meet, and a gateway choice of 1.0 made earlier
    tight = timing.service_seconds(40, 0.45)
    record = submit(store, steps=40, budget=None, min_budget=0.25,
                    deadline_at=time.time() + tight)
    assert pipeline.run(record.id) == "completed"
    done = store.get(record.id)
    assert done.stats["budget_at_submission"] == 1.0
    assert 0.25 <= done.stats["budget"] < 0.6 and done.stats["achieved_compute_fraction"] < 0.7


def test_relaxed_sla_job_runs_the_plain_full_budget(parts):
    import time

    store, _, pipeline = parts
    record = submit(store, steps=8, budget=None, min_budget=1.0, deadline_at=time.time() + 600)
    pipeline.run(record.id)
    done = store.get(record.id)
    assert done.stats["budget"] == 1.0 and done.stats["replans"] == []


def test_sla_job_leaves_time_for_the_jobs_queued_behind_it(parts):
    """Own deadline generous, but a queued job due soon: the starting job shrinks its budget so the
    queued one can still make it at its smallest budget (greedy per-job budgets lose that one)."""
    import time

    store, _, pipeline = parts
    timing = pipeline.runner.timing_for(make_spec())
    now = time.time()
    starting = submit(store, steps=40, budget=None, min_budget=0.25, deadline_at=now + 600)
    behind = submit(store, steps=40, budget=None, min_budget=0.25,
                    deadline_at=now + timing.service_seconds(40, 0.5) + timing.service_seconds(40, 0.25))
    assert pipeline.run(starting.id) == "completed"
    done = store.get(starting.id)
    assert done.stats["budget_at_submission"] == 1.0
    assert 0.25 <= done.stats["budget"] <= 0.55, done.stats["budget"]
    assert store.get(behind.id).status == JobStatus.queued


def test_sla_job_budget_is_capped_by_the_arrival_rate(parts):
    """A generous deadline and nobody urgent behind, but jobs arriving faster than full budgets can be
    served: the starting job takes the budget the workers can sustain at that rate."""
    import time

    store, _, pipeline = parts
    now = time.time()
    for k in range(6):  # 6 jobs in the last 3 s: 2 jobs/s, far beyond one CPU worker at full budget
        record = make_record(steps=40, deadline_at=now + 3600)
        record.created_at = now - 0.5 * k
        store.create(record)
    starting = submit(store, steps=40, budget=None, min_budget=0.25, deadline_at=now + 600)
    assert pipeline.run(starting.id) == "completed"
    assert store.get(starting.id).stats["budget"] == 0.25


def test_shadow_sample_is_stable_per_job_and_has_the_rate():
    from worker.shadow import sampled

    ids = [f"video_{k:06d}" for k in range(4000)]
    assert [sampled(i, 0.25) for i in ids] == [sampled(i, 0.25) for i in ids]  # a re-delivery decides alike
    assert sum(sampled(i, 0.25) for i in ids) / len(ids) == pytest.approx(0.25, abs=0.03)
    assert not any(sampled(i, 0.0) for i in ids) and all(sampled(i, 1.0) for i in ids)


def test_shadow_reference_scores_a_reduced_budget_job_against_its_full_budget_rerun(tmp_path, runner):
    from prometheus_client import REGISTRY

    from worker.shadow import ShadowReference

    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    storage = LocalObjectStore(tmp_path / "objects")
    settings = ServiceSettings(data_dir=tmp_path, shadow_sample_rate=1.0, _env_file=None)
    queued = []
    pipeline = JobPipeline(runner, store, storage, settings, submit_shadow=queued.append)
    shadow = ShadowReference(runner, store, storage)

    full = submit(store, steps=12, budget=1.0, width=64, height=64, seed=3)
    assert pipeline.run(full.id) == "completed"
    assert queued == []  # a full-budget job is its own reference

    labels = {"model": "tiny", "budget_bucket": "0.5"}
    before = REGISTRY.get_sample_value("hsa_shadow_psnr_db_count", labels) or 0
    reduced = submit(store, steps=12, budget=0.45, width=64, height=64, seed=3)
    assert pipeline.run(reduced.id) == "completed"
    assert [spec.job_id for spec in queued] == [reduced.id]
    scores = shadow.run(queued[0].job_id)
    assert 10 < scores["psnr_db"] < 100 and 0 < scores["ssim"] < 1 and scores["budget"] == 0.45
    assert store.get(reduced.id).stats["shadow_reference"] == scores  # on the video object too
    assert REGISTRY.get_sample_value("hsa_shadow_psnr_db_count", labels) == before + 1

    # the same job at budget 1.0 through the shadow path: only the served MP4's own codec loss remains,
    # the same on every run (no second, not bit-reproducible encode), and less than the reduced budget's
    exact = shadow.run(full.id)
    assert exact["psnr_db"] > 35 and exact["ssim"] > 0.95 and exact["psnr_db"] > scores["psnr_db"] + 5
    again = shadow.run(full.id)
    assert (again["psnr_db"], again["ssim"]) == (exact["psnr_db"], exact["ssim"])

    storage.delete_prefix(f"videos/{reduced.id}/")  # deleted by its owner before the shadow ran
    assert shadow.run(queued[0].job_id) is None
