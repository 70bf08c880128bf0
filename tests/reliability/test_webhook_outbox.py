"""A webhook outlives its worker: the event of a finished job waits in the job store's outbox while the
receiver is down, through the death of every worker process, and a worker started later sends it."""

import json

import pytest

from hsa_video.harness.stack import WEBHOOK_SECRET, started_stack
from tests.services import WebhookReceiver, free_port, wait_until


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_endpoint):
    with started_stack(tmp_path_factory.mktemp("webhook-outbox"), s3_endpoint, workers=1,
                       webhook_backoff_seconds="0.5", webhook_max_attempts="20") as stack:
        yield stack


def test_an_undelivered_event_is_sent_after_its_worker_died(stack):
    from openai import OpenAI

    port = free_port()  # nothing listens there yet: every attempt fails to connect
    job_id = stack.submit(webhook_url=f"http://127.0.0.1:{port}/hooks/video")
    completed = stack.wait_terminal(job_id)
    wait_until(lambda: (stack.record(job_id).webhook or {}).get("attempts", 0) >= 2, 30,
               "a failed delivery attempt or two")
    assert stack.record(job_id).webhook["error"] == "delivery failed: no connection"
    stack.workers[0].kill()  # SIGKILL, main process and pool: nothing of it is left to retry
    receiver = WebhookReceiver(port=port)
    try:
        stack.start_worker()
        stack.wait_for_workers(1)
        assert receiver.arrived.wait(60), stack.logs()
        headers, body = receiver.requests[0]
        event = OpenAI(api_key="unused").webhooks.unwrap(body, headers, secret=WEBHOOK_SECRET)
        assert event.type == "video.completed" and json.loads(body)["data"]["id"] == completed.id
        delivered = wait_until(lambda: (w := stack.record(job_id).webhook) and w["delivered"] and w, 30,
                               "the delivery recorded")
        assert delivered["state"] == "delivered" and delivered["attempts"] >= 3
    finally:
        receiver.close()
