"""Per-API-key request rate limits: a token bucket per key, as GCRA (the generic cell rate algorithm).

A key may send ``burst`` requests at once and ``rate`` per second on average. GCRA keeps one number
per key — the theoretical arrival time (TAT) of its next request — instead of a token count and a
refill time: a request at ``now`` is allowed when ``TAT − now ≤ (burst − 1) / rate``, and then moves
TAT to ``max(TAT, now) + 1 / rate``. Refused requests learn exactly when to come back.

- ``RedisRateLimiter``: the TAT lives in Redis (``hsa:rate:{key}``), so every gateway shares one
  bucket per key; the check-and-update is one Lua script, so concurrent requests cannot both take
  the last token. It runs on the event loop (``redis.asyncio``), as every request passes through it.
- ``LocalRateLimiter``: in memory, for the one-process mode's single gateway.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

# KEYS[1] the key's TAT; ARGV[1] emission interval, ARGV[2] burst tolerance, in seconds. '0' when allowed,
# else the seconds to wait (as a string: Lua numbers come back truncated).
_GCRA = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then return tostring(tat - now - tolerance) end
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.ceil((tat + interval - now) * 1000) + 1)
return '0'
"""


class RateLimiter(Protocol):
    async def acquire(self, key: str) -> float:
        """Take one request from ``key``'s bucket: 0.0 when allowed, else the seconds until it would be."""

    async def close(self) -> None: ...


def retry_after_header(wait_seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up so a client that honours it is let in."""
    return str(max(1, math.ceil(wait_seconds)))


class LocalRateLimiter:
    def __init__(self, rate: float, burst: int):
        self.interval, self.tolerance = (1.0 / rate, (burst - 1) / rate) if rate > 0 else (0.0, math.inf)
        self._next_arrival: dict[str, float] = {}

    async def acquire(self, key: str) -> float:
        if self.interval == 0.0:
            return 0.0
        now = time.monotonic()
        tat = max(self._next_arrival.get(key, now), now)  # one event loop: no other request runs in between
        if tat - now > self.tolerance:
            return tat - now - self.tolerance
        self._next_arrival[key] = tat + self.interval
        return 0.0

    async def close(self) -> None:
        return None


class RedisRateLimiter:
    def __init__(self, url: str, rate: float, burst: int, prefix: str = "hsa:rate:"):
        import redis.asyncio

        self.interval, self.tolerance = (1.0 / rate, (burst - 1) / rate) if rate > 0 else (0.0, math.inf)
        self.prefix, self.url = prefix, url
        # connections open on first use, on the loop that uses them (the gateway's, in its lifespan)
        self.redis = redis.asyncio.Redis.from_url(url, decode_responses=True, socket_timeout=5,
                                                  socket_connect_timeout=5)
        self._gcra = self.redis.register_script(_GCRA)

    async def acquire(self, key: str) -> float:
        if self.interval == 0.0:
            return 0.0
        return float(await self._gcra(keys=[self.prefix + key], args=[self.interval, self.tolerance]))

    async def close(self) -> None:
        await self.redis.aclose()


def open_rate_limiter(settings) -> RateLimiter:
    """Per-key buckets: shared by every gateway through Redis, in memory for the one-process mode's single gateway."""
    rate, burst = settings.rate_limit_per_second, settings.rate_limit_burst
    return RedisRateLimiter(settings.redis_url, rate, burst) if settings.redis_url else LocalRateLimiter(rate, burst)
