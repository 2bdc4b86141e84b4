"""Protobuf messages ↔ the plain values the services take and return."""

from collections.abc import Iterator, Sequence
from datetime import UTC
from typing import Any, overload

from eventrelay.v1 import eventrelay_pb2 as pb
from events.validation import parse_json_text
from events.wire import timestamp_of
from topics.models import Topic


class NewEventMessages(Sequence[dict[str, Any]]):
    """``NewEvent`` messages as producer event dicts (canonical camelCase) for ``group_commit.publish``,
    each converted when validation reaches it, in the thread that stores it (so parsing its JSON
    overlaps PostgreSQL storing the events before it: ``events.validation.EventsToValidate``).

    ``context`` and ``data`` arrive as JSON text; text that is not JSON rejects the whole batch
    with the event's index, and nothing of it is stored. Valid text is kept as sent (``JSONText``).
    Empty proto3 strings mean "not given".
    """

    def __init__(self, messages: Sequence[pb.NewEvent]) -> None:
        self._messages = messages

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index, message in enumerate(self._messages):
            yield new_event_from_message(message, index)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [new_event_from_message(self._messages[i], i) for i in range(len(self))[index]]
        return new_event_from_message(self._messages[index], index)


def new_event_from_message(message: pb.NewEvent, index: int) -> dict[str, Any]:
    event: dict[str, Any] = {"name": message.name, "data": parse_json_text(message.data, f"events[{index}].data")}
    if message.event_id:
        event["eventId"] = message.event_id
    if message.user_id:
        event["userId"] = message.user_id
    if message.HasField("event_occurred_at"):
        event["eventOccurredAt"] = message.event_occurred_at.ToDatetime(tzinfo=UTC)
    if message.context:
        event["context"] = parse_json_text(message.context, f"events[{index}].context")
    return event


def topic_message(topic: Topic) -> pb.Topic:
    return pb.Topic(name=topic.name, last_offset=topic.last_offset, created_at=timestamp_of(topic.created_at))
