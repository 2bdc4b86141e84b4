"""Each stored event's gRPC wire form, kept beside it so a pull is one PostgreSQL read and no
per-event Python.

``wire`` is the event encoded as one element of the ``repeated Event events = 1`` field that both
``PublishEventsResponse`` and ``PullEventsResponse`` carry: tag, length, ``Event`` bytes. Protobuf
messages are their fields' encodings concatenated, so a response is the stored ``wire`` of its events
joined together, followed by ``next_offset`` for a pull. It is computed once, when the event is
stored (offsets are assigned then), and PostgreSQL concatenates a page of them (``string_agg``).

Rows stored before the column existed have no ``wire``; they are encoded here when read.
"""

from datetime import UTC, datetime

from google.protobuf.internal.encoder import _VarintBytes
from google.protobuf.timestamp_pb2 import Timestamp

from eventrelay.v1 import eventrelay_pb2 as pb
from events.canonical import StoredEvent

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEXT_OFFSET_TAG = b"\x10"  # field 2 of PullEventsResponse, varint


def timestamp_of(moment: datetime) -> Timestamp:
    # Timestamp.FromDatetime costs three times as much; this is its arithmetic for aware datetimes.
    since_epoch = moment - _EPOCH
    return Timestamp(seconds=since_epoch.days * 86400 + since_epoch.seconds, nanos=since_epoch.microseconds * 1000)


def event_message(event: StoredEvent, occurred: Timestamp | None = None) -> pb.Event:
    """The ``Event`` message of SPEC.md for a stored event."""
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


def encode_wire(event: StoredEvent, occurred: Timestamp | None = None) -> bytes:
    """``event`` as one element of a response's repeated ``events`` field."""
    return pb.PullEventsResponse(events=[event_message(event, occurred)]).SerializeToString()


def wire_of(event: StoredEvent) -> bytes:
    return event.wire if event.wire is not None else encode_wire(event)


def events_response(events: list[StoredEvent]) -> bytes:
    """A serialized ``PublishEventsResponse`` (or the events part of a ``PullEventsResponse``)."""
    return b"".join([wire_of(event) for event in events])


def pull_response(events_wire: bytes, next_offset: int) -> bytes:
    """A serialized ``PullEventsResponse`` from its events' joined wire forms."""
    return events_wire + _NEXT_OFFSET_TAG + _VarintBytes(next_offset)


class TimestampCache:
    """Events stored together mostly share their occurrence time: build its Timestamp once."""

    def __init__(self) -> None:
        self._timestamps: dict[datetime, Timestamp] = {}

    def __call__(self, moment: datetime) -> Timestamp:
        timestamp = self._timestamps.get(moment)
        if timestamp is None:
            timestamp = self._timestamps[moment] = timestamp_of(moment)
        return timestamp
