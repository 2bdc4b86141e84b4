"""Every query the product runs on a topic table uses an index, checked with EXPLAIN on 100k rows."""

import pytest
from django.db import connection

from topics.tables import encoded_page_query, page_query

ROWS = 120_000


@pytest.fixture
def big_topic(make_topic):
    make_topic("big")
    with connection.cursor() as cursor:
        # 120k events spread over 1,000 topic ids and 50 event names.
        cursor.execute(
            """
            INSERT INTO big_events ("offset", event_id, name, topic_id, source, user_id, event_occurred_at, context, data)
            SELECT n, gen_random_uuid(), 'name_' || (n %% 50), (n %% 1000)::text, 'grpc', 'user_' || (n %% 5000),
                   now() - (n || ' seconds')::interval, '{}', json_build_object('n', n)
            FROM generate_series(1, %s) AS n
            """,
            [ROWS],
        )
        cursor.execute("ANALYZE big_events")


def explain(sql: str, params: list) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_pull_by_offset_is_a_primary_key_index_scan(big_topic):
    sql, params = page_query("big", None, after=60_000, limit=1000)

    plan = explain(sql, params)

    assert "Index Scan using big_events_pkey" in plan, plan
    assert "Seq Scan" not in plan, plan


def test_pull_by_topic_id_and_offset_uses_the_topic_id_index(big_topic):
    sql, params = page_query("big", "42", after=1_000, limit=1000)

    plan = explain(sql, params)

    assert "big_ev_tid_off" in plan, plan
    assert "Seq Scan" not in plan, plan


@pytest.mark.parametrize("topic_id, index", [(None, "big_events_pkey"), ("42", "big_ev_tid_off")])
def test_the_grpc_pull_joins_the_same_index_scan(big_topic, topic_id, index):
    sql, params = encoded_page_query("big", topic_id, after=1_000, limit=1000)

    plan = explain(sql, params)

    assert index in plan, plan
    assert "Seq Scan" not in plan, plan


def test_idempotency_lookup_by_event_id_uses_the_unique_index(big_topic):
    plan = explain(
        'SELECT "offset" FROM big_events WHERE event_id = ANY(%s)',
        [["00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"]],
    )

    assert "big_ev_event_id" in plan, plan
