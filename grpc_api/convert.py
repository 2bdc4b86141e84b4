"""Protobuf messages ↔ the plain values the services take and return."""

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from eventrelay.v1 import eventrelay_pb2 as pb
from events.canonical import StoredEvent
from events.validation import parse_json_text
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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp_of(moment: datetime) -> Timestamp:
    # Timestamp.FromDatetime costs three times as much; this is its arithmetic for aware datetimes.
    since_epoch = moment - _EPOCH
    return Timestamp(seconds=since_epoch.days * 86400 + since_epoch.seconds, nanos=since_epoch.microseconds * 1000)


def event_message(event: StoredEvent, occurred: Timestamp | None = None) -> pb.Event:
    return pb.Event(
        event_id=str(event.event_id),
        name=event.name,
        topic=event.topic,
        source=event.source,
        user_id=event.user_id or "",
        event_occurred_at=occurred or timestamp_of(event.event_occurred_at),
        context=event.context_json,
        data=event.data_json,
        offset=event.offset,
    )


def event_messages(events: list[StoredEvent]) -> list[pb.Event]:
    """``event_message`` for a batch; events of one publish mostly share their occurrence time."""
    timestamps: dict[datetime, Timestamp] = {}
    messages = []
    for event in events:
        occurred = timestamps.get(event.event_occurred_at)
        if occurred is None:
            occurred = timestamps[event.event_occurred_at] = timestamp_of(event.event_occurred_at)
        messages.append(event_message(event, occurred))
    return messages


def topic_message(topic: Topic) -> pb.Topic:
    return pb.Topic(name=topic.name, last_offset=topic.last_offset, created_at=timestamp_of(topic.created_at))
