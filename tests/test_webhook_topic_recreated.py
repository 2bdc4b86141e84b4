"""A topic deleted and created again starts from its first event for everyone (issue 17 item 1).

Offsets are per topic, so a topic created again under an old name reuses offsets 1, 2, 3... Whatever was keyed
by the name and an offset must end with the old topic: a webhook stream's cursor (which made offsets 1-3 of the
new topic look delivered, silently), and a live feed's cursor (which made them look like duplicates).
"""

import asyncio

import pytest

from eventrelay.db import run_sync
from eventrelay.errors import NotFound
from eventrelay.refs import TopicRef
from events import live
from events.services import publish, read_stream_events
from harness.processes import CeleryWorker, wait_until
from tests.grpc_client import unique_topic
from tests.webhook_processes import FAST_RECOVERY, broker_fixture, start_fixture  # noqa: F401 (fixtures)
from topics.services import create_topic, delete_topic
from webhooks import delivery
from webhooks.models import DeliveryAttempt, DeliveryStream, Destination, UndeliverableEvent
from webhooks.services import create_destination

WAIT = 15


def publish_tagged(admin, ref: str, tag: str, count: int) -> list[str]:
    """Publish ``count`` events whose data names ``tag`` (which topic they belong to); their eventIds."""
    events = [{"name": "n", "data": {"tag": tag, "n": n}} for n in range(count)]
    return [str(event.event_id) for event in publish(admin, ref, events, "grpc")]


def received_of(receiver, ref: str, tag: str) -> list[int]:
    return [r.offset for r in receiver.of(ref) if r.event["data"]["tag"] == tag and r.answered == "200"]


@pytest.mark.e2e
@pytest.mark.parametrize("scope", ["whole-topic", "one-topic-id"])
def test_a_topic_created_again_is_delivered_from_its_first_event(
    transactional_db, make_topic, receiver, allow_private, admin, broker, start, scope
):
    name = unique_topic("recreate")
    ref = name if scope == "whole-topic" else f"{name}:1"
    make_topic(name)
    destination = create_destination(name="recreate", url=receiver.url, topic=ref, max_attempts=3)
    start(CeleryWorker, env=FAST_RECOVERY, name="hooks_recreate_worker")
    publish_tagged(admin, ref, "old", 3)
    wait_until(lambda: received_of(receiver, ref, "old") == [1, 2, 3], 60, "offsets 1-3 of the old topic")

    delete_topic(name)
    create_topic(name)
    new_ids = publish_tagged(admin, ref, "new", 4)

    wait_until(lambda: 4 in received_of(receiver, ref, "new"), 60, "offset 4 of the new topic")
    assert received_of(receiver, ref, "new") == [1, 2, 3, 4]
    assert [r.event["eventId"] for r in receiver.of(ref) if r.event["data"]["tag"] == "new"] == new_ids
    [stream] = DeliveryStream.objects.filter(destination=destination)
    wait_until(lambda: DeliveryStream.objects.get(pk=stream.pk).last_offset == 4, 30, "the new stream's cursor")
    assert set(DeliveryAttempt.objects.filter(stream=stream).values_list("offset", flat=True)) == {1, 2, 3, 4}


@pytest.mark.django_db(transaction=True)
def test_deleting_a_topic_ends_its_streams_and_starts_its_destinations_over(make_topic, admin, allow_private):
    name = unique_topic("ends")
    make_topic(name)
    publish_tagged(admin, f"{name}:1", "old", 3)
    whole = create_destination(name="whole", url="http://127.0.0.1:9/hook", topic=name, start_offset=1)
    one = create_destination(name="one", url="http://127.0.0.1:9/hook", topic=f"{name}:1")
    delivery.discover_streams(whole)
    old_streams = list(DeliveryStream.objects.values_list("pk", flat=True))
    stream = DeliveryStream.objects.get(destination=one)
    event_id = read_stream_events(name, "1", after=0, limit=1)[0].event_id
    DeliveryAttempt.objects.create(stream=stream, event_id=event_id, offset=1, attempt=1)
    UndeliverableEvent.objects.create(stream=stream, event_id=event_id, offset=1, attempts=1)

    delete_topic(name)

    assert not DeliveryStream.objects.filter(pk__in=old_streams).exists()
    assert not DeliveryAttempt.objects.exists() and not UndeliverableEvent.objects.exists()
    assert list(Destination.objects.values_list("name", "start_offset", "scanned_offset")) == [
        ("one", 0, 0),
        ("whole", 0, 0),
    ]
    [(topic_id, last_offset)] = DeliveryStream.objects.values_list("topic_id", "last_offset")
    assert (topic_id, last_offset) == ("1", 0)


@pytest.mark.django_db(transaction=True)
def test_a_worker_whose_stream_was_deleted_mid_delivery_fails_cleanly_and_moves_no_new_cursor(
    make_topic, admin, receiver, allow_private, monkeypatch
):
    name = unique_topic("midway")
    make_topic(name)
    destination = create_destination(name="midway", url=receiver.url, topic=f"{name}:1")
    publish_tagged(admin, f"{name}:1", "old", 3)
    [old_stream] = DeliveryStream.objects.filter(destination=destination)
    post_event = delivery.post_event

    def delete_the_topic_while_offset_2_is_in_flight(destination, event):
        outcome = post_event(destination, event)
        if event.offset == 2:
            delete_topic(name)
            create_topic(name)
            publish_tagged(admin, f"{name}:1", "new", 3)
        return outcome

    monkeypatch.setattr(delivery, "post_event", delete_the_topic_while_offset_2_is_in_flight)

    assert delivery.deliver_stream(old_stream.pk) == "lease lost"

    assert not DeliveryStream.objects.filter(pk=old_stream.pk).exists()
    [new_stream] = DeliveryStream.objects.filter(destination=destination)
    assert (new_stream.last_offset, new_stream.lease_owner) == (0, "")
    assert not DeliveryAttempt.objects.exists()
    assert received_of(receiver, f"{name}:1", "new") == []
    monkeypatch.setattr(delivery, "post_event", post_event)
    assert delivery.deliver_stream(new_stream.pk) == "drained"
    assert received_of(receiver, f"{name}:1", "new") == [1, 2, 3]


# --- The live hub ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_live_subscription_of_a_deleted_topic_ends_and_never_gets_the_new_topics_events(
    make_topic, admin, settings, one_database_thread
):
    # No tick during the test: the feed must learn of the deletion from the deletion itself.
    settings.ER_LIVE_TICK_MS = 3_600_000
    name = unique_topic("relive")
    await run_sync(make_topic, name)
    async with live.subscribe(TopicRef(name)) as old_events:
        first = asyncio.ensure_future(anext(old_events))
        while not (name in live.get_hub().feeds and live.get_hub().feeds[name].subscriptions):
            await asyncio.sleep(0.01)
        await run_sync(publish_tagged, admin, name, "old", 3)
        assert (await asyncio.wait_for(first, WAIT)).offset == 1
        assert [(await asyncio.wait_for(anext(old_events), WAIT)).offset for _ in range(2)] == [2, 3]

        await run_sync(delete_topic, name)
        await run_sync(create_topic, name)
        new_ids = await run_sync(publish_tagged, admin, name, "new", 4)

        with pytest.raises(NotFound, match="deleted"):
            event = await asyncio.wait_for(anext(old_events), WAIT)
            pytest.fail(f"the old topic's subscription got offset {event.offset} of the new topic")

    async with live.subscribe(TopicRef(name), from_offset=1) as new_events:
        got = [await asyncio.wait_for(anext(new_events), WAIT) for _ in range(4)]
    assert [(e.offset, str(e.event_id)) for e in got] == list(zip([1, 2, 3, 4], new_ids, strict=True))
