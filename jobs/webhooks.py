"""Signed webhooks on job completion or failure, retried with exponential backoff.

Signatures follow the Standard Webhooks scheme that OpenAI uses, so receivers can verify them with
``openai.OpenAI().webhooks.unwrap(body, headers, secret=...)``::

    webhook-id:        evt_…            (unique per event; receivers de-duplicate on it)
    webhook-timestamp: 1732680000       (unix seconds; receivers reject stale ones)
    webhook-signature: v1,<base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}"))>

A secret of the form ``whsec_<base64>`` is base64-decoded first, as in the Standard Webhooks spec.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any, Callable

RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


def _secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()


def sign(body: bytes, secret: str, event_id: str, timestamp: int) -> dict[str, str]:
    signed = f"{event_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def event_payload(event_type: str, video: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "type": event_type,  # video.completed | video.failed
        "created_at": int(time.time()),
        "data": video,
    }


def deliver(url: str, payload: dict[str, Any], secret: str | None, max_attempts: int = 5,
            backoff_seconds: float = 1.0, timeout: float = 10.0,
            sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """POST ``payload`` until a 2xx arrives or attempts run out; returns the delivery outcome."""
    import httpx

    body = json.dumps(payload, separators=(",", ":")).encode()
    outcome: dict[str, Any] = {"event_id": payload["id"], "delivered": False, "attempts": 0}
    for attempt in range(1, max_attempts + 1):
        headers = {"content-type": "application/json", "user-agent": "hsa-video-webhooks"}
        if secret:
            # re-signed per attempt so the timestamp stays fresh for the receiver's replay window
            headers.update(sign(body, secret, payload["id"], int(time.time())))
        outcome["attempts"] = attempt
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=timeout)
            outcome["status_code"] = response.status_code
            if response.is_success:
                outcome["delivered"] = True
                outcome.pop("error", None)
                return outcome
            outcome["error"] = f"HTTP {response.status_code}"
            if response.status_code not in RETRYABLE_STATUS:
                return outcome
        except httpx.HTTPError as error:
            outcome["error"] = f"{type(error).__name__}: {error}"
        if attempt < max_attempts:
            sleep(backoff_seconds * 2 ** (attempt - 1))
    return outcome
