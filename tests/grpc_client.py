"""A small client for end-to-end tests: real grpcio stubs with a bearer token."""

import json
import uuid
from typing import Any

import grpc

from eventrelay.v1 import eventrelay_pb2 as pb
from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc


class Client:
    def __init__(self, address: str, token: str | None) -> None:
        self.channel = grpc.insecure_channel(address)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.topics = pb_grpc.TopicsStub(self.channel)
        self.events = pb_grpc.EventsStub(self.channel)
        self.consumers = pb_grpc.ConsumersStub(self.channel)

    def create_topic(self, name: str) -> pb.Topic:
        return self.topics.CreateTopic(pb.CreateTopicRequest(name=name), metadata=self.metadata, timeout=30)

    def delete_topic(self, name: str) -> None:
        self.topics.DeleteTopic(pb.DeleteTopicRequest(name=name), metadata=self.metadata, timeout=30)

    def list_topics(self) -> list[pb.Topic]:
        return list(self.topics.ListTopics(pb.ListTopicsRequest(), metadata=self.metadata, timeout=30).topics)

    def publish(self, topic: str, *datas: Any, name: str = "test_event", **fields: Any) -> list[pb.Event]:
        events = [pb.NewEvent(name=name, data=json.dumps(data), **fields) for data in datas]
        reply = self.events.PublishEvents(
            pb.PublishEventsRequest(topic=topic, events=events), metadata=self.metadata, timeout=60
        )
        return list(reply.events)

    def pull(self, topic: str, offset: int, batch_size: int = 0) -> pb.PullEventsResponse:
        return self.events.PullEvents(
            pb.PullEventsRequest(topic=topic, offset=offset, batch_size=batch_size), metadata=self.metadata, timeout=60
        )

    def stream(self, topic: str, from_offset: int | None = None, timeout: float | None = 120) -> Any:
        request = pb.StreamEventsRequest(topic=topic)
        if from_offset is not None:
            request.from_offset = from_offset
        return self.events.StreamEvents(request, metadata=self.metadata, timeout=timeout)

    def close(self) -> None:
        self.channel.close()


def unique_topic(prefix: str = "t") -> str:
    """Topic names unique per test: transactional tests leave per-topic tables behind after the flush."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"
