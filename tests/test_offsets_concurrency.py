"""Offsets are gapless and committed in order, so a reader polling "offset > last" misses nothing.

The second test shows why this needs the topic row lock: with a BIGSERIAL, ids are taken at insert
time but become visible at commit time, so the same reader skips an offset for ever.
"""

import random
import threading
import time
from collections.abc import Callable

from django.db import connection, connections, transaction

from eventrelay.refs import TopicRef
from events.services import publish, read_events

PUBLISHERS = 8
BATCHES_PER_PUBLISHER = 30


def follow(read_after: Callable[[int], list[int]], publishers_done: threading.Event) -> list[int]:
    """Poll like a consumer: ask for offsets > last seen until publishing is over and drained."""
    seen: list[int] = []
    last = 0
    while True:
        finished = publishers_done.is_set()  # read before the poll, so the final poll sees everything
        batch = read_after(last)
        seen.extend(batch)
        if batch:
            last = batch[-1]
        elif finished:
            return seen


def assert_gapless(seen: list[int], total: int) -> None:
    assert len(seen) == len(set(seen)), "an offset was seen twice"
    assert seen == sorted(seen), "offsets arrived out of order"
    missing = sorted(set(range(1, total + 1)) - set(seen))
    assert not missing, f"the reader never saw offsets {missing[:10]}"
    assert seen == list(range(1, total + 1))


def test_concurrent_publishers_never_let_a_polling_reader_miss_an_offset(transactional_db, make_topic, admin):
    make_topic("load")
    published = [0] * PUBLISHERS
    start = threading.Barrier(PUBLISHERS + 1)
    publishers_done = threading.Event()
    errors: list[BaseException] = []

    def publisher(number: int) -> None:
        rng = random.Random(number)
        try:
            start.wait()
            for batch_number in range(BATCHES_PER_PUBLISHER):
                size = rng.randint(1, 40)
                events = [{"name": "tick", "data": {"p": number, "b": batch_number, "i": i}} for i in range(size)]
                publish(admin, f"load:{number}", events, "grpc")
                published[number] += size
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    def read_after(last: int) -> list[int]:
        return [event.offset for event in read_events(TopicRef("load"), after=last, limit=1000)]

    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(PUBLISHERS)]
    for thread in threads:
        thread.start()
    result: list[list[int]] = []
    reader = threading.Thread(target=lambda: (result.append(follow(read_after, publishers_done)), connection.close()))
    reader.start()
    start.wait()
    for thread in threads:
        thread.join()
    publishers_done.set()
    reader.join()

    assert not errors, errors
    assert_gapless(result[0], sum(published))


def test_the_same_reader_misses_an_offset_on_a_bigserial_design(transactional_db):
    """Control experiment: the polling check above really detects the BIGSERIAL anomaly."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bigserial_demo (id BIGSERIAL PRIMARY KEY, payload INT)")
    try:
        first_inserted, second_committed, first_may_commit = threading.Event(), threading.Event(), threading.Event()

        def slow_publisher() -> None:
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute("INSERT INTO bigserial_demo (payload) VALUES (1)")  # takes id 1
                    first_inserted.set()
                    first_may_commit.wait(10)
            finally:
                connection.close()

        def fast_publisher() -> None:
            first_inserted.wait(10)
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute("INSERT INTO bigserial_demo (payload) VALUES (2)")  # takes id 2, commits first
            finally:
                connection.close()
            second_committed.set()

        publishers_done = threading.Event()
        polls = 0

        def read_after(last: int) -> list[int]:
            nonlocal polls
            polls += 1
            if polls == 2:
                first_may_commit.set()  # the slow publisher commits id 1 after the reader moved past it
                slow.join()
                publishers_done.set()
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT id FROM bigserial_demo WHERE id > %s ORDER BY id", [last])
                return [row[0] for row in cursor.fetchall()]

        slow = threading.Thread(target=slow_publisher)
        fast = threading.Thread(target=fast_publisher)
        slow.start()
        fast.start()
        second_committed.wait(10)
        time.sleep(0.05)
        seen = follow(read_after, publishers_done)
        fast.join()

        try:
            assert_gapless(seen, 2)
        except AssertionError as failure:
            assert "never saw offsets [1]" in str(failure)
        else:
            raise AssertionError(f"a BIGSERIAL reader saw {seen}; the check above would not catch the anomaly")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS bigserial_demo")
