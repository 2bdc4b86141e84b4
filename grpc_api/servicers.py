"""The gRPC services of docs/grpc.md. Each method: authenticate, parse, one service call, serialize."""

from typing import Any

import grpc

from eventrelay import metrics
from eventrelay.db import run_sync
from eventrelay.errors import DEPENDENCY_ERRORS, EventRelayError, SlowConsumer
from eventrelay.v1 import eventrelay_pb2 as pb
from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc
from events.services import apublish, pull_encoded, subscribe
from grpc_api.convert import topic_message, validate_message
from grpc_api.handlers import abort_internal, abort_unavailable, abort_with, principal_of, rpc
from grpc_api.publish_stream import PublishStream
from grpc_api.wire import event_bytes, events_response, pull_response
from topics.services import create_topic_as, delete_topic_as, list_topics_as, update_topic_as

Context = grpc.aio.ServicerContext

# This transport's children of the live metrics (eventrelay.metrics), bound once.
SUBSCRIBERS = metrics.LIVE_SUBSCRIBERS.labels("grpc")
SLOW_CONSUMERS = metrics.SLOW_CONSUMERS.labels("grpc")
observe_delivery = metrics.LIVE_DELIVERY.labels("grpc").observe


class TopicsServicer(pb_grpc.TopicsServicer):
    @rpc
    async def CreateTopic(self, request: pb.CreateTopicRequest, context: Context) -> pb.Topic:
        topic = await run_sync(create_topic_as, await principal_of(context), request.name, _retention_of(request))
        return topic_message(topic)

    @rpc
    async def UpdateTopic(self, request: pb.UpdateTopicRequest, context: Context) -> pb.Topic:
        topic = await run_sync(update_topic_as, await principal_of(context), request.name, _retention_of(request))
        return topic_message(topic)

    @rpc
    async def DeleteTopic(self, request: pb.DeleteTopicRequest, context: Context) -> pb.DeleteTopicResponse:
        await run_sync(delete_topic_as, await principal_of(context), request.name)
        return pb.DeleteTopicResponse()

    @rpc
    async def ListTopics(self, request: pb.ListTopicsRequest, context: Context) -> pb.ListTopicsResponse:
        topics = await run_sync(list_topics_as, await principal_of(context))
        return pb.ListTopicsResponse(topics=[topic_message(topic) for topic in topics])


def _retention_of(request: pb.CreateTopicRequest | pb.UpdateTopicRequest) -> dict[str, int]:
    """The retention settings the request sets (proto3 ``optional``: unset is absent, 0 is "no bound")."""
    fields = {"retention_max_age_seconds": "retentionMaxAgeSeconds", "retention_max_events": "retentionMaxEvents"}
    return {camel: getattr(request, field) for field, camel in fields.items() if request.HasField(field)}


class EventsServicer(pb_grpc.EventsServicer):
    @rpc
    async def PublishEvents(self, request: pb.PublishEventsRequest, context: Context) -> bytes:
        stored = await apublish(await principal_of(context), request.topic, request.events, "grpc", validate_message)
        return events_response(stored)  # serialized: see grpc_api.server.events_handler

    @rpc
    async def PullEvents(self, request: pb.PullEventsRequest, context: Context) -> bytes:
        # Served from the events' stored wire forms (grpc_api.wire), already serialized: see
        # grpc_api.server.events_handler.
        page = await run_sync(
            pull_encoded, await principal_of(context), request.topic, request.offset, request.batch_size
        )
        return pull_response(page.joined, page.next_offset)

    # Not wrapped by @rpc: the token is checked once for the stream; each request's errors go in its ack
    # (grpc_api.publish_stream). Requests are read with context.read(), not through ``requests``: one
    # generator step less per request.
    async def PublishStream(self, requests: Any, context: Context) -> None:
        try:
            principal = await principal_of(context)
        except EventRelayError as error:
            await abort_with(context, error)
        except DEPENDENCY_ERRORS as error:
            await abort_unavailable(context, error)
        else:
            await PublishStream(principal, context).serve()

    # Not wrapped by @rpc: its errors are mapped here, which saves a generator layer per message.
    async def StreamEvents(self, request: pb.StreamEventsRequest, context: Context) -> Any:
        try:
            from_offset = request.from_offset if request.HasField("from_offset") else None
            subscription = await subscribe(await principal_of(context), request.topic, from_offset, field="from_offset")
            with SUBSCRIBERS.track_inprogress():
                async with subscription.events() as events:
                    async for event in events:
                        # Serialized: see grpc_api.server.events_handler. Every stream of the event in
                        # this process sends the same bytes, encoded once.
                        yield event_bytes(event)
                        # grpc.aio asks for the next message once this one is written.
                        metrics.observe_live_delivery(observe_delivery, event.committed_at)
        except EventRelayError as error:
            if isinstance(error, SlowConsumer):
                SLOW_CONSUMERS.inc()
            await abort_with(context, error)
        except DEPENDENCY_ERRORS as error:
            await abort_unavailable(context, error)
        except Exception:  # noqa: BLE001  # a bug of ours: abort_internal logs it with its traceback
            await abort_internal(context, "StreamEvents")
