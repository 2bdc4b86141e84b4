"""Group commit for the async transports (``events.services.apublish``): concurrent publishes to one topic
share one transaction.

Every publish to a topic must hold the topic's row lock from reading its counter to committing, so publishes
to one topic are serial in PostgreSQL and, one event per transaction, the commit (a WAL flush) is the
ceiling. Here the publishes that arrive while a transaction is in flight wait in a per-topic queue and all go
into the next transaction together: one lock, one COPY, one commit for the whole group, and each caller still
gets its own result (its events, in its order, with offsets as if it had published alone). The queue is per
process and per event loop; nothing relies on two requests reaching the same process.
"""

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field

from eventrelay import metrics
from eventrelay.db import run_sync
from eventrelay.loops import PerLoop
from events import live
from events.canonical import StoredEvent
from events.signals import send_committed
from events.storage import Batch, BatchResult, Stored, store_batches

logger = logging.getLogger(__name__)

# Most events one transaction takes from the queue (the rest wait for the next one).
MAX_GROUP_EVENTS = 5000


@dataclass(slots=True)
class Pending:
    """A caller's batch, waiting for a transaction, and the future its result goes to."""

    batch: Batch
    result: "asyncio.Future[list[StoredEvent]]"

    def settle(self, outcome: BatchResult | BaseException) -> None:
        if self.result.done():
            return  # the caller went away (cancelled); its events are stored all the same
        if isinstance(outcome, BaseException):
            self.result.set_exception(outcome)
        else:
            self.result.set_result(outcome)


def _store_and_signal(topic_name: str, batches: list[Batch]) -> Stored:
    """In the storing thread: store the group, then (committed) tell the log's followers, which may read the
    database, from this thread rather than the event loop."""
    stored = store_batches(topic_name, batches)
    if stored.new_events:
        _count_published(topic_name, batches, stored.new_events)
        send_committed(topic_name, stored.new_events)
    return stored


def _count_published(topic_name: str, batches: list[Batch], new_events: list[StoredEvent]) -> None:
    """Count a committed group by source: once for the whole group when its batches share one (the usual case: a
    process's async publishes come from one transport), else per source."""
    sources = {batch.source for batch in batches}
    if len(sources) == 1:
        metrics.count_published(topic_name, sources.pop(), len(new_events))
        return
    for source, count in Counter(event.source for event in new_events).items():
        metrics.count_published(topic_name, source, count)


@dataclass
class TopicCommitter:
    topic_name: str
    queue: list[Pending] = field(default_factory=list)
    draining: bool = False

    def enqueue(self, batch: Batch) -> "asyncio.Future[list[StoredEvent]]":
        pending = Pending(batch, asyncio.get_running_loop().create_future())
        self.queue.append(pending)
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return pending.result

    async def _drain(self) -> None:
        try:
            while self.queue:
                group = self._take_group()
                try:
                    stored = await run_sync(_store_and_signal, self.topic_name, [pending.batch for pending in group])
                except BaseException as error:  # the whole group failed (topic gone, database down, cancelled)
                    for pending in group:
                        pending.settle(error)
                    if not isinstance(error, Exception):
                        raise
                    continue
                if stored.new_events:
                    # Before the callers are answered, not while (docs/benchmarks.md, "group commit").
                    await live.announce(self.topic_name, stored.new_events)
                for pending, result in zip(group, stored.results, strict=True):
                    pending.settle(result)
        finally:
            self.draining = False

    def _take_group(self) -> list[Pending]:
        group: list[Pending] = []
        size = 0
        while self.queue and (not group or size + len(self.queue[0].batch.events) <= MAX_GROUP_EVENTS):
            pending = self.queue.pop(0)
            group.append(pending)
            size += len(pending.batch.events)
        return group


# Each event loop's committers, by topic name.
committers: PerLoop[dict[str, TopicCommitter]] = PerLoop(dict)


async def submit(batch: Batch) -> list[StoredEvent]:
    """Store ``batch`` (already authorized) in the next transaction of its topic; its events or its error."""
    return await enqueue(batch)


def enqueue(batch: Batch) -> "asyncio.Future[list[StoredEvent]]":
    """:func:`submit` for a caller that does not wait (a pipelining stream): the batch is in its topic's queue
    when this returns, so batches one caller enqueues one after another are stored in that order; the future
    gets its events or its error. Cancelling the future only drops the answer: the batch is stored all the same."""
    topics = committers.get()
    committer = topics.get(batch.ref.name)
    if committer is None:
        committer = topics[batch.ref.name] = TopicCommitter(batch.ref.name)
    return committer.enqueue(batch)
