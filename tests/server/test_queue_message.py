"""The gateway writes Celery's task message itself, in the job's own Redis transaction
(server/queues.py): held equal to what Celery's ``send_task`` publishes, on a real Redis server."""

import base64
import json
import uuid

import pytest
import redis

from server.queues import CeleryJobQueue, priority_list, queue_name
from server.stores import ActiveJobLimit, IdempotencyConflict
from server.stores.redis_store import RedisJobStore

from .conftest import make_record, make_spec

# differ per publish by design: kombu's delivery tag is a fresh uuid; reply_to is send_task's result
# queue (no result backend here: workers never read it); argsrepr also lands in send_task's
# properties because it passes its options through to the publish
PER_PUBLISH = {"delivery_tag", "reply_to", "argsrepr"}


def decoded(payload: bytes | str) -> dict:
    message = json.loads(payload)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    message["properties"] = {k: v for k, v in message["properties"].items() if k not in PER_PUBLISH}
    return message


@pytest.fixture
def queue(redis_url):
    queue = CeleryJobQueue(redis_url)
    yield queue
    queue.close()


@pytest.mark.parametrize("priority", range(10))
@pytest.mark.parametrize("soft_time_limit", [None, 95.5])
def test_the_message_is_what_send_task_publishes(queue, redis_url, priority, soft_time_limit):
    client = redis.Redis.from_url(redis_url)
    spec = make_spec(model=f"parity-{uuid.uuid4().hex[:8]}", priority=priority, soft_time_limit=soft_time_limit,
                     prompt="a red circle — ünïcode")
    lists = [priority_list(queue_name(spec.model), step) for step in (0, 3, 6, 9)]
    limits = {} if soft_time_limit is None else {"soft_time_limit": soft_time_limit, "time_limit": soft_time_limit + 30}
    queue.app.send_task("hsa.generate_video", args=[spec.model_dump(mode="json")], queue=queue_name(spec.model),
                        task_id=spec.job_id, priority=priority, argsrepr=f"[{spec.job_id}]", **limits)
    [(published_on, published)] = [(key, client.lpop(key)) for key in lists if client.llen(key)]
    message = queue.message(spec)
    assert message.key == published_on
    assert decoded(message.payload) == decoded(published)
    assert json.loads(message.payload)["properties"]["delivery_tag"] != json.loads(published)["properties"]["delivery_tag"]


def test_a_created_job_is_queued_once_and_a_refused_or_replayed_one_not_at_all(queue, redis_url):
    store = RedisJobStore(redis_url, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    client = redis.Redis.from_url(redis_url)
    model = f"atomic-{uuid.uuid4().hex[:8]}"
    try:
        first = make_record(model=model)
        first.owner = "alice"
        store.create(first, "key", "hash", max_active=1, message=queue.message(first.spec))
        store.create(make_record(model=model), "key", "hash", message=queue.message(first.spec))  # replay
        with pytest.raises(IdempotencyConflict):
            store.create(make_record(model=model), "key", "other", message=queue.message(first.spec))
        refused = make_record(model=model)
        refused.owner = "alice"
        with pytest.raises(ActiveJobLimit):
            store.create(refused, max_active=1, message=queue.message(refused.spec))
        [payload] = client.lrange(priority_list(queue_name(model), first.spec.priority), 0, -1)
        assert decoded(payload)["body"][0] == [first.spec.model_dump(mode="json")]

        store.start(first.id)
        client.delete(priority_list(queue_name(model), first.spec.priority))  # as a worker's fetch would
        running = store.get(first.id)
        assert store.requeue(running, queue.message(running.spec))
        assert not store.requeue(running, queue.message(running.spec))  # the second reaper loses the race
        assert client.llen(priority_list(queue_name(model), first.spec.priority)) == 1
    finally:
        store.close()
