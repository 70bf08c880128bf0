"""The JobStore contract, run against both implementations (SQLite and a real Redis server)."""

import asyncio
import time

import pytest

from jobs.records import ErrorInfo, JobStatus
from jobs.sla import JobPlan
from jobs.stores import ActiveJobLimit, IdempotencyConflict

from .conftest import make_card, make_record


def planner_view(store, model: str):
    async def read():
        try:
            return await store.planner_view_async(model)
        finally:
            await store.close_async()

    return asyncio.run(read())


def test_create_get_roundtrip(store):
    record = make_record(prompt="a blue square", budget=0.5)
    stored, created = store.create(record)
    assert created
    again = store.get(record.id)
    assert again == record
    assert again.status == JobStatus.queued and again.spec.budget == 0.5
    assert store.get("video_missing") is None


def test_the_event_loop_read_sees_what_get_sees(store):
    record = make_record(prompt="a red circle")
    store.create(record)

    async def read_twice():
        try:
            return await store.get_async(record.id), await store.get_async("video_missing")
        finally:
            await store.close_async()

    found, missing = asyncio.run(read_twice())
    assert found == store.get(record.id) == record and missing is None


def test_list_pages_newest_first_and_oldest_first(store):
    ids = []
    for i in range(5):
        record = make_record(prompt=f"clip {i}")
        record.created_at = 1000.0 + i
        store.create(record)
        ids.append(record.id)
    page, more = store.list(2)
    assert [r.id for r in page] == ids[::-1][:2] and more
    page, more = store.list(2, after=page[-1].id)
    assert [r.id for r in page] == ids[::-1][2:4] and more
    page, more = store.list(2, after=page[-1].id)
    assert [r.id for r in page] == ids[:1] and not more
    page, more = store.list(10, newest_first=False)
    assert [r.id for r in page] == ids and not more
    assert store.list(3, after="video_unknown") == ([], False)


def test_idempotency_same_body_returns_the_job_different_body_conflicts(store):
    first, created = store.create(make_record(), "key-1", "hash-a")
    assert created
    replay, created = store.create(make_record(), "key-1", "hash-a")
    assert not created and replay.id == first.id
    with pytest.raises(IdempotencyConflict) as conflict:
        store.create(make_record(), "key-1", "hash-b")
    assert conflict.value.job_id == first.id
    other, created = store.create(make_record(), "key-2", "hash-b")
    assert created and other.id != first.id


def test_idempotency_key_of_a_deleted_job_starts_a_new_one(store):
    first, _ = store.create(make_record(), "key", "hash")
    store.delete(first.id)
    second, created = store.create(make_record(), "key", "hash")
    assert created and second.id != first.id


def test_a_listing_by_owner_shows_only_that_owners_jobs(store):
    mine, theirs = [], []
    for i in range(3):
        for owner, ids in (("alice", mine), ("bob", theirs)):
            record = make_record(prompt=f"clip {i}")
            record.owner, record.created_at = owner, 1000.0 + len(mine) + len(theirs)
            store.create(record)
            ids.append(record.id)
    page, more = store.list(2, owner="alice")
    assert [r.id for r in page] == mine[::-1][:2] and more
    page, more = store.list(2, after=page[-1].id, owner="alice")
    assert [r.id for r in page] == mine[:1] and not more
    assert store.list(2, after=theirs[0], owner="alice") == ([], False)  # another owner's id is no anchor
    assert len(store.list(10)[0]) == 6  # no owner: every job
    store.delete(mine[0])
    assert [r.id for r in store.list(10, owner="alice")[0]] == mine[:0:-1]


def test_active_job_cap_per_owner_counts_queued_and_running_jobs(store):
    def submit(owner):
        record = make_record()
        record.owner = owner
        return store.create(record, max_active=2)[0]

    first, second = submit("alice"), submit("alice")
    store.start(first.id)
    with pytest.raises(ActiveJobLimit) as refused:
        submit("alice")
    assert refused.value.limit == 2
    assert submit("bob").owner == "bob"  # the cap is per owner
    first.status = JobStatus.completed
    assert store.finish(first)
    third = submit("alice")  # a finished job frees its slot …
    store.cancel(second.id)
    submit("alice")  # … and so does a cancelled one
    with pytest.raises(ActiveJobLimit):
        submit("alice")
    store.delete(third.id)
    submit("alice")  # and a deleted one
    assert len(store.list(10, owner="alice")[0]) == 4


def test_a_refused_job_leaves_no_idempotency_claim(store):
    record = make_record()
    record.owner = "alice"
    store.create(record, max_active=1)
    refused = make_record()
    refused.owner = "alice"
    with pytest.raises(ActiveJobLimit):
        store.create(refused, "key", "hash", max_active=1)
    store.cancel(record.id)
    retried, created = store.create(refused, "key", "hash", max_active=1)
    assert created and retried.id == refused.id


def test_queued_work_sums_the_predicted_seconds_of_queued_jobs_per_priority(store):
    def submit(seconds, priority):
        record = make_record(priority=priority)
        record.plan = JobPlan(budget=1.0, predicted_service_seconds=seconds, predicted_floor_seconds=seconds / 4)
        return store.create(record)[0]

    started, cancelled, deleted = submit(1.5, 3), submit(2.0, 3), submit(4.0, 0)
    submit(0.5, 9)
    assert store.queued_work("tiny") == pytest.approx({0: 4.0, 3: 3.5, 9: 0.5})
    assert store.queued_work("tiny", at_floor=True) == pytest.approx({0: 1.0, 3: 0.875, 9: 0.125})
    store.start(started.id)
    assert [r.id for r in store.running_jobs("tiny")] == [started.id]
    view = planner_view(store, "tiny")  # the same figures, read together
    assert view.queued_work == pytest.approx({0: 4.0, 3: 2.0, 9: 0.5})
    assert view.queued_floor_work == pytest.approx({0: 1.0, 3: 0.5, 9: 0.125})
    assert [r.id for r in view.running] == [started.id] and view.running[0].status == JobStatus.in_progress
    store.cancel(cancelled.id)
    store.delete(deleted.id)
    store.cancel(started.id)  # a running job was no longer queued work
    for at_floor, left in ((False, 0.5), (True, 0.125)):
        work = store.queued_work("tiny", at_floor=at_floor)
        assert work.get(0, 0) == pytest.approx(0) and work.get(3, 0) == pytest.approx(0)
        assert work[9] == pytest.approx(left)
    assert store.running_jobs("tiny") == [] and planner_view(store, "tiny").running == []


def test_cards_of_one_model_merge_with_the_busiest_arrival_rate(store):
    store.register_model(make_card("tiny").model_copy(update={"arrival_rate": 0.2}), "w1", ttl_seconds=60)
    store.register_model(make_card("tiny").model_copy(update={"arrival_rate": 0.5}), "w2", ttl_seconds=60)
    store.register_model(make_card("tiny"), "w3", ttl_seconds=60)
    [card] = store.models()
    assert card.workers == 3 and card.arrival_rate == 0.5


def test_orphan_requeue_puts_its_work_back_in_the_queue_summary(redis_url):
    """A job re-queued from a dead worker counts again, at its predicted and its floor seconds."""
    import uuid

    from jobs.stores.redis_store import RedisJobStore

    store = RedisJobStore(redis_url, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    record = make_record(priority=3)
    record.plan = JobPlan(budget=1.0, predicted_service_seconds=2.0, predicted_floor_seconds=0.5)
    store.create(record)
    running = store.start(record.id)
    assert store.queued_work("tiny").get(3, 0) == pytest.approx(0)
    assert store.requeue(running) and not store.requeue(running)  # once
    assert store.queued_work("tiny") == pytest.approx({3: 2.0})
    assert store.queued_work("tiny", at_floor=True) == pytest.approx({3: 0.5})
    store.close()


def test_lifecycle_start_progress_finish(store):
    record = make_record()
    store.create(record)
    assert store.queue_depth("tiny") == 1
    started = store.start(record.id)
    assert started.status == JobStatus.in_progress and started.attempts == 1 and started.started_at
    assert store.queue_depth("tiny") == 0
    store.set_progress(record.id, 42.5)
    assert store.get(record.id).progress == 42.5
    started.status, started.progress, started.output_key = JobStatus.completed, 100.0, "videos/x/video.mp4"
    started.stats = {"achieved_compute_fraction": 0.5}
    assert store.finish(started)
    done = store.get(record.id)
    assert done.status == JobStatus.completed and done.progress == 100 and done.stats["achieved_compute_fraction"] == 0.5
    assert store.start(record.id) is None  # terminal jobs never restart
    assert not store.finish(done)  # and never finish twice
    store.set_progress(record.id, 97.5)  # a worker's late progress report
    assert store.get(record.id).progress == 100


def test_progress_moves_only_while_in_progress(store):
    record = make_record()
    store.create(record)
    store.set_progress(record.id, 10.0)
    assert store.get(record.id).progress == 0
    store.cancel(record.id)
    store.set_progress(record.id, 20.0)
    assert store.get(record.id).progress == 0


def test_redelivered_job_restarts_and_counts_attempts(store):
    record = make_record()
    store.create(record)
    store.start(record.id)
    again = store.start(record.id)  # the worker died; the broker delivered the task again
    assert again.status == JobStatus.in_progress and again.attempts == 2


def test_cancel_wins_over_a_late_finish(store):
    record = make_record()
    store.create(record)
    running = store.start(record.id)
    cancelled = store.cancel(record.id)
    assert cancelled.status == JobStatus.cancelled and cancelled.completed_at
    assert store.is_cancelled(record.id)
    running.status = JobStatus.completed
    assert not store.finish(running)
    assert store.get(record.id).status == JobStatus.cancelled


def test_cancel_queued_job_skips_it_and_terminal_jobs_stay(store):
    record = make_record()
    store.create(record)
    assert store.cancel(record.id).status == JobStatus.cancelled
    assert store.start(record.id) is None
    assert store.queue_depth("tiny") == 0
    failed = make_record()
    store.create(failed)
    running = store.start(failed.id)
    running.status, running.error = JobStatus.failed, ErrorInfo(code="x", message="y")
    store.finish(running)
    assert store.cancel(failed.id).status == JobStatus.failed
    assert not store.is_cancelled(failed.id)
    assert store.cancel("video_unknown") is None


def test_update_rewrites_a_job_but_never_its_webhook_outcome(store):
    record = make_record()
    store.create(record)
    running = store.start(record.id)
    running.status = JobStatus.completed
    store.finish(running)
    store.record_webhook(record.id, {"delivered": True, "attempts": 2}, None)
    running.stats["shadow_reference"] = {"psnr_db": 40.0}  # a shadow run writes while the webhook is sent
    store.update(running)
    stored = store.get(record.id)
    assert stored.webhook == {"delivered": True, "attempts": 2} and stored.stats["shadow_reference"]
    assert stored.status == JobStatus.completed
    store.record_webhook(record.id, None, 123.0)  # None: the outcome stays, the job is due again
    assert store.get(record.id).webhook == {"delivered": True, "attempts": 2}
    assert store.claim_webhooks(124.0, 60, 10) == [record.id]


def test_the_webhook_outbox_claims_due_jobs_once_per_lease(store):
    records = [make_record() for _ in range(3)]
    for record in records:
        store.create(record)
    store.schedule_webhook(records[0].id, 100.0)
    store.schedule_webhook(records[1].id, 200.0)
    assert store.claim_webhooks(150.0, 60, 10) == [records[0].id]
    assert store.claim_webhooks(150.0, 60, 10) == []  # leased until 210
    assert store.claim_webhooks(250.0, 60, 1) == [records[1].id]  # the limit
    assert store.claim_webhooks(250.0, 60, 10) == [records[0].id]
    store.record_webhook(records[0].id, {"delivered": True}, None)
    store.delete(records[1].id)
    assert store.claim_webhooks(10_000.0, 60, 10) == []
    store.record_webhook(records[1].id, {"delivered": True}, 1.0)  # deleted meanwhile: stays deleted
    assert store.get(records[1].id) is None and store.claim_webhooks(10_000.0, 60, 10) == []


def test_delete(store):
    record = make_record()
    store.create(record)
    assert store.delete(record.id)
    assert store.get(record.id) is None and store.list(10) == ([], False)
    assert not store.delete(record.id)


def test_model_cards_expire_without_heartbeats(store):
    store.register_model(make_card("tiny"), "w1", ttl_seconds=30)
    store.register_model(make_card("tiny"), "w2", ttl_seconds=30)
    store.register_model(make_card("other"), "w3", ttl_seconds=0.3)
    cards = {card.id: card for card in store.models()}
    assert cards["tiny"].workers == 2 and "other" in cards
    # the gateway's feasibility table survives storage
    assert cards["tiny"].shapes["128x128x16"].min_budget_t2v[8] == 0.3
    time.sleep(0.5)
    assert [card.id for card in store.models()] == ["tiny"]


def test_ping(store):
    store.ping()


def test_the_event_loop_create_agrees_with_the_blocking_one(store):
    async def on_the_loop():
        try:
            first = make_record()
            first.owner, first.plan = "alice", JobPlan(budget=1.0, predicted_service_seconds=2.0)
            assert await store.create_async(first, "key", "hash", max_active=2) == (first, True)
            replay, created = await store.create_async(make_record(), "key", "hash", max_active=2)
            assert not created and replay == store.get(first.id)
            with pytest.raises(IdempotencyConflict):
                await store.create_async(make_record(), "key", "other-hash")
            second = make_record()
            second.owner = "alice"
            await store.create_async(second, max_active=2)
            third = make_record()
            third.owner = "alice"
            with pytest.raises(ActiveJobLimit):
                await store.create_async(third, "key-3", "hash", max_active=2)
        finally:
            await store.close_async()

    asyncio.run(on_the_loop())
    assert store.queued_work("tiny") == pytest.approx({3: 2.0})
    assert len(store.list(10, owner="alice")[0]) == 2  # the refused third left nothing behind
