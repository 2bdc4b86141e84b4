"""The gRPC server process: grpc.aio, our two services, health and reflection, graceful shutdown."""

import asyncio
import logging
import signal
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

import grpc
from django.conf import settings
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from eventrelay import metrics
from eventrelay.db import serving_async_pool
from eventrelay.gc_tuning import tune_gc_for_serving
from eventrelay.v1 import eventrelay_pb2 as pb
from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc
from events import live
from grpc_api.consumers import ConsumersServicer
from grpc_api.publish_stream import end_every_stream
from grpc_api.request_ids import RequestIdInterceptor
from grpc_api.servicers import EventsServicer, TopicsServicer

logger = logging.getLogger(__name__)

# How long the connections stay open after the publish streams ended at shutdown, for their clients to read the
# status (see _serve_until_stopped).
STATUS_LINGER_SECONDS = 1.0

SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["Topics"].full_name,
    pb.DESCRIPTOR.services_by_name["Events"].full_name,
    pb.DESCRIPTOR.services_by_name["Consumers"].full_name,
)


def _serialize(response: Any) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


def events_handler(servicer: EventsServicer) -> grpc.GenericRpcHandler:
    """The generated ``add_EventsServicer_to_server``, except that the methods that answer with events
    answer with bytes they have already serialized (their events' wire forms, grpc_api.wire) rather
    than messages for grpc to serialize."""
    return grpc.method_handlers_generic_handler(
        "eventrelay.v1.Events",
        {
            "PublishEvents": grpc.unary_unary_rpc_method_handler(
                servicer.PublishEvents,
                request_deserializer=pb.PublishEventsRequest.FromString,
                response_serializer=_serialize,
            ),
            "PullEvents": grpc.unary_unary_rpc_method_handler(
                servicer.PullEvents,
                request_deserializer=pb.PullEventsRequest.FromString,
                response_serializer=_serialize,
            ),
            "StreamEvents": grpc.unary_stream_rpc_method_handler(
                servicer.StreamEvents,
                request_deserializer=pb.StreamEventsRequest.FromString,
                response_serializer=_serialize,
            ),
            "PublishStream": grpc.stream_stream_rpc_method_handler(
                servicer.PublishStream,
                request_deserializer=pb.PublishStreamRequest.FromString,
                response_serializer=pb.PublishStreamAck.SerializeToString,
            ),
        },
    )


def consumers_handler(servicer: ConsumersServicer) -> grpc.GenericRpcHandler:
    """The generated ``add_ConsumersServicer_to_server`` (every method unary), except that a method may answer
    with bytes it has already serialized: Fetch answers with its events' wire forms (grpc_api.consumers)."""
    service = pb.DESCRIPTOR.services_by_name["Consumers"]
    return grpc.method_handlers_generic_handler(
        service.full_name,
        {
            method.name: grpc.unary_unary_rpc_method_handler(
                getattr(servicer, method.name),
                request_deserializer=getattr(pb, method.input_type.name).FromString,
                response_serializer=_serialize,
            )
            for method in service.methods
        },
    )


def build_server() -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    # Room for a maximal publish request (ER_MAX_REQUEST_BYTES of payload) plus its framing.
    max_message = settings.ER_MAX_REQUEST_BYTES + 4 * 1024 * 1024
    server = grpc.aio.server(
        # Every call's log lines and queued tasks carry its request id (eventrelay.logs).
        interceptors=[RequestIdInterceptor()],
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message),
            # A connection that never completes its HTTP/2 handshake is closed rather than held.
            ("grpc.server_handshake_timeout_ms", settings.ER_GRPC_HANDSHAKE_TIMEOUT_S * 1000),
        ],
    )
    pb_grpc.add_TopicsServicer_to_server(TopicsServicer(), server)
    server.add_generic_rpc_handlers((events_handler(EventsServicer()),))
    server.add_generic_rpc_handlers((consumers_handler(ConsumersServicer()),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return server, health_servicer


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully.

    Shutdown: health turns NOT_SERVING, live streams end with UNAVAILABLE (clients resume by offset
    on another server), publish streams acknowledge the requests they have read and end with
    UNAVAILABLE, new calls are refused, and in-flight unary calls get ``ER_GRPC_GRACE_SECONDS`` to
    finish.
    """
    server, health_servicer = build_server()
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    tune_gc_for_serving(rarer_full_collections=False)
    # /metrics of this process (eventrelay.metrics) on a port of its own: gRPC speaks no plain HTTP.
    metrics.start_server(settings.ER_GRPC_METRICS_PORT, settings.ER_BIND_HOST, "grpc", "ER_GRPC_METRICS_PORT")
    # The consumers' fetches and acks wait for PostgreSQL in this event loop (eventrelay.db.serving_async_pool).
    pool: AbstractAsyncContextManager[None] = (
        serving_async_pool(settings.ER_GRPC_ASYNC_DB_POOL) if settings.ER_GRPC_ASYNC_DB_POOL else nullcontext()
    )
    async with pool:
        await _serve_until_stopped(server, health_servicer, host, bound)


async def _serve_until_stopped(
    server: grpc.aio.Server, health_servicer: health.aio.HealthServicer, host: str, bound: int
) -> None:
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info("gRPC server listening on %s:%s", host, bound)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()

    logger.info("gRPC server shutting down")
    await health_servicer.enter_graceful_shutdown()
    # Publish streams read no more requests, acknowledge those they have read and end with UNAVAILABLE, within
    # the grace period.
    ended_streams = await end_every_stream(settings.ER_GRPC_GRACE_SECONDS)
    await live.get_hub().close()
    if ended_streams:
        # A client still sending on a stream just ended has not read its status yet. Closing the connection now,
        # its requests unread, would reset it (TCP RST), and the client would report the reset ("Broken pipe")
        # instead of the status; kept open a moment, grpc reads and drops them while the client reads the status.
        await asyncio.sleep(STATUS_LINGER_SECONDS)
    await server.stop(settings.ER_GRPC_GRACE_SECONDS)
    logger.info("gRPC server stopped")
