"""Delivering webhooks from the job store's outbox, so an event outlives the worker that finished its job.

A worker puts a job's webhook in the outbox before it stores the job's end (``JobStore.schedule_webhook``),
and wakes its dispatcher once it has. Every worker's dispatcher (a thread of the Celery main process,
or of the embedded worker) claims due webhooks for a lease, sends one attempt each and records the
outcome: delivered, given up (a refused destination, a non-retryable answer, ``max_attempts`` spent) or
due again after exponential backoff. A worker that dies mid-delivery leaves its claims to expire and
another dispatcher sends them: delivery is at least once, and the event id stays the same.
"""

from __future__ import annotations

import logging
import threading
import time

from jobs.destinations import parse_networks
from jobs.public import video_object
from jobs.records import JobStatus
from jobs.settings import ServiceSettings
from jobs.webhooks import event_payload, post_event

log = logging.getLogger("hsa.webhooks")

LEASE_SECONDS = 60.0  # longer than an attempt can take (its timeout), so no two dispatchers send at once
IDLE_POLL_SECONDS = 1.0
EVENT_TYPES = {JobStatus.completed: "video.completed", JobStatus.failed: "video.failed"}


class WebhookDispatcher:
    def __init__(self, store, settings: ServiceSettings, timeout: float = 10.0):
        self.store, self.settings, self.timeout = store, settings, timeout
        self.allowed = parse_networks(settings.webhook_allowed_networks)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="webhook-dispatcher", daemon=True)

    def start(self) -> "WebhookDispatcher":
        self._thread.start()
        return self

    def wake(self) -> None:
        """A webhook was just scheduled: look now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop after the attempt in flight; what is still due stays in the outbox for the next dispatcher."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.dispatch_due()
            except Exception:  # the store blinked: try again at the next poll
                log.exception("webhook dispatch failed")
                sent = 0
            if not sent:
                self._wake.wait(IDLE_POLL_SECONDS)
                self._wake.clear()

    def dispatch_due(self, now: float | None = None) -> int:
        """One pass: claim what is due, send one attempt each; returns how many were claimed."""
        job_ids = self.store.claim_webhooks(now or time.time(), LEASE_SECONDS, limit=16)
        for job_id in job_ids:
            if self._stop.is_set():
                break
            self._attempt(job_id)
        return len(job_ids)

    def _attempt(self, job_id: str) -> None:
        record = self.store.get(job_id)
        if record is None:
            return  # deleted: record_webhook would find nothing to write
        if not record.status.terminal:
            # scheduled just before its end was stored (or its worker died then, and the job will run
            # again): wait for the end
            self.store.record_webhook(job_id, None, time.time() + 2.0)
            return
        event_type = EVENT_TYPES.get(record.status)
        if event_type is None or not record.spec.webhook_url:  # cancelled: no event
            self.store.record_webhook(job_id, None, None)
            return
        payload = event_payload(event_type, video_object(record), created_at=record.completed_at)
        attempts = (record.webhook or {}).get("attempts", 0) + 1
        attempt = post_event(record.spec.webhook_url, payload, self.settings.webhook_secret, self.allowed,
                             self.timeout)
        outcome = {"event_id": payload["id"], "delivered": attempt.delivered, "attempts": attempts}
        due_at = None
        if not attempt.delivered:
            outcome["error"] = attempt.error
            if attempt.retryable and attempts < self.settings.webhook_max_attempts:
                due_at = time.time() + self.settings.webhook_backoff_seconds * 2 ** (attempts - 1)
            else:
                log.warning("webhook for job %s not delivered after %d attempt(s): %s", job_id, attempts,
                            attempt.error)
        outcome["state"] = "delivered" if attempt.delivered else "retrying" if due_at else "failed"
        self.store.record_webhook(job_id, outcome, due_at)
