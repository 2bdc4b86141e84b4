"""The core services every transport calls: publish and pull.

Offsets are per topic name, start at 1, are gapless and are assigned in commit order. That comes
from one rule: a publish holds the topic row's lock (on ``topics_topic``, taken by the ``UPDATE`` or
``SELECT ... FOR UPDATE`` that reads the counter) from the moment it reads the counter until it
commits. The next publisher cannot read the counter before the previous one's events are
committed, so a reader that has seen offset N and asks for offsets > N never misses one. (A
BIGSERIAL cannot promise this: ids are taken at insert time but become visible at commit time, in
any order.)
"""

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.db.utils import ProgrammingError

from eventrelay.auth import Principal, require_read, require_write
from eventrelay.errors import AlreadyExists, EventRelayError, InvalidInput, NotFound, TooLarge
from eventrelay.refs import TopicRef
from events.canonical import StoredEvent
from events.signals import events_committed
from events.validation import EventsToValidate, NewEvent
from events.wire import events_response, occurred_at_field, pull_response, topic_and_source_fields, wire_from_fields
from topics.models import Topic
from topics.tables import SOURCES, events_table_name

logger = logging.getLogger(__name__)

_COLUMNS = '"offset", event_id, name, topic_id, source, user_id, event_occurred_at, context::text, data::text'


@dataclass(frozen=True, slots=True)
class PullResult:
    events: list[StoredEvent]
    next_offset: int


def publish(principal: Principal, topic_ref: TopicRef | str, raw_events: Any, source: str) -> list[StoredEvent]:
    """Validate, authorize and store a batch; return the stored events in request order.

    One bad event rejects the whole batch with an error naming the event's index and field, and
    nothing of it is stored. Events whose ``eventId`` is already stored in the topic are not stored
    again; the stored event (with its original offset) is returned in their place.
    """
    ref = _parse_ref(topic_ref)
    require_write(principal, ref)
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}")
    [result] = store_batches(ref.name, [(ref, EventsToValidate(raw_events), source)])
    if isinstance(result, EventRelayError):
        raise result
    return result


# A batch's events: validated already, or validated as they are stored (``EventsToValidate``).
Batch = tuple[TopicRef, EventsToValidate | list[NewEvent], str]


BatchResult = list[StoredEvent] | EventRelayError


def store_batches(
    topic_name: str,
    batches: list[Batch],
    on_committed: Callable[[list[BatchResult], list[StoredEvent]], None] | None = None,
    *,
    live_announced: bool = False,
) -> list[BatchResult]:
    """Store several batches of one topic in ONE transaction (group commit).

    Each batch gets its own result: its stored events in request order, or the error that refused
    it alone (an invalid event, an ``eventId`` already used under another topic id); nothing of a
    refused batch is stored. Offsets are assigned in batch order under the topic row lock, exactly
    as if the batches had been published one by one. Raises ``NotFound`` (for every batch) when the
    topic does not exist. The new events are announced (``events_committed``) once the
    transaction, or the caller's outer one, commits; ``on_committed(results, new_events)`` is
    called then too, just before the announcement, so a caller whose announcement fails still knows
    what it stored. ``live_announced``: the caller announces the new events to the live hub itself.

    Almost every publish is valid and carries only new eventIds, so the first attempt writes while
    it validates and without looking the ids up: the unique index on ``event_id`` checks them during
    the COPY anyway. An invalid event rolls the transaction back and it is redone without its
    batch; an eventId already stored (a producer's retry, an id repeated in the batch) has it redone
    with the lookup, which returns the stored events in their place.
    """
    results: list[BatchResult | None] = [None] * len(batches)
    waiting = list(range(len(batches)))  # the batches not refused so far
    stored: list[BatchResult] = []
    inserted: list[StoredEvent] = []
    look_up_ids = False
    while waiting:
        try:
            stored, inserted = _store_batches(topic_name, [batches[i] for i in waiting], look_up_ids=look_up_ids)
            break
        except _BatchRefused as refused:
            results[waiting.pop(refused.position)] = refused.error
        except psycopg.errors.UniqueViolation as error:
            if look_up_ids or not (error.diag.constraint_name or "").endswith("_event_id_key"):
                raise
            look_up_ids = True
    for index, result in zip(waiting, stored, strict=True):
        results[index] = result
    # (on_commit runs these at once, in this order, when no outer transaction is open.)
    if on_committed is not None:
        transaction.on_commit(lambda: on_committed(results, inserted))  # type: ignore[arg-type]  # all set now
    if inserted:
        transaction.on_commit(lambda: announce(topic_name, inserted, live_announced=live_announced))
    return results  # type: ignore[return-value]  # every batch has its result now


class _BatchRefused(Exception):
    """One batch of a group failed validation (``error``); the transaction is rolled back."""

    def __init__(self, position: int, error: EventRelayError) -> None:
        super().__init__(error.message)
        self.position = position
        self.error = error


def _validated(position: int, events: EventsToValidate | list[NewEvent], topic_name: str) -> Iterator[NewEvent]:
    """The batch's events, validating as they come; a problem refuses this batch (``_BatchRefused``).

    So does anything else a validator raises: that is our bug, not the producer's, and it is logged
    with its traceback, but it must not fail the other batches of the group it was committed with."""
    try:
        yield from events
    except (InvalidInput, TooLarge) as error:
        raise _BatchRefused(position, error) from None
    except Exception:
        logger.exception("validating a batch for topic '%s' failed unexpectedly; refused that batch only", topic_name)
        raise _BatchRefused(
            position,
            EventRelayError(
                "internal error while validating this batch; nothing of it was stored (see the server log)"
            ),
        ) from None


def announce(topic_name: str, events: list[StoredEvent], *, live_announced: bool = False) -> None:
    """Tell the live hub and webhook delivery about committed events (ascending offsets)."""
    events_committed.send(sender=StoredEvent, topic_name=topic_name, events=events, live_announced=live_announced)


def _store_batches(
    topic_name: str, batches: list[Batch], *, look_up_ids: bool
) -> tuple[list[BatchResult], list[StoredEvent]]:
    table = connection.ops.quote_name(events_table_name(topic_name))
    topic_table = connection.ops.quote_name(Topic._meta.db_table)
    results: list[BatchResult] = []
    inserted: list[StoredEvent] = []
    # The first attempt stores every event it is given or nothing (a refused batch or a repeated
    # eventId rolls it back), so it can take the lock, read the counter and advance it past all of
    # them in one statement. After a lookup some events are not stored again: the counter is then
    # read under the lock first and advanced once the count is known.
    every_event = None if look_up_ids else sum(len(events) for _, events, _ in batches)
    with transaction.atomic(), connection.cursor() as cursor:
        if every_event is None:
            cursor.execute(f"SELECT last_offset FROM {topic_table} WHERE name = %s FOR UPDATE", [topic_name])
        else:
            cursor.execute(
                f"UPDATE {topic_table} SET last_offset = last_offset + %s WHERE name = %s RETURNING last_offset - %s",
                [every_event, topic_name, every_event],
            )
        row = cursor.fetchone()
        if row is None:
            raise NotFound(f"topic '{topic_name}' does not exist", field="topic")
        first_offset = offset = row[0]

        # Django's cursors bind parameters client-side (quoting every array element in Python); the
        # bulk statements below use a psycopg cursor on the same connection and transaction instead,
        # which sends parameters and rows in binary.
        raw_cursor = psycopg.Cursor(connection.connection)
        known: dict[uuid.UUID, StoredEvent] = {}
        if look_up_ids:
            all_ids = [
                event.event_id
                for position, (_, events, _) in enumerate(batches)
                for event in _validated(position, events, topic_name)
            ]
            known = _existing_events(raw_cursor, table, topic_name, all_ids)
        with _copy_rows(raw_cursor, table) as copy:
            rows = _RowWriter(copy, topic_name)
            for position, (ref, events, source) in enumerate(batches):
                topic_id = ref.id or ""
                # (Only after a lookup: the first attempt must not walk the events before writing them.)
                conflict = known and next(
                    (e for e in events if e.event_id in known and known[e.event_id].topic_id != topic_id), None
                )
                if conflict:
                    # Returning it would show an event of another topic id to a caller who may not see it.
                    results.append(
                        AlreadyExists(
                            f"eventId {conflict.event_id} is already stored in topic '{topic_name}' under another topic id",
                            field="eventId",
                        )
                    )
                    continue
                stored = []
                for event in _validated(position, events, topic_name):
                    if look_up_ids and event.event_id in known:
                        stored.append(known[event.event_id])
                        continue
                    offset += 1
                    stored_event = rows.write(offset, event, ref, source)
                    stored.append(stored_event)
                    inserted.append(stored_event)
                    if look_up_ids:
                        known[event.event_id] = stored_event
                results.append(stored)

        if every_event is None:
            if inserted:
                cursor.execute(f"UPDATE {topic_table} SET last_offset = %s WHERE name = %s", [offset, topic_name])
        elif offset - first_offset != every_event:  # cannot happen: then the counter would be wrong
            raise AssertionError(f"stored {offset - first_offset} events of {every_event} in one attempt")
    return results, inserted


def _existing_events(
    cursor: Any, table: str, topic_name: str, event_ids: list[uuid.UUID]
) -> dict[uuid.UUID, StoredEvent]:
    cursor.execute(f"SELECT {_COLUMNS} FROM {table} WHERE event_id = ANY(%s)", [event_ids])
    return {event.event_id: event for event in (_row_to_event(topic_name, row) for row in cursor.fetchall())}


_INSERT_COLUMNS = '"offset", event_id, name, topic_id, source, user_id, event_occurred_at, context, data, wire'
# Every value but the offset goes as text formatted here (see _RowWriter).
_INSERT_TYPES = ["int8"] + ["text"] * 9


@contextmanager
def _copy_rows(cursor: psycopg.Cursor, table: str) -> Iterator[psycopg.Copy]:
    """A COPY into ``table``: the fastest way into PostgreSQL. Rows written to it go to the server
    every 32 KiB, so PostgreSQL stores the first rows of a batch while the later ones are still
    being validated and encoded here. A conflicting eventId fails the COPY on the unique index,
    like an INSERT would; PostgreSQL checks that context and data are JSON.

    Text format, not binary: PostgreSQL writes COPY rows to the table and its indexes in groups,
    flushed every 1,000 rows or 64 KiB of input *lines*, and binary rows have no lines, so a binary
    COPY of 500 rows is written only at its end, after Python has finished. Measured on this
    machine with 10 µs of Python per row: binary 12.0 ms per 500 rows (4.3 ms of it after the
    last row), text 9.5 ms (0.5 ms after)."""
    with cursor.copy(f"COPY {table} ({_INSERT_COLUMNS}) FROM STDIN") as copy:
        copy.set_types(_INSERT_TYPES)
        yield copy


class _RowWriter:
    """Writes a transaction's new events to its COPY and returns them stored, with their wire form.

    Values are handed to psycopg as text, formatted here: the eventId's text is needed for the wire
    form anyway, the events stored together mostly share one occurrence time (formatted once), and
    bytea goes as its hex form. psycopg's own uuid, timestamptz and bytea dumpers took 1.0 of the
    1.3 ms that formatting 500 rows cost.
    """

    def __init__(self, copy: psycopg.Copy, topic_name: str) -> None:
        self._copy = copy
        self._topic_name = topic_name
        self._occurred_at: dict[datetime, tuple[bytes, str]] = {}  # wire field, COPY text
        self._topic_and_source: dict[tuple[TopicRef, str], bytes] = {}

    def write(self, offset: int, event: NewEvent, ref: TopicRef, source: str) -> StoredEvent:
        occurred_at = self._occurred_at.get(event.event_occurred_at)
        if occurred_at is None:
            moment = event.event_occurred_at
            occurred_at = self._occurred_at[moment] = (occurred_at_field(moment), moment.isoformat())
        topic_and_source = self._topic_and_source.get((ref, source))
        if topic_and_source is None:
            topic_and_source = self._topic_and_source[ref, source] = topic_and_source_fields(str(ref), source)
        topic_id = ref.id or ""
        event_id = event.event_id_text
        wire = wire_from_fields(
            offset,
            event_id,
            event.name,
            topic_and_source,
            event.user_id,
            occurred_at[0],
            event.context_json,
            event.data_json,
        )
        self._copy.write_row(
            (
                offset,
                event_id,
                event.name,
                topic_id,
                source,
                event.user_id,
                occurred_at[1],
                event.context_json,
                event.data_json,
                "\\x" + wire.hex(),
            )
        )
        return StoredEvent(
            offset,
            event.event_id,
            event.name,
            self._topic_name,
            topic_id,
            source,
            event.user_id,
            event.event_occurred_at,
            event.context_json,
            event.data_json,
            wire,  # (positional: a keyword costs a named tuple 40% more)
        )


def pull(principal: Principal, topic_ref: TopicRef | str, offset: int, batch_size: int | None = None) -> PullResult:
    """Events with offset >= ``offset``, ascending, at most ``batch_size`` (clamped), that the
    principal may see. ``next_offset`` is the last returned offset + 1, or ``offset`` when none."""
    ref, after, limit = _pull_page(principal, topic_ref, offset, batch_size)
    events = read_events(ref, after=after, limit=limit)
    next_offset = events[-1].offset + 1 if events else offset
    return PullResult(events=events, next_offset=next_offset)


def _pull_page(
    principal: Principal, topic_ref: TopicRef | str, offset: int, batch_size: int | None
) -> tuple[TopicRef, int, int]:
    """A pull's checks, then its page: the reference, the offset it reads after, and its size."""
    ref = _parse_ref(topic_ref)
    require_read(principal, ref)
    if not isinstance(offset, int) or offset < 0:
        raise InvalidInput("offset must be a whole number >= 0", field="offset")
    return ref, max(offset, 1) - 1, clamp_batch_size(batch_size)


def pull_wire(principal: Principal, topic_ref: TopicRef | str, offset: int, batch_size: int | None = None) -> bytes:
    """:func:`pull` for gRPC: the serialized ``PullEventsResponse``, joined by PostgreSQL from the
    events' stored wire forms (``events.wire``) with no per-event work in Python."""
    ref, after, limit = _pull_page(principal, topic_ref, offset, batch_size)
    sql, params = read_wire_query(ref.name, ref.id, after=after, limit=limit)
    try:
        # In a caller's transaction (tests), a savepoint keeps a missing table from aborting it.
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            connection.ensure_connection()
            # A raw psycopg cursor, but Django's error handling: a lost connection marks it broken, so
            # the next call's close_old_connections() drops it instead of reusing it.
            with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
                cursor.execute(sql, params, binary=True)
                joined, last, unencoded = cursor.fetchone()
    except ProgrammingError as error:
        if not isinstance(error.__cause__, psycopg.errors.UndefinedTable):
            raise
        raise NotFound(f"topic '{ref.name}' does not exist", field="topic") from None
    if last is None:
        return pull_response(b"", offset)
    if unencoded:  # rows stored before the wire column existed
        joined = events_response(read_events(ref, after=after, limit=limit))
    return pull_response(joined, last + 1)


def read_wire_query(topic_name: str, topic_id: str | None, *, after: int, limit: int) -> tuple[str, list[Any]]:
    """The SQL of :func:`pull_wire`: the same page as :func:`read_events_query`, its events' wire
    forms joined in offset order, with its last offset and how many rows have no wire form."""
    page, params = read_events_query(topic_name, topic_id, after=after, limit=limit, columns='"offset", wire')
    return (
        f'SELECT string_agg(wire, \'\'::bytea ORDER BY "offset"), max("offset"), count(*) - count(wire) '
        f"FROM ({page}) page",
        params,
    )


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


def read_events_query(
    topic_name: str, topic_id: str | None, *, after: int, limit: int, columns: str = _COLUMNS
) -> tuple[str, list[Any]]:
    """The SQL of the reads above: a primary-key range scan for a whole topic (``topic_id`` None),
    the ``(topic_id, offset)`` index for one topic id. Tests EXPLAIN exactly this."""
    table = connection.ops.quote_name(events_table_name(topic_name))
    if topic_id is None:
        return f'SELECT {columns} FROM {table} WHERE "offset" > %s ORDER BY "offset" LIMIT %s', [after, limit]
    return (
        f'SELECT {columns} FROM {table} WHERE topic_id = %s AND "offset" > %s ORDER BY "offset" LIMIT %s',
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
