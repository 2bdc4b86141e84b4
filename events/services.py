"""The event API every transport calls: ``publish`` / ``apublish``, ``pull`` / ``pull_encoded``, ``subscribe``.

Each decides, once for every transport, what a transport would otherwise re-implement: the topic reference
is parsed and authorized (``eventrelay.auth``), the publish is charged to the caller's rate-limit budget by
its number of events, the source is one of ``SOURCES``, and a subscription without an offset starts right
after the topic's last offset at the moment of subscribing (reported, so the client can resume from it).
Transports parse their wire format, call one of these, and serialize what comes back.

After a publish commits, its new events are announced the same way on both paths (:func:`_announce`, and
``events.group_commit`` for ``apublish``): the live hub is told (``events.live.announce``: one Redis message
for every process's subscribers) and ``events_committed`` is sent, from the committing thread, to the
features that follow the log (webhook delivery).
"""

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Sized
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction

from eventrelay import metrics, ratelimit
from eventrelay.auth import Principal, require_read, require_write
from eventrelay.db import run_sync
from eventrelay.errors import EventRelayError, InvalidInput
from eventrelay.refs import TopicRef
from events import group_commit, live
from events.canonical import StoredEvent
from events.signals import send_committed
from events.storage import Batch, read_encoded_page, read_events, read_stream_events, store_batches
from events.validation import EventsToValidate, EventValidator
from topics.services import get_topic
from topics.tables import SOURCES

__all__ = [
    "SOURCES",
    "EncodedPull",
    "PullResult",
    "Subscription",
    "apublish",
    "apublish_queued",
    "clamp_batch_size",
    "publish",
    "pull",
    "pull_encoded",
    "read_events",
    "read_stream_events",
    "subscribe",
]


def publish(
    principal: Principal,
    topic_ref: object,
    raw_events: Any,
    source: str,
    validator: EventValidator | None = None,
) -> list[StoredEvent]:
    """Validate, authorize and store a batch; return the stored events in request order.

    One bad event rejects the whole batch with an error naming the event's index and field, and nothing of
    it is stored. Events whose ``eventId`` is already stored in the topic are not stored again; the stored
    event (with its original offset) is returned in their place. ``validator`` turns one item of
    ``raw_events`` into a ``NewEvent`` (default: canonical JSON dicts; gRPC passes one for its messages).
    """
    with metrics.PUBLISH_DURATION.labels(source).time():
        ref = _publish_preamble(principal, topic_ref, source)
        ratelimit.check("publish", principal.rate_limit_key, cost=_cost(raw_events))
        stored = store_batches(ref.name, [Batch(ref, EventsToValidate(raw_events, validator), source)])
        [result] = stored.results
        if isinstance(result, EventRelayError):
            raise result
        if stored.new_events:
            transaction.on_commit(lambda: _announce(ref.name, stored.new_events))
        return result


async def apublish(
    principal: Principal,
    topic_ref: object,
    raw_events: Any,
    source: str,
    validator: EventValidator | None = None,
) -> list[StoredEvent]:
    """:func:`publish` for the async transports: the same checks, and the batch shares one transaction with
    the publishes to the same topic that arrive meanwhile (``events.group_commit``). Its events are validated
    in that transaction's thread as they are written; an invalid one refuses this caller's batch alone."""
    with metrics.PUBLISH_DURATION.labels(source).time():
        ref = _publish_preamble(principal, topic_ref, source)
        await ratelimit.acheck("publish", principal.rate_limit_key, cost=_cost(raw_events))
        return await group_commit.submit(Batch(ref, EventsToValidate(raw_events, validator), source))


async def apublish_queued(
    principal: Principal,
    topic_ref: object,
    raw_events: Any,
    source: str,
    validator: EventValidator | None = None,
) -> "asyncio.Future[list[StoredEvent]]":
    """:func:`apublish` for a caller that pipelines (gRPC ``PublishStream``): the same checks and rate limit,
    raised from here, then the batch is queued for its topic's next transaction before this returns, and the
    future gets its events or the error that refused it alone. Batches one caller queues one after another are
    stored in that order."""
    started = time.perf_counter()
    ref = _publish_preamble(principal, topic_ref, source)
    await ratelimit.acheck("publish", principal.rate_limit_key, cost=_cost(raw_events))
    stored = group_commit.enqueue(Batch(ref, EventsToValidate(raw_events, validator), source))
    observe = _publish_duration_of(source)
    stored.add_done_callback(lambda _: observe(time.perf_counter() - started))
    return stored


@functools.cache
def _publish_duration_of(source: str) -> Callable[[float], None]:
    """The publish-duration histogram of ``source``, looked up once (a stream publishes per request)."""
    return metrics.PUBLISH_DURATION.labels(source).observe


def _publish_preamble(principal: Principal, topic_ref: object, source: str) -> TopicRef:
    ref = _parse_ref(topic_ref)
    require_write(principal, ref)
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}")
    return ref


def _cost(raw_events: Any) -> int:
    """What a publish costs in rate-limit units: its number of events. A body that is not a list costs
    nothing here: validation refuses it."""
    return len(raw_events) if isinstance(raw_events, Sized) and not isinstance(raw_events, str | bytes | dict) else 0


def _announce(topic_name: str, events: list[StoredEvent]) -> None:
    """After a commit, from the thread that committed (``events.group_commit`` does the same from its loop)."""
    metrics.count_published(topic_name, events[0].source, len(events))  # (one batch: one source)
    async_to_sync(live.announce)(topic_name, events)
    send_committed(topic_name, events)


# --- Pulls -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PullResult:
    events: list[StoredEvent]
    next_offset: int


def pull(principal: Principal, topic_ref: object, offset: int, batch_size: int | None = None) -> PullResult:
    """Events with offset >= ``offset``, ascending, at most ``batch_size`` (clamped), that the principal may
    see. ``next_offset`` is the last returned offset + 1, or ``offset`` when none."""
    ref, after, limit = _pull_page(principal, topic_ref, offset, batch_size)
    events = read_events(ref, after=after, limit=limit)
    next_offset = events[-1].offset + 1 if events else offset
    return PullResult(events=events, next_offset=next_offset)


@dataclass(frozen=True, slots=True)
class EncodedPull:
    """A pull's events in the stored encoding (``events.encoding``), joined in offset order."""

    joined: bytes
    next_offset: int


def pull_encoded(principal: Principal, topic_ref: object, offset: int, batch_size: int | None = None) -> EncodedPull:
    """:func:`pull`, served from the events' stored encodings, joined by PostgreSQL with no per-event work in
    Python: how a transport with a registered encoding (gRPC) answers a pull."""
    ref, after, limit = _pull_page(principal, topic_ref, offset, batch_size)
    page = read_encoded_page(ref, after=after, limit=limit)
    return EncodedPull(page.joined, offset if page.last_offset is None else page.last_offset + 1)


def _pull_page(
    principal: Principal, topic_ref: object, offset: int, batch_size: int | None
) -> tuple[TopicRef, int, int]:
    """A pull's checks, then its page: the reference, the offset it reads after, and its size."""
    ref = _parse_ref(topic_ref)
    require_read(principal, ref)
    if not isinstance(offset, int) or offset < 0:
        raise InvalidInput("offset must be a whole number >= 0", field="offset")
    return ref, max(offset, 1) - 1, clamp_batch_size(batch_size)


def clamp_batch_size(batch_size: int | None) -> int:
    if batch_size is None or batch_size == 0:
        return settings.ER_PULL_DEFAULT_BATCH
    if not isinstance(batch_size, int) or batch_size < 0:
        raise InvalidInput("batch size must be a positive whole number", field="batchSize")
    return min(batch_size, settings.ER_PULL_MAX_BATCH)


# --- Subscriptions -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscription:
    """An authorized subscription to a topic reference, not yet reading.

    ``start`` is the first offset it owes: ``from_offset`` when given, else ``head + 1``, where ``head`` is
    the topic's last offset when it subscribed (what the WebSocket reports in its ``subscribed`` frame).
    Every event from ``start`` on comes in order, each once, including one committed while subscribing.
    """

    ref: TopicRef
    start: int
    head: int

    def events(self) -> AbstractAsyncContextManager[AsyncIterator[StoredEvent]]:
        """Stored events from ``start``, then live ones. Iteration raises ``SlowConsumer`` when the reader falls
        too far behind, ``NotFound`` when the topic is deleted and ``Unavailable`` when the server shuts down."""
        # Events committed after ``head`` are live for this subscriber, even those replayed while it attaches.
        return live.subscribe(self.ref, self.start, live_after=self.head)


async def subscribe(
    principal: Principal, topic_ref: object, from_offset: int | None, *, field: str = "fromOffset"
) -> Subscription:
    """Authorize a subscription and fix where it starts. ``field`` names ``from_offset`` in the caller's
    API when it is refused."""
    ref = _parse_ref(topic_ref)
    if from_offset is not None and (type(from_offset) is not int or from_offset < 0):  # (bool is not an offset)
        raise InvalidInput(f"{field} must be a whole number >= 0", field=field)
    require_read(principal, ref)
    topic = await run_sync(get_topic, ref.name)
    return Subscription(ref, from_offset if from_offset is not None else topic.last_offset + 1, topic.last_offset)


def _parse_ref(topic_ref: object) -> TopicRef:
    """A ``TopicRef``, or the text of one (validated here: ``InvalidInput`` names what is wrong)."""
    return topic_ref if isinstance(topic_ref, TopicRef) else TopicRef.parse(topic_ref)
