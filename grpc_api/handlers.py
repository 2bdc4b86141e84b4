"""What every RPC shares: the token check and the mapping of service errors to gRPC status codes."""

import functools
import logging
from collections.abc import Callable
from typing import Any

import grpc

from eventrelay import ratelimit
from eventrelay.auth import Principal, authenticate, token_from_authorization
from eventrelay.errors import DEPENDENCY_ERRORS, EventRelayError, RateLimited, Unauthenticated, dependency_outage
from eventrelay.logs import current_request_id

logger = logging.getLogger(__name__)

STATUS_BY_ERROR_CODE = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "too_large": grpc.StatusCode.INVALID_ARGUMENT,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "forbidden": grpc.StatusCode.PERMISSION_DENIED,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "conflict": grpc.StatusCode.ALREADY_EXISTS,
    "slow_consumer": grpc.StatusCode.ABORTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "rate_limited": grpc.StatusCode.RESOURCE_EXHAUSTED,
    # Our own fault (a bug met while handling the call): its message says nothing of the internals.
    "error": grpc.StatusCode.INTERNAL,
}


def client_ip(context: grpc.aio.ServicerContext) -> str:
    """``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000`` → the address without the port."""
    peer = context.peer() or "unknown"
    address = peer.split(":", 1)[-1]
    return address.rsplit(":", 1)[0].strip("[]") if ":" in address else address


async def principal_of(context: grpc.aio.ServicerContext) -> Principal:
    """The caller, from the ``authorization: Bearer <jwt>`` metadata, within its request budget.

    A refused token counts against the client IP's failure budget (brute-force protection).
    """
    metadata = dict(context.invocation_metadata() or ())
    try:
        principal = authenticate(token_from_authorization(metadata.get("authorization")))
    except Unauthenticated:
        await ratelimit.acheck("auth_failure", client_ip(context))
        raise
    await ratelimit.acheck("request", principal.rate_limit_key)
    return principal


# Service errors that are the caller's doing: one INFO line each (an outage is logged where it is met, at WARNING).
CLIENT_ERROR_CODES = frozenset(STATUS_BY_ERROR_CODE) - {"unavailable", "error"}


async def abort_with(context: grpc.aio.ServicerContext, error: EventRelayError) -> None:
    code = STATUS_BY_ERROR_CODE.get(error.code, grpc.StatusCode.UNKNOWN)
    message = error.message if error.code != "slow_consumer" else f"slow_consumer: {error.message}"
    if error.code in CLIENT_ERROR_CODES:
        logger.info("answered %s to %s: %s", code.name, client_ip(context), message)
    if isinstance(error, RateLimited):
        # Added to what is set already (grpc_api.request_ids puts the call's x-request-id there).
        trailing = tuple(context.trailing_metadata() or ())
        context.set_trailing_metadata((*trailing, ("retry-after-ms", str(error.retry_after_ms))))
    await context.abort(code, message)


async def abort_unavailable(context: grpc.aio.ServicerContext, error: Exception) -> None:
    """``UNAVAILABLE`` for a dependency outage (one of ``DEPENDENCY_ERRORS``): the client retries."""
    unavailable = dependency_outage(error)
    logger.warning("answered UNAVAILABLE: %s (%s: %s)", unavailable.message, type(error).__name__, error)
    await abort_with(context, unavailable)


async def abort_internal(context: grpc.aio.ServicerContext, where: str) -> None:
    """A bug of ours (called from an ``except Exception``): logged once, with its traceback; the client gets
    ``UNKNOWN`` and the request id to quote, never our exception's text (grpc.aio's default answer carries it)."""
    logger.exception("%s failed", where)
    await context.abort(grpc.StatusCode.UNKNOWN, f"internal error (request id {current_request_id()})")


def rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ``EventRelayError`` raised by a unary servicer method into its status, and a dependency
    outage into ``UNAVAILABLE`` (StreamEvents maps its own: a wrapping generator would cost a step
    per message)."""

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except EventRelayError as error:
            await abort_with(context, error)
        except DEPENDENCY_ERRORS as error:
            await abort_unavailable(context, error)
        except Exception:  # noqa: BLE001  # a bug of ours: abort_internal logs it with its traceback
            await abort_internal(context, method.__qualname__)

    return unary
