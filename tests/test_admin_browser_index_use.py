"""The admin event browser stays fast on a topic of 1,000,000 events: every query it runs (each
filter, pagination by offset, the dashboard's events-since count) is an index scan, never a full
table scan or a COUNT(*)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from events.browser import BrowserFilters, browse_queryset, event_model

ROWS = 1_000_000


@pytest.fixture(scope="module")
def million(django_db_setup, django_db_blocker):
    """One topic with a million events, built once for the module (and dropped after it)."""
    from topics.services import create_topic, delete_topic

    with django_db_blocker.unblock():
        topic = create_topic("million")
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO million_events ("offset", event_id, name, topic_id, source, user_id, event_occurred_at,
                                            stored_at, context, data)
                SELECT n, gen_random_uuid(), 'name_' || (n %% 200), (n %% 10000)::text, 'grpc', 'user_' || (n %% 50000),
                       now() - ((%s - n) || ' seconds')::interval, now() - ((%s - n) || ' seconds')::interval,
                       '{}', '{"n": 1}'
                FROM generate_series(1, %s) AS n
                """,
                [ROWS, ROWS, ROWS],
            )
            cursor.execute("UPDATE topics_topic SET last_offset = %s WHERE name = 'million'", [ROWS])
            cursor.execute("ANALYZE million_events")
        topic.refresh_from_db()
        yield topic
        delete_topic("million")


def plan_of(queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def page_plan(topic, **filters) -> str:
    return plan_of(browse_queryset(topic, BrowserFilters(**filters))[:51])


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({}, "million_events_pkey"),
        ({"before": 400_000}, "million_events_pkey"),
        ({"name": "name_7"}, "million_ev_name_off"),
        ({"name": "name_7", "before": 500_000}, "million_ev_name_off"),
        ({"topic_id": "42"}, "million_ev_tid_off"),
        ({"user_id": "user_42"}, "million_ev_uid_off"),
    ],
)
def test_each_browser_filter_is_an_index_scan(million, db, filters, index):
    plan = page_plan(million, **filters)

    assert index in plan, plan
    assert "Seq Scan" not in plan, plan


def test_a_time_range_uses_an_index(million, db):
    now = timezone.now()
    plan = page_plan(million, occurred_from=now - timedelta(hours=2), occurred_to=now - timedelta(hours=1))

    assert "Index" in plan, plan
    assert "Seq Scan" not in plan, plan


def test_events_stored_since_reads_one_index_entry(million, db):
    queryset = (
        event_model(million)
        .objects.filter(stored_at__gte=timezone.now() - timedelta(minutes=1))
        .order_by("stored_at")
        .values_list("offset", flat=True)[:1]
    )

    plan = plan_of(queryset)

    assert "million_ev_stored" in plan, plan
    assert "Seq Scan" not in plan, plan
