"""Protobuf messages ↔ the plain values the services take and return."""

from datetime import UTC, datetime

from eventrelay.v1 import eventrelay_pb2 as pb
from events.validation import NewEvent, parse_json_text, validate_fields
from events.wire import timestamp_of
from topics.models import Topic


def validate_message(message: pb.NewEvent, where: str, now: datetime, max_event_bytes: int) -> tuple[NewEvent, int]:
    """A ``NewEvent`` message validated (``events.validation.EventValidator``), in the thread that
    stores it, so parsing its JSON overlaps PostgreSQL storing the events before it.

    ``context`` and ``data`` arrive as JSON text; text that is not JSON rejects the whole batch with
    the event's index, and nothing of it is stored. Valid text is kept as sent (``JSONText``). Empty
    proto3 strings mean "not given". The fields go to the validator as they are, without the
    producer dict of the other transports (a fifth of the validation's time at 500 events a call).
    """
    context = message.context
    return validate_fields(
        where,
        now,
        max_event_bytes,
        name=message.name,
        data=parse_json_text(message.data, f"{where}.data"),
        context=parse_json_text(context, f"{where}.context") if context else None,
        event_id=message.event_id,
        user_id=message.user_id,
        occurred_at=(
            message.event_occurred_at.ToDatetime(tzinfo=UTC) if message.HasField("event_occurred_at") else None
        ),
    )


def topic_message(topic: Topic) -> pb.Topic:
    return pb.Topic(name=topic.name, last_offset=topic.last_offset, created_at=timestamp_of(topic.created_at))
