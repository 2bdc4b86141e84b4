"""The request id of each gRPC call: the client's ``x-request-id`` metadata when it is a sane one, else a new one;
set for everything the call logs and queues (eventrelay.logs) and sent back as ``x-request-id`` metadata: in the
trailing metadata of a unary call, in the initial metadata of a stream (sent at once, before its first message).

grpc.aio runs each call in an asyncio task of its own and asks the interceptors from inside it, so the id set here
holds for the whole call, grpc's own line about an exception the servicer raised included, and for no other call.
"""

import contextlib
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import grpc

from eventrelay.logs import accepted_request_id, current_request_id, request_id

METADATA_KEY = "x-request-id"

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class RequestIdInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        # method -> its handler, echoing the id (a method's handler is fixed once the server runs)
        self._echoing: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        given = next(
            (value for key, value in handler_call_details.invocation_metadata or () if key == METADATA_KEY), None
        )
        request_id.set(accepted_request_id(given))
        method = handler_call_details.method
        handler = self._echoing.get(method)
        if handler is None:
            handler = echoing(await continuation(handler_call_details))
            if handler is not None:  # (an unknown method is not kept: a client chooses the names it calls)
                self._echoing[method] = handler
        return handler


def echoing(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
    """``handler``, answering with the call's request id in its metadata (its unary-unary or unary-stream
    behaviour, or a bidirectional stream that writes its own messages (PublishStream); the others, health's
    and reflection's streams, are left as they are)."""
    if handler is None:
        return None
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None and inspect.iscoroutinefunction(handler.unary_unary):
        return grpc.unary_unary_rpc_method_handler(_unary_echoing(handler.unary_unary), **serializers)
    if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
        return grpc.unary_stream_rpc_method_handler(_stream_echoing(handler.unary_stream), **serializers)
    if handler.stream_stream is not None and inspect.iscoroutinefunction(handler.stream_stream):
        return grpc.stream_stream_rpc_method_handler(_bidi_echoing(handler.stream_stream), **serializers)
    return handler


def _unary_echoing(behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        # Set first, so an abort carries it too (grpc_api.handlers.abort_with adds to it, never replaces it).
        context.set_trailing_metadata(((METADATA_KEY, current_request_id()),))
        return await behaviour(request, context)

    return unary


def _stream_echoing(behaviour: Callable[..., AsyncGenerator[Any, None]]) -> Callable[..., Awaitable[None]]:
    # A coroutine writing each message rather than a generator around the servicer's: no extra step per message.
    async def stream(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.send_initial_metadata(((METADATA_KEY, current_request_id()),))
        async with contextlib.aclosing(behaviour(request, context)) as responses:
            async for response in responses:
                await context.write(response)

    return stream


def _bidi_echoing(behaviour: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    async def stream(requests: Any, context: grpc.aio.ServicerContext) -> None:
        await context.send_initial_metadata(((METADATA_KEY, current_request_id()),))
        await behaviour(requests, context)

    return stream
