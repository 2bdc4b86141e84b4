"""The kinds of error every service raises and every transport translates.

Services raise these; transports map ``code`` to their own status (gRPC status code, HTTP status,
WebSocket ``error`` frame) and pass ``message`` and ``field`` through unchanged, so a producer sees
the same explanation whichever way it connected.
"""

import math

import django.db
import psycopg
import redis


class EventRelayError(Exception):
    code = "error"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class InvalidInput(EventRelayError):
    """The request is malformed: a bad topic name, bad JSON, a missing field. Nothing was stored."""

    code = "invalid"


class TooLarge(InvalidInput):
    """A size limit (events per batch, bytes per event or per request) was exceeded."""

    code = "too_large"


class Unauthenticated(EventRelayError):
    """No token, or a token that is not valid (bad signature, wrong algorithm, expired, malformed)."""

    code = "unauthenticated"


class Forbidden(EventRelayError):
    """A valid token that does not grant the topic (or admin rights) the call needs."""

    code = "forbidden"


class NotFound(EventRelayError):
    code = "not_found"


class AlreadyExists(EventRelayError):
    code = "conflict"


class SlowConsumer(EventRelayError):
    """A live subscriber fell too far behind; it should resubscribe from its last offset + 1."""

    code = "slow_consumer"


class Unavailable(EventRelayError):
    """The server is shutting down, or a dependency is down (:func:`dependency_outage`); retry, resuming by offset."""

    code = "unavailable"


class RateLimited(EventRelayError):
    """Over a rate limit: retry after ``retry_after_ms``."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after_ms / 1000))


# Seconds a client is told to wait (REST ``Retry-After``) before retrying while a dependency is down.
OUTAGE_RETRY_AFTER_SECONDS = 1

# What a dependency that is down or unreachable raises: PostgreSQL through Django or straight from
# psycopg (InterfaceError: "the connection is closed", lost before this call), Redis (live fan-out).
# The one place that tells an outage from a bug: every transport catches these and answers
# "unavailable, retry" (gRPC UNAVAILABLE, HTTP 503, a WebSocket error frame), through
# dependency_outage(); anything else stays a bug.
_DATABASE_ERRORS = (
    django.db.OperationalError,
    django.db.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
_REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)
DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (*_DATABASE_ERRORS, *_REDIS_ERRORS)


def dependency_outage(error: Exception) -> Unavailable:
    """The ``Unavailable`` a transport answers for ``error``, one of :data:`DEPENDENCY_ERRORS`.

    The message names the dependency, never the driver's text (addresses, internal details)."""
    if isinstance(error, _REDIS_ERRORS):
        return Unavailable("Redis (live events) is unavailable; retry later")
    return Unavailable("the database is unavailable; retry later")
