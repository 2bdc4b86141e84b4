"""Protobuf messages ↔ the plain values the services take and return."""

from datetime import UTC
from typing import Any

from eventrelay.v1 import eventrelay_pb2 as pb
from events.validation import parse_json_text
from events.wire import timestamp_of
from topics.models import Topic


def new_events_from_messages(messages: Any) -> list[dict[str, Any]]:
    """``NewEvent`` messages → producer event dicts (canonical camelCase) for ``events.publish``.

    ``context`` and ``data`` arrive as JSON text; text that is not JSON rejects the whole batch
    with the event's index, before anything is stored. Valid text is kept as sent (``JSONText``). Empty proto3 strings mean "not given".
    """
    events = []
    for index, message in enumerate(messages):
        event: dict[str, Any] = {"name": message.name, "data": parse_json_text(message.data, f"events[{index}].data")}
        if message.event_id:
            event["eventId"] = message.event_id
        if message.user_id:
            event["userId"] = message.user_id
        if message.HasField("event_occurred_at"):
            event["eventOccurredAt"] = message.event_occurred_at.ToDatetime(tzinfo=UTC)
        if message.context:
            event["context"] = parse_json_text(message.context, f"events[{index}].context")
        events.append(event)
    return events


def topic_message(topic: Topic) -> pb.Topic:
    return pb.Topic(name=topic.name, last_offset=topic.last_offset, created_at=timestamp_of(topic.created_at))
