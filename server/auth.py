"""Bearer API keys and their per-key rate limit.

Keys are configured as SHA-256 digests (``HSA_API_KEY_SHA256``), never in clear; a presented key is
hashed and compared with every digest in constant time (``hmac.compare_digest``). The digest is
the caller's identity: it owns the jobs it creates, and its requests draw on its own token bucket
(``server/limits.py``). With no keys configured (open mode) every caller sees every job, and the
client's address takes the key's place for the bucket and the cap on active jobs.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Annotated

from fastapi import Depends, Request

from .errors import APIError
from .limits import retry_after_header

log = logging.getLogger("hsa.gateway")


async def require_api_key(request: Request) -> str:
    """The caller's key digest ("" when auth is off); 401 without a valid ``Authorization: Bearer`` key,
    429 ``rate_limit_exceeded`` (with ``Retry-After``) when the key has spent its request budget.

    Async, on the event loop: a sync dependency would cost every request its own trip to the thread
    pool, more than the hashing and the rate limiter's round trip together."""
    digest = authenticate(request)
    await enforce_rate_limit(request, digest)
    return digest


def authenticate(request: Request) -> str:
    """The caller's key digest ("" when auth is off), or 401."""
    accepted: frozenset[str] = request.app.state.settings.api_key_hashes
    if not accepted:
        return ""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise APIError(401, "missing_api_key", "send an API key as `Authorization: Bearer <key>`",
                       type="authentication_error", headers={"WWW-Authenticate": "Bearer"})
    digest = hashlib.sha256(key.strip().encode(errors="surrogateescape")).hexdigest()
    if not any(hmac.compare_digest(digest, candidate) for candidate in accepted):
        raise APIError(401, "invalid_api_key", "the API key is not valid", type="authentication_error",
                       headers={"WWW-Authenticate": "Bearer"})
    return digest


def client_identity(request: Request, digest: str) -> str:
    """Whose bucket and job cap a request draws on: its key's, or in open mode (no keys) its client
    address's — behind a proxy, every client of that proxy shares one."""
    if digest:
        return digest
    return "client:" + (request.client.host if request.client else "unknown")


async def enforce_rate_limit(request: Request, digest: str) -> None:
    """Take one request from the caller's bucket, or 429 ``rate_limit_exceeded`` with ``Retry-After``."""
    try:
        wait = await request.app.state.limiter.acquire(client_identity(request, digest))
    except Exception as error:  # limits protect the service; their store being down must not take it down
        log.warning("rate limiter unavailable, request let through: %s", error)
        wait = 0.0
    if wait > 0:
        raise rate_limit_exceeded(wait)


def rate_limit_exceeded(wait: float) -> APIError:
    """429 ``rate_limit_exceeded``: the key's bucket is empty for ``wait`` seconds."""
    return APIError(429, "rate_limit_exceeded", f"too many requests from this caller; retry in {wait:.2f} s",
                    type="rate_limit_error", headers={"Retry-After": retry_after_header(wait)})


# the caller's key digest, checked and rate-limited: the dependency of every /v1 route
ApiKey = Annotated[str, Depends(require_api_key)]
