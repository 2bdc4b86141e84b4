"""Two deployments (or two test workers) sharing one Redis keep apart through ER_REDIS_PREFIX: Redis's database
numbers do not separate pub/sub channels, so without it one would hear the other's live notifications."""

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
import redis
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings

from eventrelay import ratelimit
from events.canonical import StoredEvent
from events.live import announce, group_name


def a_stored_event(offset: int) -> StoredEvent:
    return StoredEvent(
        offset=offset,
        event_id=uuid.uuid4(),
        name="created",
        topic_name="orders",
        topic_id="",
        source="test",
        user_id=None,
        event_occurred_at=datetime.now(UTC),
        context_json="{}",
        data_json="1",
    )


async def test_a_live_notification_is_heard_under_its_own_prefix_only() -> None:
    ours = RedisPubSubChannelLayer(hosts=[settings.REDIS_URL], prefix=f"{settings.ER_REDIS_PREFIX}:live")
    another = RedisPubSubChannelLayer(hosts=[settings.REDIS_URL], prefix="another-deployment:live")
    try:
        channels = {}
        for label, layer in (("ours", ours), ("another", another)):
            channels[label] = await layer.new_channel()
            await layer.group_add(group_name("orders"), channels[label])
        await announce("orders", [a_stored_event(1)])
        heard = await asyncio.wait_for(ours.receive(channels["ours"]), 5)
        assert heard["topic"] == "orders"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(another.receive(channels["another"]), 1)
    finally:
        await ours.flush()
        await another.flush()


def test_rate_limit_and_hold_keys_start_with_the_prefix(settings_prefix: str) -> None:
    client = redis.Redis.from_url(settings.ER_RATE_LIMIT_REDIS_URL)
    ratelimit.hold("destination-7", 5)
    assert client.pttl(f"{settings_prefix}:hold:destination-7") > 0
    assert client.pttl("er:hold:destination-7") == -2  # (no such key under the default prefix)
    assert ratelimit.held_for("destination-7") > 0
    client.delete(f"{settings_prefix}:hold:destination-7")


@pytest.fixture
def settings_prefix(settings: object) -> str:
    settings.ER_REDIS_PREFIX = "prefix-test"  # type: ignore[attr-defined]
    return "prefix-test"
