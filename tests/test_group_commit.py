"""Group commit: concurrent publishes to one topic share transactions, and each caller still gets
exactly its own events with offsets as if it had published alone."""

import asyncio
import json
import logging
import threading
import uuid

import pytest
from django.db import connection
from django.test import override_settings

from eventrelay.errors import AlreadyExists, InvalidInput, TooLarge
from eventrelay.refs import TopicRef
from events import group_commit
from events.services import apublish
from events.signals import events_committed
from events.validation import EventsToValidate, validate_batch
from tests.grpc_client import Client, unique_topic
from tests.helpers import in_a_fresh_loop, store, stored_rows


def test_a_group_stores_each_batch_in_order_and_refuses_only_the_conflicting_one(make_topic, admin):
    make_topic("orders")
    taken = str(uuid.uuid4())
    store("orders", [(TopicRef("orders", "1"), validate_batch([{"eventId": taken, "name": "a", "data": 1}]), "grpc")])

    first = validate_batch([{"name": "b", "data": 2}, {"name": "c", "data": 3}])
    conflicting = validate_batch([{"name": "d", "data": 4}, {"eventId": taken, "name": "x", "data": 0}])
    last = validate_batch([{"name": "e", "data": 5}])
    results = store(
        "orders",
        [
            (TopicRef("orders", "2"), first, "grpc"),
            (TopicRef("orders", "2"), conflicting, "grpc"),
            (TopicRef("orders", "3"), last, "http"),
        ],
    )

    assert [event.offset for event in results[0]] == [2, 3]
    assert isinstance(results[1], AlreadyExists)
    assert [(event.offset, event.topic, event.source) for event in results[2]] == [(4, "orders:3", "http")]
    assert stored_rows("orders") == [(1, "a"), (2, "b"), (3, "c"), (4, "e")]  # nothing of the refused batch


def test_an_invalid_event_found_after_its_batch_was_partly_sent_refuses_only_that_batch(make_topic):
    # Events are validated as they are written to the COPY: 800 events of 1 KB go to PostgreSQL
    # before the invalid 801st is reached. Its batch must leave no row and no offset behind.
    make_topic("orders")
    ref = TopicRef("orders", "1")
    before = EventsToValidate([{"name": "before", "data": n} for n in range(3)])
    refused = EventsToValidate([{"name": "sent", "data": "x" * 1000} for _ in range(800)] + [{"name": "", "data": 1}])
    after = EventsToValidate([{"name": "after", "data": n} for n in range(2)])

    results = store("orders", [(ref, before, "grpc"), (ref, refused, "grpc"), (ref, after, "http")])

    assert isinstance(results[1], InvalidInput)
    assert results[1].field == "events[800].name"
    assert [event.offset for event in results[0]] == [1, 2, 3]
    assert [event.offset for event in results[2]] == [4, 5]
    assert stored_rows("orders") == [(1, "before"), (2, "before"), (3, "before"), (4, "after"), (5, "after")]


@override_settings(ER_MAX_REQUEST_BYTES=100_000)
def test_a_batch_found_too_large_only_after_its_last_event_is_refused_whole(make_topic):
    make_topic("orders")
    ref = TopicRef("orders", "1")
    too_large = EventsToValidate([{"name": "big", "data": "x" * 1000} for _ in range(101)])
    fits = EventsToValidate([{"name": "small", "data": 1}])

    results = store("orders", [(ref, too_large, "grpc"), (ref, fits, "grpc")])

    assert isinstance(results[0], TooLarge)
    assert "at most 100000" in results[0].message
    assert [event.offset for event in results[1]] == [1]
    assert stored_rows("orders") == [(1, "small")]


def test_a_group_with_an_invalid_batch_and_a_republished_event_id_stores_the_rest_once(make_topic):
    make_topic("orders")
    ref = TopicRef("orders", "1")
    taken = str(uuid.uuid4())
    [[original]] = store("orders", [(ref, EventsToValidate([{"eventId": taken, "name": "a", "data": 1}]), "grpc")])

    republished = EventsToValidate([{"name": "b", "data": 2}, {"eventId": taken, "name": "a", "data": 1}])
    invalid = EventsToValidate([{"name": "c", "data": 3}, {"name": "c", "data": {}, "offset": 9}])
    fresh = EventsToValidate([{"name": "d", "data": 4}])
    results = store("orders", [(ref, republished, "grpc"), (ref, invalid, "grpc"), (ref, fresh, "grpc")])

    assert [(event.offset, event.name) for event in results[0]] == [(2, "b"), (1, "a")]
    assert results[0][1].event_id == original.event_id
    assert isinstance(results[1], InvalidInput) and results[1].field == "events[1].offset"
    assert [(event.offset, event.name) for event in results[2]] == [(3, "d")]
    assert stored_rows("orders") == [(1, "a"), (2, "b"), (3, "d")]


def test_a_failure_after_the_commit_does_not_turn_stored_events_into_an_error(
    transactional_db, make_topic, admin, caplog
):
    make_topic("orders")

    def broken_receiver(**kwargs):
        raise RuntimeError("receiver broke")

    async def publish():
        try:
            return await apublish(admin, "orders", [{"name": "a", "data": 1}], "grpc")
        finally:
            await _drained("orders")

    events_committed.connect(broken_receiver, dispatch_uid="test.broken")
    try:
        with caplog.at_level(logging.ERROR, logger="events.signals"):
            stored = in_a_fresh_loop(publish)
    finally:
        events_committed.disconnect(dispatch_uid="test.broken")
    assert [event.offset for event in stored] == [1]
    assert stored_rows("orders") == [(1, "a")]
    assert "receiver broke" in caplog.text and "after committing to 'orders'" in caplog.text


def test_a_group_committed_publish_is_announced_to_the_live_hub_once(transactional_db, make_topic, admin):
    # Announced from the committer's event loop, and only from there.
    from channels.layers import get_channel_layer

    from events.live import group_name

    make_topic("orders")

    async def notifications_of_one_publish():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(group_name("orders"), channel)
        try:
            await apublish(admin, "orders", [{"name": "a", "data": 1}, {"name": "b", "data": 2}], "grpc")
            received = [await asyncio.wait_for(layer.receive(channel), 5)]
            # The next message is a later publish's: a second announcement of the first would have come before it.
            await apublish(admin, "orders", [{"name": "c", "data": 3}], "grpc")
            received.append(await asyncio.wait_for(layer.receive(channel), 5))
            return received
        finally:
            await layer.group_discard(group_name("orders"), channel)
            await _drained("orders")

    received = in_a_fresh_loop(notifications_of_one_publish)
    assert [(message["first"], message["last"]) for message in received] == [(1, 2), (3, 3)]


async def _drained(topic: str) -> None:
    """Until the topic's committer has finished its work in this event loop (at most 10 s)."""
    committer = group_commit.committers.get().get(topic)
    for _ in range(1000):
        if committer is None or not committer.draining:
            return
        await asyncio.sleep(0.01)


@pytest.mark.e2e
def test_concurrent_single_event_publishes_share_commits_over_grpc(admin_client, grpc_server):
    topic = unique_topic("grouped")
    admin_client.create_topic(topic)
    callers, per_caller = 32, 20
    results: dict[int, list] = {n: [] for n in range(callers)}

    def caller(n: int) -> None:
        client = Client(grpc_server.address, admin_client.metadata[0][1].removeprefix("Bearer "))
        for i in range(per_caller):
            [event] = client.publish(f"{topic}:{n}", {"caller": n, "i": i})
            results[n].append(event)
        client.close()

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    everything = [event for events in results.values() for event in events]
    assert sorted(event.offset for event in everything) == list(range(1, callers * per_caller + 1))
    for n, events in results.items():
        assert [json.loads(event.data) for event in events] == [{"caller": n, "i": i} for i in range(per_caller)]
        assert [event.offset for event in events] == sorted(event.offset for event in events)
        assert {event.topic for event in events} == {f"{topic}:{n}"}
    # One INSERT statement per transaction, and stored_at is the statement's timestamp: fewer distinct
    # values than calls means calls shared transactions.
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(DISTINCT stored_at), count(*) FROM "{topic}_events"')
        transactions, rows = cursor.fetchone()
    assert rows == callers * per_caller
    assert transactions < rows
