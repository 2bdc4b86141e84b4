"""The SQL behind a consumer: handing events out under leases, and what acks, nacks, extends, seeks and redrives
do to them. ``consumers.services`` authorizes and validates; everything here trusts its arguments.

Concurrency, all in PostgreSQL:

- A fetch locks its consumer's row ``FOR NO KEY UPDATE`` for its whole transaction, so the fetches of one
  consumer run one at a time: two never hand out the same event, and ``next_offset`` only moves forward.
  Fetches of different consumers never wait for each other.
- Acks, nacks and extends take ``FOR KEY SHARE``, which does not wait for a fetch, and touch only their own
  rows; a seek takes ``FOR UPDATE`` and waits for all of them, so an ackId of the epoch before a seek can never
  act on an event handed out after it.
- New events come from the topic table after ``next_offset`` (primary key, or the ``(topic_id, offset)`` index
  for an id-scoped consumer); offsets are gapless and committed in order, so an event not yet visible has no
  visible successor and nothing is skipped. Redeliveries come from ``consumers_pending_due``.
- Fresh events handed out by the common fetch (unordered, nothing due) are leased as one ``LeasedBatch`` row,
  and an ack of all of them deletes it. Everything else that acts on a batch's events first splits it into
  the ``PendingEvent`` rows it stands for (:func:`_split_batches`), under the same locks as the act itself, so
  the rest of this module deals in pending rows; reads that only count (:func:`position`) read both.

Timestamps are PostgreSQL's ``now()`` throughout: leases do not depend on the clocks of the processes.
"""

import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
from django.conf import settings
from django.db import connection

from consumers.models import Consumer, DeadLetter, LeasedBatch, PendingEvent
from eventrelay.db import prepared_cursor
from events.canonical import StoredEvent
from events.encoding import encoded
from events.storage import row_to_event
from topics.models import Topic
from topics.tables import EVENT_COLUMNS, quoted_table

# EVENT_COLUMNS as a subquery's output names them
_EVENT_COLUMN_NAMES = EVENT_COLUMNS.replace("::text", "")

PENDING = PendingEvent._meta.db_table
BATCHES = LeasedBatch._meta.db_table
DEAD = DeadLetter._meta.db_table
CONSUMERS = Consumer._meta.db_table
TOPICS = Topic._meta.db_table

LEASED, WAITING, QUEUED = PendingEvent.LEASED, PendingEvent.WAITING, PendingEvent.QUEUED
EXPIRED_REASON = "not acknowledged within ackWaitSeconds"


@dataclass(frozen=True, slots=True)
class Handout:
    """One event handed to a fetch: which delivery of it this is, and the event."""

    delivery_count: int
    event: StoredEvent


@dataclass(frozen=True, slots=True)
class EncodedHandouts:
    """The events handed to one fetch as their stored encodings only (``events.encoding``), one list per field:
    for a transport that sends those bytes as they are, and so never needs the events' fields. One object per
    fetch rather than one per event: this is the hot path of a worker's loop."""

    delivery_counts: list[int]
    offsets: list[int]
    wires: list[bytes]

    def __len__(self) -> int:
        return len(self.offsets)


NO_ENCODED_HANDOUTS = EncodedHandouts([], [], [])

H = TypeVar("H", list[Handout], EncodedHandouts)


@dataclass(frozen=True, slots=True)
class FetchOutcome(Generic[H]):
    handouts: H
    epoch: int
    # Seconds until the earliest lease or nack delay of this consumer ends (None: nothing is waiting on time).
    next_due_in: float | None
    # Whether anything is pending: an ack elsewhere may then free room (maxInFlight) or an ordered topic id.
    has_pending: bool


@dataclass(frozen=True, slots=True)
class Position:
    next_offset: int
    lowest_pending: int | None
    pending: int  # handed out and not acknowledged (leased or waiting for redelivery)
    leased: int
    redelivering: int  # pending events delivered more than once
    queued: int  # ordered: waiting behind an earlier event of their topic id, never handed out yet
    dead_letters: int
    head: int  # the topic's last offset

    @property
    def ack_floor(self) -> int:
        return (self.lowest_pending if self.lowest_pending is not None else self.next_offset) - 1


# --- Fetch -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AckIds:
    """The ackIds an ack acts on, as (epoch, offset) columns."""

    epochs: list[int]
    offsets: list[int]


@dataclass(frozen=True, slots=True)
class AckVerdict:
    epoch: int
    next_offset: int
    valid: bool  # every ackId was handed out (when not, nothing was applied)


def lease_fresh(
    consumer: Consumer, max_events: int, *, encoded_only: bool, acks: AckIds | None = None
) -> tuple[FetchOutcome[Any] | None, AckVerdict | None]:
    """The common fetch of an unordered consumer: when nothing of it is due for redelivery, lease up to
    ``max_events`` new events as one batch; with ``acks``, acknowledge those first, in the same transaction
    (a fetch that acks the previous batch). Returns the outcome, None when this is not that case (something
    is due, nothing new is there, the acks were refused, or the consumer is gone: :func:`fetch` then does the
    rest), and the acks' verdict (None without acks, or when the consumer is gone). Acks refused lease nothing.

    One transaction, sent in one round trip (a pipeline): the consumer's row lock, the acks, the statement
    that leases, the commit. The lock is held for what PostgreSQL does, never for a round trip to this process,
    and each statement starts after the lock is granted, so its snapshot has every earlier fetch's leases.
    The statements read the position themselves (``next_offset``, the topic's head), which only a fetch under
    the lock moves."""
    topic_id, names = consumer.ref_id or None, consumer.event_names
    verdict: AckVerdict | None = None
    for whole_range in (False, True):
        with (
            prepared_cursor() as tx,
            prepared_cursor() as lock,
            prepared_cursor() as lease,
            prepared_cursor() as acking,
        ):
            try:
                # BEGIN and COMMIT are sent as statements: psycopg's own transaction block waits for the
                # statements' results before it sends the COMMIT, a round trip with the lock held.
                with tx.connection.pipeline():
                    tx.execute("BEGIN")
                    lock.execute(_LOCK_FOR_FETCH, [consumer.pk], prepare=True)
                    if acks is not None:
                        _send_ack_statement(acking, consumer.pk, consumer.topic.name, acks.epochs, acks.offsets)
                    _lease_new_unless_due(
                        lease,
                        consumer,
                        topic_id,
                        names,
                        max_events,
                        acks or AckIds([], []),
                        encoded_only=encoded_only,
                        whole_range=whole_range,
                    )
                    tx.execute("COMMIT")
            except BaseException:
                # A statement failed: PostgreSQL skipped the rest, the COMMIT too, and the transaction is open.
                if tx.connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    tx.connection.rollback()
                raise
            locked = lock.fetchone()
            if acks is not None:
                verdict = _settle_ack(acking, consumer.pk, consumer.topic.name, acks)
                acks = None  # applied: a second try below leases only
            rows = lease.fetchall()
            if locked is None or not rows or rows[0][0]:
                return None, verdict  # gone, something due, or the acks were refused
            epoch, next_offset, head = locked
            if rows[0][1] is not None:
                if encoded_only:
                    return FetchOutcome(_encoded_handouts(lease, consumer.topic.name, rows), epoch, None, True), verdict
                handouts = [Handout(1, _event_of(consumer.topic.name, row[1:])) for row in rows]
                return FetchOutcome(handouts, epoch, None, True), verdict
        # A window of a gapless topic with nothing in it means offsets are missing from it after all
        # (retention): then the rest of the topic is searched rather than handing out nothing.
        if whole_range or names or topic_id or not next_offset + max_events <= head:
            return None, verdict
    return None, verdict


_LOCK_FOR_FETCH = (
    f"SELECT c.epoch, c.next_offset, t.last_offset FROM {CONSUMERS} c JOIN {TOPICS} t ON t.id = c.topic_id "
    "WHERE c.id = %s FOR NO KEY UPDATE OF c"
)


def fetch(consumer_pk: int, max_events: int) -> FetchOutcome[list[Handout]] | None:
    """Lease up to ``max_events`` events: due redeliveries first (lowest offset first), then new events in offset
    order. None when the consumer no longer exists. Runs in its own transaction (the caller's ``atomic``)."""
    return _fetch(consumer_pk, max_events, encoded_only=False)


def fetch_encoded(consumer_pk: int, max_events: int) -> FetchOutcome[EncodedHandouts] | None:
    """:func:`fetch`, handing out each event's stored encoding rather than the event."""
    return _fetch(consumer_pk, max_events, encoded_only=True)


def _fetch(consumer_pk: int, max_events: int, *, encoded_only: bool) -> FetchOutcome[Any] | None:
    # Everything here runs under the consumer's row lock, so every other fetch of the consumer waits for it.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.epoch, c.next_offset, c.ack_wait_seconds, c.max_deliveries, c.max_in_flight, c.ordered, "
            f"c.event_names::text, c.ref_id, t.name, t.last_offset FROM {CONSUMERS} c JOIN {TOPICS} t ON t.id = c.topic_id "
            "WHERE c.id = %s FOR NO KEY UPDATE OF c",
            [consumer_pk],
        )
        row = cursor.fetchone()
        if row is None:
            return None
        epoch, next_offset, ack_wait, max_deliveries, max_in_flight, ordered, names_json, ref_id, topic_name, head = row
        names = json.loads(names_json)
        _split_batches(cursor, consumer_pk, topic_name, "AND available_at <= now()")
        _bury_expired(cursor, consumer_pk, max_deliveries)
        cursor.execute(
            f"SELECT p.in_flight + b.n, p.n + b.n FROM (SELECT count(*) FILTER (WHERE state <> %s) AS in_flight, "
            f"count(*) AS n FROM {PENDING} WHERE consumer_id = %s) p, "
            f"(SELECT coalesce(sum(cardinality(offsets)), 0) AS n FROM {BATCHES} WHERE consumer_id = %s) b",
            [QUEUED, consumer_pk, consumer_pk],
        )
        in_flight, rows = cursor.fetchone()
        redelivered = _lease_due(cursor, consumer_pk, ack_wait, max_events, ordered=ordered)
        room = min(max_events - len(redelivered), max_in_flight - in_flight)
        fresh_rows: list[tuple[int, tuple[Any, ...]]] = []
        if room > 0 and next_offset <= head and not (ordered and rows >= settings.ER_CONSUMER_MAX_QUEUED):
            fresh_rows, next_offset = _lease_new(
                cursor,
                consumer_pk,
                topic_name,
                ref_id or None,
                names,
                next_offset=next_offset,
                head=head,
                limit=room,
                ack_wait=ack_wait,
                ordered=ordered,
            )
        events = _events_at(cursor, consumer_pk, topic_name, [offset for offset, _ in redelivered])
        handouts = [Handout(count, events[offset]) for offset, count in redelivered if offset in events]
        handouts += [Handout(1, _event_of(topic_name, event_row)) for _, event_row in fresh_rows]
        if handouts:
            if encoded_only:
                return FetchOutcome(
                    EncodedHandouts(
                        [h.delivery_count for h in handouts],
                        [h.event.offset for h in handouts],
                        [encoded(h.event) for h in handouts],
                    ),
                    epoch,
                    None,
                    True,
                )
            return FetchOutcome(handouts, epoch, None, True)
        return _nothing_to_hand_out(cursor, consumer_pk, epoch, NO_ENCODED_HANDOUTS if encoded_only else [])


def _nothing_to_hand_out(cursor: Any, consumer_pk: int, epoch: int, nothing: H) -> FetchOutcome[H]:
    """What a long-polling caller needs to know to wait well."""
    cursor.execute(
        "SELECT extract(epoch FROM least("
        f"(SELECT min(available_at) FROM {PENDING} WHERE consumer_id = %s AND available_at > now()), "
        f"(SELECT min(available_at) FROM {BATCHES} WHERE consumer_id = %s AND available_at > now())) - now()), "
        f"EXISTS (SELECT 1 FROM {PENDING} WHERE consumer_id = %s) OR EXISTS (SELECT 1 FROM {BATCHES} WHERE consumer_id = %s)",
        [consumer_pk] * 4,
    )
    due_in, has_pending = cursor.fetchone()
    return FetchOutcome(nothing, epoch, None if due_in is None else float(due_in), has_pending)


def _lease_new_unless_due(cursor: Any, *args: Any, **kwargs: Any) -> None:
    """Send :func:`_lease_statement`."""
    cursor.execute(*_lease_statement(*args, **kwargs), prepare=True)


def _lease_statement(
    consumer: Consumer,
    topic_id: str | None,
    names: list[str],
    max_events: int,
    acks: AckIds,
    *,
    encoded_only: bool,
    whole_range: bool,
) -> tuple[str, list[Any]]:
    """The statement that, when no pending event or batch of the (unordered) consumer is due, leases new
    events from its ``next_offset`` on as one batch and moves ``next_offset`` past them. Its rows: whether
    something was due or ``acks`` names an ackId never handed out (then nothing was done), and the events leased
    (the returned columns; NULL in the one row there is when none was).

    The consumer's row lock is held already, so this statement's snapshot has every earlier fetch's leases.
    Every pending offset is below ``next_offset`` (leases are taken below it, a seek drops them all and the
    dead letters at or after its target), so when the span from the lowest of them to ``next_offset`` leaves
    room for a whole batch, maxInFlight cannot be reached and the pending rows are not counted."""
    pk, limit, max_in_flight = consumer.pk, max_events, consumer.max_in_flight
    # The last offset looked at (see _window): a bound on what one fetch reads.
    if whole_range or (topic_id is not None and not names):
        up_to, up_to_params = "head", []
    else:
        up_to = "least(head, next + %s - 1)"
        up_to_params = [settings.ER_CONSUMER_SCAN_WINDOW if names else limit]
    filters, filter_params = _filters(topic_id, names)
    conditions = ['"offset" >= (SELECT next FROM span)', '"offset" <= (SELECT up_to FROM span)', *filters]
    # (what the statement returns of each event, and what it reads to lease it too)
    returned = '"offset", wire' if encoded_only else f"{_EVENT_COLUMN_NAMES}, wire"
    read = '"offset", wire' if encoded_only else f"{EVENT_COLUMNS}, wire"
    return (
        f"WITH pos AS (SELECT c.next_offset AS next, t.last_offset AS head, NOT EXISTS (SELECT 1 FROM "
        "unnest(%s::bigint[], %s::bigint[]) AS u(e, o) WHERE e > c.epoch OR (e = c.epoch AND o >= c.next_offset)) "
        f"AS acks_valid FROM {CONSUMERS} c JOIN {TOPICS} t ON t.id = c.topic_id WHERE c.id = %s), "
        f"span AS (SELECT next, head, acks_valid, {up_to} AS up_to FROM pos), "
        f"probe AS (SELECT (NOT span.acks_valid OR EXISTS (SELECT 1 FROM {PENDING} WHERE consumer_id = %s "
        "AND available_at <= now()) "
        f"OR EXISTS (SELECT 1 FROM {BATCHES} WHERE consumer_id = %s AND available_at <= now())) AS due, "
        f'CASE WHEN span.next - coalesce(least((SELECT min("offset") FROM {PENDING} WHERE consumer_id = %s), '
        f"(SELECT min(first_offset) FROM {BATCHES} WHERE consumer_id = %s)), span.next) <= %s "
        f"THEN 0 ELSE (SELECT count(*) FROM {PENDING} WHERE consumer_id = %s AND state <> %s) "
        f"+ (SELECT coalesce(sum(cardinality(offsets)), 0) FROM {BATCHES} WHERE consumer_id = %s) END AS in_flight, "
        "span.next > span.head AS caught_up FROM span), "
        "room AS (SELECT due, CASE WHEN due OR caught_up THEN 0 ELSE greatest(least(%s, %s - in_flight), 0) END AS n "
        "FROM probe), "
        f"ev AS (SELECT {read} FROM {quoted_table(consumer.topic.name)} WHERE {' AND '.join(conditions)} "
        'ORDER BY "offset" LIMIT (SELECT n FROM room)), '
        f"leased AS (INSERT INTO {BATCHES} (consumer_id, first_offset, last_offset, offsets, available_at) "
        'SELECT %s, min("offset"), max("offset"), array_agg("offset" ORDER BY "offset"), '
        "now() + make_interval(secs => %s) FROM ev HAVING count(*) > 0), "
        f"moved AS (UPDATE {CONSUMERS} SET next_offset = CASE WHEN (SELECT count(*) FROM ev) = room.n "
        'THEN (SELECT max("offset") FROM ev) + 1 ELSE span.up_to + 1 END FROM room, span WHERE id = %s AND room.n > 0) '
        f'SELECT room.due, {returned} FROM room LEFT JOIN ev ON true ORDER BY "offset"',
        [
            bigint_array(acks.epochs),
            bigint_array(acks.offsets),
            pk,
            *up_to_params,
            pk,
            pk,
            pk,
            pk,
            max_in_flight - limit,
            pk,
            QUEUED,
            pk,
            limit,
            max_in_flight,
            *filter_params,
            pk,
            consumer.ack_wait_seconds,
            pk,
        ],
    )


def _encoded_handouts(cursor: Any, topic_name: str, rows: list[tuple[Any, ...]]) -> EncodedHandouts:
    """Rows of (due, offset, wire), all first deliveries: events stored without their encoding are read whole
    and encoded."""
    offsets = [offset for _, offset, _ in rows]
    wires = [wire for _, _, wire in rows]
    if None in wires:
        cursor.execute(
            f'SELECT {EVENT_COLUMNS}, wire FROM {quoted_table(topic_name)} WHERE "offset" = ANY(%s)',
            [[offset for offset, wire in zip(offsets, wires, strict=True) if wire is None]],
        )
        encodings = {row[0]: encoded(_event_of(topic_name, row)) for row in cursor.fetchall()}
        wires = [encodings[offset] if wire is None else wire for offset, wire in zip(offsets, wires, strict=True)]
    return EncodedHandouts([1] * len(offsets), offsets, wires)


def _window(topic_id: str | None, names: list[str], *, next_offset: int, head: int, limit: int) -> int:
    """The last offset a fetch of up to ``limit`` events looks at from ``next_offset``.

    A name filter reads the primary key range, so one fetch looks at a bounded window of it: a rare name costs
    several short fetches, never one long scan. Without a filter, offsets are gapless, so the next ``limit``
    events are exactly the offsets up to ``next_offset + limit - 1``: the range says so, and PostgreSQL reads
    just those rows whatever its estimates of the table."""
    if names:
        return min(head, next_offset + settings.ER_CONSUMER_SCAN_WINDOW - 1)
    if topic_id is None:
        return min(head, next_offset + limit - 1)
    return head


def _split_batches(
    cursor: Any, consumer_pk: int, topic_name: str, where: str = "", params: list[Any] | None = None
) -> None:
    """Replace the consumer's leased batches (those that also match ``where``) with the pending rows they stand for,
    so that what follows deals in single events. An event retention deleted meanwhile has no row to make."""
    cursor.execute(
        f"WITH split AS (DELETE FROM {BATCHES} WHERE consumer_id = %s {where} RETURNING offsets, available_at) "
        f'INSERT INTO {PENDING} (consumer_id, "offset", topic_id, event_id, delivery_count, state, available_at, '
        f"last_error) SELECT %s, e.\"offset\", e.topic_id, e.event_id, 1, %s, split.available_at, '' FROM split "
        f'CROSS JOIN LATERAL unnest(split.offsets) AS u(o) JOIN {quoted_table(topic_name)} e ON e."offset" = u.o',
        [consumer_pk, *(params or []), consumer_pk, LEASED],
    )


def _split_batches_holding(cursor: Any, consumer_pk: int, topic_name: str, offsets: list[int]) -> None:
    """:func:`_split_batches` of the batches holding any of ``offsets``."""
    if offsets:
        _split_batches(
            cursor,
            consumer_pk,
            topic_name,
            "AND first_offset <= %s AND last_offset >= %s AND offsets && %s::bigint[]",
            [max(offsets), min(offsets), offsets],
        )


def split_batches_below(cursor: Any, consumer_pk: int, topic_name: str, offset: int) -> None:
    """:func:`_split_batches` of the batches holding an event below ``offset`` (retention, before it deletes
    them, so that they are counted and dropped as the pending events they are)."""
    _split_batches(cursor, consumer_pk, topic_name, "AND first_offset < %s", [offset])


def _bury_expired(cursor: Any, consumer_pk: int, max_deliveries: int) -> None:
    """Dead-letter the events whose last allowed delivery's lease ran out."""
    cursor.execute(
        f"WITH dead AS (DELETE FROM {PENDING} WHERE consumer_id = %s AND state = %s AND available_at <= now() "
        'AND delivery_count >= %s RETURNING "offset", topic_id, event_id, delivery_count, last_error) '
        f'{_INSERT_DEAD} SELECT %s, "offset", topic_id, event_id, delivery_count, '
        "CASE WHEN last_error = '' THEN %s ELSE last_error END, now() FROM dead "
        f"{_ON_DEAD_CONFLICT}",
        [consumer_pk, LEASED, max_deliveries, consumer_pk, EXPIRED_REASON],
    )


_INSERT_DEAD = f'INSERT INTO {DEAD} (consumer_id, "offset", topic_id, event_id, deliveries, last_error, dead_at)'
_ON_DEAD_CONFLICT = (
    'ON CONFLICT (consumer_id, "offset") DO UPDATE SET deliveries = EXCLUDED.deliveries, '
    "last_error = EXCLUDED.last_error, dead_at = EXCLUDED.dead_at"
)


def _lease_due(cursor: Any, consumer_pk: int, ack_wait: int, limit: int, *, ordered: bool) -> list[tuple[int, int]]:
    """Lease the pending events that may be handed out now: expired leases, nack delays that passed, redriven
    dead letters, and (ordered) events queued behind their topic id once it is free. (offset, delivery count)."""
    if limit <= 0:
        return []
    # With ``ordered``, only the lowest pending event of a topic id may go: it alone can be leased at a time.
    head_of_its_id = (
        f"AND NOT EXISTS (SELECT 1 FROM {PENDING} e WHERE e.consumer_id = p.consumer_id "
        'AND e.topic_id = p.topic_id AND e."offset" < p."offset")'
        if ordered
        else ""
    )
    cursor.execute(
        f"UPDATE {PENDING} p SET state = %s, delivery_count = p.delivery_count + 1, "
        "available_at = now() + make_interval(secs => %s) "
        f'FROM (SELECT "offset" FROM {PENDING} p WHERE consumer_id = %s AND available_at <= now() {head_of_its_id} '
        'ORDER BY "offset" LIMIT %s) due '
        'WHERE p.consumer_id = %s AND p."offset" = due."offset" RETURNING p."offset", p.delivery_count',
        [LEASED, ack_wait, consumer_pk, limit, consumer_pk],
    )
    return sorted(cursor.fetchall())


def _lease_new(
    cursor: Any,
    consumer_pk: int,
    topic_name: str,
    topic_id: str | None,
    names: list[str],
    *,
    next_offset: int,
    head: int,
    limit: int,
    ack_wait: int,
    ordered: bool,
) -> tuple[list[tuple[int, tuple[Any, ...]]], int]:
    """Lease new events from ``next_offset`` on; return them (offset, row) and the new ``next_offset``."""
    up_to = _window(topic_id, names, next_offset=next_offset, head=head, limit=limit)
    where, params = matching(topic_id, names, next_offset=next_offset, up_to=up_to)
    cursor.execute(
        f'SELECT {EVENT_COLUMNS}, wire FROM {quoted_table(topic_name)} WHERE {where} ORDER BY "offset" LIMIT %s',
        [*params, limit],
    )
    rows = cursor.fetchall()
    new_next = rows[-1][0] + 1 if len(rows) == limit else up_to + 1
    cursor.execute(f"UPDATE {CONSUMERS} SET next_offset = %s WHERE id = %s", [new_next, consumer_pk])
    if not rows:
        return [], new_next
    blocked: set[str] = set()
    if ordered:
        cursor.execute(
            f"SELECT DISTINCT topic_id FROM {PENDING} WHERE consumer_id = %s AND topic_id = ANY(%s)",
            [consumer_pk, list({row[3] for row in rows})],
        )
        blocked = {topic for (topic,) in cursor.fetchall()}
    leased: list[tuple[int, tuple[Any, ...]]] = []
    offsets, topic_ids, event_ids, states = [], [], [], []
    for row in rows:
        offset, event_id, topic = row[0], row[1], row[3]
        if topic in blocked:
            state = QUEUED
        else:
            state = LEASED
            leased.append((offset, row))
            if ordered:
                blocked.add(topic)
        offsets.append(offset)
        topic_ids.append(topic)
        event_ids.append(event_id)
        states.append(state)
    cursor.execute(
        f'INSERT INTO {PENDING} (consumer_id, "offset", topic_id, event_id, delivery_count, state, available_at, '
        "last_error) SELECT %s, o, t, e, CASE WHEN s = %s THEN 1 ELSE 0 END, s, "
        "CASE WHEN s = %s THEN now() + make_interval(secs => %s) ELSE now() END, '' "
        "FROM unnest(%s::bigint[], %s::text[], %s::uuid[], %s::text[]) AS r(o, t, e, s)",
        [consumer_pk, LEASED, LEASED, ack_wait, offsets, topic_ids, event_ids, states],
    )
    return leased, new_next


def matching(topic_id: str | None, names: list[str], *, next_offset: int, up_to: int | None) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) of a consumer's events from ``next_offset`` on (to ``up_to``)."""
    conditions = ['"offset" >= %s']
    params: list[Any] = [next_offset]
    if up_to is not None:
        conditions.append('"offset" <= %s')
        params.append(up_to)
    filters, filter_params = _filters(topic_id, names)
    return " AND ".join([*conditions, *filters]), [*params, *filter_params]


def _filters(topic_id: str | None, names: list[str]) -> tuple[list[str], list[Any]]:
    """A consumer's own conditions on its topic's events (its topic id, its event names), with their parameters."""
    conditions: list[str] = []
    params: list[Any] = []
    if topic_id is not None:
        conditions.append("topic_id = %s")
        params.append(topic_id)
    if names:
        conditions.append("name = ANY(%s)")
        params.append(names)
    return conditions, params


def _events_at(cursor: Any, consumer_pk: int, topic_name: str, offsets: list[int]) -> dict[int, StoredEvent]:
    """The stored events at ``offsets``. A pending event whose row is gone from the topic table (retention) is
    dropped from the consumer too: there is nothing left to hand out."""
    if not offsets:
        return {}
    cursor.execute(f'SELECT {EVENT_COLUMNS}, wire FROM {quoted_table(topic_name)} WHERE "offset" = ANY(%s)', [offsets])
    events = {row[0]: _event_of(topic_name, row) for row in cursor.fetchall()}
    gone = [offset for offset in offsets if offset not in events]
    if gone:
        cursor.execute(f'DELETE FROM {PENDING} WHERE consumer_id = %s AND "offset" = ANY(%s)', [consumer_pk, gone])
    return events


def _event_of(topic_name: str, row: tuple[Any, ...]) -> StoredEvent:
    """A row of ``EVENT_COLUMNS, wire``."""
    return row_to_event(topic_name, row[:9], None if row[9] is None else bytes(row[9]))


# --- Acks, nacks, extends ----------------------------------------------------------------------------------


def lock_for_ack(cursor: Any, consumer_pk: int) -> tuple[int, int, int, int] | None:
    """Lock the consumer against a seek (``FOR KEY SHARE``: fetches go on); return its epoch, next offset, ack
    wait and max deliveries, or None when it no longer exists."""
    cursor.execute(
        f"SELECT epoch, next_offset, ack_wait_seconds, max_deliveries FROM {CONSUMERS} WHERE id = %s FOR KEY SHARE",
        [consumer_pk],
    )
    row = cursor.fetchone()
    return None if row is None else tuple(row)


def check_and_ack(cursor: Any, consumer_pk: int, topic_name: str, acks: AckIds) -> AckVerdict | None:
    """Ack in one statement, outside any transaction: lock the consumer against a seek (``FOR KEY SHARE``, for
    the statement), check that every ackId (``acks.epochs[i]``, ``acks.offsets[i]``) was handed out by it, and
    only if all were, act on those of the current epoch: delete the leased batches holding them, with a pending
    row for each event of such a batch that is not acked here, and delete their pending rows. Returns the
    verdict (nothing is applied when an ackId is not valid), or None when the consumer no longer exists.

    What :func:`lock_for_ack` and deletes in a transaction would do, in one round trip instead of five (BEGIN,
    the lock, two deletes, COMMIT): acks are half of a worker's calls. The statement's parts touch disjoint rows
    (an event is in a batch or has a pending row, never both), as the parts of one statement must.

    A batch another transaction split meanwhile (a nack, an ack of its other events, a fetch redelivering it)
    is gone when this statement reaches it, and the pending rows made of it are newer than the statement's
    snapshot: the ackIds it did not find are then looked for once more, by the same statement, whose new
    snapshot has them (the other transaction committed before this one could pass its batch)."""
    _send_ack_statement(cursor, consumer_pk, topic_name, acks.epochs, acks.offsets)
    return _settle_ack(cursor, consumer_pk, topic_name, acks)


def _settle_ack(cursor: Any, consumer_pk: int, topic_name: str, acks: AckIds) -> AckVerdict | None:
    """The verdict of the ack statement ``cursor`` sent, after the second look :func:`check_and_ack` describes
    when it is needed; None when the consumer no longer exists."""
    row = cursor.fetchone()
    if row is None:
        return None
    if row[2] and row[3]:
        _send_ack_statement(cursor, consumer_pk, topic_name, acks.epochs, acks.offsets)
        row = cursor.fetchone() or row
    return AckVerdict(int(row[0]), int(row[1]), bool(row[2]))


def _send_ack_statement(cursor: Any, consumer_pk: int, topic_name: str, epochs: list[int], offsets: list[int]) -> None:
    """Send :func:`_ack_statement`. ``cursor`` is a prepared cursor (``eventrelay.db.prepared_cursor``): the
    statement is parsed and planned once per connection."""
    cursor.execute(*_ack_statement(consumer_pk, topic_name, epochs, offsets), prepare=True)


def bigint_array(values: list[int]) -> str:
    """``values`` as a PostgreSQL array literal, for a parameter the statement casts (``%s::bigint[]``): psycopg
    dumps a list element by element in Python, a string at once, and a hundred ackIds' offsets are in every ack."""
    return "{" + ",".join(map(str, values)) + "}"


def _ack_statement(consumer_pk: int, topic_name: str, epochs: list[int], offsets: list[int]) -> tuple[str, list[Any]]:
    """The ack statement; its row: epoch, next offset, valid, and whether some acked event was found neither in a
    batch nor pending."""
    return (
        f"WITH consumer AS ("
        f"  SELECT epoch, next_offset FROM {CONSUMERS} WHERE id = %s FOR KEY SHARE"
        f"), items AS ("
        f"  SELECT e, o FROM unnest(%s::bigint[], %s::bigint[]) AS u(e, o)"
        f"), verdict AS ("
        f"  SELECT c.epoch, c.next_offset,"
        f"    NOT EXISTS (SELECT 1 FROM items WHERE e > c.epoch OR (e = c.epoch AND o >= c.next_offset)) AS valid,"
        f"    ARRAY(SELECT o FROM items WHERE e = c.epoch) AS acked"
        f"  FROM consumer c"
        f"), hit AS ("
        f"  DELETE FROM {BATCHES} b USING verdict v"
        f"  WHERE v.valid AND b.consumer_id = %s AND b.first_offset <= (SELECT max(o) FROM unnest(v.acked) AS a(o))"
        f"    AND b.last_offset >= (SELECT min(o) FROM unnest(v.acked) AS a(o)) AND b.offsets && v.acked"
        f"  RETURNING b.offsets, b.available_at"
        f"), rest AS ("
        f'  INSERT INTO {PENDING} (consumer_id, "offset", topic_id, event_id, delivery_count, state, available_at,'
        f"    last_error)"
        f"  SELECT %s, e.\"offset\", e.topic_id, e.event_id, 1, %s, hit.available_at, '' FROM hit CROSS JOIN verdict v"
        f'  CROSS JOIN LATERAL unnest(hit.offsets) AS u(o) JOIN {quoted_table(topic_name)} e ON e."offset" = u.o'
        f"  WHERE u.o <> ALL (v.acked)"
        f"), done AS ("
        f"  DELETE FROM {PENDING} p USING verdict v"
        f'  WHERE v.valid AND p.consumer_id = %s AND p.state <> %s AND p."offset" = ANY(v.acked)'
        f'  RETURNING p."offset"'
        f") SELECT epoch, next_offset, valid, valid AND cardinality(ARRAY(SELECT DISTINCT unnest(acked))) > "
        f"(SELECT count(*) FROM hit CROSS JOIN LATERAL unnest(hit.offsets) AS u(o) WHERE u.o = ANY(acked)) "
        f"+ (SELECT count(*) FROM done) FROM verdict",
        [
            consumer_pk,
            bigint_array(epochs),
            bigint_array(offsets),
            consumer_pk,
            consumer_pk,
            LEASED,
            consumer_pk,
            QUEUED,
        ],
    )


def nack(
    cursor: Any,
    consumer_pk: int,
    topic_name: str,
    deliveries: list[tuple[int, int]],
    *,
    delay_ms: int,
    reason: str,
    max_deliveries: int,
) -> set[int]:
    """Make these deliveries available again after ``delay_ms``, or dead-letter those that were the last allowed
    one. Only a delivery still out counts; returns the offsets acted on."""
    offsets, counts = _columns(deliveries)
    _split_batches_holding(cursor, consumer_pk, topic_name, offsets)
    cursor.execute(
        f"WITH target AS (SELECT * FROM unnest(%s::bigint[], %s::int[]) AS t(o, d)), "
        f'dead AS (DELETE FROM {PENDING} p USING target WHERE p.consumer_id = %s AND p."offset" = target.o '
        "AND p.delivery_count = target.d AND p.state = %s AND p.delivery_count >= %s "
        'RETURNING p."offset", p.topic_id, p.event_id, p.delivery_count), '
        f'buried AS ({_INSERT_DEAD} SELECT %s, "offset", topic_id, event_id, delivery_count, %s, now() FROM dead '
        f'{_ON_DEAD_CONFLICT} RETURNING "offset"), '
        f"retried AS (UPDATE {PENDING} p SET state = %s, available_at = now() + make_interval(secs => %s), "
        'last_error = %s FROM target WHERE p.consumer_id = %s AND p."offset" = target.o '
        'AND p.delivery_count = target.d AND p.state = %s AND p.delivery_count < %s RETURNING p."offset") '
        'SELECT "offset" FROM buried UNION ALL SELECT "offset" FROM retried',
        [
            offsets,
            counts,
            consumer_pk,
            LEASED,
            max_deliveries,
            consumer_pk,
            reason or "nacked",
            WAITING,
            delay_ms / 1000,
            reason,
            consumer_pk,
            LEASED,
            max_deliveries,
        ],
    )
    return {offset for (offset,) in cursor.fetchall()}


def extend(
    cursor: Any, consumer_pk: int, topic_name: str, deliveries: list[tuple[int, int]], *, ack_wait: int
) -> set[int]:
    """Restart the leases of these deliveries, if they are still out; return the offsets extended."""
    offsets, counts = _columns(deliveries)
    _split_batches_holding(cursor, consumer_pk, topic_name, offsets)
    cursor.execute(
        f"UPDATE {PENDING} p SET available_at = now() + make_interval(secs => %s) "
        "FROM unnest(%s::bigint[], %s::int[]) AS t(o, d) "
        'WHERE p.consumer_id = %s AND p."offset" = t.o AND p.delivery_count = t.d AND p.state = %s '
        'RETURNING p."offset"',
        [ack_wait, offsets, counts, consumer_pk, LEASED],
    )
    return {offset for (offset,) in cursor.fetchall()}


def _columns(deliveries: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    return [offset for offset, _ in deliveries], [count for _, count in deliveries]


# --- Seek, redrive, position -------------------------------------------------------------------------------


def seek(cursor: Any, consumer_pk: int, offset: int) -> bool:
    """Start over from ``offset``: every lease and pending redelivery is dropped, and so are the dead letters at
    or after it (they are replayed). False when the consumer no longer exists."""
    cursor.execute(f"SELECT 1 FROM {CONSUMERS} WHERE id = %s FOR UPDATE", [consumer_pk])
    if cursor.fetchone() is None:
        return False
    cursor.execute(f"DELETE FROM {PENDING} WHERE consumer_id = %s", [consumer_pk])
    cursor.execute(f"DELETE FROM {BATCHES} WHERE consumer_id = %s", [consumer_pk])
    cursor.execute(f'DELETE FROM {DEAD} WHERE consumer_id = %s AND "offset" >= %s', [consumer_pk, offset])
    cursor.execute(f"UPDATE {CONSUMERS} SET next_offset = %s, epoch = epoch + 1 WHERE id = %s", [offset, consumer_pk])
    return True


def redrive(cursor: Any, consumer_pk: int, offsets: list[int] | None) -> list[int]:
    """Move dead letters (all, or those at ``offsets``) back to pending with no deliveries; return their offsets."""
    only = 'AND "offset" = ANY(%s)' if offsets is not None else ""
    cursor.execute(
        f"WITH moved AS (DELETE FROM {DEAD} WHERE consumer_id = %s {only} "
        'RETURNING "offset", topic_id, event_id) '
        f'INSERT INTO {PENDING} (consumer_id, "offset", topic_id, event_id, delivery_count, state, available_at, '
        f"last_error) SELECT %s, \"offset\", topic_id, event_id, 0, %s, now(), '' FROM moved "
        'ON CONFLICT (consumer_id, "offset") DO NOTHING RETURNING "offset"',
        [consumer_pk, *([offsets] if offsets is not None else []), consumer_pk, WAITING],
    )
    return sorted(offset for (offset,) in cursor.fetchall())


def dead_letter_offsets(cursor: Any, consumer_pk: int, offsets: list[int]) -> set[int]:
    cursor.execute(
        f'SELECT "offset" FROM {DEAD} WHERE consumer_id = %s AND "offset" = ANY(%s) FOR UPDATE',
        [consumer_pk, offsets],
    )
    return {offset for (offset,) in cursor.fetchall()}


def position(cursor: Any, consumer_pk: int) -> Position | None:
    """Where a consumer stands, in one statement (the expired leases at their last delivery are buried first, so
    the figures do not wait for the next fetch)."""
    cursor.execute(f"SELECT max_deliveries FROM {CONSUMERS} WHERE id = %s", [consumer_pk])
    row = cursor.fetchone()
    if row is None:
        return None
    _bury_expired(cursor, consumer_pk, row[0])
    cursor.execute(
        f"SELECT c.next_offset, t.last_offset, least(p.lowest, b.lowest), p.pending + b.events, "
        "p.leased + b.leased, p.redelivering, p.queued, "
        f"(SELECT count(*) FROM {DEAD} d WHERE d.consumer_id = c.id) "
        f"FROM {CONSUMERS} c JOIN {TOPICS} t ON t.id = c.topic_id, LATERAL ("
        '  SELECT min("offset") AS lowest, count(*) FILTER (WHERE state <> %s) AS pending,'
        "  count(*) FILTER (WHERE state = %s AND available_at > now()) AS leased,"
        "  count(*) FILTER (WHERE delivery_count > 1) AS redelivering,"
        "  count(*) FILTER (WHERE state = %s) AS queued"
        f"  FROM {PENDING} WHERE consumer_id = c.id) p, LATERAL ("
        "  SELECT min(first_offset) AS lowest, coalesce(sum(cardinality(offsets)), 0) AS events,"
        "  coalesce(sum(cardinality(offsets)) FILTER (WHERE available_at > now()), 0) AS leased"
        f"  FROM {BATCHES} WHERE consumer_id = c.id) b "
        "WHERE c.id = %s",
        [QUEUED, LEASED, QUEUED, consumer_pk],
    )
    row = cursor.fetchone()
    if row is None:
        return None
    next_offset, head, lowest, pending, leased, redelivering, queued, dead = row
    return Position(next_offset, lowest, pending, leased, redelivering, queued, dead, head)


def count_unexamined(cursor: Any, topic_name: str, topic_id: str | None, names: list[str], *, next_offset: int) -> int:
    """How many matching events lie at or after ``next_offset`` (not handed out yet)."""
    where, params = matching(topic_id, names, next_offset=next_offset, up_to=None)
    cursor.execute(f"SELECT count(*) FROM {quoted_table(topic_name)} WHERE {where}", params)
    return int(cursor.fetchone()[0])
