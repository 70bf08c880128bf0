"""Worker heartbeats: the card a worker keeps in the job store, with the load it sees."""

import time

import pytest

from jobs.sla import TimingModel
from jobs.stores.sqlite_store import SqliteJobStore
from worker.registration import Heartbeat

from ..server.conftest import make_card, make_record

TIMING = TimingModel(step_seconds_fixed=0.01, step_seconds_per_budget=0.04, job_seconds_fixed=0.5)


def test_a_heartbeat_publishes_the_models_recent_arrival_rate(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    now = time.time()
    for age in (20.0, 15.0, 10.0, 5.0):  # 4 jobs of the model over the last 20 s
        record = make_record()
        record.created_at = now - age
        store.create(record)
    other = make_record(model="other")  # another model's jobs are not this one's load
    store.create(other)
    card = make_card("tiny", timing=TIMING)
    heartbeat = Heartbeat(store, lambda: card, interval_seconds=60)
    heartbeat.beat()
    [published] = [c for c in store.models() if c.id == "tiny"]
    assert published.arrival_rate == pytest.approx(4 / 20, rel=0.05)


def test_a_model_without_a_timing_model_publishes_no_rate(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    for _ in range(5):
        store.create(make_record())
    Heartbeat(store, make_card("tiny"), interval_seconds=60).beat()
    assert store.models()[0].arrival_rate is None
