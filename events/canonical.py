"""The stored event and its one canonical JSON form (docs/api.md "Events").

``StoredEvent`` is what the services return. ``context`` and ``data`` are kept as the JSON text
PostgreSQL gave back, so gRPC passes them through untouched, and the JSON transports (REST,
WebSocket, webhooks) splice that same text into :func:`canonical_json`: no reader parses a stored
payload to serve it, so every transport serves the producer's exact text (numbers as written), and an
event no parser could read back (stored before ``ER_MAX_JSON_DEPTH`` existed) is served all the same.
"""

import functools
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from json.encoder import encode_basestring  # (the C function, for ensure_ascii=False)
from typing import Any, NamedTuple


class StoredEvent(NamedTuple):
    """A stored event. A named tuple rather than a frozen dataclass: immutable all the same, and
    built much faster (docs/benchmarks.md), which counts once per event published and once per event each
    process takes from a live notification. It is a tuple only to be cheap to build: compare it,
    hash it and read its fields by name, never by position."""

    offset: int
    event_id: uuid.UUID
    name: str
    topic_name: str
    topic_id: str  # "" when the event was published to the bare topic name
    source: str
    user_id: str | None
    event_occurred_at: datetime
    context_json: str
    data_json: str
    # The stored encoding (events.encoding), when it was stored or just computed; None for old rows. Not
    # part of what the event is: equality, hashing and repr leave it out.
    wire: bytes | None = None
    # Live events only (events.live): when the publish that stored it was announced (``time.time()`` of the
    # publishing process), or stored when it was read back rather than notified, for the commit-to-frame latency
    # (``eventrelay_live_delivery_seconds``). None for an event older than its reader's subscription. Not part of
    # what the event is either.
    committed_at: float | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoredEvent) and self[:_IDENTITY] == other[:_IDENTITY]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self[:_IDENTITY])

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields[:_IDENTITY], self, strict=False))
        return f"StoredEvent({fields})"

    @property
    def topic(self) -> str:
        """The full topic reference, ``name`` or ``name:id``."""
        return f"{self.topic_name}:{self.topic_id}" if self.topic_id else self.topic_name


# How many leading fields make an event what it is (all but ``wire`` and ``committed_at``).
_IDENTITY = StoredEvent._fields.index("wire")


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a ``Z``: ``2020-01-01T00:00:00.000Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_canonical(event: StoredEvent) -> dict[str, Any]:
    """The canonical JSON object of docs/api.md as Python values, for callers that inspect an event.
    Parses the payloads: what a transport sends is :func:`canonical_json`, which does not."""
    return {
        "eventId": str(event.event_id),
        "name": event.name,
        "topic": event.topic,
        "source": event.source,
        "userId": event.user_id,
        "eventOccurredAt": format_timestamp(event.event_occurred_at),
        "context": json.loads(event.context_json),
        "data": json.loads(event.data_json),
        "offset": event.offset,
    }


# A live event goes to every subscriber of its topic: its JSON text is built once per process rather
# than once per subscriber. Keyed by the event itself (all its fields): a topic deleted and created
# again reuses offsets, and even an eventId.
@functools.lru_cache(maxsize=10_000)
def canonical_json(event: StoredEvent) -> str:
    """The canonical JSON object of docs/api.md as compact text, field names exactly as specified, with
    ``context`` and ``data`` spliced in as stored (never parsed). Memoized for recently seen events."""
    user_id = "null" if event.user_id is None else encode_basestring(event.user_id)
    return (
        f'{{"eventId":"{event.event_id}","name":{encode_basestring(event.name)},'
        f'"topic":{encode_basestring(event.topic)},"source":{encode_basestring(event.source)},'
        f'"userId":{user_id},"eventOccurredAt":"{format_timestamp(event.event_occurred_at)}",'
        f'"context":{event.context_json},"data":{event.data_json},"offset":{event.offset}}}'
    )


def canonical_json_list(events: Iterable[StoredEvent]) -> str:
    """A JSON array of events' :func:`canonical_json` text."""
    return "[" + ",".join(map(canonical_json, events)) + "]"
