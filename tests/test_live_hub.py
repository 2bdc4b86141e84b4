"""The live hub in this process (real PostgreSQL, real Redis pub/sub): a subscriber still replaying
stored events when its topic's feed closes must not end up attached to the closed feed."""

import asyncio
import contextlib
from collections.abc import Callable

import pytest

from eventrelay.auth import Principal
from eventrelay.db import run_sync
from eventrelay.errors import Unavailable
from eventrelay.refs import TopicRef
from events import live
from events.canonical import StoredEvent
from events.services import publish
from tests.grpc_client import unique_topic
from topics.models import Topic

# The hub reads from its own threads' connections (conftest's one_database_thread).
pytestmark = pytest.mark.usefixtures("one_database_thread")

WAIT = 15  # seconds; far longer than a delivery takes, short enough to fail rather than hang


async def publish_one(admin: Principal, topic: str, n: int) -> StoredEvent:
    [stored] = await run_sync(publish, admin, topic, [{"name": "n", "data": n}], "http")
    return stored


@pytest.fixture
async def topic(make_topic: Callable[[str], Topic], admin: Principal) -> str:
    """A new topic holding one event, at offset 1."""
    name = unique_topic("hub")
    await run_sync(make_topic, name)
    await publish_one(admin, name, 1)
    return name


async def until_attached(topic: str) -> None:
    hub = live.get_hub()
    while not (topic in hub.feeds and hub.feeds[topic].subscriptions):
        await asyncio.sleep(0.01)


async def test_a_subscriber_replaying_when_the_last_live_subscriber_leaves_still_gets_live_events(
    topic: str, admin: Principal
) -> None:
    async with live.subscribe(TopicRef(topic), from_offset=1) as replaying:
        async with live.subscribe(TopicRef(topic)) as live_events:
            # A live subscriber starts the topic's feed...
            waiting = asyncio.ensure_future(anext(live_events))
            await asyncio.wait_for(until_attached(topic), WAIT)
            # ...a second one is replaying offset 1 from the table, not attached yet...
            assert (await asyncio.wait_for(anext(replaying), WAIT)).offset == 1
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
        # ...when the live one leaves: the feed has no subscriber left and closes.
        assert topic not in live.get_hub().feeds

        await publish_one(admin, topic, 2)
        assert (await asyncio.wait_for(anext(replaying), WAIT)).offset == 2
        await publish_one(admin, topic, 3)
        assert (await asyncio.wait_for(anext(replaying), WAIT)).offset == 3


async def test_a_subscriber_replaying_when_the_server_shuts_down_is_told_to_resume_elsewhere(
    topic: str, admin: Principal
) -> None:
    async with live.subscribe(TopicRef(topic), from_offset=1) as replaying:
        assert (await asyncio.wait_for(anext(replaying), WAIT)).offset == 1
        await live.get_hub().close()
        with pytest.raises(Unavailable, match="shutting down"):
            await asyncio.wait_for(anext(replaying), WAIT)
