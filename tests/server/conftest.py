import uuid

import pytest

from server.jobs import JobRecord, JobSpec, new_job_id
from tests.cards import make_card  # noqa: F401  (re-exported for the server tests)


def make_spec(**overrides) -> JobSpec:
    fields = dict(job_id=new_job_id(), model="tiny", prompt="a red circle", width=128, height=128, num_frames=16,
                  fps=8, steps=8, budget=1.0, seed=0)
    fields.update(overrides)
    return JobSpec(**fields)


def make_record(**overrides) -> JobRecord:
    return JobRecord(spec=make_spec(**overrides))


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    """Each JobStore implementation, fresh (SQLite file per test; Redis key prefix per test)."""
    if request.param == "sqlite":
        from server.stores.sqlite_store import SqliteJobStore

        store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    else:
        from server.stores.redis_store import RedisJobStore

        store = RedisJobStore(request.getfixturevalue("redis_url"), prefix=f"test-{uuid.uuid4().hex[:8]}:")
    yield store
    store.close()
