"""Durable consumers, as every transport calls them (docs/consumers.md is the contract).

Each function takes the caller's ``Principal`` and the consumer's topic reference and name, authorizes like a
pull (whoever may read ``users:123`` may create, use and delete the consumers of ``users:123``, and nothing
else), validates its arguments with errors that name the field, and leaves the SQL to ``consumers.leases``.
Rate limits are the transports' (a fetch is one request, whatever it returns). The console uses the
functions that take a ``Consumer`` it has already found (``describe``, ``seek_consumer``, ...).

An ackId is ``<consumer>-<epoch>-<offset>-<delivery>``: which consumer, which seek generation, which event and
which delivery of it. Acks need only the event; nacks and extends act only on the delivery still out, so a
worker whose lease ran out cannot disturb the one that has the event now.
"""

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from consumers import aleases, leases
from consumers.models import Consumer, DeadLetter
from eventrelay.auth import Principal, require_read
from eventrelay.db import async_pool, on_async_pool, prepared_cursor, run_sync
from eventrelay.errors import AlreadyExists, InvalidInput, NotFound
from eventrelay.refs import TopicRef
from events import live
from events.canonical import StoredEvent
from events.validation import check_storable_text
from topics.models import Topic
from topics.services import get_topic

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_ACK_ID_RE = re.compile(r"([0-9]{1,18})-([0-9]{1,9})-([0-9]{1,18})-([0-9]{1,4})")

MAX_EVENT_NAMES = 100
MAX_OFFSET = 2**63 - 1  # PostgreSQL's bigint
MAX_REASON_LENGTH = 2000

# (camelCase field, model field, default, lowest, highest): the consumer settings, then the numbers of the calls.
SETTINGS_RANGES = [
    ("ackWaitSeconds", "ack_wait_seconds", 30, 1, 43_200),
    ("maxDeliveries", "max_deliveries", 20, 1, 1000),
    ("maxInFlight", "max_in_flight", 1000, 1, 10_000),
]
RANGES = [
    *SETTINGS_RANGES,
    ("maxEvents", "max_events", 100, 1, 1000),
    ("waitMs", "wait_ms", 0, 0, 30_000),
    ("delayMs", "delay_ms", 0, 0, 43_200_000),
    ("limit", "limit", 100, 1, 1000),
]
_DEFAULTS_AND_BOUNDS = {field: (default, lowest, highest) for field, _, default, lowest, highest in RANGES}
SETTINGS_FIELDS = {"startOffset", "eventNames", "ordered", *(field for field, *_ in SETTINGS_RANGES)}


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """A consumer's settings and position, as every API reports it (``as_canonical``)."""

    name: str
    topic: str
    start_offset: int
    ack_wait_seconds: int
    max_deliveries: int
    max_in_flight: int
    event_names: list[str]
    ordered: bool
    ack_floor: int
    pending: int
    lag: int
    dead_letters: int
    # Matching events retention deleted before they were acknowledged.
    expired: int
    created_at: datetime
    # Beyond the API's shape, for the console: the next offset to examine, leases out now, pending events
    # delivered more than once, and (ordered) events waiting behind their topic id.
    next_offset: int
    leased: int
    redelivering: int
    queued: int

    def as_canonical(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "topic": self.topic,
            "startOffset": self.start_offset,
            "ackWaitSeconds": self.ack_wait_seconds,
            "maxDeliveries": self.max_deliveries,
            "maxInFlight": self.max_in_flight,
            "eventNames": list(self.event_names),
            "ordered": self.ordered,
            "ackFloor": self.ack_floor,
            "pending": self.pending,
            "lag": self.lag,
            "deadLetters": self.dead_letters,
            "expired": self.expired,
            "createdAt": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    ack_id: str
    delivery_count: int
    event: StoredEvent


@dataclass(frozen=True, slots=True)
class EncodedDeliveries:
    """The deliveries of one fetch whose events are their stored encodings (``events.encoding``), one list per
    field (``leases.EncodedHandouts``), for a transport that sends them as they are."""

    ack_ids: list[str]
    delivery_counts: list[int]
    wires: list[bytes]


@dataclass(frozen=True, slots=True)
class AckOutcome:
    """``stale``: the ackIds of the call that acted on nothing, because the delivery they name is no longer out
    (acked already, redelivered since, dead-lettered, or the consumer was sought)."""

    stale: list[str]


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    offset: int
    event_id: str
    topic: str
    deliveries: int
    last_error: str
    dead_at: datetime

    def as_canonical(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "eventId": self.event_id,
            "topic": self.topic,
            "deliveries": self.deliveries,
            "lastError": self.last_error,
            "deadAt": self.dead_at,
        }


class _AckId(NamedTuple):
    position: int
    text: str
    epoch: int
    offset: int
    delivery: int


@dataclass(frozen=True, slots=True)
class _AckIds:
    """A call's ackIds, parsed, as one list per part: a batch's hundred ackIds are five lists, not a hundred
    objects (acks are half of a worker's calls)."""

    texts: list[str]
    epochs: list[int]
    offsets: list[int]
    deliveries: list[int]

    def __len__(self) -> int:
        return len(self.texts)

    def __iter__(self) -> Iterator[_AckId]:
        for position, parts in enumerate(zip(self.texts, self.epochs, self.offsets, self.deliveries, strict=True)):
            yield _AckId(position, *parts)

    def columns(self) -> leases.AckIds:
        return leases.AckIds(self.epochs, self.offsets)

    def texts_not_of(self, epoch: int) -> list[str]:
        return [text for text, of in zip(self.texts, self.epochs, strict=True) if of != epoch]


# --- Lifecycle ---------------------------------------------------------------------------------------------


def create_consumer(principal: Principal, topic_ref: object, name: object, options: Mapping[str, Any]) -> ConsumerInfo:
    """Create consumer ``name`` of ``topic_ref`` with ``options`` (the camelCase settings, all optional).
    ``AlreadyExists`` when the reference already has a consumer of that name."""
    ref = _authorized(principal, topic_ref)
    name = validate_name(name)
    values = _settings(options)
    topic = get_topic(ref.name)
    start = values.pop("start_offset")
    # Below what the topic still holds (retention) is where it starts.
    start = topic.last_offset + 1 if start == -1 else max(start, topic.first_offset)
    try:
        with transaction.atomic():
            consumer = Consumer.objects.create(
                topic=topic, ref_id=ref.id or "", name=name, start_offset=start, next_offset=start, **values
            )
    except IntegrityError:
        raise AlreadyExists(f"topic '{ref}' already has a consumer named '{name}'", field="name") from None
    return describe(consumer)


def get_consumer(principal: Principal, topic_ref: object, name: object) -> ConsumerInfo:
    return describe(_resolve(principal, topic_ref, name))


def list_consumers(principal: Principal, topic_ref: object) -> list[ConsumerInfo]:
    ref = _authorized(principal, topic_ref)
    get_topic(ref.name)
    return [describe(consumer) for consumer in Consumer.objects.of_ref(ref.name, ref.id or "").select_related("topic")]


def delete_consumer(principal: Principal, topic_ref: object, name: object) -> None:
    consumer = _resolve(principal, topic_ref, name)
    consumer.delete()
    _forget(consumer)


def consumers_of_topic(topic_name: str) -> list[ConsumerInfo]:
    """Every consumer of a topic, whatever its id scope (the console's view of a topic)."""
    return [describe(consumer) for consumer in Consumer.objects.filter(topic__name=topic_name).select_related("topic")]


def describe(consumer: Consumer) -> ConsumerInfo:
    """``consumer``'s settings and where it stands now."""
    with connection.cursor() as cursor:
        where = leases.position(cursor, consumer.pk)
        if where is None:
            raise NotFound(f"consumer '{consumer.name}' of '{consumer.ref_text}' does not exist", field="consumer")
        names = list(consumer.event_names)
        if consumer.ref_id or names:
            unexamined = leases.count_unexamined(
                cursor, consumer.topic.name, consumer.ref_id or None, names, next_offset=where.next_offset
            )
        else:
            unexamined = max(where.head - where.next_offset + 1, 0)
    return ConsumerInfo(
        name=consumer.name,
        topic=consumer.ref_text,
        start_offset=consumer.start_offset,
        ack_wait_seconds=consumer.ack_wait_seconds,
        max_deliveries=consumer.max_deliveries,
        max_in_flight=consumer.max_in_flight,
        event_names=names,
        ordered=consumer.ordered,
        ack_floor=where.ack_floor,
        pending=where.pending,
        lag=where.pending + where.queued + unexamined,
        dead_letters=where.dead_letters,
        expired=consumer.expired,
        created_at=consumer.created_at,
        next_offset=where.next_offset,
        leased=where.leased,
        redelivering=where.redelivering,
        queued=where.queued,
    )


# --- Fetch -------------------------------------------------------------------------------------------------


def fetch(principal: Principal, topic_ref: object, name: object, max_events: object = None) -> list[Delivery]:
    """Lease up to ``max_events`` events now (no waiting): due redeliveries first, then new events."""
    consumer, outcome, _ = _resolve_and_fetch(_authorized(principal, topic_ref), name, _max_events(max_events))
    return _deliveries(consumer.pk, outcome)


async def afetch(
    principal: Principal,
    topic_ref: object,
    name: object,
    max_events: object = None,
    wait_ms: object = None,
    ack_ids: object = None,
) -> tuple[list[Delivery], list[str]]:
    """:func:`fetch`, for the async transports, with long-polling: when nothing is available and ``wait_ms`` > 0,
    wait for new events of the topic (woken by the live hub, holding no database connection), for the next
    lease or nack delay to end, or for a nudge (a nack, redrive or seek elsewhere), and return as soon as
    anything is handed out, or empty at the deadline.

    With ``ack_ids`` (the previous batch's, say), those are acknowledged first, as :func:`ack` would, in the
    fetch's own transaction where it can: one call instead of two. Refused ackIds refuse the call, and nothing
    is acknowledged or leased. Returns the deliveries and the stale ackIds (as :func:`ack` does)."""
    consumer_pk, outcome, stale = await _afetch(
        principal, topic_ref, name, max_events, wait_ms, ack_ids, encoded_only=False
    )
    return _deliveries(consumer_pk, outcome), stale


async def afetch_encoded(
    principal: Principal,
    topic_ref: object,
    name: object,
    max_events: object = None,
    wait_ms: object = None,
    ack_ids: object = None,
) -> tuple[EncodedDeliveries, list[str]]:
    """:func:`afetch`, each event handed out as its stored encoding: for the transport that owns it (gRPC),
    which sends those bytes as they are."""
    consumer_pk, outcome, stale = await _afetch(
        principal, topic_ref, name, max_events, wait_ms, ack_ids, encoded_only=True
    )
    handouts: leases.EncodedHandouts = outcome.handouts
    prefix = _ack_id_prefix(consumer_pk, outcome.epoch)
    ack_ids = [
        f"{prefix}{offset}-{count}" for offset, count in zip(handouts.offsets, handouts.delivery_counts, strict=True)
    ]
    return EncodedDeliveries(ack_ids, handouts.delivery_counts, handouts.wires), stale


async def _afetch(
    principal: Principal,
    topic_ref: object,
    name: object,
    max_events: object,
    wait_ms: object,
    ack_ids: object,
    *,
    encoded_only: bool,
) -> tuple[int, leases.FetchOutcome[Any], list[str]]:
    limit = _max_events(max_events)
    wait = _wait_ms(wait_ms)
    ref = _authorized(principal, topic_ref)
    if ack_ids is None:
        ack_ids = []
    if wait == 0:
        fast = await _afetch_fresh(ref, name, limit, encoded_only, ack_ids)
        if fast is not None:
            return fast
        found, outcome, stale = await run_sync(_resolve_and_fetch, ref, name, limit, encoded_only, ack_ids)
        return found.pk, outcome, stale
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait / 1000
    recheck = settings.ER_CONSUMER_RECHECK_MS / 1000
    # Watching starts before the first read: an event committed between the read and the wait still wakes it.
    async with _watching(ref) as watcher:
        consumer, outcome, stale = await run_sync(_resolve_and_fetch, ref, name, limit, encoded_only, ack_ids)
        while True:
            remaining = deadline - loop.time()
            if outcome.handouts or remaining <= 0:
                return consumer.pk, outcome, stale
            timeout = remaining
            if outcome.next_due_in is not None:
                timeout = min(timeout, max(outcome.next_due_in, 0.001))
            if outcome.has_pending:
                timeout = min(timeout, recheck)
            await watcher.wait(timeout)
            outcome = await run_sync(_fetch_once, consumer, limit, encoded_only)


async def _afetch_fresh(
    ref: TopicRef, name: object, limit: int, encoded_only: bool, ack_ids: object
) -> tuple[int, leases.FetchOutcome[Any], list[str]] | None:
    """The common fetch (a consumer found before, unordered, new events) on the process's asyncio pool
    (``eventrelay.db.async_pool``), when there is one; None, with nothing done, for the caller's synchronous
    path (no pool, a consumer not remembered or gone, or nothing new to lease)."""
    pool = async_pool()
    if pool is None or not encoded_only:
        return None
    consumer = _REMEMBERED.get(_remembered_as(ref, name))
    if consumer is None or consumer.ordered or _owners_other_than(consumer.pk, ack_ids):
        return None
    parsed = _parse_ack_ids(consumer.pk, ack_ids)
    _refuse_deliveries_never_made(parsed)
    acks = parsed.columns() if parsed else None
    outcome, verdict = await on_async_pool(pool, lambda conn: aleases.lease_fresh_encoded(conn, consumer, limit, acks))
    stale: list[str] = []
    if acks is not None:
        if verdict is None:
            return None  # gone, nothing applied: the synchronous path looks the name up again
        stale = _stale_unless_refused(parsed, verdict)
    elif outcome is None:
        return None
    if outcome is None:  # (the acks are applied: only the fetch is left to do)
        return consumer.pk, await run_sync(_fetch_once, consumer, limit, encoded_only, fresh_tried=True), stale
    return consumer.pk, outcome, stale


async def aack(principal: Principal, topic_ref: object, name: object, ack_ids: object) -> AckOutcome:
    """:func:`ack`, on the process's asyncio pool when there is one and the consumer was found before."""
    ref = _authorized(principal, topic_ref)
    pool = async_pool()
    consumer = _REMEMBERED.get(_remembered_as(ref, name))
    if pool is None or consumer is None or consumer.ordered or _owners_other_than(consumer.pk, ack_ids):
        return await run_sync(_ack_at, ref, name, ack_ids)
    parsed = _parse_ack_ids(consumer.pk, ack_ids)
    _refuse_deliveries_never_made(parsed)
    acks = parsed.columns()
    verdict = await on_async_pool(pool, lambda conn: aleases.check_and_ack(conn, consumer, acks))
    if verdict is None:
        return await run_sync(_ack_at, ref, name, ack_ids)  # gone: looked up again there
    return AckOutcome(_stale_unless_refused(parsed, verdict))


class _Polling:
    """What a long-poll waits on when the live hub cannot be reached (Redis down): time alone, so events are
    still found, a recheck interval late at worst."""

    async def wait(self, timeout: float) -> bool:
        await asyncio.sleep(min(timeout, settings.ER_CONSUMER_RECHECK_MS / 1000))
        return False


@asynccontextmanager
async def _watching(ref: TopicRef) -> AsyncIterator["live.Watcher | _Polling"]:
    try:
        watch = live.watch(ref)
        watcher = await watch.__aenter__()
    except NotFound:
        raise
    except Exception:
        logger.warning("cannot watch '%s' for new events; long-polls poll meanwhile", ref, exc_info=True)
        yield _Polling()
        return
    try:
        yield watcher
    finally:
        await watch.__aexit__(None, None, None)


def _resolve_and_fetch(
    ref: TopicRef, name: object, limit: int, encoded_only: bool = False, ack_ids: object = ()
) -> tuple[Consumer, leases.FetchOutcome[Any], list[str]]:
    """Resolve the consumer, apply ``ack_ids`` (see :func:`afetch`) and fetch; with the stale ackIds."""
    consumer = _resolve_remembered(ref, name)
    if ack_ids:
        if _owners_other_than(consumer.pk, ack_ids):
            consumer = _resolve_again(ref, name)  # (a consumer created again under the name is a new one)
        parsed = _parse_ack_ids(consumer.pk, ack_ids)
        _refuse_deliveries_never_made(parsed)
        if consumer.ordered:  # (its acks may free the next event of a topic id: applied, and nudged, first)
            stale = _ack_at(ref, name, ack_ids).stale
            return consumer, _fetch_once(consumer, limit, encoded_only), stale
        try:
            return _fetch_acking(consumer, parsed, limit, encoded_only)
        except NotFound:
            consumer = _resolve_again(ref, name)  # the ackIds are the deleted one's: the new one refuses them
            return _fetch_acking(consumer, _parse_ack_ids(consumer.pk, ack_ids), limit, encoded_only)
    try:
        return consumer, _fetch_once(consumer, limit, encoded_only), []
    except NotFound:
        consumer = _resolve_again(ref, name)  # (NotFound when it is gone indeed)
        return consumer, _fetch_once(consumer, limit, encoded_only), []


def _fetch_acking(
    consumer: Consumer, parsed: _AckIds, limit: int, encoded_only: bool
) -> tuple[Consumer, leases.FetchOutcome[Any], list[str]]:
    """An unordered consumer's acks and fetch in one transaction where the fetch is the common one."""
    outcome, verdict = leases.lease_fresh(consumer, limit, encoded_only=encoded_only, acks=parsed.columns())
    if verdict is None:
        _forget(consumer)
        raise NotFound(f"consumer '{consumer.name}' was deleted", field="consumer")
    stale = _stale_unless_refused(parsed, verdict)
    return consumer, outcome or _fetch_once(consumer, limit, encoded_only, fresh_tried=True), stale


def _fetch_once(
    consumer: Consumer, limit: int, encoded_only: bool = False, *, fresh_tried: bool = False
) -> leases.FetchOutcome[Any]:
    """The common case (new events for an unordered consumer) in one round trip, anything else in a transaction."""
    outcome = None
    if not consumer.ordered and not fresh_tried:
        outcome, _ = leases.lease_fresh(consumer, limit, encoded_only=encoded_only)
    if outcome is None:
        with transaction.atomic():
            outcome = leases.fetch_encoded(consumer.pk, limit) if encoded_only else leases.fetch(consumer.pk, limit)
    if outcome is None:
        _forget(consumer)
        raise NotFound(f"consumer '{consumer.name}' was deleted", field="consumer")
    return outcome


def _deliveries(consumer_pk: int, outcome: leases.FetchOutcome[list[leases.Handout]]) -> list[Delivery]:
    return [
        Delivery(
            ack_id_of(consumer_pk, outcome.epoch, handout.event.offset, handout.delivery_count),
            handout.delivery_count,
            handout.event,
        )
        for handout in outcome.handouts
    ]


def ack_id_of(consumer_pk: int, epoch: int, offset: int, delivery: int) -> str:
    return f"{_ack_id_prefix(consumer_pk, epoch)}{offset}-{delivery}"


def _ack_id_prefix(consumer_pk: int, epoch: int) -> str:
    """What the ackIds of one consumer and epoch start with (a fetch's all do)."""
    return f"{consumer_pk}-{epoch}-"


# --- Ack, nack, extend -------------------------------------------------------------------------------------


def ack(principal: Principal, topic_ref: object, name: object, ack_ids: object) -> AckOutcome:
    """The events are done. Idempotent; an ackId of a delivery that was redelivered since still acks the event.
    One unknown or malformed ackId refuses the call and nothing of it is applied."""
    return _ack_at(_authorized(principal, topic_ref), name, ack_ids)


def _ack_at(ref: TopicRef, name: object, ack_ids: object) -> AckOutcome:
    consumer = _resolve_remembered(ref, name)
    if _owners_other_than(consumer.pk, ack_ids):
        consumer = _resolve_again(ref, name)  # (a consumer created again under the name is a new one)
    parsed = _parse_ack_ids(consumer.pk, ack_ids)
    _refuse_deliveries_never_made(parsed)
    with prepared_cursor() as cursor:
        verdict = leases.check_and_ack(cursor, consumer.pk, consumer.topic.name, parsed.columns())
    if verdict is None:
        _forget(consumer)
        if _resolve_again(ref, name).pk != consumer.pk:  # (NotFound when none is there now)
            return _ack_at(ref, name, ack_ids)  # the new one refuses the old one's ackIds
        raise NotFound(f"consumer '{consumer.name}' was deleted", field="consumer")
    stale = _stale_unless_refused(parsed, verdict)
    if consumer.ordered and len(stale) < len(parsed):
        _nudge(consumer)  # the next event of each acked topic id may go now
    return AckOutcome(stale)


def _stale_unless_refused(parsed: _AckIds, verdict: leases.AckVerdict) -> list[str]:
    """The ackIds of an earlier epoch (they acted on nothing); refuses the call when the verdict says an ackId
    was never handed out."""
    if not verdict.valid:
        _refuse_never_handed_out(parsed, verdict.epoch, verdict.next_offset)
    return parsed.texts_not_of(verdict.epoch)


def nack(
    principal: Principal,
    topic_ref: object,
    name: object,
    ack_ids: object,
    delay_ms: object = None,
    reason: object = None,
) -> AckOutcome:
    """These deliveries failed: the events come back after ``delay_ms`` (default 0), or are dead-lettered with
    ``reason`` when that was their last allowed delivery."""
    consumer = _resolve(principal, topic_ref, name)
    parsed = _parse_ack_ids(consumer.pk, ack_ids)
    delay = _in_range(delay_ms, "delayMs")
    if reason is None:
        reason = ""
    if not isinstance(reason, str):
        raise InvalidInput("reason must be a string", field="reason")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(
            f"reason is {len(reason)} characters long; at most {MAX_REASON_LENGTH} are allowed", field="reason"
        )
    check_storable_text(reason, "reason")
    with transaction.atomic(), connection.cursor() as cursor:
        epoch = _lock_and_check(cursor, consumer, parsed)
        current = [item for item in parsed if item.epoch == epoch]
        done = (
            leases.nack(
                cursor,
                consumer.pk,
                consumer.topic.name,
                [(item.offset, item.delivery) for item in current],
                delay_ms=delay,
                reason=reason,
                max_deliveries=consumer.max_deliveries,
            )
            if current
            else set()
        )
    if done:
        _nudge(consumer)
    return AckOutcome([item.text for item in parsed if item.epoch != epoch or item.offset not in done])


def extend(principal: Principal, topic_ref: object, name: object, ack_ids: object) -> AckOutcome:
    """Restart the leases of these deliveries (a worker still busy with them)."""
    consumer = _resolve(principal, topic_ref, name)
    parsed = _parse_ack_ids(consumer.pk, ack_ids)
    with transaction.atomic(), connection.cursor() as cursor:
        epoch = _lock_and_check(cursor, consumer, parsed)
        current = [item for item in parsed if item.epoch == epoch]
        done = (
            leases.extend(
                cursor,
                consumer.pk,
                consumer.topic.name,
                [(item.offset, item.delivery) for item in current],
                ack_wait=consumer.ack_wait_seconds,
            )
            if current
            else set()
        )
    return AckOutcome([item.text for item in parsed if item.epoch != epoch or item.offset not in done])


def _parse_ack_ids(consumer_pk: int, ack_ids: object) -> _AckIds:
    if not isinstance(ack_ids, list | tuple):
        raise InvalidInput("ackIds must be a list of ackIds", field="ackIds")
    if len(ack_ids) > settings.ER_CONSUMER_MAX_ACK_IDS:
        raise InvalidInput(
            f"ackIds has {len(ack_ids)} items; at most {settings.ER_CONSUMER_MAX_ACK_IDS} are allowed", field="ackIds"
        )
    return _parsed_at_once(consumer_pk, ack_ids) or _parsed_one_by_one(consumer_pk, ack_ids)


# ackIds as this consumer hands them out (no leading zeros in owner or delivery), one per line.
_ACK_ID_LINES_RE = re.compile(r"(?:[0-9]{1,18}-[0-9]{1,9}-[0-9]{1,18}-[1-9][0-9]{0,3}\n)*")


def _parsed_at_once(consumer_pk: int, ack_ids: list[Any] | tuple[Any, ...]) -> _AckIds | None:
    """The common case, checked with one match over all the ackIds and split once; None when anything is unusual
    (then :func:`_parsed_one_by_one` says what, or accepts it)."""
    if not all(type(text) is str for text in ack_ids):
        return None
    lines = "\n".join(ack_ids) + "\n"
    # (as many lines as ackIds: no ackId had a line break in it, so each line is one of them)
    if _ACK_ID_LINES_RE.fullmatch(lines) is None or lines.count("\n") != len(ack_ids):
        return None
    parts = lines.replace("\n", "-").split("-")
    if set(parts[0:-1:4]) != {str(consumer_pk)}:
        return None
    return _AckIds(list(ack_ids), _ints(parts[1::4]), list(map(int, parts[2::4])), _ints(parts[3::4]))


def _ints(texts: list[str]) -> list[int]:
    """``int`` of each text, each distinct one converted once (a batch's epochs and deliveries repeat)."""
    values = {text: int(text) for text in set(texts)}
    return [values[text] for text in texts]


def _parsed_one_by_one(consumer_pk: int, ack_ids: list[Any] | tuple[Any, ...]) -> _AckIds:
    texts, epochs, offsets, deliveries = [], [], [], []
    for position, text in enumerate(ack_ids):
        match = _ACK_ID_RE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise InvalidInput(f"ackIds[{position}]: {text!r} is not an ackId", field="ackIds")
        owner, epoch, offset, delivery = (int(part) for part in match.groups())
        if owner != consumer_pk:
            raise InvalidInput(f"ackIds[{position}]: {text!r} belongs to another consumer", field="ackIds")
        texts.append(text)
        epochs.append(epoch)
        offsets.append(offset)
        deliveries.append(delivery)
    return _AckIds(texts, epochs, offsets, deliveries)


def _lock_and_check(cursor: Any, consumer: Consumer, parsed: _AckIds) -> int:
    """Lock the consumer against a seek and refuse ackIds it never handed out; return its epoch."""
    _refuse_deliveries_never_made(parsed)
    state = leases.lock_for_ack(cursor, consumer.pk)
    if state is None:
        raise NotFound(f"consumer '{consumer.name}' was deleted", field="consumer")
    epoch, next_offset, _, _ = state
    _refuse_never_handed_out(parsed, epoch, next_offset)
    return int(epoch)


def _refuse_deliveries_never_made(parsed: _AckIds) -> None:
    if parsed and min(parsed.deliveries) < 1:
        raise _never_handed_out(next(item for item in parsed if item.delivery < 1))


def _refuse_never_handed_out(parsed: _AckIds, epoch: int, next_offset: int) -> None:
    """An ackId of a later epoch, or of this epoch beyond what was handed out, was made up (or is another
    deployment's): the whole call is refused, naming the first such ackId."""
    for item in parsed:
        if item.epoch > epoch or (item.epoch == epoch and item.offset >= next_offset):
            raise _never_handed_out(item)


def _never_handed_out(item: _AckId) -> InvalidInput:
    return InvalidInput(f"ackIds[{item.position}]: {item.text!r} was never handed out by this consumer", field="ackIds")


# --- Seek, dead letters ------------------------------------------------------------------------------------


def seek(principal: Principal, topic_ref: object, name: object, offset: object) -> ConsumerInfo:
    """Start the consumer over from ``offset`` (``-1``: after the topic's last event): a replay. Leases and
    pending redeliveries are dropped; ackIds handed out before become stale."""
    consumer = _resolve(principal, topic_ref, name)
    return seek_consumer(consumer, _whole_number(offset, "offset", default=None, lowest=-1, highest=None))


def seek_consumer(consumer: Consumer, offset: int) -> ConsumerInfo:
    with transaction.atomic(), connection.cursor() as cursor:
        topic = get_topic(consumer.topic.name)
        target = topic.last_offset + 1 if offset == -1 else max(offset, topic.first_offset)
        if not leases.seek(cursor, consumer.pk, target):
            raise NotFound(f"consumer '{consumer.name}' was deleted", field="consumer")
    _nudge(consumer)
    consumer.refresh_from_db()
    return describe(consumer)


def list_dead_letters(
    principal: Principal, topic_ref: object, name: object, after: object = None, limit: object = None
) -> list[DeadLetterInfo]:
    """Dead letters in offset order, after offset ``after`` (paging), at most ``limit`` (default 100, max 1,000)."""
    consumer = _resolve(principal, topic_ref, name)
    return dead_letters_of(
        consumer,
        after=_whole_number(after, "after", default=0, lowest=0, highest=None),
        limit=_in_range(limit, "limit"),
    )


def dead_letters_of(consumer: Consumer, *, after: int = 0, limit: int = 100) -> list[DeadLetterInfo]:
    topic_name = consumer.topic.name
    return [
        DeadLetterInfo(
            offset=letter.offset,
            event_id=str(letter.event_id),
            topic=f"{topic_name}:{letter.topic_id}" if letter.topic_id else topic_name,
            deliveries=letter.deliveries,
            last_error=letter.last_error,
            dead_at=letter.dead_at,
        )
        for letter in DeadLetter.objects.filter(consumer=consumer, offset__gt=after).order_by("offset")[:limit]
    ]


def redrive(principal: Principal, topic_ref: object, name: object, offsets: object = None) -> list[int]:
    """Dead letters back to available with no deliveries: those at ``offsets``, or all when None. Every offset
    given must be a dead letter, or nothing is redriven. Returns the offsets redriven."""
    consumer = _resolve(principal, topic_ref, name)
    if offsets is not None:
        if not isinstance(offsets, list | tuple) or not all(type(o) is int and 0 <= o <= MAX_OFFSET for o in offsets):
            raise InvalidInput("offsets must be a list of offsets (whole numbers >= 0)", field="offsets")
        if len(offsets) > settings.ER_CONSUMER_MAX_ACK_IDS:
            raise InvalidInput(
                f"offsets has {len(offsets)} items; at most {settings.ER_CONSUMER_MAX_ACK_IDS} are allowed",
                field="offsets",
            )
    return redrive_dead_letters(consumer, None if offsets is None else list(offsets))


def redrive_dead_letters(consumer: Consumer, offsets: list[int] | None) -> list[int]:
    with transaction.atomic(), connection.cursor() as cursor:
        if offsets is not None:
            missing = sorted(set(offsets) - leases.dead_letter_offsets(cursor, consumer.pk, offsets))
            if missing:
                raise InvalidInput(f"offsets {missing} are not dead letters of this consumer", field="offsets")
        redriven = leases.redrive(cursor, consumer.pk, offsets)
    if redriven:
        _nudge(consumer)
    return redriven


def _nudge(consumer: Consumer) -> None:
    """Wake the long-polling fetches of the consumer's topic (events became available other than by publishing)."""
    async_to_sync(live.nudge)(consumer.topic.name)


# --- Arguments ---------------------------------------------------------------------------------------------


def _authorized(principal: Principal, topic_ref: object) -> TopicRef:
    ref = topic_ref if isinstance(topic_ref, TopicRef) else TopicRef.parse(topic_ref)
    require_read(principal, ref)
    return ref


# The consumers that fetches and acks found, by reference and name. A consumer's settings never change (nothing
# edits them), so an entry goes wrong only when its consumer is deleted: the call that finds it gone forgets it
# and looks the name up once more (a consumer created again under the name is a new row, with a new id).
_REMEMBERED: dict[tuple[str, str, str], Consumer] = {}
_REMEMBERED_MAX = 10_000


def _remembered_as(ref: TopicRef, name: object) -> tuple[str, str, str]:
    return (ref.name, ref.id or "", validate_name(name, field="consumer"))


def _resolve_remembered(ref: TopicRef, name: object) -> Consumer:
    """:func:`_resolve_authorized`, saving the lookup for a consumer found before: every fetch and ack names its
    consumer, and the lookup was a round trip to PostgreSQL each time."""
    key = _remembered_as(ref, name)
    consumer = _REMEMBERED.get(key)
    if consumer is None:
        consumer = _resolve_authorized(ref, name)
        if len(_REMEMBERED) >= _REMEMBERED_MAX:
            _REMEMBERED.clear()
        _REMEMBERED[key] = consumer
    return consumer


def _resolve_again(ref: TopicRef, name: object) -> Consumer:
    _REMEMBERED.pop(_remembered_as(ref, name), None)
    return _resolve_remembered(ref, name)


def _forget(consumer: Consumer) -> None:
    key = (consumer.topic.name, consumer.ref_id, consumer.name)
    remembered = _REMEMBERED.get(key)
    if remembered is not None and remembered.pk == consumer.pk:
        _REMEMBERED.pop(key, None)


def _owners_other_than(consumer_pk: int, ack_ids: object) -> bool:
    """Whether some well-formed ackId names another consumer (its first part)."""
    if not isinstance(ack_ids, list | tuple):
        return False
    prefix = f"{consumer_pk}-"
    return any(isinstance(text, str) and not text.startswith(prefix) for text in ack_ids)


def _resolve(principal: Principal, topic_ref: object, name: object) -> Consumer:
    return _resolve_authorized(_authorized(principal, topic_ref), name)


def _resolve_authorized(ref: TopicRef, name: object) -> Consumer:
    name = validate_name(name, field="consumer")
    consumer = _consumer_named(ref.name, ref.id or "", name)
    if consumer is None:
        get_topic(ref.name)  # NotFound naming the topic when that is what is missing
        raise NotFound(f"topic '{ref}' has no consumer named '{name}'", field="consumer")
    return consumer


_CONSUMER_FIELDS = Consumer._meta.concrete_fields
_TOPIC_FIELDS = Topic._meta.concrete_fields
_CONSUMER_NAMES = [field.attname for field in _CONSUMER_FIELDS]
_TOPIC_NAMES = [field.attname for field in _TOPIC_FIELDS]
_CONSUMER_NAMED = (
    "SELECT "
    + ", ".join(
        [f"c.{connection.ops.quote_name(field.column)}" for field in _CONSUMER_FIELDS]
        + [f"t.{connection.ops.quote_name(field.column)}" for field in _TOPIC_FIELDS]
    )
    + f" FROM {Consumer._meta.db_table} c JOIN {Topic._meta.db_table} t ON t.id = c.topic_id "
    "WHERE t.name = %s AND c.ref_id = %s AND c.name = %s"
)


def _consumer_named(topic_name: str, ref_id: str, name: str) -> Consumer | None:
    """``Consumer.objects.of_ref(topic_name, ref_id).get(name=name)`` with its topic, or None: one statement
    written once rather than a queryset compiled on each call, since every fetch and ack looks its consumer up."""
    with prepared_cursor() as cursor:
        cursor.execute(_CONSUMER_NAMED, [topic_name, ref_id, name], prepare=True)
        row = cursor.fetchone()
    if row is None:
        return None
    consumer = Consumer.from_db(
        connection.alias, _CONSUMER_NAMES, _from_db(_CONSUMER_FIELDS, row[: len(_CONSUMER_FIELDS)])
    )
    consumer.topic = Topic.from_db(
        connection.alias, _TOPIC_NAMES, _from_db(_TOPIC_FIELDS, row[len(_CONSUMER_FIELDS) :])
    )
    return consumer


def _from_db(fields: Any, values: tuple[Any, ...]) -> list[Any]:
    """The values as the ORM gives them to a model (a JSONField's text decoded, ...)."""
    return [
        field.from_db_value(value, None, connection) if hasattr(field, "from_db_value") else value
        for field, value in zip(fields, values, strict=True)
    ]


def validate_name(name: object, field: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"consumer name {name!r} is invalid: it must start with a lowercase letter a-z, contain only lowercase "
            "letters, digits, '_' and '-', and be at most 64 characters long",
            field=field,
        )
    return name


def _settings(options: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(options, Mapping):
        raise InvalidInput("consumer settings must be an object", field="body")
    unknown = sorted(set(options) - SETTINGS_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown consumer setting '{unknown[0]}'", field=str(unknown[0]))
    values: dict[str, Any] = {
        "start_offset": _whole_number(options.get("startOffset"), "startOffset", default=1, lowest=-1, highest=None)
    }
    for field, attribute, default, lowest, highest in SETTINGS_RANGES:
        values[attribute] = _whole_number(options.get(field), field, default=default, lowest=lowest, highest=highest)
    names = options.get("eventNames")
    if names is None:
        names = []
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) and 0 < len(n) <= 255 for n in names):
        raise InvalidInput("eventNames must be a list of event names (1 to 255 characters each)", field="eventNames")
    if len(names) > MAX_EVENT_NAMES:
        raise InvalidInput(
            f"eventNames has {len(names)} names; at most {MAX_EVENT_NAMES} are allowed", field="eventNames"
        )
    for position, event_name in enumerate(names):
        check_storable_text(event_name, f"eventNames[{position}]")
    values["event_names"] = sorted(set(names))
    ordered = options.get("ordered")
    if ordered is None:
        ordered = False
    if not isinstance(ordered, bool):
        raise InvalidInput("ordered must be true or false", field="ordered")
    values["ordered"] = ordered
    return values


def _whole_number(value: object, field: str, *, default: int | None, lowest: int, highest: int | None) -> int:
    if value is None:
        if default is None:
            raise InvalidInput(f"{field} is required", field=field)
        return default
    if type(value) is not int:  # (bool is not a number here)
        raise InvalidInput(f"{field} must be a whole number", field=field)
    if value < lowest or value > (MAX_OFFSET if highest is None else highest):
        bounds = f"from {lowest} to {highest if highest is not None else MAX_OFFSET}"
        raise InvalidInput(f"{field} must be {bounds}; got {value}", field=field)
    return value


def _in_range(value: object, field: str) -> int:
    default, lowest, highest = _DEFAULTS_AND_BOUNDS[field]
    return _whole_number(value, field, default=default, lowest=lowest, highest=highest)


def _max_events(value: object) -> int:
    return _in_range(value, "maxEvents")


def _wait_ms(value: object) -> int:
    return _in_range(value, "waitMs")
