"""Each stored event's gRPC wire form: the stored encoding this transport registers with the core
(``events.encoding``), kept beside each event so a pull is one PostgreSQL read and no per-event Python.

``wire`` is the event encoded as one element of the ``repeated Event events = 1`` field that both
``PublishEventsResponse`` and ``PullEventsResponse`` carry: tag, length, ``Event`` bytes. Protobuf
messages are their fields' encodings concatenated, so a response is the stored ``wire`` of its events
joined together, followed by ``next_offset`` for a pull. It is computed once, when the event is
stored (offsets are assigned then), and PostgreSQL concatenates a page of them (``string_agg``).

Rows stored before the column existed have no ``wire``; they are encoded here when read.
"""

import functools
from datetime import UTC, datetime

from google.protobuf.internal.encoder import _VarintBytes
from google.protobuf.timestamp_pb2 import Timestamp

from eventrelay.v1 import eventrelay_pb2 as pb
from events.canonical import StoredEvent
from events.encoding import RowEncoder

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEXT_OFFSET_TAG = b"\x10"  # field 2 of PullEventsResponse, varint

# Protobuf keys (field number << 3 | wire type) of the ``Event`` fields, and of the ``events`` element.
_EVENTS_KEY = b"\x0a"  # PublishEventsResponse / PullEventsResponse field 1, length-delimited
_EVENT_ID_KEY = b"\x0a\x24"  # field 1, length-delimited, always 36 bytes (a UUID's text)
_NAME_KEY = b"\x12"
_TOPIC_KEY = b"\x1a"
_SOURCE_KEY = b"\x22"
_USER_ID_KEY = b"\x2a"
_OCCURRED_AT_KEY = b"\x32"
_CONTEXT_KEY = b"\x3a"
_DATA_KEY = b"\x42"
_OFFSET_KEY = b"\x48"  # field 9, varint

# Varints of the lengths most fields have, looked up rather than computed.
_SHORT_VARINTS = [_VarintBytes(n) for n in range(1 << 14)]


def timestamp_of(moment: datetime) -> Timestamp:
    # Timestamp.FromDatetime's arithmetic for aware datetimes, without its slower generality.
    since_epoch = moment - _EPOCH
    return Timestamp(seconds=since_epoch.days * 86400 + since_epoch.seconds, nanos=since_epoch.microseconds * 1000)


def event_message(event: StoredEvent) -> pb.Event:
    """The ``Event`` message of docs/grpc.md for a stored event."""
    return pb.Event(
        event_id=str(event.event_id),
        name=event.name,
        topic=event.topic,
        source=event.source,
        user_id=event.user_id or "",
        event_occurred_at=timestamp_of(event.event_occurred_at),
        context=event.context_json,
        data=event.data_json,
        offset=event.offset,
    )


def encode_wire(event: StoredEvent) -> bytes:
    """``event`` as one element of a response's repeated ``events`` field."""
    return wire_from_fields(
        event.offset,
        str(event.event_id),
        event.name,
        topic_and_source_fields(event.topic, event.source),
        event.user_id,
        occurred_at_field(event.event_occurred_at),
        event.context_json,
        event.data_json,
    )


def wire_from_fields(
    offset: int,
    event_id: str,
    name: str,
    topic_and_source: bytes,
    user_id: str | None,
    occurred_at: bytes,
    context_json: str,
    data_json: str,
) -> bytes:
    """The bytes ``pb.PullEventsResponse(events=[event_message(event)]).SerializeToString()`` gives
    (tests/test_wire.py checks they are equal), written directly: building the message object costs
    several times as much (docs/benchmarks.md), and every published event is encoded once. Fields in number order, empty strings
    left out, as protobuf does; ``topic_and_source`` and ``occurred_at`` are whole encoded fields,
    shared by the events stored together (``_text_field``, ``occurred_at_field``)."""
    body = b"".join(
        (
            _EVENT_ID_KEY,
            event_id.encode(),
            _text_field(_NAME_KEY, name),
            topic_and_source,
            _text_field(_USER_ID_KEY, user_id),
            occurred_at,
            _text_field(_CONTEXT_KEY, context_json),
            _text_field(_DATA_KEY, data_json),
            _OFFSET_KEY,
            _VarintBytes(offset),
        )
    )
    return _EVENTS_KEY + varint(len(body)) + body


def topic_and_source_fields(topic: str, source: str) -> bytes:
    return _text_field(_TOPIC_KEY, topic) + _text_field(_SOURCE_KEY, source)


def occurred_at_field(moment: datetime) -> bytes:
    timestamp = timestamp_of(moment).SerializeToString()
    return _OCCURRED_AT_KEY + varint(len(timestamp)) + timestamp


def _text_field(key: bytes, text: str | None) -> bytes:
    if not text:  # proto3 leaves empty strings out (and None is "not given")
        return b""
    encoded = text.encode()
    return key + varint(len(encoded)) + encoded


def varint(value: int) -> bytes:
    """``value`` as a protobuf varint (the short ones looked up)."""
    return _SHORT_VARINTS[value] if value < len(_SHORT_VARINTS) else _VarintBytes(value)


class WireEncoding:
    """The ``events.encoding.StoredEncoding`` of gRPC: each event as an element of a response's ``events``."""

    def row_encoder(self) -> RowEncoder:
        # The events stored together mostly share one occurrence time and one topic and source:
        # their encoded fields are computed once per transaction.
        occurred_at_fields: dict[datetime, bytes] = {}
        topic_and_source: dict[tuple[str, str], bytes] = {}

        def encode_row(
            offset: int,
            event_id: str,
            name: str,
            topic: str,
            source: str,
            user_id: str | None,
            occurred_at: datetime,
            context_json: str,
            data_json: str,
        ) -> bytes:
            occurred_at_bytes = occurred_at_fields.get(occurred_at)
            if occurred_at_bytes is None:
                occurred_at_bytes = occurred_at_fields[occurred_at] = occurred_at_field(occurred_at)
            topic_and_source_bytes = topic_and_source.get((topic, source))
            if topic_and_source_bytes is None:
                topic_and_source_bytes = topic_and_source[topic, source] = topic_and_source_fields(topic, source)
            return wire_from_fields(
                offset, event_id, name, topic_and_source_bytes, user_id, occurred_at_bytes, context_json, data_json
            )

        return encode_row

    def encode(self, event: StoredEvent) -> bytes:
        return encode_wire(event)


def wire_of(event: StoredEvent) -> bytes:
    return event.wire if event.wire is not None else encode_wire(event)


# Live events serialized once per process, not once per stream: 200 streams of a topic send the
# same bytes. Memoized like events.canonical's WebSocket JSON (keyed by the whole event).
@functools.lru_cache(maxsize=10_000)
def event_bytes(event: StoredEvent) -> bytes:
    """``event_message(event).SerializeToString()``, the message a StreamEvents stream sends: the
    wire form without its ``events`` key and length. Memoized for recently seen events."""
    wire = wire_of(event)
    return wire[1 + _varint_size(wire, 1) :]


def _varint_size(data: bytes, start: int) -> int:
    """How many bytes the varint at ``data[start]`` takes (the last has its high bit clear)."""
    end = start
    while data[end] & 0x80:
        end += 1
    return end - start + 1


def events_response(events: list[StoredEvent]) -> bytes:
    """A serialized ``PublishEventsResponse`` (or the events part of a ``PullEventsResponse``)."""
    return b"".join([wire_of(event) for event in events])


def pull_response(events_wire: bytes, next_offset: int) -> bytes:
    """A serialized ``PullEventsResponse`` from its events' joined wire forms."""
    return events_wire + _NEXT_OFFSET_TAG + _VarintBytes(next_offset)
