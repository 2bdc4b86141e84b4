"""Storing and reading events in their topic's table: the write path of publish and the reads every API shares.

Offsets are per topic name, start at 1, are gapless and are assigned in commit order. That comes from one
rule: a publish holds the topic row's lock (taken by the statement that reads the counter,
``topics.models.reserve_offsets`` / ``lock_counter``) from the moment it reads the counter until it commits.
The next publisher cannot read the counter before the previous one's events are committed, so a reader that
has seen offset N and asks for offsets > N never misses one. (A BIGSERIAL cannot promise this: ids are taken
at insert time but become visible at commit time, in any order.)

No authorization here: :mod:`events.services` checks it before calling.
"""

import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, nullcontext
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from django.db import connection, transaction
from django.db.utils import ProgrammingError

from eventrelay.errors import AlreadyExists, EventRelayError, InvalidInput, NotFound, TooLarge
from eventrelay.refs import TopicRef
from events import encoding
from events.canonical import StoredEvent
from events.encoding import RowEncoder
from events.validation import EventsToValidate, NewEvent
from topics import tables
from topics.models import Topic, lock_counter, reserve_offsets, set_counter

logger = logging.getLogger(__name__)


class Batch(NamedTuple):
    """One caller's events for one topic reference: validated already, or validated as they are stored."""

    ref: TopicRef
    events: EventsToValidate | list[NewEvent]
    source: str


# A batch's outcome: its stored events in request order, or the error that refused it alone.
BatchResult = list[StoredEvent] | EventRelayError


class Stored(NamedTuple):
    """What :func:`store_batches` did: each batch's result, and the events it newly stored (ascending offsets)."""

    results: list[BatchResult]
    new_events: list[StoredEvent]


def store_batches(topic_name: str, batches: list[Batch]) -> Stored:
    """Store several batches of one topic in ONE transaction (group commit).

    Each batch gets its own result: its stored events in request order, or the error that refused it alone
    (an invalid event, an ``eventId`` already used under another topic id); nothing of a refused batch is
    stored. Offsets are assigned in batch order under the topic row lock, exactly as if the batches had been
    published one by one. Raises ``NotFound`` (for every batch) when the topic does not exist. Announcing the
    new events is the caller's, once the transaction (or its outer one) has committed.

    Almost every publish is valid and carries only new eventIds, so the first attempt writes while it
    validates and without looking the ids up (:func:`_store_all`): the unique constraint on ``event_id``
    checks them during the COPY anyway. An invalid event rolls the transaction back and it is redone without
    its batch; an eventId already stored (a producer's retry, an id repeated in the batch) has it redone with
    the lookup (:func:`_store_new_only`), which returns the stored events in their place.
    """
    results: list[BatchResult | None] = [None] * len(batches)
    waiting = list(range(len(batches)))  # the batches not refused so far
    look_up_ids = False
    while True:
        attempt = _store_new_only if look_up_ids else _store_all
        try:
            stored = attempt(topic_name, [batches[i] for i in waiting])
            break
        except _BatchRefused as refused:
            results[waiting.pop(refused.position)] = refused.error
        except psycopg.errors.UniqueViolation as error:
            if look_up_ids or not tables.event_id_conflict(error, topic_name):
                raise
            look_up_ids = True
    for index, result in zip(waiting, stored.results, strict=True):
        results[index] = result
    return Stored([result for result in results if result is not None], stored.new_events)


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


def _store_all(topic_name: str, batches: list[Batch]) -> Stored:
    """The first attempt: every event is new, so the counter is advanced past all of them in the statement
    that takes the lock, and the events are written as they are validated (an invalid one or a repeated
    eventId rolls it all back)."""
    every_event = sum(len(batch.events) for batch in batches)
    results: list[BatchResult] = []
    new_events: list[StoredEvent] = []
    with transaction.atomic(), connection.cursor() as cursor:
        first_offset = reserve_offsets(cursor, topic_name, every_event)
        if first_offset is None:
            raise NotFound(f"topic '{topic_name}' does not exist", field="topic")
        offset = first_offset
        with _RowWriter(topic_name) as rows:
            for position, batch in enumerate(batches):
                stored = []
                for event in _validated(position, batch.events, topic_name):
                    offset += 1
                    stored.append(rows.write(offset, event, batch.ref, batch.source))
                new_events.extend(stored)
                results.append(stored)
        if offset - first_offset != every_event:  # cannot happen: then the counter would be wrong
            raise AssertionError(f"stored {offset - first_offset} events of {every_event} in one attempt")
    return Stored(results, new_events)


def _store_new_only(topic_name: str, batches: list[Batch]) -> Stored:
    """The attempt after an eventId conflict: the stored events of known eventIds are returned in their
    place, so the counter is read under the lock first and advanced once the number of new events is known."""
    results: list[BatchResult] = []
    new_events: list[StoredEvent] = []
    with transaction.atomic(), connection.cursor() as cursor:
        last_offset = lock_counter(cursor, topic_name)
        if last_offset is None:
            raise NotFound(f"topic '{topic_name}' does not exist", field="topic")
        offset = last_offset
        with _RowWriter(topic_name) as rows:
            all_ids = [
                event.event_id
                for position, batch in enumerate(batches)
                for event in _validated(position, batch.events, topic_name)
            ]
            known = {
                event.event_id: event
                for event in map(row_to_event, [topic_name] * len(all_ids), rows.events_with_ids(all_ids))
            }
            for position, batch in enumerate(batches):
                topic_id = batch.ref.id or ""
                conflict = next(
                    (e for e in batch.events if e.event_id in known and known[e.event_id].topic_id != topic_id), None
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
                for event in _validated(position, batch.events, topic_name):
                    if event.event_id in known:
                        stored.append(known[event.event_id])
                        continue
                    offset += 1
                    stored_event = known[event.event_id] = rows.write(offset, event, batch.ref, batch.source)
                    stored.append(stored_event)
                    new_events.append(stored_event)
                results.append(stored)
        if new_events:
            set_counter(cursor, topic_name, offset)
    return Stored(results, new_events)


class _RowWriter:
    """Writes a transaction's new events to a COPY into the topic's table and returns them stored, with the
    registered stored encoding (``events.encoding``) of each.

    Values are handed to psycopg as text, formatted here: the events stored together mostly share one
    occurrence time (formatted once), and bytea goes as its hex form; psycopg's own uuid, timestamptz and
    bytea dumpers cost more than the formatting (docs/benchmarks.md)."""

    def __init__(self, topic_name: str) -> None:
        self._topic_name = topic_name
        # Django's cursors bind parameters client-side (quoting every array element in Python); this psycopg
        # cursor on the same connection and transaction sends parameters and rows in binary.
        self._cursor = psycopg.Cursor(connection.connection)
        self._copy: psycopg.Copy | None = None
        self._open = ExitStack()  # the COPY, from the first row written on
        self._occurred_at_text: dict[datetime, str] = {}
        self._topic_text: dict[TopicRef, str] = {}
        stored_encoding = encoding.registered()
        self._encode: RowEncoder | None = stored_encoding.row_encoder() if stored_encoding is not None else None

    def __enter__(self) -> "_RowWriter":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._open.__exit__(*exc_info)

    def events_with_ids(self, event_ids: list[uuid.UUID]) -> list[tuple[Any, ...]]:
        return tables.events_with_ids(self._cursor, self._topic_name, event_ids)

    def write(self, offset: int, event: NewEvent, ref: TopicRef, source: str) -> StoredEvent:
        if self._copy is None:  # (opened late: a lookup may run on this cursor first)
            self._copy = self._open.enter_context(tables.copy_rows(self._cursor, self._topic_name))
        moment = event.event_occurred_at
        occurred_at_text = self._occurred_at_text.get(moment)
        if occurred_at_text is None:
            occurred_at_text = self._occurred_at_text[moment] = moment.isoformat()
        topic = self._topic_text.get(ref)
        if topic is None:
            topic = self._topic_text[ref] = str(ref)
        topic_id = ref.id or ""
        event_id = event.event_id_text
        wire = (
            None
            if self._encode is None
            else self._encode(
                offset,
                event_id,
                event.name,
                topic,
                source,
                event.user_id,
                moment,
                event.context_json,
                event.data_json,
            )
        )
        self._copy.write_row(
            (
                offset,
                event_id,
                event.name,
                topic_id,
                source,
                event.user_id,
                occurred_at_text,
                event.context_json,
                event.data_json,
                None if wire is None else "\\x" + wire.hex(),
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
            moment,
            event.context_json,
            event.data_json,
            wire,  # (positional: a keyword costs a named tuple more)
        )


# --- Reads ------------------------------------------------------------------------------------------------


def read_events(ref: TopicRef, *, after: int, limit: int) -> list[StoredEvent]:
    """Stored events of ``ref`` with offset > ``after``, ascending, at most ``limit``.

    ``users`` reads every id of the topic; ``users:123`` only that id. No authorization: callers (pull, live
    catch-up) have already checked it.
    """
    return _read(ref.name, ref.id, after=after, limit=limit)


def read_stream_events(topic_name: str, topic_id: str, *, after: int, limit: int) -> list[StoredEvent]:
    """Like :func:`read_events` for exactly one topic id, where ``""`` means the events published to the bare
    topic name (webhook delivery streams are per full topic)."""
    return _read(topic_name, topic_id, after=after, limit=limit)


def _read(topic_name: str, topic_id: str | None, *, after: int, limit: int) -> list[StoredEvent]:
    if not Topic.objects.named(topic_name).exists():
        raise NotFound(f"topic '{topic_name}' does not exist", field="topic")
    sql, params = tables.page_query(topic_name, topic_id, after=after, limit=limit)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    except ProgrammingError:
        # The topic was dropped between the check and the read.
        raise NotFound(f"topic '{topic_name}' does not exist", field="topic") from None
    return [row_to_event(topic_name, row) for row in rows]


class EncodedPage(NamedTuple):
    """A page of events in the stored encoding, joined in offset order, and its last offset (None: empty)."""

    joined: bytes
    last_offset: int | None


def read_encoded_page(ref: TopicRef, *, after: int, limit: int) -> EncodedPage:
    """The page :func:`read_events` reads, as its events' stored encodings joined by PostgreSQL: no per-event
    work in Python. Rows stored without an encoding are encoded here."""
    sql, params = tables.encoded_page_query(ref.name, ref.id, after=after, limit=limit)
    try:
        # In a caller's transaction (tests), a savepoint keeps a missing table from aborting it.
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            connection.ensure_connection()
            # A raw psycopg cursor, but Django's error handling: a lost connection marks it broken, so the next
            # call's close_old_connections() drops it instead of reusing it.
            with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
                cursor.execute(sql, params, binary=True)
                row = cursor.fetchone()
                assert row is not None  # an aggregate without GROUP BY returns one row
                joined, last, unencoded = row
    except ProgrammingError as error:
        if not isinstance(error.__cause__, psycopg.errors.UndefinedTable):
            raise
        raise NotFound(f"topic '{ref.name}' does not exist", field="topic") from None
    if last is None:
        return EncodedPage(b"", None)
    if unencoded:
        joined = b"".join(encoding.encoded(event) for event in read_events(ref, after=after, limit=limit))
    return EncodedPage(bytes(joined), last)


def row_to_event(topic_name: str, row: Sequence[Any], wire: bytes | None = None) -> StoredEvent:
    """A stored event from a row of ``tables.EVENT_COLUMNS`` (and its stored encoding, when read too)."""
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
        wire=wire,
    )
