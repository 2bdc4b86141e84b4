"""The tables of events in flight stay the size of what is in flight, with autovacuum off (as on this machine):
acks leave dead rows, and beat's vacuum makes their space reusable."""

import pytest
from django.db import connection

from consumers import services, vacuum
from consumers.tasks import vacuum_pending
from events.services import publish

pytestmark = pytest.mark.django_db(transaction=True)


def table_bytes() -> int:
    """The pending and batch tables' rows on disk. (Not their indexes: an emptied index page is reused only once
    no transaction of any database on the server is older than its deletion, so under other work it lags a
    vacuum.)"""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_relation_size(%s::regclass) + pg_relation_size(%s::regclass)", [vacuum.PENDING, vacuum.BATCHES]
        )
        return int(cursor.fetchone()[0])


def consume_everything(admin, topic: str) -> None:
    """Each batch acked in two halves: the first ack deletes the batch's row and leaves a pending row for each
    event of the second half, which the second ack deletes (both tables churn)."""
    while deliveries := services.fetch(admin, topic, "billing", 500):
        ack_ids = [delivery.ack_id for delivery in deliveries]
        services.ack(admin, topic, "billing", ack_ids[: len(ack_ids) // 2])
        services.ack(admin, topic, "billing", ack_ids[len(ack_ids) // 2 :])


def a_round(admin, topic: str, count: int = 5000) -> None:
    """Publish ``count`` events and consume them all."""
    for start in range(0, count, 1000):
        publish(admin, topic, [{"name": "paid", "data": n} for n in range(start, start + 1000)], "http")
    consume_everything(admin, topic)


def stats_now() -> None:
    """The table statistics as of now: this backend's counts flushed, and its snapshot of them dropped."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
    with connection.cursor() as cursor:  # (a statement later: the flush happens when the previous one ends)
        cursor.execute("SELECT pg_stat_clear_snapshot()")


@pytest.fixture
def billing(admin, make_topic) -> str:
    make_topic("orders")
    services.create_consumer(admin, "orders", "billing", {})
    return "orders"


def test_with_beats_vacuum_between_rounds_the_table_stops_growing(admin, billing, settings) -> None:
    settings.ER_CONSUMER_VACUUM_DEAD_ROWS = 1000
    sizes = []
    for _ in range(4):
        a_round(admin, billing)
        stats_now()
        assert vacuum.dead_rows() >= 2500
        assert vacuum_pending() is True
        stats_now()
        assert vacuum.dead_rows() == 0
        sizes.append(table_bytes())
    # Each round's rows go where an earlier round's were, where without the vacuum each round adds what the first
    # took (the test below).
    assert sizes[3] <= sizes[1], sizes


def test_below_the_threshold_nothing_is_vacuumed_and_every_round_adds_to_the_table(admin, billing, settings) -> None:
    settings.ER_CONSUMER_VACUUM_DEAD_ROWS = 10**9
    sizes = []
    for _ in range(3):
        a_round(admin, billing)
        assert vacuum_pending() is False
        sizes.append(table_bytes())
    stats_now()
    assert vacuum.dead_rows() >= 7500
    assert sizes[0] < sizes[1] < sizes[2], sizes
