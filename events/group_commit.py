"""Group commit for the async transports (gRPC, WebSocket): concurrent publishes to one topic share
one transaction.

Every publish to a topic must hold the topic's row lock from reading its counter to committing, so
publishes to one topic are serial in PostgreSQL and, one event per transaction, the commit (a WAL
flush) is the ceiling. Here the publishes that arrive while a transaction is in flight wait in a
per-topic queue and all go into the next transaction together: one lock, one INSERT, one commit for
the whole group, and each caller still gets its own result (its events, in its order, with offsets
as if it had published alone). The queue is per process and per event loop; nothing relies on two
requests reaching the same process.
"""

import asyncio
import logging
from typing import Any

from eventrelay.auth import Principal, require_write
from eventrelay.db import run_sync
from eventrelay.errors import EventRelayError
from eventrelay.refs import TopicRef
from events import live
from events.canonical import StoredEvent
from events.services import Batch, BatchResult, store_batches
from events.validation import EventsToValidate, EventValidator

logger = logging.getLogger(__name__)

# Most events one transaction takes from the queue (the rest wait for the next one).
MAX_GROUP_EVENTS = 5000


# A caller's batch and the future its result goes to.
Pending = tuple[Batch, "asyncio.Future[list[StoredEvent]]"]


def _settle(group: list[Pending], results: list[BatchResult]) -> None:
    for (_, future), result in zip(group, results, strict=True):
        if future.done():
            continue  # the caller went away (cancelled); its events are stored all the same
        if isinstance(result, EventRelayError):
            future.set_exception(result)
        else:
            future.set_result(result)


class TopicCommitter:
    def __init__(self, topic_name: str) -> None:
        self.topic_name = topic_name
        self.queue: list[Pending] = []
        self.draining = False

    async def submit(self, batch: Batch) -> list[StoredEvent]:
        future: asyncio.Future[list[StoredEvent]] = asyncio.get_running_loop().create_future()
        self.queue.append((batch, future))
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.queue:
                group = self._take_group()
                committed: list[tuple[list[BatchResult], list[StoredEvent]]] = []
                try:
                    await run_sync(
                        store_batches,
                        self.topic_name,
                        [batch for batch, _ in group],
                        lambda results, new_events, committed=committed: committed.append((results, new_events)),
                        live_announced=True,
                    )
                    # The live hub is told from here rather than from the storing thread (fewer
                    # hand-offs), and before the callers are answered, not while: twice measured,
                    # answering first was followed by this process's stream fan-out falling
                    # seconds behind (not understood yet; see docs/benchmarks.md).
                    if committed[0][1]:
                        await live.announce(self.topic_name, committed[0][1])
                except BaseException as error:
                    if committed:  # stored: a failure after the commit is not the callers'
                        logger.error("after committing to '%s'", self.topic_name, exc_info=error)
                        _settle(group, committed[0][0])
                    else:  # the whole group failed (topic gone, database down)
                        for _, future in group:
                            if not future.done():
                                future.set_exception(error)
                    if not isinstance(error, Exception):
                        raise
                    continue
                _settle(group, committed[0][0])
        finally:
            self.draining = False

    def _take_group(self) -> list[Pending]:
        group, size = [], 0
        while self.queue and (not group or size + len(self.queue[0][0][1]) <= MAX_GROUP_EVENTS):
            item = self.queue.pop(0)
            group.append(item)
            size += len(item[0][1])
        return group


_committers: dict[tuple[int, str], TopicCommitter] = {}


async def publish(
    principal: Principal,
    topic_ref: TopicRef | str,
    raw_events: Any,
    source: str,
    validator: EventValidator | None = None,
) -> list[StoredEvent]:
    """The async ``events.services.publish``: same validation and authorization, group-committed.

    The events are validated in the transaction's thread as they are written (``EventsToValidate``,
    with ``validator`` for items that are not dicts); an invalid one refuses this caller's batch
    alone, the rest of the group is stored."""
    ref = topic_ref if isinstance(topic_ref, TopicRef) else TopicRef.parse(topic_ref)
    require_write(principal, ref)
    new_events = EventsToValidate(raw_events, validator)
    key = (id(asyncio.get_running_loop()), ref.name)
    committer = _committers.get(key)
    if committer is None:
        committer = _committers[key] = TopicCommitter(ref.name)
    return await committer.submit((ref, new_events, source))
