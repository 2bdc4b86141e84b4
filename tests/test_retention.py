"""Retention (docs/retention.md): what a sweep deletes and keeps, on the real PostgreSQL."""

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from eventrelay.errors import InvalidInput
from events.services import publish, pull
from topics import retention
from topics.models import Topic
from topics.services import create_topic, delete_topic, get_topic, update_topic
from topics.tables import quoted_table

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def topic_named(db: None) -> Any:
    created: list[str] = []

    def make(name: str, **retention_settings: Any) -> Topic:
        topic = create_topic(name, retention_settings)
        created.append(name)
        return topic

    yield make
    for name in created:
        if Topic.objects.filter(name=name).exists():
            delete_topic(name)


def stored_offsets(name: str) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT "offset" FROM {quoted_table(name)} ORDER BY "offset"')
        return [row[0] for row in cursor.fetchall()]


def publish_many(admin: Any, name: str, count: int, chunk: int = 1000) -> None:
    for start in range(0, count, chunk):
        publish(admin, name, [{"name": "e", "data": n} for n in range(start, min(start + chunk, count))], "http")


def test_max_events_keeps_exactly_the_newest_and_pull_starts_at_the_first_offset(
    topic_named: Callable[..., Topic], admin: Any
) -> None:
    topic_named("orders", retentionMaxEvents=1000)
    publish_many(admin, "orders", 50_000)

    result = retention.sweep_topic("orders", batch=7_000)

    assert result.deleted == 49_000
    assert stored_offsets("orders") == list(range(49_001, 50_001))
    topic = get_topic("orders")
    assert (topic.first_offset, topic.last_offset) == (49_001, 50_000)
    # A pull from offset 1 continues from the first retained offset.
    page = pull(admin, "orders", 1, 10)
    assert [event.offset for event in page.events] == list(range(49_001, 49_011))
    # Nothing more to do: a second sweep deletes nothing.
    assert retention.sweep_topic("orders").deleted == 0


def test_max_age_keeps_only_what_was_stored_within_it(topic_named: Callable[..., Topic], admin: Any) -> None:
    topic_named("visits", retentionMaxAgeSeconds=2)
    publish_many(admin, "visits", 30)
    time.sleep(2.5)
    publish_many(admin, "visits", 5)

    swept_at = time.time()
    retention.sweep_topic("visits", batch=7)

    with connection.cursor() as cursor:
        cursor.execute(f'SELECT "offset", extract(epoch FROM stored_at) FROM {quoted_table("visits")} ORDER BY 1')
        kept = cursor.fetchall()
    assert [offset for offset, _ in kept] == [31, 32, 33, 34, 35]
    assert all(swept_at - float(stored) < 2 for _, stored in kept)
    assert get_topic("visits").first_offset == 31


def test_an_empty_topic_and_one_emptied_by_age_report_first_offset_after_the_last(
    topic_named: Callable[..., Topic], admin: Any
) -> None:
    assert topic_named("empty", retentionMaxAgeSeconds=1).first_offset == 1
    publish_many(admin, "empty", 3)
    time.sleep(1.5)
    retention.sweep_topic("empty")
    topic = get_topic("empty")
    assert (topic.first_offset, topic.last_offset) == (4, 3)
    assert stored_offsets("empty") == []
    # Offsets are never reused.
    publish_many(admin, "empty", 1)
    assert stored_offsets("empty") == [4]


def test_a_topic_without_retention_keeps_everything(topic_named: Callable[..., Topic], admin: Any) -> None:
    topic_named("keep")
    publish_many(admin, "keep", 20)
    assert retention.sweep_all() == []
    assert retention.sweep_topic("keep").deleted == 0
    assert len(stored_offsets("keep")) == 20


def test_settings_change_later_and_bad_values_are_refused_naming_the_field(
    topic_named: Callable[..., Topic], admin: Any
) -> None:
    topic_named("orders")
    publish_many(admin, "orders", 10)
    update_topic("orders", {"retentionMaxEvents": 4})
    assert retention.sweep_topic("orders").deleted == 6
    for bad, field in [
        ({"retentionMaxEvents": -1}, "retentionMaxEvents"),
        ({"retentionMaxAgeSeconds": "7d"}, "retentionMaxAgeSeconds"),
        ({"retentionMaxEvents": True}, "retentionMaxEvents"),
        ({"retention": 1}, "retention"),
    ]:
        with pytest.raises(InvalidInput) as refused:
            update_topic("orders", bad)
        assert refused.value.field == field
    update_topic("orders", {"retentionMaxEvents": 0})
    assert get_topic("orders").retention_max_events is None


def test_defaults_for_new_topics_come_from_the_environment(topic_named: Callable[..., Topic], settings: Any) -> None:
    settings.ER_RETENTION_MAX_AGE_S = 3600
    settings.ER_RETENTION_MAX_EVENTS = 0
    topic = topic_named("defaulted")
    assert (topic.retention_max_age_seconds, topic.retention_max_events) == (3600, None)
    topic = topic_named("explicit", retentionMaxAgeSeconds=None, retentionMaxEvents=5)
    assert (topic.retention_max_age_seconds, topic.retention_max_events) == (None, 5)


# --- What points at offsets moves past what retention deleted, counting it ----------------------------


def test_a_consumer_below_the_horizon_skips_ahead_and_counts_what_it_lost(
    topic_named: Callable[..., Topic], admin: Any
) -> None:
    from consumers import services as consumers
    from consumers.models import Consumer

    topic_named("orders", retentionMaxEvents=10)
    publish_many(admin, "orders", 5)
    consumers.create_consumer(admin, "orders", "billing", {})
    consumers.create_consumer(admin, "orders:1", "one", {})
    consumers.create_consumer(admin, "orders", "only_b", {"eventNames": ["b"]})
    # billing: 1 acked, 2 and 3 leased and never acked, 4 onward never examined.
    first, *held = consumers.fetch(admin, "orders", "billing", 3)
    consumers.ack(admin, "orders", "billing", [first.ack_id])
    publish(admin, "orders:1", [{"name": "a", "data": n} for n in range(10)], "http")  # offsets 6-15
    publish(admin, "orders", [{"name": "b", "data": n} for n in range(5)], "http")  # offsets 16-20

    retention.sweep_topic("orders")  # keeps 11-20

    billing = Consumer.objects.get(name="billing")
    # Lost: the two leased (2, 3) and every unexamined event up to 10 (4-10): 9.
    assert (billing.expired, billing.next_offset) == (9, 11)
    assert Consumer.objects.get(name="one").expired == 5  # orders:1's events 6-10
    assert Consumer.objects.get(name="only_b").expired == 0  # nothing named "b" was deleted
    deliveries = consumers.fetch(admin, "orders", "billing", 100)
    assert [d.event.offset for d in deliveries] == list(range(11, 21))
    # The ackIds of the deleted events act on nothing.
    assert consumers.ack(admin, "orders", "billing", [d.ack_id for d in held]).stale == []
    assert consumers.get_consumer(admin, "orders", "billing").pending == 10


def test_a_paused_webhook_stream_across_the_horizon_counts_what_expired_and_delivers_the_rest_in_order(
    topic_named: Callable[..., Topic], admin: Any, receiver: Any, allow_private: None
) -> None:
    from webhooks import delivery
    from webhooks.models import DeliveryStream
    from webhooks.services import create_destination, pause, resume

    topic_named("orders", retentionMaxEvents=5)
    destination = create_destination(name="crm", url=receiver.url, topic="orders:1", start_offset=0)
    other = create_destination(name="all", url=receiver.url, topic="orders", start_offset=0, event_names=["keep"])
    pause(destination)
    pause(other)
    publish(admin, "orders:1", [{"name": "n", "data": n} for n in range(8)], "http")  # 1-8
    publish(admin, "orders:2", [{"name": "keep", "data": n} for n in range(4)], "http")  # 9-12

    retention.sweep_topic("orders")  # keeps 8-12

    stream = DeliveryStream.objects.get(destination=destination)
    assert (stream.expired_count, stream.last_offset) == (7, 7)
    assert destination.expired == 7  # what GET /api/v1/webhooks/{id} reports as "expired"
    # The whole-topic destination got its stream of orders:1 (discovered for the count), which lost nothing it
    # wanted (no "keep" among the deleted).
    assert {s.topic_id: (s.expired_count, s.last_offset) for s in DeliveryStream.objects.filter(destination=other)} == {
        "1": (0, 7)
    }
    resume(destination)
    assert delivery.deliver_stream(stream.pk) == "drained"
    assert receiver.offsets("orders:1") == [8]


def test_time_is_measured_from_when_events_were_stored(topic_named: Callable[..., Topic], admin: Any) -> None:
    """eventOccurredAt far in the past does not make an event old: age counts from its storage."""
    topic_named("aged", retentionMaxAgeSeconds=60)
    publish(admin, "aged", [{"name": "old", "data": {}, "eventOccurredAt": "2001-01-01T00:00:00Z"}], "http")
    assert retention.sweep_topic("aged").deleted == 0


def test_the_rest_api_sets_and_changes_retention_and_shows_expired_webhook_events(
    client: Any, admin: Any, settings: Any
) -> None:
    from eventrelay.auth import mint_token

    settings.ER_WEBHOOK_ALLOW_PRIVATE = True
    auth = {"HTTP_AUTHORIZATION": f"Bearer {mint_token([], admin=True)}"}
    created = client.post(
        "/api/v1/topics", {"name": "rest_kept", "retentionMaxEvents": 2}, content_type="application/json", **auth
    )
    try:
        assert created.status_code == 201, created.content
        assert created.json()["retentionMaxEvents"] == 2
        hook = client.post(
            "/api/v1/webhooks",
            {"name": "h", "url": "http://127.0.0.1:9/hook", "topic": "rest_kept:1", "active": False},
            content_type="application/json",
            **auth,
        ).json()
        publish(admin, "rest_kept:1", [{"name": "n", "data": n} for n in range(5)], "http")
        retention.sweep_topic("rest_kept")
        topic = client.get("/api/v1/topics/rest_kept", **auth).json()
        assert (topic["firstOffset"], topic["lastOffset"]) == (4, 5)
        assert client.get(f"/api/v1/webhooks/{hook['id']}", **auth).json()["expired"] == 3

        changed = client.patch(
            "/api/v1/topics/rest_kept",
            {"retentionMaxEvents": None, "retentionMaxAgeSeconds": 60},
            content_type="application/json",
            **auth,
        )
        assert changed.status_code == 200 and changed.json()["retentionMaxAgeSeconds"] == 60
        assert changed.json()["retentionMaxEvents"] is None
        refused = client.patch(
            "/api/v1/topics/rest_kept", {"retentionMaxEvents": -5}, content_type="application/json", **auth
        )
        assert refused.status_code == 400 and refused.json()["error"]["field"] == "retentionMaxEvents"
        reader = {"HTTP_AUTHORIZATION": f"Bearer {mint_token(['rest_kept'])}"}
        assert (
            client.patch(
                "/api/v1/topics/rest_kept", {"retentionMaxEvents": 1}, content_type="application/json", **reader
            ).status_code
            == 403
        )
    finally:
        delete_topic("rest_kept")


def test_a_consumer_created_or_sought_below_the_first_offset_starts_at_it_and_the_apis_report_expired(
    topic_named: Callable[..., Topic], admin: Any, client: Any
) -> None:
    from consumers import services as consumers
    from eventrelay.auth import mint_token

    topic_named("orders", retentionMaxEvents=3)
    publish_many(admin, "orders", 4)
    consumers.create_consumer(admin, "orders", "early", {})
    publish_many(admin, "orders", 6)
    retention.sweep_topic("orders")  # keeps 8-10

    late = consumers.create_consumer(admin, "orders", "late", {"startOffset": 1})
    assert (late.start_offset, late.ack_floor, late.lag, late.expired) == (8, 7, 3, 0)
    early = consumers.get_consumer(admin, "orders", "early")
    assert (early.ack_floor, early.lag, early.expired) == (7, 3, 7)
    sought = consumers.seek(admin, "orders", "late", 2)
    assert (sought.ack_floor, sought.lag) == (7, 3)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {mint_token([], admin=True)}"}
    assert client.get("/api/v1/topics/orders/consumers/early", **auth).json()["expired"] == 7
