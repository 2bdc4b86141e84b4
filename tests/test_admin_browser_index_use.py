"""The admin event browser stays fast on a large topic (200,000 events, analyzed: enough rows for PostgreSQL to
choose a full scan wherever no index fits): every query it runs (each filter, pagination by offset, the dashboard's
events-since count) is an index scan, never a full table scan or a COUNT(*)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from events.browser import BrowserFilters, browse_queryset, event_model

ROWS = 200_000


@pytest.fixture(scope="module")
def large(django_db_setup, django_db_blocker):
    """One topic with 200,000 events, built once for the module (and dropped after it)."""
    from topics.services import create_topic, delete_topic

    with django_db_blocker.unblock():
        topic = create_topic("large")
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO large_events ("offset", event_id, name, topic_id, source, user_id, event_occurred_at,
                                            stored_at, context, data)
                SELECT n, gen_random_uuid(), 'name_' || (n %% 200), (n %% 10000)::text, 'grpc', 'user_' || (n %% 50000),
                       now() - ((%s - n) || ' seconds')::interval, now() - ((%s - n) || ' seconds')::interval,
                       '{}', '{"n": 1}'
                FROM generate_series(1, %s) AS n
                """,
                [ROWS, ROWS, ROWS],
            )
            cursor.execute("UPDATE topics_topic SET last_offset = %s WHERE name = 'large'", [ROWS])
            cursor.execute("ANALYZE large_events")
        topic.refresh_from_db()
        yield topic
        delete_topic("large")


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
        ({}, "large_events_pkey"),
        ({"before": 400_000}, "large_events_pkey"),
        ({"name": "name_7"}, "large_ev_name_off"),
        ({"name": "name_7", "before": 500_000}, "large_ev_name_off"),
        ({"topic_id": "42"}, "large_ev_tid_off"),
        ({"user_id": "user_42"}, "large_ev_uid_off"),
    ],
)
def test_each_browser_filter_is_an_index_scan(large, db, filters, index):
    plan = page_plan(large, **filters)

    assert index in plan, plan
    assert "Seq Scan" not in plan, plan


def test_a_time_range_uses_an_index(large, db):
    now = timezone.now()
    plan = page_plan(large, occurred_from=now - timedelta(hours=2), occurred_to=now - timedelta(hours=1))

    assert "Index" in plan, plan
    assert "Seq Scan" not in plan, plan


def test_events_stored_since_reads_one_index_entry(large, db):
    queryset = (
        event_model(large)
        .objects.filter(stored_at__gte=timezone.now() - timedelta(minutes=1))
        .order_by("stored_at")
        .values_list("offset", flat=True)[:1]
    )

    plan = plan_of(queryset)

    assert "large_ev_stored" in plan, plan
    assert "Seq Scan" not in plan, plan
