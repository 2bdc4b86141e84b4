"""Rate limits shared by every process: one atomic Redis script (GCRA), keyed by who and what.

GCRA (the generic cell rate algorithm) keeps one timestamp per key: the "theoretical arrival time"
of the next unit. A request of ``cost`` units is allowed when, after adding ``cost`` emission
intervals, that time is no further ahead of now than the burst allows. It is a token bucket without
the refill bookkeeping: one key, one script call, exact across any number of processes.

Who: the principal (JWT ``sub``, else the token's hash), or the client IP for calls that carry no
valid token. What: ``publish`` (costs one unit per event), ``request`` (one per call),
``auth_failure`` (one per refused token, per IP: brute-force protection), ``connect`` (one per
WebSocket handshake, per IP). A limit of 0 disables it.

When Redis cannot be reached the limiter fails open by default (``ER_RATE_LIMIT_FAIL_OPEN``): a
rate limiter must not take the service down with it. Each such call logs a warning (at most once a
minute per process), so the outage is visible.
"""

import logging
import time
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings

from eventrelay import metrics
from eventrelay.errors import RateLimited
from eventrelay.loops import PerLoop

logger = logging.getLogger(__name__)

# KEYS[1]: the key. ARGV: now (ms), emission interval (ms per unit), burst (units), cost (units).
# Returns {allowed (0/1), retry_after_ms}.
GCRA_SCRIPT = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return {0, math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return {1, 0}
"""


@dataclass(frozen=True)
class Limit:
    action: str
    per_second: float
    burst: int

    @property
    def enabled(self) -> bool:
        return self.per_second > 0


def limit_for(action: str) -> Limit:
    per_second, burst = {
        "publish": (settings.ER_RATE_LIMIT_PUBLISH_PER_S, settings.ER_RATE_LIMIT_PUBLISH_BURST),
        "request": (settings.ER_RATE_LIMIT_REQUESTS_PER_S, settings.ER_RATE_LIMIT_REQUESTS_BURST),
        "auth_failure": (settings.ER_RATE_LIMIT_AUTH_FAILURES_PER_S, settings.ER_RATE_LIMIT_AUTH_FAILURES_BURST),
        "connect": (settings.ER_RATE_LIMIT_CONNECTS_PER_S, settings.ER_RATE_LIMIT_CONNECTS_BURST),
    }[action]
    return Limit(action, float(per_second), max(int(burst), 1))


def _arguments(limit: Limit, cost: int) -> list[float | int]:
    return [int(time.time() * 1000), 1000 / limit.per_second, limit.burst, cost]


def _refusal(limit: Limit, who: str, cost: int, retry_after_ms: int) -> RateLimited:
    what = f"{cost} events" if limit.action == "publish" else limit.action.replace("_", " ")
    if cost > limit.burst:
        return RateLimited(
            f"{what} is more than the burst allowance of {limit.burst}; send smaller batches", retry_after_ms
        )
    return RateLimited(
        f"rate limit exceeded for {what} ({limit.per_second:g}/s, burst {limit.burst}); retry in {retry_after_ms} ms",
        retry_after_ms,
    )


_warned_at = 0.0


def _fail_open(error: Exception) -> None:
    global _warned_at
    if not settings.ER_RATE_LIMIT_FAIL_OPEN:
        raise RateLimited("rate limiter unavailable (Redis unreachable); retry shortly", 1000) from error
    if time.monotonic() - _warned_at > 60:
        _warned_at = time.monotonic()
        logger.warning("rate limiter cannot reach Redis (%s): requests are not being limited (fail-open)", error)


# --- sync (REST views, management code) ---------------------------------------------------------------

_sync_client: redis.Redis | None = None
_sync_script: Any = None


def _sync() -> tuple[redis.Redis, Any]:
    """The process's client for the limiter's Redis, and the script registered on it (made on first use)."""
    global _sync_client, _sync_script
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(
            settings.ER_RATE_LIMIT_REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        _sync_script = _sync_client.register_script(GCRA_SCRIPT)
    return _sync_client, _sync_script


def check(action: str, who: str, cost: int = 1) -> None:
    """Consume ``cost`` units of ``who``'s ``action`` budget, or raise ``RateLimited``."""
    limit = limit_for(action)
    if not limit.enabled or cost <= 0:
        return
    try:
        _client, script = _sync()
        allowed, retry_after_ms = script(
            keys=[f"{settings.ER_REDIS_PREFIX}:rl:{action}:{who}"], args=_arguments(limit, cost)
        )
    except redis.RedisError as error:
        _fail_open(error)
        return
    if not allowed:
        metrics.RATE_LIMITED.labels(action).inc()
        raise _refusal(limit, who, cost, int(retry_after_ms))


# --- async (gRPC server, WebSocket consumers) ----------------------------------------------------------


def _async_client() -> tuple[aioredis.Redis, Any]:
    client = aioredis.Redis.from_url(settings.ER_RATE_LIMIT_REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
    return client, client.register_script(GCRA_SCRIPT)


_async_clients: PerLoop[tuple[aioredis.Redis, Any]] = PerLoop(_async_client)


async def acheck(action: str, who: str, cost: int = 1) -> None:
    """The async twin of :func:`check` (one client per event loop)."""
    limit = limit_for(action)
    if not limit.enabled or cost <= 0:
        return
    try:
        _client, script = _async_clients.get()
        allowed, retry_after_ms = await script(
            keys=[f"{settings.ER_REDIS_PREFIX}:rl:{action}:{who}"], args=_arguments(limit, cost)
        )
    except (redis.RedisError, OSError) as error:
        _fail_open(error)
        return
    if not allowed:
        metrics.RATE_LIMITED.labels(action).inc()
        raise _refusal(limit, who, cost, int(retry_after_ms))


# --- throttles (webhook destinations) ----------------------------------------------------------------------


def reserve(key: str, per_second: float, burst: int = 1) -> float:
    """Take one unit of ``key``'s budget of ``per_second`` (``burst`` at once): 0 when it may be used now, else the
    seconds to wait before asking again. Fails open (0) when Redis cannot be reached."""
    try:
        _client, script = _sync()
        allowed, retry_after_ms = script(
            keys=[f"{settings.ER_REDIS_PREFIX}:throttle:{key}"],
            args=[int(time.time() * 1000), 1000 / per_second, max(burst, 1), 1],
        )
    except redis.RedisError as error:
        logger.debug("throttle %s not applied: %s", key, error)
        return 0.0
    return 0.0 if allowed else int(retry_after_ms) / 1000


def hold(key: str, seconds: float) -> None:
    """Ask every process to wait ``seconds`` before using ``key`` again (a receiver's 429): see :func:`held_for`."""
    try:
        _sync()[0].set(f"{settings.ER_REDIS_PREFIX}:hold:{key}", "1", px=max(int(seconds * 1000), 1))
    except redis.RedisError as error:
        logger.debug("hold of %s not recorded: %s", key, error)


def held_for(key: str) -> float:
    """Seconds left of a :func:`hold` on ``key`` (0: none)."""
    try:
        left = int(_sync()[0].pttl(f"{settings.ER_REDIS_PREFIX}:hold:{key}"))  # type: ignore[arg-type]
    except redis.RedisError:
        return 0.0
    return max(left, 0) / 1000
