"""Webhooks: signatures the official openai SDK verifies; destinations limited to public addresses
(at submission and again at delivery); a durable outbox with retries against real receivers."""

import ipaddress
import json
import time

import pytest
from openai import InvalidWebhookSignatureError, OpenAI

from jobs import webhooks
from jobs.destinations import DestinationRefused, check_address, check_resolved, parse_networks
from jobs.records import JobStatus
from jobs.settings import ServiceSettings
from jobs.webhooks import event_id, event_payload, post_event, sign
from tests.services import WebhookReceiver
from worker.webhook_dispatcher import WebhookDispatcher

from .conftest import make_record

SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHM="  # base64("secret-key-for-tests")
LOOPBACK = parse_networks("127.0.0.0/8")


@pytest.fixture
def receiver_factory():
    receivers = []

    def make(statuses=()):
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


def test_an_event_has_one_id_per_job_and_type():
    assert event_id("video_1", "video.completed") == event_id("video_1", "video.completed")
    assert len({event_id("video_1", "video.completed"), event_id("video_1", "video.failed"),
                event_id("video_2", "video.completed")}) == 3
    assert event_payload("video.failed", {"id": "video_1"})["id"] == event_id("video_1", "video.failed")


# destinations ------------------------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "224.0.0.1", "239.255.255.250", "255.255.255.255", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1",
    "::ffff:10.0.0.1", "ff02::1", "::",
])
def test_non_public_addresses_are_refused(address):
    with pytest.raises(DestinationRefused):
        check_address(address, [])


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert check_address(address, []) == ipaddress.ip_address(address)


def test_an_allowed_network_opens_exactly_its_addresses():
    allowed = parse_networks("10.0.0.0/8, 127.0.0.1")
    assert check_address("10.9.9.9", allowed) and check_address("127.0.0.1", allowed)
    for refused in ("127.0.0.2", "192.168.0.1"):
        with pytest.raises(DestinationRefused):
            check_address(refused, allowed)
    with pytest.raises(ValueError, match="not an IP network"):
        parse_networks("10.0.0.0/8, intranet")


def test_one_private_address_among_public_ones_refuses_the_host():
    with pytest.raises(DestinationRefused, match="hooks.example resolves to"):
        check_resolved("hooks.example", ["93.184.215.14", "10.0.0.7"], [])
    with pytest.raises(DestinationRefused, match="does not resolve"):
        check_resolved("hooks.example", [], [])


def test_settings_refuse_a_malformed_allow_list():
    with pytest.raises(ValueError, match="not an IP network"):
        ServiceSettings(webhook_allowed_networks="10.0.0.0/8,lan", _env_file=None)


# one attempt -------------------------------------------------------------------------------------

def test_a_loopback_receiver_is_not_contacted_unless_allowed(receiver_factory):
    receiver = receiver_factory()
    payload = event_payload("video.completed", {"id": "video_1"})
    refused = post_event(receiver.url, payload, SECRET, allowed=[])
    assert refused == webhooks.Attempt(False, False, "delivery refused: the destination is not allowed")
    assert receiver.requests == []
    assert post_event(receiver.url, payload, SECRET, allowed=LOOPBACK).delivered
    headers, body = receiver.requests[0]
    OpenAI(api_key="unused").webhooks.verify_signature(body, headers, secret=SECRET)


def test_a_name_is_checked_and_connected_to_by_the_addresses_resolved_at_delivery(receiver_factory, monkeypatch):
    """DNS rebinding: whatever the name resolved to at submission, delivery resolves it again, refuses a
    non-public answer, and connects to the very address it checked (this name exists nowhere else)."""
    receiver = receiver_factory()
    port = receiver.url.split(":")[2].split("/")[0]
    monkeypatch.setattr(webhooks, "resolve", lambda host, port: ["127.0.0.1"] if host == "hooks.rebind.test" else [])
    url = f"http://hooks.rebind.test:{port}/hooks/video"
    payload = event_payload("video.completed", {"id": "video_1"})
    assert post_event(url, payload, SECRET, allowed=[]).error == "delivery refused: the destination is not allowed"
    assert receiver.requests == []
    assert post_event(url, payload, SECRET, allowed=LOOPBACK).delivered  # pinned: the system resolver knows no such name
    assert {k.lower(): v for k, v in receiver.requests[0][0].items()}["host"] == f"hooks.rebind.test:{port}"


def test_the_outcome_tells_the_kind_of_failure_never_the_receivers_words(receiver_factory):
    internal = receiver_factory([(405, {"content-type": "text/plain"}, b"redis version 7.0.15, secret=hunter2")])
    attempt = post_event(internal.url, event_payload("video.completed", {}), None, LOOPBACK)
    assert attempt == webhooks.Attempt(False, False, "delivery failed: HTTP 4xx")
    flaky = receiver_factory([503])
    assert post_event(flaky.url, event_payload("video.completed", {}), None, LOOPBACK) == \
        webhooks.Attempt(False, True, "delivery failed: HTTP 5xx")
    closed = post_event("http://127.0.0.1:9/hook", event_payload("video.completed", {}), None, LOOPBACK)
    assert closed == webhooks.Attempt(False, True, "delivery failed: no connection")


def test_redirects_are_not_followed(receiver_factory):
    target = receiver_factory()
    redirecting = receiver_factory([(307, {"location": target.url}, b"")])
    attempt = post_event(redirecting.url, event_payload("video.completed", {}), None, LOOPBACK)
    assert attempt.error == "delivery failed: HTTP 3xx" and target.requests == []


# the outbox and its dispatcher -------------------------------------------------------------------

def finished_job(store, url: str, status=JobStatus.completed):
    """A job ended as a worker ends it: webhook in the outbox, then the terminal state."""
    record = make_record(webhook_url=url)
    store.create(record)
    running = store.start(record.id)
    running.status, running.completed_at = status, time.time()
    store.schedule_webhook(record.id, time.time())
    assert store.finish(running)
    return record


def dispatcher_for(store, **settings) -> WebhookDispatcher:
    settings = ServiceSettings(webhook_secret=SECRET, webhook_allowed_networks="127.0.0.0/8",
                               webhook_backoff_seconds=0.5, _env_file=None, **settings)
    return WebhookDispatcher(store, settings)


def test_a_finished_job_s_event_is_delivered_once_and_recorded(store, receiver_factory):
    receiver = receiver_factory()
    record = finished_job(store, receiver.url)
    dispatcher = dispatcher_for(store)
    assert dispatcher.dispatch_due() == 1
    assert dispatcher.dispatch_due() == 0  # out of the outbox
    headers, body = receiver.requests[0]
    event = OpenAI(api_key="unused").webhooks.unwrap(body, headers, secret=SECRET)
    assert event.type == "video.completed" and event.data.id == record.id
    assert store.get(record.id).webhook == {"event_id": event.id, "delivered": True, "attempts": 1,
                                            "state": "delivered"}


def test_transient_failures_are_retried_with_backoff_under_one_event_id(store, receiver_factory):
    receiver = receiver_factory([503, 500])
    record = finished_job(store, receiver.url, JobStatus.failed)
    dispatcher = dispatcher_for(store)
    now = time.time()
    assert dispatcher.dispatch_due(now) == 1
    retrying = store.get(record.id).webhook
    assert retrying["state"] == "retrying" and retrying["error"] == "delivery failed: HTTP 5xx"
    assert dispatcher.dispatch_due(now + 0.4) == 0  # backoff 0.5 s
    assert dispatcher.dispatch_due(now + 0.6) == 1  # second attempt; the next waits 1 s
    assert dispatcher.dispatch_due(now + 1.0) == 0
    assert dispatcher.dispatch_due(now + 2.0) == 1
    assert store.get(record.id).webhook["delivered"] is True and store.get(record.id).webhook["attempts"] == 3
    assert len({headers["webhook-id"] for headers, _ in receiver.requests}) == 1
    assert json.loads(receiver.requests[-1][1])["type"] == "video.failed"


def test_attempts_run_out_and_a_client_error_is_final(store, receiver_factory):
    down = receiver_factory([500] * 10)
    record = finished_job(store, down.url)
    dispatcher = dispatcher_for(store, webhook_max_attempts=2)
    assert dispatcher.dispatch_due(time.time()) == 1 and dispatcher.dispatch_due(time.time() + 10) == 1
    assert store.get(record.id).webhook == {"event_id": event_id(record.id, "video.completed"), "delivered": False,
                                            "attempts": 2, "error": "delivery failed: HTTP 5xx", "state": "failed"}
    assert dispatcher.dispatch_due(time.time() + 100) == 0
    rejecting = receiver_factory([400])
    record = finished_job(store, rejecting.url)
    assert dispatcher.dispatch_due() == 1 and store.get(record.id).webhook["state"] == "failed"


def test_an_event_outlives_the_worker_that_finished_the_job(store, receiver_factory):
    """The worker stored the job's end and died before any delivery: the next dispatcher sends it.
    One that claimed it and died mid-attempt leaves it to another once its lease runs out."""
    receiver = receiver_factory()
    record = finished_job(store, receiver.url)
    assert store.claim_webhooks(time.time(), lease_seconds=60, limit=16) == [record.id]  # then it died
    later = dispatcher_for(store)
    assert later.dispatch_due(time.time()) == 0  # leased
    assert later.dispatch_due(time.time() + 61) == 1 and len(receiver.requests) == 1


def test_a_job_still_running_or_cancelled_sends_nothing(store, receiver_factory):
    receiver = receiver_factory()
    record = make_record(webhook_url=receiver.url)
    store.create(record)
    store.start(record.id)
    store.schedule_webhook(record.id, time.time())  # its worker is between the outbox and the end
    dispatcher = dispatcher_for(store)
    assert dispatcher.dispatch_due() == 1 and receiver.requests == []
    assert store.claim_webhooks(time.time() + 5, 60, 16) == [record.id]  # kept, to be sent once it ends
    store.cancel(record.id)
    assert dispatcher.dispatch_due(time.time() + 100) == 1 and receiver.requests == []
    assert store.claim_webhooks(time.time() + 1000, 60, 16) == []


def test_the_dispatcher_thread_delivers_when_woken(store, receiver_factory):
    receiver = receiver_factory()
    dispatcher = dispatcher_for(store).start()
    try:
        finished_job(store, receiver.url)
        dispatcher.wake()
        assert receiver.arrived.wait(10)
    finally:
        dispatcher.stop()
