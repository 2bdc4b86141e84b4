"""The live hub: committed events fanned out to subscribers in this process, in order, without gaps.

PostgreSQL is the source of truth; Redis only carries notifications. After a publish commits, the
publish path (``events.services``) calls :func:`announce`, which sends one message to the topic's group
on Channels' Redis pub/sub layer (one PUBLISH, whatever the number of subscribers). Each process that has subscribers for the topic
holds one :class:`TopicFeed`: one Redis subscription, one cursor, one read from PostgreSQL per
notification that does not carry its events, whatever the number of local subscribers.

A feed's ``cursor`` is the highest offset it has dispatched, and every offset up to it has been
dispatched exactly once and in order:

- a notification whose offsets start past ``cursor + 1`` reveals a gap (a lost or overtaken
  notification), which is read from PostgreSQL before anything newer is dispatched;
- offsets at or below ``cursor`` are duplicates and are dropped;
- pub/sub can lose notifications silently, so each feed also checks the topic's last offset every
  ``ER_LIVE_TICK_MS``: a lost notification delays an event by at most one tick.

A :class:`Subscription` buffers at most ``ER_LIVE_BUFFER_EVENTS`` events; past that it ends with
``SlowConsumer`` (the client resumes by offset), so a stalled client cannot grow the process's
memory. :func:`subscribe` replays stored events from ``from_offset`` first and switches to live
events at the feed's cursor, so the seam has no gap and no duplicate.

The feed hands each notification's events to every subscription as one batch. A transport either
iterates them one at a time (a task per subscription, woken per batch) or, with
:meth:`LiveEvents.deliver`, gives the subscription a synchronous sink the feed calls directly: no queue,
no task switch per subscriber, which is what lets one process fan an event out to thousands of them.
A sink sees exactly what the iterator would (same order, same replay seam) and bounds its own buffer.

The hub knows nothing about gRPC or WebSocket: transports iterate a subscription and serialize.
"""

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, NoReturn

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.dispatch import receiver

from eventrelay.db import run_sync
from eventrelay.errors import EventRelayError, NotFound, SlowConsumer, Unavailable
from eventrelay.loops import PerLoop
from eventrelay.refs import TopicRef
from events.canonical import StoredEvent
from events.storage import read_events
from topics import tables
from topics.models import head as topics_head
from topics.signals import topic_deleted

logger = logging.getLogger(__name__)

READ_PAGE = 1000


def group_name(topic_name: str) -> str:
    return f"er.topic.{topic_name}"


# --- Publishing side --------------------------------------------------------------------------------


def notification_for(topic_name: str, events: list[StoredEvent]) -> dict[str, Any]:
    """The pub/sub message for a committed batch: its offset range, and the events when small."""
    message: dict[str, Any] = {
        "type": "events.committed",
        "topic": topic_name,
        "first": events[0].offset,
        "last": events[-1].offset,
        # For the commit-to-frame latency of the subscribers' transports (eventrelay.metrics): sent right after
        # the commit, so its time stands for the commit's.
        "committedAt": time.time(),
    }
    size = sum(len(event.data_json) + len(event.context_json) for event in events)
    if size <= settings.ER_LIVE_INLINE_BYTES:
        message["events"] = [_encode(event) for event in events]
    return message


@receiver(topic_deleted, dispatch_uid="events.live.announce_deleted")
def announce_deleted(sender: object, name: str, topic_pk: int, **kwargs: object) -> None:
    """Runs inside the delete's transaction, so the message is out before a topic created again under the same
    name can publish: every feed of the deleted topic ends its subscriptions (``NotFound``) instead of taking the
    new topic's offsets for its own. A lost message leaves it to the feeds' tick check."""
    message = {"type": "topic.deleted", "topic": name, "topicPk": topic_pk}
    try:
        async_to_sync(get_channel_layer().group_send)(group_name(name), message)
    except Exception:
        logger.warning(
            "could not announce the deletion of '%s'; live feeds will see it on their tick", name, exc_info=True
        )


async def announce(topic_name: str, events: list[StoredEvent]) -> None:
    """One pub/sub message for committed events (ascending offsets). Never raises: a lost message only
    delays delivery until the feeds' tick."""
    try:
        await get_channel_layer().group_send(group_name(topic_name), notification_for(topic_name, events))
    except Exception:
        logger.warning(
            "could not announce offsets %s-%s of '%s'; live feeds will catch up on their next tick",
            events[0].offset,
            events[-1].offset,
            topic_name,
            exc_info=True,
        )


def _encode(event: StoredEvent) -> list[Any]:
    return [
        event.offset,
        str(event.event_id),
        event.name,
        event.topic_id,
        event.source,
        event.user_id,
        event.event_occurred_at.isoformat(),
        event.context_json,
        event.data_json,
    ]


def _decode(topic_name: str, item: list[Any], committed_at: float | None) -> StoredEvent:
    offset, event_id, name, topic_id, source, user_id, occurred_at, context_json, data_json = item
    return StoredEvent(
        offset=offset,
        event_id=uuid.UUID(event_id),
        name=name,
        topic_name=topic_name,
        topic_id=topic_id,
        source=source,
        user_id=user_id,
        event_occurred_at=datetime.fromisoformat(occurred_at),
        context_json=context_json,
        data_json=data_json,
        committed_at=committed_at,
    )


# --- Subscribing side -------------------------------------------------------------------------------


#: What :meth:`LiveEvents.deliver` hands events to: called synchronously, in offset order, with a batch (one or
#: more events). It raises to end the subscription (an ``EventRelayError`` such as ``SlowConsumer`` is what the
#: transport tells its client; anything else is a bug it reports as one).
LiveSink = Callable[[Sequence[StoredEvent]], None]


class Subscription:
    """One subscriber's bounded queue of live events for one topic reference, or its sink (:meth:`deliver_to`)."""

    def __init__(self, feed: "TopicFeed", ref: TopicRef, live_from: int) -> None:
        self.feed = feed
        self.ref = ref
        # Live events arrive here only for offsets > live_from (the feed's cursor at attach time).
        self.live_from = live_from
        # Offsets at or below this were already delivered by the replay: drop them.
        self.delivered_through = 0
        self._queue: deque[StoredEvent] = deque()
        self._limit = settings.ER_LIVE_BUFFER_EVENTS
        self._wakeup = asyncio.Event()
        self._error: Exception | None = None
        self._sink: LiveSink | None = None

    def offer(self, event: StoredEvent) -> None:
        """One event of the topic (see :meth:`offer_batch`)."""
        self.offer_batch((event,))

    def offer_batch(self, events: Sequence[StoredEvent]) -> None:
        """Called by the feed, in offset order, for every event of the topic (a notification's at a time)."""
        if self._error is not None:
            return
        through, ref_id = self.delivered_through, self.ref.id
        mine: Sequence[StoredEvent]
        if ref_id is None and events[0].offset > through:
            mine = events  # the common case, left as the feed's own sequence: a sink may recognize it
        else:
            mine = [e for e in events if e.offset > through and (ref_id is None or e.topic_id == ref_id)]
            if not mine:
                return
        sink = self._sink
        if sink is not None:
            self._deliver(sink, mine)
            return
        if len(self._queue) + len(mine) > self._limit:
            self.fail(
                SlowConsumer(
                    f"subscriber fell more than {self._limit} events behind on '{self.ref}'; "
                    "resubscribe from the last offset received + 1"
                )
            )
            return
        self._queue.extend(mine)
        self._wakeup.set()

    def _deliver(self, sink: LiveSink, events: Sequence[StoredEvent]) -> None:
        try:
            sink(events)
        except Exception as error:  # noqa: BLE001 - it ends this subscription only; the feed's others go on
            self.fail(error)
        else:
            self.delivered_through = events[-1].offset

    def fail(self, error: Exception) -> None:
        """End the subscription: the buffered events are dropped and the iterator raises ``error``."""
        if self._error is None:
            self._error = error
            self._sink = None
            self._queue.clear()
            self.feed.detach(self)
            self._wakeup.set()

    async def next_event(self) -> StoredEvent:
        while True:
            if self._error is not None:
                raise self._error
            while self._queue:
                event = self._queue.popleft()
                if event.offset > self.delivered_through:  # else the replay already delivered it
                    self.delivered_through = event.offset
                    return event
            self._wakeup.clear()
            await self._wakeup.wait()

    async def deliver_to(self, sink: LiveSink) -> NoReturn:
        """Hand ``sink`` what is queued, then every later event as the feed dispatches it, until the subscription
        ends: raises what ended it (cancelled: the sink is dropped at once)."""
        try:
            queued = [event for event in self._queue if event.offset > self.delivered_through]
            self._queue.clear()
            if self._error is None and queued:
                self._deliver(sink, queued)
            if self._error is None:
                self._sink = sink
            while self._error is None:
                self._wakeup.clear()
                await self._wakeup.wait()
            raise self._error
        finally:
            self._sink = None

    @property
    def buffered(self) -> int:
        return len(self._queue)


class Watcher:
    """A signal, not a queue: set when an event of ``ref`` is committed, or when the topic is nudged (:func:`nudge`).

    What a long-polling caller waits on (``consumers.services.afetch``): it reads PostgreSQL itself once woken,
    so nothing is buffered and a burst of events costs it nothing but one wake-up.
    """

    def __init__(self, feed: "TopicFeed", ref: TopicRef) -> None:
        self.feed = feed
        self.ref = ref
        self._wakeup = asyncio.Event()
        self._error: EventRelayError | None = None

    def offer(self, event: StoredEvent) -> None:
        self.offer_batch((event,))

    def offer_batch(self, events: Sequence[StoredEvent]) -> None:
        if self.ref.id is None or any(event.topic_id == self.ref.id for event in events):
            self._wakeup.set()

    def nudge(self) -> None:
        self._wakeup.set()

    def fail(self, error: EventRelayError) -> None:
        if self._error is None:
            self._error = error
            self.feed.detach(self)
            self._wakeup.set()

    async def wait(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for a signal since the last wait; whether one came. Raises what ended
        the feed (``NotFound`` when the topic is deleted, ``Unavailable`` at shutdown)."""
        if not self._wakeup.is_set():
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                pass
        if self._error is not None:
            raise self._error
        signalled = self._wakeup.is_set()
        self._wakeup.clear()
        return signalled


class TopicFeed:
    """This process's single view of one topic's live events (see the module docstring)."""

    def __init__(self, hub: "LiveHub", topic_name: str) -> None:
        self.hub = hub
        self.topic_name = topic_name
        self.ref = TopicRef(topic_name)
        self.cursor = 0
        self.subscriptions: set[Subscription | Watcher] = set()
        self.closed = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._topic_pk: int | None = None
        self._lock = asyncio.Lock()
        self._layer = get_channel_layer()
        self._channel: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        try:
            # Subscribe first, then read the head: anything committed after the read is notified to us.
            self._channel = await self._layer.new_channel()
            await self._layer.group_add(group_name(self.topic_name), self._channel)
            self._topic_pk, self.cursor = await run_sync(_topic_head, self.topic_name)
        except BaseException as exc:
            self.closed = True
            if isinstance(exc, asyncio.CancelledError):
                # The subscriber starting the feed went away, not the ones waiting for it: they find the
                # feed closed and start another (LiveHub.attach).
                self.ready.set_result(None)
            else:
                self.ready.set_exception(exc)
                # Marked as read: the starter raises it itself and may be the only one who waited.
                self.ready.exception()
            await self._leave_group()
            raise
        self._tasks = [asyncio.create_task(self._receive_loop()), asyncio.create_task(self._tick_loop())]
        self.ready.set_result(None)

    def attach(self, ref: TopicRef) -> Subscription:
        """Attach a subscriber; it gets every event with offset > the cursor at this instant."""
        subscription = Subscription(self, ref, live_from=self.cursor)
        self.subscriptions.add(subscription)
        return subscription

    def watch(self, ref: TopicRef) -> Watcher:
        watcher = Watcher(self, ref)
        self.subscriptions.add(watcher)
        return watcher

    def detach(self, subscription: "Subscription | Watcher") -> None:
        self.subscriptions.discard(subscription)
        if not self.subscriptions and not self.closed:
            self.closed = True
            self.hub.forget(self)
            asyncio.get_running_loop().create_task(self.stop())

    async def stop(self) -> None:
        self.closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._leave_group()

    async def _leave_group(self) -> None:
        if self._channel is not None:
            try:
                await self._layer.group_discard(group_name(self.topic_name), self._channel)
            except Exception:
                logger.warning("could not leave the pub/sub group of '%s'", self.topic_name, exc_info=True)

    def fail_all(self, error: EventRelayError) -> None:
        for subscription in list(self.subscriptions):
            subscription.fail(error)

    def _end(self, error: NotFound) -> None:
        """The topic is gone: every subscription ends, and no new subscriber may attach here (a topic created
        again under the same name gets a feed of its own, from its own offsets)."""
        if not self.closed:
            self.closed = True
            self.hub.forget(self)
            asyncio.get_running_loop().create_task(self.stop())
        self.fail_all(error)

    async def _receive_loop(self) -> None:
        while True:
            message = await self._layer.receive(self._channel)
            try:
                async with self._lock:
                    await self._on_notification(message)
            except NotFound as exc:
                self._end(exc)
            except Exception:
                logger.warning("live feed '%s' could not handle a notification", self.topic_name, exc_info=True)

    async def _tick_loop(self) -> None:
        interval = settings.ER_LIVE_TICK_MS / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._lock:
                    await self._check_head()
            except NotFound as exc:
                self._end(exc)
            except Exception:
                logger.warning("live feed '%s' could not check its topic's head", self.topic_name, exc_info=True)

    async def _on_notification(self, message: dict[str, Any]) -> None:
        if message.get("type") == "topic.nudged":
            for watcher in [member for member in self.subscriptions if isinstance(member, Watcher)]:
                watcher.nudge()
            return
        if message.get("type") == "topic.deleted":
            if message.get("topicPk") in (None, self._topic_pk):
                raise NotFound(f"topic '{self.topic_name}' was deleted", field="topic")
            return
        first, last = message["first"], message["last"]
        if last <= self.cursor:
            return  # everything in it was already dispatched
        committed_at = message.get("committedAt")
        if first <= self.cursor + 1 and "events" in message:
            self._dispatch([_decode(self.topic_name, item, committed_at) for item in message["events"]])
        else:
            await self._catch_up(until=last, announced=(first, committed_at))

    async def _check_head(self) -> None:
        topic_pk, last_offset = await run_sync(_topic_head, self.topic_name)
        if topic_pk != self._topic_pk or last_offset < self.cursor:
            raise NotFound(f"topic '{self.topic_name}' was deleted", field="topic")
        if last_offset > self.cursor:
            # Events no notification brought (lost, or not here yet): timed from when they were stored.
            await self._catch_up(until=last_offset, announced=None)

    async def _catch_up(self, until: int, announced: tuple[int, float | None] | None) -> None:
        """Read from PostgreSQL every event after the cursor up to ``until`` (all committed), with their commit
        times (for ``eventrelay_live_delivery_seconds``): ``announced`` is the first offset of the notification
        that asked for it (its last is ``until``) and its time, which its events carry on; without one (the tick
        found them) they are read with the events, from when each was stored."""
        while self.cursor < until:
            if announced is None:
                events = await run_sync(read_page, self.ref, after=self.cursor, live_after=self.cursor)
            else:
                events = await run_sync(read_events, self.ref, after=self.cursor, limit=READ_PAGE)
            if not events:
                return
            if announced is not None and announced[1] is not None:
                first, committed_at = announced
                events = [
                    event._replace(committed_at=committed_at) if first <= event.offset <= until else event
                    for event in events
                ]
            self._dispatch(events)

    def _dispatch(self, events: list[StoredEvent]) -> None:
        # Synchronous on purpose: no await between advancing the cursor and offering, so an attach
        # (which reads the cursor) never falls between the two.
        fresh: list[StoredEvent] = []
        expected = self.cursor + 1
        for event in events:
            if event.offset != expected:
                if event.offset < expected:
                    continue
                self._offer(fresh)
                raise AssertionError(f"feed '{self.topic_name}' would skip from {expected - 1} to {event.offset}")
            fresh.append(event)
            expected += 1
        self._offer(fresh)

    def _offer(self, events: list[StoredEvent]) -> None:
        """Every subscriber gets the same batch (one call each, not one per event)."""
        if events:
            self.cursor = events[-1].offset
            for subscription in list(self.subscriptions):
                subscription.offer_batch(events)


def read_page(ref: TopicRef, *, after: int, live_after: int | None) -> list[StoredEvent]:
    """A page of stored events after ``after``. Those after ``live_after`` were committed once their reader was
    following the topic, so they are live although read back: they carry when they were stored as their commit
    time (``eventrelay_live_delivery_seconds``), read in one more range scan."""
    events = read_events(ref, after=after, limit=READ_PAGE)
    if live_after is None or not events or events[-1].offset <= live_after:
        return events
    stored = tables.stored_times(ref.name, after=max(after, live_after), up_to=events[-1].offset)
    return [
        event._replace(committed_at=stored.get(event.offset)) if event.offset > live_after else event
        for event in events
    ]


def _topic_head(topic_name: str) -> tuple[int, int]:
    row = topics_head(topic_name)
    if row is None:
        raise NotFound(f"topic '{topic_name}' does not exist", field="topic")
    return row


class LiveHub:
    """The feeds of one event loop (one per process in practice)."""

    def __init__(self) -> None:
        self.feeds: dict[str, TopicFeed] = {}
        self.closed = False

    async def feed(self, topic_name: str) -> TopicFeed:
        if self.closed:
            raise Unavailable("server is shutting down")
        feed = self.feeds.get(topic_name)
        if feed is None or feed.closed:
            feed = TopicFeed(self, topic_name)
            self.feeds[topic_name] = feed
            try:
                await feed.start()
            except BaseException:
                self.forget(feed)
                raise
        else:
            # Comes back closed if its starter was cancelled meanwhile: attach() then starts another.
            await asyncio.shield(feed.ready)
        return feed

    async def attach(self, ref: TopicRef) -> Subscription:
        """Attach a subscriber to the topic's running feed, starting one if needed.

        Taken at the moment of attaching, never earlier: a feed closes when its last subscriber
        leaves or the hub shuts down, and a subscriber attached to a closed feed would wait forever
        (one still replaying stored events when that happens must get a new feed, or ``Unavailable``).
        """
        while True:
            feed = await self.feed(ref.name)
            if not feed.closed:  # it may have closed while this coroutine waited for it to start
                return feed.attach(ref)

    async def watch(self, ref: TopicRef) -> Watcher:
        """A :class:`Watcher` on the topic's running feed (started if needed), the way :meth:`attach` does."""
        while True:
            feed = await self.feed(ref.name)
            if not feed.closed:
                return feed.watch(ref)

    def forget(self, feed: TopicFeed) -> None:
        if self.feeds.get(feed.topic_name) is feed:
            del self.feeds[feed.topic_name]

    async def close(self) -> None:
        """End every subscription (``Unavailable``: resume elsewhere by offset) and every feed."""
        self.closed = True
        feeds = list(self.feeds.values())
        for feed in feeds:
            feed.fail_all(Unavailable("server is shutting down; resubscribe from the last offset received + 1"))
        await asyncio.gather(*(feed.stop() for feed in feeds), return_exceptions=True)


hubs: PerLoop[LiveHub] = PerLoop(LiveHub)


def get_hub() -> LiveHub:
    return hubs.get()


class LiveEvents:
    """What :func:`subscribe` yields: the subscription's events, stored ones first, then live ones.

    Either iterate it (``async for``: one event at a time) or call :meth:`deliver` once, never both.
    """

    def __init__(self, hub: LiveHub, ref: TopicRef, from_offset: int | None, live_after: int | None) -> None:
        self._hub = hub
        self._ref = ref
        self._from_offset = from_offset
        self._live_after = live_after
        self.subscription: Subscription | None = None
        self._iterator = self._events()

    def __aiter__(self) -> "LiveEvents":
        return self

    async def __anext__(self) -> StoredEvent:
        return await self._iterator.__anext__()

    async def _replay(self) -> AsyncGenerator[list[StoredEvent]]:
        """Pages of stored events from ``from_offset`` (none without it), attaching to the feed on the way
        (``self.subscription``): once it is exhausted the subscription's live events follow the last page."""
        ref, live_after = self._ref, self._live_after
        if self._from_offset is None:
            self.subscription = await self._hub.attach(ref)
            return
        after = max(self._from_offset, 1) - 1
        # Catch up from the table without buffering live events, while far behind.
        while True:
            page = await run_sync(read_page, ref, after=after, live_after=live_after)
            if page:
                yield page
                after = page[-1].offset
            if len(page) < READ_PAGE:
                break
        # Near the head: attach, then replay what is left up to the attach point.
        subscription = self.subscription = await self._hub.attach(ref)
        subscription.delivered_through = after
        while after < subscription.live_from:
            page = await run_sync(read_page, ref, after=after, live_after=live_after)
            replay = [event for event in page if event.offset <= subscription.live_from]
            if replay:
                yield replay
                after = subscription.delivered_through = replay[-1].offset
            if len(replay) < READ_PAGE:
                break

    async def _events(self) -> AsyncGenerator[StoredEvent]:
        pages = self._replay()
        try:
            async for page in pages:
                for event in page:
                    yield event
        finally:
            await pages.aclose()
        assert self.subscription is not None
        while True:
            yield await self.subscription.next_event()

    async def deliver(self, sink: LiveSink) -> NoReturn:
        """Hand every event to ``sink`` (:data:`LiveSink`), the stored ones a page at a time, then each live batch
        straight from the feed's dispatch, until the subscription ends: raises what ended it (``SlowConsumer``,
        ``NotFound``, ``Unavailable``, or what ``sink`` raised)."""
        pages = self._replay()
        try:
            async for page in pages:
                sink(page)
        finally:
            await pages.aclose()
        assert self.subscription is not None
        await self.subscription.deliver_to(sink)

    async def aclose(self) -> None:
        await self._iterator.aclose()
        if self.subscription is not None:
            self.subscription.feed.detach(self.subscription)


@asynccontextmanager
async def subscribe(
    ref: TopicRef, from_offset: int | None = None, *, live_after: int | None = None
) -> AsyncIterator[LiveEvents]:
    """Live events of ``ref`` (authorization already checked by the caller).

    Without ``from_offset``: events committed from now on. With it: stored events from that offset,
    then live ones, each offset exactly once and in order. Iteration (or :meth:`LiveEvents.deliver`) raises
    ``SlowConsumer`` when the subscriber falls too far behind, ``NotFound`` when the topic is deleted and
    ``Unavailable`` when the server shuts down. ``live_after``: the topic's last offset when the reader
    subscribed; the events after it carry a commit time even when they are replayed (:func:`read_page`).
    """
    events = LiveEvents(get_hub(), ref, from_offset, live_after)
    try:
        yield events
    finally:
        await events.aclose()


@asynccontextmanager
async def watch(ref: TopicRef) -> AsyncIterator[Watcher]:
    """A :class:`Watcher` for ``ref`` for the duration of the block: set by every event committed to it from the
    moment this returns (authorization is the caller's), and by :func:`nudge`."""
    watcher = await get_hub().watch(ref)
    try:
        yield watcher
    finally:
        watcher.feed.detach(watcher)


async def nudge(topic_name: str) -> None:
    """Wake every :class:`Watcher` of the topic in every process: something other than a new event may now be
    worth reading (a consumer's events became available again). Never raises: a lost nudge only delays the
    watchers until their own timeout."""
    try:
        await get_channel_layer().group_send(group_name(topic_name), {"type": "topic.nudged", "topic": topic_name})
    except Exception:
        logger.warning("could not nudge the watchers of '%s'", topic_name, exc_info=True)
