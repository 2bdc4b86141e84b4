"""The live hub's synchronous sinks (``LiveEvents.deliver``), which the WebSocket fan-out writes frames from, and the
WebSocket consumer's ``FrameSink`` (real PostgreSQL and Redis pub/sub for the hub)."""

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import pytest

from eventrelay.auth import Principal
from eventrelay.db import run_sync
from eventrelay.errors import SlowConsumer
from eventrelay.refs import TopicRef
from events import live
from events.canonical import StoredEvent, canonical_json
from events.services import publish
from tests.grpc_client import unique_topic
from topics.models import Topic
from ws_api.consumers import FrameSink

pytestmark = pytest.mark.usefixtures("one_database_thread")

WAIT = 15  # seconds; far longer than a delivery takes, short enough to fail rather than hang


async def publish_many(admin: Principal, topic: str, count: int) -> list[StoredEvent]:
    return await run_sync(publish, admin, topic, [{"name": "n", "data": n} for n in range(count)], "http")


@pytest.fixture
async def topic(make_topic: Callable[[str], Topic]) -> str:
    name = unique_topic("sink")
    await run_sync(make_topic, name)
    return name


class Recorder:
    """A sink keeping every batch it is handed, optionally raising on the n-th call."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.batches: list[Sequence[StoredEvent]] = []
        self.fail_on_call = fail_on_call

    def __call__(self, events: Sequence[StoredEvent]) -> None:
        if self.fail_on_call is not None and len(self.batches) + 1 == self.fail_on_call:
            raise SlowConsumer("told to fail")
        self.batches.append(events)

    @property
    def offsets(self) -> list[int]:
        return [event.offset for batch in self.batches for event in batch]


async def until(condition: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), WAIT)


async def test_a_sink_gets_the_replay_then_live_events_each_once_in_order_while_publishing_goes_on(
    topic: str, admin: Principal
) -> None:
    for _ in range(2):  # more than one replay page
        await publish_many(admin, topic, 750)
    sink = Recorder()
    async with live.subscribe(TopicRef(topic), from_offset=1) as events:
        delivering = asyncio.ensure_future(events.deliver(sink))
        for _ in range(5):  # published while the replay runs and after it
            await publish_many(admin, topic, 40)
        await until(lambda: len(sink.offsets) >= 1700)
        delivering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await delivering
    assert sink.offsets == list(range(1, 1701))


async def test_every_sink_of_a_topic_is_handed_the_same_batch_and_one_failing_ends_only_its_own(
    topic: str, admin: Principal
) -> None:
    healthy, failing = Recorder(), Recorder(fail_on_call=2)
    async with (
        live.subscribe(TopicRef(topic)) as first,
        live.subscribe(TopicRef(topic)) as second,
    ):
        delivering = [asyncio.ensure_future(first.deliver(healthy)), asyncio.ensure_future(second.deliver(failing))]
        await until(
            lambda: bool(live.get_hub().feeds.get(topic) and len(live.get_hub().feeds[topic].subscriptions) == 2)
        )
        await publish_many(admin, topic, 3)
        await until(lambda: len(healthy.offsets) == 3)
        await publish_many(admin, topic, 2)
        with pytest.raises(SlowConsumer, match="told to fail"):
            await asyncio.wait_for(delivering[1], WAIT)
        await publish_many(admin, topic, 2)
        await until(lambda: len(healthy.offsets) == 7)
        delivering[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await delivering[0]
    assert healthy.offsets == list(range(1, 8))
    assert failing.offsets == [1, 2, 3]
    # One notification, one batch object for every subscription of the whole topic: what lets a transport encode
    # an event's frame once for all of them.
    assert failing.batches[0] is healthy.batches[0]


class RecordingWriter:
    """A connection that never drains: its backlog is everything written to it (how a client that stopped reading
    looks to the server once the kernel's buffers are full)."""

    usable = True

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    @staticmethod
    def encode(text: str) -> bytes:
        return text.encode()

    def write(self, frames: bytes) -> bool:
        self.writes.append(frames)
        return True

    def backlog(self) -> int:
        return sum(map(len, self.writes))


async def test_a_frame_sink_sends_while_the_backlog_is_within_the_limit_then_ends_with_the_last_offset_sent(
    topic: str, admin: Principal
) -> None:
    events = await publish_many(admin, topic, 10)
    frame_bytes = len(f'{{"type":"event","topic":"{topic}","event":{canonical_json(events[0])}}}'.encode())
    writer = RecordingWriter()
    # Room for 3 frames past the limit's check: the 4th event is due with more than the limit unsent.
    sink = FrameSink(topic, writer, limit=3 * frame_bytes - 1)
    sink(events[:2])
    assert len(writer.writes) == 1  # two frames, one write
    with pytest.raises(SlowConsumer):
        sink(events[2:])
    assert sink.last_sent == 3
    assert b"".join(writer.writes).count(b'"type":"event"') == 3
    sink.stopped = True
    sink(events[3:])  # a stopped sink sends nothing
    assert sink.last_sent == 3


async def test_a_frame_sink_handed_one_event_at_a_time_applies_the_same_limit(topic: str, admin: Principal) -> None:
    events = await publish_many(admin, topic, 5)
    frame_bytes = len(f'{{"type":"event","topic":"{topic}","event":{canonical_json(events[0])}}}'.encode())
    writer = RecordingWriter()
    sink = FrameSink(topic, writer, limit=2 * frame_bytes - 1)
    sink(events[0:1])
    sink(events[1:2])  # due with one frame unsent: within the limit
    with pytest.raises(SlowConsumer):
        sink(events[2:3])  # due with two frames unsent
    assert sink.last_sent == 2
    assert len(writer.writes) == 2
