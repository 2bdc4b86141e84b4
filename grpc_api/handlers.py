"""What every RPC shares: the token check and the mapping of service errors to gRPC status codes."""

import functools
import inspect
from collections.abc import Callable
from typing import Any

import grpc

from eventrelay.auth import Principal, authenticate, token_from_authorization
from eventrelay.errors import EventRelayError

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
}


def principal_of(context: grpc.aio.ServicerContext) -> Principal:
    """The caller, from the ``authorization: Bearer <jwt>`` metadata (``Unauthenticated`` if not valid)."""
    metadata = dict(context.invocation_metadata() or ())
    return authenticate(token_from_authorization(metadata.get("authorization")))


async def abort_with(context: grpc.aio.ServicerContext, error: EventRelayError) -> None:
    code = STATUS_BY_ERROR_CODE.get(error.code, grpc.StatusCode.UNKNOWN)
    message = error.message if error.code != "slow_consumer" else f"slow_consumer: {error.message}"
    await context.abort(code, message)


def rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ``EventRelayError`` raised by a servicer method (unary or streaming) into its status."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def streaming(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                async for message in method(self, request, context):
                    yield message
            except EventRelayError as error:
                await abort_with(context, error)

        return streaming

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except EventRelayError as error:
            await abort_with(context, error)

    return unary
