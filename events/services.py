"""The core services every transport calls: publish and pull.

Offsets are per topic name, start at 1, are gapless and are assigned in commit order. That comes
from one rule: a publish holds the topic row's lock (``SELECT ... FOR UPDATE`` on ``topics_topic``)
from the moment it reads the counter until it commits. The next publisher cannot read the counter
before the previous one's events are committed, so a reader that has seen offset N and asks for
offsets > N never misses one. (A BIGSERIAL cannot promise this: ids are taken at insert time but
become visible at commit time, in any order.)
"""

import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.utils import ProgrammingError

from eventrelay.auth import Principal, require_read, require_write
from eventrelay.errors import AlreadyExists, EventRelayError, InvalidInput, NotFound
from events.canonical import StoredEvent
from events.signals import events_committed
from events.tables import SOURCES
from events.validation import NewEvent, validate_batch
from topics.models import Topic, events_table_name
from topics.refs import TopicRef

_COLUMNS = '"offset", event_id, name, topic_id, source, user_id, event_occurred_at, context::text, data::text'


@dataclass(frozen=True, slots=True)
class PullResult:
    events: list[StoredEvent]
    next_offset: int


def publish(principal: Principal, topic_ref: TopicRef | str, raw_events: Any, source: str) -> list[StoredEvent]:
    """Validate, authorize and store a batch; return the stored events in request order.

    The whole batch is validated before anything is written: one bad event rejects it with an error
    naming the event's index and field. Events whose ``eventId`` is already stored in the topic are
    not stored again; the stored event (with its original offset) is returned in their place.
    """
    ref = _parse_ref(topic_ref)
    require_write(principal, ref)
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}")
    new_events = validate_batch(raw_events)
    return store_events(ref, new_events, source)


def store_events(ref: TopicRef, new_events: list[NewEvent], source: str) -> list[StoredEvent]:
    """Store already-validated events in one transaction under the topic row lock.

    Precondition: ``new_events`` passed :func:`events.validation.validate_batch` and the caller is
    authorized for ``ref``. Announces the stored events (``events_committed``) after commit only.
    """
    [result] = store_batches(ref.name, [(ref, new_events, source)])
    if isinstance(result, EventRelayError):
        raise result
    return result


Batch = tuple[TopicRef, list[NewEvent], str]


def store_batches(topic_name: str, batches: list[Batch]) -> list[list[StoredEvent] | EventRelayError]:
    """Store several validated batches of one topic in ONE transaction (group commit).

    Each batch gets its own result: its stored events in request order, or the error that refused
    it alone (an ``eventId`` already used under another topic id). Offsets are assigned in batch
    order under the topic row lock, exactly as if the batches had been published one by one.
    Raises ``NotFound`` (for every batch) when the topic does not exist.
    """
    table = connection.ops.quote_name(events_table_name(topic_name))
    topic_table = connection.ops.quote_name(Topic._meta.db_table)
    results: list[list[StoredEvent] | EventRelayError] = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT last_offset FROM {topic_table} WHERE name = %s FOR UPDATE", [topic_name])
        row = cursor.fetchone()
        if row is None:
            raise NotFound(f"topic '{topic_name}' does not exist", field="topic")
        offset = row[0]

        all_ids = [event.event_id for _, events, _ in batches for event in events]
        known = _existing_events(cursor, table, topic_name, all_ids)
        inserted: list[StoredEvent] = []
        for ref, events, source in batches:
            topic_id = ref.id or ""
            conflict = next((e for e in events if e.event_id in known and known[e.event_id].topic_id != topic_id), None)
            if conflict is not None:
                # Returning it would show an event of another topic id to a caller who may not see it.
                results.append(
                    AlreadyExists(
                        f"eventId {conflict.event_id} is already stored in topic '{topic_name}' under another topic id",
                        field="eventId",
                    )
                )
                continue
            for event in events:
                if event.event_id not in known:
                    offset += 1
                    known[event.event_id] = StoredEvent(
                        offset=offset,
                        event_id=event.event_id,
                        name=event.name,
                        topic_name=topic_name,
                        topic_id=topic_id,
                        source=source,
                        user_id=event.user_id,
                        event_occurred_at=event.event_occurred_at,
                        context_json=event.context_json,
                        data_json=event.data_json,
                    )
                    inserted.append(known[event.event_id])
            results.append([known[event.event_id] for event in events])

        if inserted:
            _insert(cursor, table, inserted)
            cursor.execute(f"UPDATE {topic_table} SET last_offset = %s WHERE name = %s", [offset, topic_name])
            transaction.on_commit(
                lambda: events_committed.send(sender=StoredEvent, topic_name=topic_name, events=inserted)
            )
    return results


def _existing_events(
    cursor: Any, table: str, topic_name: str, event_ids: list[uuid.UUID]
) -> dict[uuid.UUID, StoredEvent]:
    cursor.execute(f"SELECT {_COLUMNS} FROM {table} WHERE event_id = ANY(%s)", [event_ids])
    return {event.event_id: event for event in (_row_to_event(topic_name, row) for row in cursor.fetchall())}


def _insert(cursor: Any, table: str, events: list[StoredEvent]) -> None:
    # One statement for the whole batch: arrays of each column, unnested into rows.
    cursor.execute(
        f'INSERT INTO {table} ("offset", event_id, name, topic_id, source, user_id, event_occurred_at, context, data) '
        "SELECT * FROM unnest(%s::bigint[], %s::uuid[], %s::varchar[], %s::varchar[], %s::varchar[], "
        "%s::varchar[], %s::timestamptz[], %s::json[], %s::json[])",
        [
            [event.offset for event in events],
            [event.event_id for event in events],
            [event.name for event in events],
            [event.topic_id for event in events],
            [event.source for event in events],
            [event.user_id for event in events],
            [event.event_occurred_at for event in events],
            [event.context_json for event in events],
            [event.data_json for event in events],
        ],
    )


def pull(principal: Principal, topic_ref: TopicRef | str, offset: int, batch_size: int | None = None) -> PullResult:
    """Events with offset >= ``offset``, ascending, at most ``batch_size`` (clamped), that the
    principal may see. ``next_offset`` is the last returned offset + 1, or ``offset`` when none."""
    ref = _parse_ref(topic_ref)
    require_read(principal, ref)
    if not isinstance(offset, int) or offset < 0:
        raise InvalidInput("offset must be a whole number >= 0", field="offset")
    limit = clamp_batch_size(batch_size)
    events = read_events(ref, after=max(offset, 1) - 1, limit=limit)
    next_offset = events[-1].offset + 1 if events else offset
    return PullResult(events=events, next_offset=next_offset)


def clamp_batch_size(batch_size: int | None) -> int:
    if batch_size is None or batch_size == 0:
        return settings.ER_PULL_DEFAULT_BATCH
    if not isinstance(batch_size, int) or batch_size < 0:
        raise InvalidInput("batch size must be a positive whole number", field="batchSize")
    return min(batch_size, settings.ER_PULL_MAX_BATCH)


def read_events(ref: TopicRef, *, after: int, limit: int) -> list[StoredEvent]:
    """Stored events of ``ref`` with offset > ``after``, ascending, at most ``limit``.

    ``users`` reads every id of the topic; ``users:123`` only that id. No authorization: callers
    (pull, live catch-up) have already checked it.
    """
    return _read(ref.name, ref.id, after=after, limit=limit)


def read_stream_events(topic_name: str, topic_id: str, *, after: int, limit: int) -> list[StoredEvent]:
    """Like :func:`read_events` for exactly one topic id, where ``""`` means the events published
    to the bare topic name (webhook delivery streams are per full topic)."""
    return _read(topic_name, topic_id, after=after, limit=limit)


def _read(topic_name: str, topic_id: str | None, *, after: int, limit: int) -> list[StoredEvent]:
    if not Topic.objects.named(topic_name).exists():
        raise NotFound(f"topic '{topic_name}' does not exist", field="topic")
    sql, params = read_events_query(topic_name, topic_id, after=after, limit=limit)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    except ProgrammingError:
        # The topic was dropped between the check and the read.
        raise NotFound(f"topic '{topic_name}' does not exist", field="topic") from None
    return [_row_to_event(topic_name, row) for row in rows]


def read_events_query(topic_name: str, topic_id: str | None, *, after: int, limit: int) -> tuple[str, list[Any]]:
    """The SQL of the reads above: a primary-key range scan for a whole topic (``topic_id`` None),
    the ``(topic_id, offset)`` index for one topic id. Tests EXPLAIN exactly this."""
    table = connection.ops.quote_name(events_table_name(topic_name))
    if topic_id is None:
        return f'SELECT {_COLUMNS} FROM {table} WHERE "offset" > %s ORDER BY "offset" LIMIT %s', [after, limit]
    return (
        f'SELECT {_COLUMNS} FROM {table} WHERE topic_id = %s AND "offset" > %s ORDER BY "offset" LIMIT %s',
        [topic_id, after, limit],
    )


def _row_to_event(topic_name: str, row: tuple[Any, ...]) -> StoredEvent:
    offset, event_id, name, topic_id, source, user_id, occurred_at, context_json, data_json = row
    return StoredEvent(
        offset=offset,
        event_id=event_id,
        name=name,
        topic_name=topic_name,
        topic_id=topic_id,
        source=source,
        user_id=user_id,
        event_occurred_at=occurred_at,
        context_json=context_json,
        data_json=data_json,
    )


def _parse_ref(topic_ref: TopicRef | str) -> TopicRef:
    return topic_ref if isinstance(topic_ref, TopicRef) else TopicRef.parse(topic_ref)
