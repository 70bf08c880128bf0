"""Bearer API keys. Keys are configured as SHA-256 digests (``HSA_API_KEY_SHA256``), never in clear."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from .errors import APIError


def require_api_key(request: Request) -> str:
    """The caller's key digest ("" when auth is off); 401 without a valid ``Authorization: Bearer`` key."""
    accepted: frozenset[str] = request.app.state.settings.api_key_hashes
    if not accepted:
        return ""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise APIError(401, "missing_api_key", "send an API key as `Authorization: Bearer <key>`",
                       type="authentication_error", headers={"WWW-Authenticate": "Bearer"})
    digest = hashlib.sha256(key.strip().encode()).hexdigest()
    if not any(hmac.compare_digest(digest, candidate) for candidate in accepted):
        raise APIError(401, "invalid_api_key", "the API key is not valid", type="authentication_error",
                       headers={"WWW-Authenticate": "Bearer"})
    return digest
