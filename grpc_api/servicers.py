"""The gRPC services of docs/grpc.md. Each method: authenticate, parse, one service call, serialize."""

from typing import Any

import grpc

from eventrelay import ratelimit
from eventrelay.auth import require_read
from eventrelay.db import run_sync
from eventrelay.errors import DEPENDENCY_ERRORS, EventRelayError, InvalidInput
from eventrelay.refs import TopicRef
from eventrelay.v1 import eventrelay_pb2 as pb
from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc
from events import group_commit, live
from events.services import pull_wire
from events.wire import event_bytes, events_response
from grpc_api.convert import topic_message, validate_message
from grpc_api.handlers import abort_unavailable, abort_with, principal_of, rpc
from topics.services import create_topic_as, delete_topic_as, list_topics_as

Context = grpc.aio.ServicerContext


class TopicsServicer(pb_grpc.TopicsServicer):
    @rpc
    async def CreateTopic(self, request: pb.CreateTopicRequest, context: Context) -> pb.Topic:
        topic = await run_sync(create_topic_as, await principal_of(context), request.name)
        return topic_message(topic)

    @rpc
    async def DeleteTopic(self, request: pb.DeleteTopicRequest, context: Context) -> pb.DeleteTopicResponse:
        await run_sync(delete_topic_as, await principal_of(context), request.name)
        return pb.DeleteTopicResponse()

    @rpc
    async def ListTopics(self, request: pb.ListTopicsRequest, context: Context) -> pb.ListTopicsResponse:
        topics = await run_sync(list_topics_as, await principal_of(context))
        return pb.ListTopicsResponse(topics=[topic_message(topic) for topic in topics])


class EventsServicer(pb_grpc.EventsServicer):
    @rpc
    async def PublishEvents(self, request: pb.PublishEventsRequest, context: Context) -> bytes:
        principal = await principal_of(context)
        ref = TopicRef.parse(request.topic)
        events = request.events
        await ratelimit.acheck("publish", principal.rate_limit_key, cost=len(events))
        stored = await group_commit.publish(principal, ref, events, "grpc", validate_message)
        return events_response(stored)  # serialized: see grpc_api.server.events_handler

    @rpc
    async def PullEvents(self, request: pb.PullEventsRequest, context: Context) -> bytes:
        # Already serialized (events.wire): see grpc_api.server.events_handler.
        return await run_sync(pull_wire, await principal_of(context), request.topic, request.offset, request.batch_size)

    # Not wrapped by @rpc: its errors are mapped here, which saves a generator layer per message.
    async def StreamEvents(self, request: pb.StreamEventsRequest, context: Context) -> Any:
        try:
            principal = await principal_of(context)
            ref = TopicRef.parse(request.topic)
            require_read(principal, ref)
            from_offset = request.from_offset if request.HasField("from_offset") else None
            if from_offset is not None and from_offset < 0:
                raise InvalidInput("from_offset must be >= 0", field="from_offset")
            async with live.subscribe(ref, from_offset) as events:
                async for event in events:
                    # Serialized: see grpc_api.server.events_handler. Every stream of the event in
                    # this process sends the same bytes, encoded once.
                    yield event_bytes(event)
        except EventRelayError as error:
            await abort_with(context, error)
        except DEPENDENCY_ERRORS as error:
            await abort_unavailable(context, error)
