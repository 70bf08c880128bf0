"""Signed webhook events, and one delivery attempt that reaches only permitted addresses.

Signatures follow the Standard Webhooks scheme that OpenAI uses, so receivers can verify them with
``openai.OpenAI().webhooks.unwrap(body, headers, secret=...)``::

    webhook-id:        evt_…            (one per job and event type, the same on every attempt:
                                         receivers de-duplicate on it)
    webhook-timestamp: 1732680000       (unix seconds, fresh on every attempt; receivers reject stale ones)
    webhook-signature: v1,<base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}"))>

A secret of the form ``whsec_<base64>`` is base64-decoded first, as in the Standard Webhooks spec.

The retries, their backoff and the outbox that survives a worker are ``worker/webhook_dispatcher.py``'s.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from .destinations import DestinationRefused, Network, check_resolved, resolve, url_host_port

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


def event_id(job_id: str, event_type: str) -> str:
    """The same id for every attempt, from every worker: a receiver sees one event however often it arrives."""
    return "evt_" + hashlib.sha256(f"{job_id}:{event_type}".encode()).hexdigest()[:24]


def event_payload(event_type: str, video: dict[str, Any], created_at: float | None = None) -> dict[str, Any]:
    return {
        "id": event_id(video.get("id", ""), event_type),
        "object": "event",
        "type": event_type,  # video.completed | video.failed
        "created_at": int(created_at if created_at is not None else time.time()),
        "data": video,
    }


@dataclass(frozen=True)
class Attempt:
    delivered: bool
    retryable: bool
    error: str | None  # what the video object shows: the kind of failure, never the receiver's words


def _public_only_backend(allowed: list[Network]):
    import httpcore

    class PublicOnlyBackend(httpcore.SyncBackend):
        """Resolves the host itself, checks every address and connects only to one it checked: the
        name cannot resolve differently between the check and the connection. TLS still verifies the
        certificate against the host name (httpcore passes it as the server name)."""

        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            addresses = check_resolved(host, resolve(host, port), allowed)
            error: Exception | None = None
            for address in addresses:
                try:
                    return super().connect_tcp(address, port, timeout, local_address, socket_options)
                except httpcore.ConnectError as failure:
                    error = failure
            raise error

    return PublicOnlyBackend()


def _without_userinfo(url: str) -> tuple[str, str | None]:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), f"{unquote(user)}:{unquote(password)}"


def post_event(url: str, payload: dict[str, Any], secret: str | None, allowed: list[Network],
               timeout: float = 10.0) -> Attempt:
    """One POST of ``payload`` to ``url``: through no proxy, following no redirect (a 3xx is a failure),
    to a permitted address only."""
    import httpcore

    try:
        url_host_port(url)
    except DestinationRefused:
        return Attempt(False, False, "delivery refused: the destination is not allowed")
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"content-type": "application/json", "user-agent": "hsa-video-webhooks"}
    url, credentials = _without_userinfo(url)
    if credentials:  # user-info is the receiver's Basic credentials, as browsers and httpx send them
        headers["authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    if secret:
        headers.update(sign(body, secret, payload["id"], int(time.time())))
    try:
        with httpcore.ConnectionPool(network_backend=_public_only_backend(allowed), max_connections=1) as pool:
            response = pool.request("POST", url, headers=list(headers.items()), content=body,
                                    extensions={"timeout": dict.fromkeys(("connect", "read", "write", "pool"),
                                                                         timeout)})
    except DestinationRefused:
        return Attempt(False, False, "delivery refused: the destination is not allowed")
    except httpcore.TimeoutException:
        return Attempt(False, True, "delivery failed: timed out")
    except (httpcore.NetworkError, httpcore.ProtocolError, OSError):
        return Attempt(False, True, "delivery failed: no connection")
    if 200 <= response.status < 300:
        return Attempt(True, False, None)
    return Attempt(False, response.status in RETRYABLE_STATUS, f"delivery failed: HTTP {response.status // 100}xx")
