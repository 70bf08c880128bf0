"""SLA budgets: the pure planning functions (tables of cases) and the gateway's 429 path."""

import time

import pytest
from fastapi.testclient import TestClient

from jobs.queues import EmbeddedJobQueue
from jobs.records import JobStatus
from jobs.settings import ServiceSettings
from jobs.sla import (
    TIERS,
    TimingModel,
    arrival_rate,
    choose_budget,
    load_capped_budget,
    plan_job,
    queue_wait,
    queued_behind,
    remaining_ahead,
    retry_after,
    seconds_allowed,
)
from jobs.storage import LocalObjectStore
from jobs.stores.sqlite_store import SqliteJobStore
from server.app import build_app

from .conftest import make_card, make_record, make_spec

# 40 steps: 0.01 s/step fixed + 0.04 s/step at full budget; 0.5 s outside the sampler
TIMING = TimingModel(step_seconds_fixed=0.01, step_seconds_per_budget=0.04, job_seconds_fixed=0.5)


@pytest.mark.parametrize("time_left, wait, expected", [
    (10.0, 0.0, 1.0),      # plenty of time: full budget
    (2.5, 0.0, 1.0),       # exactly 0.5 + 40·0.05 = 2.5
    (1.7, 0.0, 0.5),       # 0.5 + 40·(0.01 + 0.04·0.5) = 1.7
    (2.7, 1.0, 0.5),       # the same with a 1 s queue wait
    (1.1, 0.0, None),      # 0.5 + 40·(0.01 + 0.04·0.3) = 1.38 > 1.1: not even the minimum
    (1.38, 0.0, 0.3),      # just the minimum
])
def test_choose_budget(time_left, wait, expected):
    budget = choose_budget(time_left, wait, TIMING, 40, min_budget=0.3)
    assert budget == (None if expected is None else pytest.approx(expected, abs=1e-3))


def test_choose_budget_uses_the_learned_correction():
    slow = TIMING.model_copy(update={"factor": 2.0})
    # 0.5 + 2·40·(0.01 + 0.04·b) = 2.5 → b = 0.375
    assert choose_budget(2.5, 0.0, slow, 40, 0.3) == pytest.approx(0.375, abs=1e-3)


def test_timing_model_ewma():
    first = TIMING.observe(40, 1.0, actual_denoise_seconds=4.0)  # predicted 2.0: twice as slow
    assert first.factor == pytest.approx(2.0) and first.samples == 1
    second = first.observe(40, 1.0, actual_denoise_seconds=2.0)
    assert second.factor == pytest.approx(0.8 * 2.0 + 0.2 * 1.0)
    assert TIMING.service_seconds(40, 0.5) == pytest.approx(0.5 + 40 * 0.03)


def test_queue_wait_and_what_counts_as_ahead():
    now = 1000.0
    running = make_record(plan={"predicted_service_seconds": 3.0}, priority=9)
    running.status, running.started_at = JobStatus.in_progress, now - 1.0
    batch = make_record(plan={"predicted_service_seconds": 5.0}, priority=9)
    interactive = make_record(plan={"predicted_service_seconds": 2.0}, priority=0)
    jobs = [running, batch, interactive]
    assert remaining_ahead(jobs, priority=0, timing=TIMING, now=now) == [2.0, 2.0]  # running rest + interactive
    assert sorted(remaining_ahead(jobs, priority=9, timing=TIMING, now=now)) == [2.0, 2.0, 5.0]
    assert queue_wait([2.0, 2.0, 5.0], workers=1) == 9.0 and queue_wait([2.0, 2.0], workers=2) == 2.0
    assert queue_wait([], workers=1) == 0.0


def test_plan_job_explicit_budget_wins():
    now = time.time()
    spec = make_spec(budget=0.6, deadline_at=now + 1.0, min_budget=0.3)
    plan = plan_job(spec, TIMING, [], 1, now)
    assert plan.budget == 0.6 and plan.completion_at == pytest.approx(now + TIMING.service_seconds(8, 0.6))


def test_plan_job_caps_an_sla_budget_but_not_an_explicit_one():
    now = time.time()
    sla = make_spec(budget=None, deadline_at=now + 60.0, min_budget=0.3, steps=40)
    capped = plan_job(sla, TIMING, [], 1, now, budget_cap=0.5)
    assert capped.budget == 0.5 and capped.service_seconds == pytest.approx(TIMING.service_seconds(40, 0.5))
    assert plan_job(sla, TIMING, [], 1, now, budget_cap=0.1).budget == 0.3  # never below the floor
    tight = make_spec(budget=None, deadline_at=now + 1.5, min_budget=0.3, steps=40)
    assert plan_job(tight, TIMING, [], 1, now, budget_cap=0.9).budget < 0.5  # the deadline is the tighter bound
    explicit = make_spec(budget=0.8, deadline_at=now + 60.0, min_budget=0.3, steps=40)
    assert plan_job(explicit, TIMING, [], 1, now, budget_cap=0.5).budget == 0.8


def test_retry_after_is_at_least_a_second():
    assert retry_after(10.2, 4.0) == 7 and retry_after(1.0, 5.0) == 1


def test_tiers_are_ordered():
    assert TIERS["interactive"].priority < TIERS["standard"].priority < TIERS["batch"].priority
    assert TIERS["interactive"].deadline_s < TIERS["standard"].deadline_s < TIERS["batch"].deadline_s


@pytest.fixture
def sla_client(tmp_path):
    settings = ServiceSettings(data_dir=tmp_path, _env_file=None)
    store = SqliteJobStore(settings.database_path)
    card = make_card("tiny", timing=TIMING)
    store.register_model(card, "w1", ttl_seconds=600)
    app = build_app(settings, store=store, queue=EmbeddedJobQueue(), storage=LocalObjectStore(settings.storage_dir))
    with TestClient(app) as client:
        yield client, store


def test_gateway_picks_the_largest_budget_for_the_deadline(sla_client):
    client, _ = sla_client
    video = client.post("/v1/videos", json={"prompt": "a red circle", "deadline_s": 1.7}).json()
    # 40 default steps, empty queue: b = 0.5 (see the table above), a little less for the time elapsed
    assert 0.45 <= video["budget"] <= 0.5 and video["budget_source"] == "sla"
    assert video["deadline_at"] >= video["created_at"] and video["predicted_completion_at"] <= video["deadline_at"]
    relaxed = client.post("/v1/videos", json={"prompt": "a red circle", "tier": "batch"}).json()
    assert relaxed["budget"] == 1.0 and relaxed["tier"] == "batch"
    explicit = client.post("/v1/videos", json={"prompt": "a red circle", "budget": 0.8, "deadline_s": 0.1}).json()
    assert explicit["budget"] == 0.8 and explicit["budget_source"] == "explicit"  # explicit wins, never 429


def test_gateway_predicts_the_load_cap_its_workers_will_apply(sla_client):
    client, store = sla_client
    busy = make_card("tiny", timing=TIMING, arrival_rate=0.5)
    store.register_model(busy, "w1", ttl_seconds=600)
    time.sleep(1.1)  # the gateway re-reads cards once a second
    video = client.post("/v1/videos", json={"prompt": "a red circle", "deadline_s": 60}).json()
    # 0.85 / 0.5 jobs/s = 1.7 s per job → b = 0.5 (test_load_capped_budget's table), not the deadline's 1.0
    assert video["budget"] == pytest.approx(0.5, abs=0.002)
    assert store.get(video["id"]).plan.predicted_service_seconds == pytest.approx(TIMING.service_seconds(40, 0.5), abs=0.01)


def test_unreachable_deadline_is_429_with_retry_after(sla_client):
    client, store = sla_client
    for _ in range(3):  # 3 queued full jobs ahead: 3 × 2.5 s
        client.post("/v1/videos", json={"prompt": "a red circle", "budget": 1.0})
    response = client.post("/v1/videos", json={"prompt": "a red circle", "deadline_s": 4.0})
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "deadline_unreachable" and error["param"] == "deadline_s"
    assert int(response.headers["Retry-After"]) >= 1
    assert len(store.active_jobs("tiny")) == 3  # nothing was queued
    accepted = client.post("/v1/videos", json={"prompt": "a red circle", "deadline_s": 4.0, "best_effort": True})
    assert accepted.status_code == 200 and accepted.json()["budget"] == pytest.approx(0.3)
    default = client.post("/v1/videos", json={"prompt": "a red circle"})  # no deadline given: best effort
    assert default.status_code == 200


def test_a_queue_of_sla_jobs_that_can_shrink_makes_room_instead_of_429(sla_client):
    client, _ = sla_client
    for _ in range(2):  # two relaxed SLA jobs planned at full budget: 2 × 2.5 s, but 2 × 1.38 s at b_min
        assert client.post("/v1/videos", json={"prompt": "a red circle", "deadline_s": 60}).json()["budget"] == 1.0
    # 5 s: 5.0 + 1.38 s on the planned queue (429 before), 2.76 + 1.38 s once the queue shrinks
    response = client.post("/v1/videos", json={"prompt": "a red circle", "deadline_s": 5.0})
    assert response.status_code == 200, response.text
    video = response.json()
    assert video["budget"] == pytest.approx(0.3) and video["budget_source"] == "sla"  # re-planned at start
    assert video["predicted_completion_at"] <= video["deadline_at"]
    # no room even then: 429
    assert client.post("/v1/videos", json={"prompt": "a red circle", "deadline_s": 3.0}).status_code == 429


def test_higher_tiers_do_not_wait_behind_batch_jobs(sla_client):
    client, _ = sla_client
    for _ in range(5):
        client.post("/v1/videos", json={"prompt": "a red circle", "tier": "batch"})
    interactive = client.post("/v1/videos", json={"prompt": "a red circle", "tier": "interactive"})
    assert interactive.status_code == 200 and interactive.json()["budget"] == 1.0  # batch jobs are not ahead


@pytest.mark.parametrize("queued, running, workers, expected", [
    ([], 0.0, 1, 30.0),  # nobody behind: the own deadline
    ([(100 + 20, 4.0)], 0.0, 1, 16.0),  # one queued job due in 20 s needing 4 s: this one gets 16 s
    ([(100 + 20, 4.0), (100 + 22, 4.0)], 0.0, 1, 14.0),  # the second one binds: 22 − 4 − 4
    ([(100 + 20, 4.0)], 6.0, 1, 10.0),  # another running job's 6 s come first
    ([(100 + 12, 4.0), (100 + 13, 4.0)], 0.0, 2, 14.0),  # two workers share the queue: 2·(13 − 4) − 4
    ([(100 + 3, 4.0), (100 + 22, 4.0)], 0.0, 1, 14.0),  # the first is lost anyway: it holds nobody back
])
def test_seconds_allowed_protects_the_jobs_queued_behind(queued, running, workers, expected):
    assert seconds_allowed(100.0, 130.0, 2.0, queued, running, workers) == pytest.approx(expected)


def test_queued_behind_orders_by_priority_then_arrival_and_floors_each_job():
    timing = TimingModel(step_seconds_fixed=0.01, step_seconds_per_budget=0.04, job_seconds_fixed=0.5)
    me = make_record(steps=40, budget=None, deadline_at=160.0)
    me.status, me.started_at = JobStatus.in_progress, 99.0
    other = make_record(plan={"predicted_service_seconds": 3.0}, steps=40)
    other.status, other.started_at = JobStatus.in_progress, 98.0
    late = make_record(steps=40, budget=None, min_budget=0.25, deadline_at=150.0, priority=3)
    late.created_at = 50.0
    urgent = make_record(steps=40, budget=None, min_budget=0.25, deadline_at=130.0, priority=0)
    urgent.created_at = 60.0
    fixed = make_record(steps=40, budget=1.0, deadline_at=170.0, priority=3)
    fixed.created_at = 40.0
    for record in (late, urgent, fixed):
        record.status = JobStatus.queued
    queued, running = queued_behind([me, other, late, urgent, fixed], me.id, timing, now=100.0)
    assert running == pytest.approx(1.0)  # 3 s predicted, 2 s of it done
    assert queued == [(130.0, pytest.approx(timing.service_seconds(40, 0.25))),
                      (170.0, pytest.approx(timing.service_seconds(40, 1.0))),  # explicit budget: no floor
                      (150.0, pytest.approx(timing.service_seconds(40, 0.25)))]


def test_arrival_rate_from_recent_creation_times():
    assert arrival_rate([], 100.0) is None
    assert arrival_rate([90.0, 95.0], 100.0) is None  # too few to estimate
    assert arrival_rate([80.0, 85.0, 90.0, 95.0], 100.0) == pytest.approx(4 / 20)
    assert arrival_rate([10.0, 20.0, 90.0, 95.0, 99.0], 100.0) == pytest.approx(3 / 10)  # only the last minute
    assert arrival_rate([90.0, 95.0, 101.0], 100.0) is None  # a clock ahead of ours does not count


@pytest.mark.parametrize("rate, workers, expected", [
    (None, 1, 1.0),  # light load: no cap
    (0.2, 1, 1.0),  # 0.85 / 0.2 = 4.25 s per job ≥ 2.5 s at full budget
    (0.5, 1, 0.5),  # 0.85 / 0.5 = 1.7 s per job: b = (1.7 − 0.5 − 40·0.01) / (40·0.04) = 0.5
    (1.0, 2, 0.5),  # two workers at 1 job/s: the same 1.7 s per job
    (5.0, 1, 0.3),  # overload: the smallest budget (then deadlines and 429s take over)
])
def test_load_capped_budget_keeps_the_workers_below_the_target_utilization(rate, workers, expected):
    budget = load_capped_budget(rate, workers, TIMING, 40, 0.3)
    assert budget == pytest.approx(expected, abs=0.002)
    if rate is not None and budget > 0.3:
        assert TIMING.service_seconds(40, budget) <= 0.85 * workers / rate + 1e-9
