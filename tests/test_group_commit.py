"""Group commit: concurrent publishes to one topic share transactions, and each caller still gets
exactly its own events with offsets as if it had published alone."""

import json
import threading
import uuid

import pytest
from django.db import connection

from eventrelay.errors import AlreadyExists
from events.services import store_batches
from events.validation import validate_batch
from tests.grpc_client import Client, unique_topic
from topics.refs import TopicRef


def test_a_group_stores_each_batch_in_order_and_refuses_only_the_conflicting_one(make_topic, admin):
    make_topic("orders")
    taken = str(uuid.uuid4())
    store_batches(
        "orders", [(TopicRef("orders", "1"), validate_batch([{"eventId": taken, "name": "a", "data": 1}]), "grpc")]
    )

    first = validate_batch([{"name": "b", "data": 2}, {"name": "c", "data": 3}])
    conflicting = validate_batch([{"name": "d", "data": 4}, {"eventId": taken, "name": "x", "data": 0}])
    last = validate_batch([{"name": "e", "data": 5}])
    results = store_batches(
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
    with connection.cursor() as cursor:
        cursor.execute('SELECT "offset", name FROM orders_events ORDER BY "offset"')
        assert cursor.fetchall() == [(1, "a"), (2, "b"), (3, "c"), (4, "e")]  # nothing of the refused batch


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
