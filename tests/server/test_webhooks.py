"""Webhooks: signatures the official openai SDK verifies, retries with backoff against a real receiver."""

import json
import time

import pytest
from openai import InvalidWebhookSignatureError, OpenAI

from jobs.webhooks import deliver, event_payload, sign
from tests.services import WebhookReceiver

SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHM="  # base64("secret-key-for-tests")


@pytest.fixture
def receiver_factory():
    receivers = []

    def make(statuses):
        receivers.append(WebhookReceiver(statuses))
        return receivers[-1]

    yield make
    for receiver in receivers:
        receiver.close()


def test_signature_verifies_with_the_openai_sdk():
    body = json.dumps(event_payload("video.completed", {"id": "video_1"})).encode()
    headers = sign(body, SECRET, "evt_1", int(time.time()))
    client = OpenAI(api_key="unused")
    event = client.webhooks.unwrap(body, headers, secret=SECRET)
    assert event.type == "video.completed"
    with pytest.raises(InvalidWebhookSignatureError):
        client.webhooks.verify_signature(body + b" ", headers, secret=SECRET)
    stale = sign(body, SECRET, "evt_1", int(time.time()) - 3600)
    with pytest.raises(InvalidWebhookSignatureError):
        client.webhooks.verify_signature(body, stale, secret=SECRET)


def test_delivery_retries_transient_failures_with_backoff(receiver_factory):
    receiver = receiver_factory([503, 500])
    sleeps = []
    payload = event_payload("video.failed", {"id": "video_2", "status": "failed"})
    outcome = deliver(receiver.url, payload, SECRET, max_attempts=5, backoff_seconds=0.5, sleep=sleeps.append)
    assert outcome == {"event_id": payload["id"], "delivered": True, "attempts": 3, "status_code": 204}
    assert sleeps == [0.5, 1.0]
    headers, body = receiver.requests[-1]
    OpenAI(api_key="unused").webhooks.verify_signature(body, headers, secret=SECRET)
    assert json.loads(body)["data"]["id"] == "video_2"
    assert len({h["webhook-id"] for h, _ in receiver.requests}) == 1  # one event, several attempts


def test_delivery_stops_on_a_client_error_and_gives_up_after_max_attempts(receiver_factory):
    rejecting = receiver_factory([400])
    outcome = deliver(rejecting.url, event_payload("video.completed", {}), SECRET, sleep=lambda s: None)
    assert outcome["delivered"] is False and outcome["attempts"] == 1 and outcome["error"] == "HTTP 400"
    down = receiver_factory([500] * 10)
    outcome = deliver(down.url, event_payload("video.completed", {}), SECRET, max_attempts=3, sleep=lambda s: None)
    assert outcome["attempts"] == 3 and not outcome["delivered"]
    unreachable = deliver("http://127.0.0.1:9/hook", event_payload("video.completed", {}), None, max_attempts=2,
                          sleep=lambda s: None)
    assert unreachable["attempts"] == 2 and "ConnectError" in unreachable["error"]
