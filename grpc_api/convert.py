"""Protobuf messages ↔ the plain values the services take and return."""

import json
from datetime import UTC
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from eventrelay.errors import InvalidInput
from eventrelay.v1 import eventrelay_pb2 as pb
from events.canonical import StoredEvent
from topics.models import Topic


def new_events_from_messages(messages: Any) -> list[dict[str, Any]]:
    """``NewEvent`` messages → producer event dicts (canonical camelCase) for ``events.publish``.

    ``context`` and ``data`` arrive as JSON text; text that is not JSON rejects the whole batch
    with the event's index, before anything is stored. Empty proto3 strings mean "not given".
    """
    events = []
    for index, message in enumerate(messages):
        event: dict[str, Any] = {"name": message.name, "data": _parse_json(message.data, f"events[{index}].data")}
        if message.event_id:
            event["eventId"] = message.event_id
        if message.user_id:
            event["userId"] = message.user_id
        if message.HasField("event_occurred_at"):
            event["eventOccurredAt"] = message.event_occurred_at.ToDatetime(tzinfo=UTC)
        if message.context:
            event["context"] = _parse_json(message.context, f"events[{index}].context")
        events.append(event)
    return events


def _parse_json(text: str, where: str) -> Any:
    if text == "":
        raise InvalidInput(f"{where}: is required (JSON text)", field=where)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"{where}: is not valid JSON ({exc})", field=where) from None
    except RecursionError:
        raise InvalidInput(f"{where}: is nested too deeply", field=where) from None


def event_message(event: StoredEvent) -> pb.Event:
    occurred = Timestamp()
    occurred.FromDatetime(event.event_occurred_at)
    return pb.Event(
        event_id=str(event.event_id),
        name=event.name,
        topic=event.topic,
        source=event.source,
        user_id=event.user_id or "",
        event_occurred_at=occurred,
        context=event.context_json,
        data=event.data_json,
        offset=event.offset,
    )


def topic_message(topic: Topic) -> pb.Topic:
    created = Timestamp()
    created.FromDatetime(topic.created_at)
    return pb.Topic(name=topic.name, last_offset=topic.last_offset, created_at=created)
