import uuid

import pytest

from server.jobs import JobRecord, JobSpec, ModelCard, ModelLimits, new_job_id


def make_spec(**overrides) -> JobSpec:
    fields = dict(job_id=new_job_id(), model="tiny", prompt="a red circle", width=128, height=128, num_frames=16,
                  fps=8, steps=8, budget=1.0, seed=0)
    fields.update(overrides)
    return JobSpec(**fields)


def make_record(**overrides) -> JobRecord:
    return JobRecord(spec=make_spec(**overrides))


def make_card(model="tiny", image_input="optional", seconds_per_step=0.05) -> ModelCard:
    return ModelCard(
        id=model, family="wan", image_input=image_input, seconds_per_step=seconds_per_step,
        limits=ModelLimits(sizes=["32x32", "128x128"], num_frames=[16], fps=8, max_steps=100, default_steps=40,
                           default_size="128x128", guidance_scale=4.0,
                           min_budget_t2v=[1.0] + [0.3] * 100, min_budget_i2v=[1.0] + [0.28] * 100),
    )


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
