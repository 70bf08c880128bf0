import uuid

import pytest

from hsa_video.harness.cards import make_card  # noqa: F401  (re-exported for the server tests)
from jobs.records import JobRecord, JobSpec, new_job_id
from jobs.sla import JobPlan


def make_spec(**overrides) -> JobSpec:
    fields = dict(job_id=new_job_id(), model="tiny", prompt="a red circle", width=128, height=128, num_frames=16,
                  fps=8, steps=8, budget=1.0, seed=0)
    fields.update(overrides)
    return JobSpec(**fields)


def make_record(plan: dict | None = None, **overrides) -> JobRecord:
    """A job of ``make_spec(**overrides)``; ``plan``: fields of its JobPlan besides the budget."""
    spec = make_spec(**overrides)
    budget = 1.0 if spec.budget is None else spec.budget
    return JobRecord(spec=spec, plan=JobPlan(budget=budget, **(plan or {})))


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    """Each JobStore implementation, fresh (SQLite file per test; Redis key prefix per test)."""
    if request.param == "sqlite":
        from jobs.stores.sqlite_store import SqliteJobStore

        store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    else:
        from jobs.stores.redis_store import RedisJobStore

        store = RedisJobStore(request.getfixturevalue("redis_url"), prefix=f"test-{uuid.uuid4().hex[:8]}:")
    yield store
    store.close()
