"""Prometheus metrics in this process (eventrelay.metrics): who may read /metrics, what the code counts where it
happens, and the figures the web process reads from the database at scrape time (matching the database, in a
number of queries that does not grow with topics or destinations)."""

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import DatabaseError, connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from consumers.models import Consumer
from consumers.services import create_consumer, describe
from eventrelay import metrics, ratelimit
from eventrelay.auth import mint_token
from eventrelay.db import run_sync
from eventrelay.errors import RateLimited
from eventrelay.refs import TopicRef
from eventrelay.views import metrics as metrics_view
from events import live
from events.services import publish
from harness.processes import free_port
from topics.metrics import TopicOffsets
from topics.models import Topic
from topics.retention import sweep_topic
from topics.services import update_topic
from topics.tables import first_stored_after_query, quoted_table
from webhooks.delivery import deliver_stream
from webhooks.models import DeliveryAttempt, DeliveryStream, Destination
from webhooks.services import create_destination

OUTSIDE = "203.0.113.7"  # a documentation address: not loopback
OUTCOMES = ("delivered", "failed", "undeliverable")


def sample(name: str, **labels: str) -> float:
    """This process's current value of a sample (0 when it has none yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(request: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The web view's /metrics, parsed: (sample name, sorted labels) -> value."""
    response = metrics_view(request)
    assert response.status_code == 200, response.content
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }


def loopback_get() -> Any:
    return RequestFactory().get("/metrics", REMOTE_ADDR="127.0.0.1")


# --- The guard -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"])
def test_metrics_are_open_from_loopback(db: None, address: str) -> None:
    response = metrics_view(RequestFactory().get("/metrics", REMOTE_ADDR=address))
    assert response.status_code == 200
    assert b"eventrelay_events_published_total" in response.content


def test_metrics_from_elsewhere_without_a_token_are_refused_with_401(db: None) -> None:
    response = metrics_view(RequestFactory().get("/metrics", REMOTE_ADDR=OUTSIDE))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert b"eventrelay_" not in response.content


def test_metrics_from_elsewhere_with_the_metrics_token_are_served(db: None, settings: Any) -> None:
    settings.ER_METRICS_TOKEN = "scrape-" + uuid.uuid4().hex
    request = RequestFactory().get(
        "/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {settings.ER_METRICS_TOKEN}"
    )
    assert metrics_view(request).status_code == 200
    wrong = RequestFactory().get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION="Bearer not-the-token")
    assert metrics_view(wrong).status_code == 401


def test_metrics_from_elsewhere_take_an_admin_token_but_not_a_topic_token(db: None) -> None:
    admin = RequestFactory().get(
        "/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {mint_token([], admin=True)}"
    )
    assert metrics_view(admin).status_code == 200
    reader = RequestFactory().get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {mint_token(['users'])}")
    assert metrics_view(reader).status_code == 403


def test_an_empty_metrics_token_setting_opens_nothing(settings: Any) -> None:
    settings.ER_METRICS_TOKEN = ""
    assert metrics.access_refused(OUTSIDE, "Bearer ") is not None
    assert metrics.access_refused(OUTSIDE, "Bearer x")[0] == 401  # type: ignore[index]


def test_the_metrics_port_serves_metrics_and_nothing_else() -> None:
    server = metrics.start_server(free_port(), "127.0.0.1", "test", "ER_TEST_METRICS_PORT")
    assert server is not None
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        session = requests.Session()
        session.trust_env = False
        response = session.get(f"{base}/metrics", timeout=10)
        assert response.status_code == 200
        assert "eventrelay_webhook_deliveries_total" in response.text
        # The process's own figures only: the database's are the web process's.
        assert "eventrelay_topic_last_offset" not in response.text
        assert session.get(f"{base}/other", timeout=10).status_code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_a_metrics_port_already_taken_is_logged_and_the_process_goes_on(caplog: Any) -> None:
    first = metrics.start_server(free_port(), "127.0.0.1", "test", "ER_TEST_METRICS_PORT")
    assert first is not None
    try:
        second = metrics.start_server(first.server_address[1], "127.0.0.1", "test", "ER_TEST_METRICS_PORT")
        assert second is None
        assert "ER_TEST_METRICS_PORT" in caplog.text
    finally:
        first.shutdown()
        first.server_close()
    assert metrics.start_server(0, "127.0.0.1", "test", "ER_TEST_METRICS_PORT") is None


# --- Counted where it happens ------------------------------------------------------------------------------------


def test_a_publish_counts_its_new_events_by_topic_name_and_source_once(
    make_topic: Callable[[str], Topic], admin: Any, django_capture_on_commit_callbacks: Any
) -> None:
    name = "m_" + uuid.uuid4().hex[:8]
    make_topic(name)
    calls = sample("eventrelay_publish_duration_seconds_count", transport="http")
    event_id = str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=True):
        publish(admin, f"{name}:42", [{"name": "a", "data": {"i": i}} for i in range(7)], "http")
    with django_capture_on_commit_callbacks(execute=True):
        publish(admin, f"{name}:43", [{"name": "a", "data": {}, "eventId": event_id}], "http")
    with django_capture_on_commit_callbacks(execute=True):
        publish(admin, f"{name}:43", [{"name": "a", "data": {}, "eventId": event_id}], "http")  # a retry
    # The topic's name, never its id; the retried eventId is not counted twice.
    assert sample("eventrelay_events_published_total", topic=name, source="http") == 8
    assert sample("eventrelay_events_published_total", topic=f"{name}:42", source="http") == 0
    assert sample("eventrelay_publish_duration_seconds_count", transport="http") == calls + 3


def test_a_refused_call_counts_as_rate_limited_by_action(settings: Any) -> None:
    settings.ER_RATE_LIMIT_REQUESTS_PER_S = 1
    settings.ER_RATE_LIMIT_REQUESTS_BURST = 1
    who = "metrics-" + uuid.uuid4().hex
    before = sample("eventrelay_rate_limited_total", action="request")
    ratelimit.check("request", who)
    with pytest.raises(RateLimited):
        ratelimit.check("request", who)
    assert sample("eventrelay_rate_limited_total", action="request") == before + 1


def test_retention_counts_what_it_deletes_by_topic_name(
    make_topic: Callable[[str], Topic], admin: Any, django_capture_on_commit_callbacks: Any
) -> None:
    name = "m_" + uuid.uuid4().hex[:8]
    make_topic(name)
    with django_capture_on_commit_callbacks(execute=True):
        publish(admin, name, [{"name": "a", "data": {"i": i}} for i in range(25)], "http")
    update_topic(name, {"retentionMaxEvents": 5})
    result = sweep_topic(name, batch=7)
    assert result.deleted == 20
    assert sample("eventrelay_retention_deleted_events_total", topic=name) == 20


def test_each_webhook_attempt_counts_once_by_outcome_and_is_timed(
    make_topic: Callable[[str], Topic],
    admin: Any,
    receiver: Any,
    allow_private: None,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.ER_WEBHOOK_BACKOFF_BASE_MS = 1
    settings.ER_WEBHOOK_BACKOFF_CAP_MS = 1
    name = "m_" + uuid.uuid4().hex[:8]
    make_topic(name)
    destination = create_destination(name="m", url=receiver.url, topic=f"{name}:1", max_attempts=2)
    # The second event fails twice (then undeliverable); the third fails once, then is delivered.
    receiver.answer = lambda event, tries: (
        500 if event["data"]["i"] == 1 or (event["data"]["i"] == 2 and tries == 1) else 200
    )
    with django_capture_on_commit_callbacks(execute=True):
        publish(admin, f"{name}:1", [{"name": "a", "data": {"i": i}} for i in range(4)], "http")
    before = {outcome: sample("eventrelay_webhook_deliveries_total", outcome=outcome) for outcome in OUTCOMES}
    timed = sample("eventrelay_webhook_delivery_seconds_count")
    stream = DeliveryStream.objects.get(destination=destination)
    for _ in range(10):
        DeliveryStream.objects.filter(pk=stream.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
        if deliver_stream(stream.pk) == "drained":
            break
    moved = {
        outcome: sample("eventrelay_webhook_deliveries_total", outcome=outcome) - before[outcome]
        for outcome in OUTCOMES
    }
    assert moved == {"delivered": 3, "failed": 2, "undeliverable": 1}
    assert sample("eventrelay_webhook_delivery_seconds_count") - timed == 6 == len(receiver.of(f"{name}:1"))
    attempts = DeliveryAttempt.objects.filter(stream=stream)
    assert attempts.filter(status="succeeded").count() == moved["delivered"]
    assert attempts.filter(status="failed").count() == moved["failed"] + moved["undeliverable"]


def test_a_live_delivery_is_timed_only_for_events_that_were_announced() -> None:
    observed: list[float] = []
    metrics.observe_live_delivery(observed.append, None)  # read back from storage: not a live delivery

    metrics.observe_live_delivery(observed.append, time.time() - 0.5)
    assert len(observed) == 1 and observed[0] >= 0.5


# --- Figures read from the database --------------------------------------------------------------------------


def test_the_database_figures_match_the_database(
    make_topic: Callable[[str], Topic],
    admin: Any,
    receiver: Any,
    allow_private: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    name = "m_" + uuid.uuid4().hex[:8]
    make_topic(name)
    destination = create_destination(name="m", url=receiver.url, topic=f"{name}:1")
    caught_up = create_destination(name="n", url=receiver.url, topic=f"{name}:2")
    create_consumer(admin, name, "billing", {"startOffset": 0})
    with django_capture_on_commit_callbacks(execute=True):
        publish(admin, f"{name}:1", [{"name": "a", "data": {"i": i}} for i in range(6)], "http")
    stream = DeliveryStream.objects.get(destination=destination)
    DeliveryStream.objects.filter(pk=stream.pk).update(last_offset=2)  # delivered through offset 2
    DeliveryStream.objects.update_or_create(destination=caught_up, topic_id="2", defaults={"last_offset": 6})
    with connection.cursor() as cursor:
        # The first event the stream still owes (offset 3) was stored twenty minutes ago, the later ones since.
        cursor.execute(
            f'UPDATE {quoted_table(name)} SET stored_at = now() - make_interval(mins => (60 / "offset")::int)'
            ' WHERE "offset" >= 3'
        )
    figures = scrape(loopback_get())
    topic = Topic.objects.get(name=name)
    assert figures[("eventrelay_topic_last_offset", (("topic", name),))] == topic.last_offset == 6

    backlog = Destination.objects.with_delivery_stats().get(pk=destination.pk).backlog_bound  # type: ignore[attr-defined]
    assert figures[("eventrelay_webhook_backlog_events", (("destination", str(destination.pk)),))] == backlog == 4
    assert figures[("eventrelay_webhook_backlog_events", (("destination", str(caught_up.pk)),))] == 0
    oldest = figures[("eventrelay_webhook_oldest_pending_seconds", (("destination", str(destination.pk)),))]
    assert 20 * 60 <= oldest < 20 * 60 + 60  # offset 3: 60 / 3 minutes ago
    assert figures[("eventrelay_webhook_oldest_pending_seconds", (("destination", str(caught_up.pk)),))] == 0

    consumer = Consumer.objects.get(topic__name=name, name="billing")
    lag = figures[("eventrelay_consumer_lag_events", (("consumer", f"{name}/billing"), ("topic", name)))]
    assert lag == describe(consumer).lag == 6


def test_a_scrape_reads_the_database_in_as_many_queries_for_a_hundred_topics_as_for_one(
    make_topic: Callable[[str], Topic], admin: Any, django_capture_on_commit_callbacks: Any
) -> None:
    def populate(topics: int, destinations_each: int) -> None:
        for _ in range(topics):
            name = "m_" + uuid.uuid4().hex[:8]
            make_topic(name)
            with django_capture_on_commit_callbacks(execute=True):
                publish(admin, f"{name}:1", [{"name": "a", "data": {}}, {"name": "a", "data": {}}], "http")
            created = Destination.objects.bulk_create(
                Destination(name=f"d{n}", url="https://example.com/hook", topic_name=name, topic_id="1", secret="s")
                for n in range(destinations_each)
            )
            # Every destination behind its topic: each stream is probed for its oldest pending event.
            DeliveryStream.objects.bulk_create(
                DeliveryStream(destination=d, topic_id="1", last_offset=1) for d in created
            )
            Consumer.objects.create(
                topic=Topic.objects.get(name=name),
                name="c",
                start_offset=1,
                next_offset=1,
                ack_wait_seconds=30,
                max_deliveries=5,
                max_in_flight=100,
            )

    def queries_of_a_scrape() -> tuple[int, dict[Any, float]]:
        with CaptureQueriesContext(connection) as queries:
            figures = scrape(loopback_get())
        return len(queries.captured_queries), figures

    populate(1, 1)
    few, _ = queries_of_a_scrape()
    populate(99, 20)
    many, figures = queries_of_a_scrape()
    assert many == few == 6
    backlogs = [
        value for (sample_name, _), value in figures.items() if sample_name == "eventrelay_webhook_backlog_events"
    ]
    assert len(backlogs) == 1 + 99 * 20 and all(value == 1 for value in backlogs)
    oldest = [v for (n, _), v in figures.items() if n == "eventrelay_webhook_oldest_pending_seconds"]
    assert len(oldest) == 1 + 99 * 20 and all(value > 0 for value in oldest)
    lags = [v for (n, _), v in figures.items() if n == "eventrelay_consumer_lag_events"]
    assert len(lags) == 100 and all(value == 2 for value in lags)


def test_a_collector_that_cannot_read_the_database_leaves_the_rest_served(monkeypatch: Any, db: None) -> None:

    def broken(self: Any) -> Any:
        raise DatabaseError("gone")

    monkeypatch.setattr(TopicOffsets, "collect", broken)
    figures = scrape(loopback_get())
    assert not any(name == "eventrelay_topic_last_offset" for name, _ in figures)
    assert any(name == "eventrelay_webhook_deliveries_total" for name, _ in figures)


def test_a_metrics_server_thread_does_not_keep_the_process_alive() -> None:
    server = metrics.start_server(free_port(), "127.0.0.1", "daemon", "ER_TEST_METRICS_PORT")
    assert server is not None
    try:
        threads = [thread for thread in threading.enumerate() if thread.name == "metrics-daemon"]
        assert threads and all(thread.daemon for thread in threads)
    finally:
        server.shutdown()
        server.server_close()


# --- The documentation names what exists ------------------------------------------------------------------------


def served_families(request: Any) -> set[str]:
    """The metric families a /metrics page describes (its HELP lines), samples or not."""
    text = metrics_view(request).content.decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# HELP eventrelay_")}


def test_every_metric_served_is_documented_and_the_dashboard_uses_only_those(
    make_topic: Callable[[str], Topic],
    admin: Any,
    receiver: Any,
    allow_private: None,
    django_capture_on_commit_callbacks: Any,
) -> None:

    name = "m_" + uuid.uuid4().hex[:8]
    make_topic(name)
    create_consumer(admin, name, "c", {})
    create_destination(name="d", url=receiver.url, topic=name)
    served = served_families(loopback_get())
    docs = Path(__file__).resolve().parent.parent / "docs"
    documented = set(re.findall(r"`(eventrelay_[a-z_]+)`", (docs / "operations.md").read_text()))
    # Every metric the SPEC names is served; each one served is described.
    assert served >= {
        f"eventrelay_{metric}"
        for metric in (
            "events_published_total",
            "publish_duration_seconds",
            "live_subscribers",
            "live_delivery_seconds",
            "slow_consumers_total",
            "webhook_deliveries_total",
            "webhook_delivery_seconds",
            "webhook_backlog_events",
            "webhook_oldest_pending_seconds",
            "consumer_lag_events",
            "rate_limited_total",
            "retention_deleted_events_total",
            "topic_last_offset",
        )
    }
    assert served <= documented
    dashboard = json.loads((docs / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {
        re.sub(r"_(bucket|count|sum)$", "", metric)
        for expr in expressions
        for metric in re.findall(r"eventrelay_[a-z_]+", expr)
    }
    assert used and used <= served


def test_the_oldest_pending_probe_uses_the_topic_tables_indexes(make_topic: Callable[[str], Topic]) -> None:

    name = "m_" + uuid.uuid4().hex[:8]
    make_topic(name)
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO {quoted_table(name)} ("offset", event_id, name, topic_id, source, event_occurred_at, context, data)'
            " SELECT n, gen_random_uuid(), 'e', (n % 1000)::text, 'grpc', now(), '{}', '{}' "
            "FROM generate_series(1, 120000) AS n"
        )
        cursor.execute(f"ANALYZE {quoted_table(name)}")
        sql, params = first_stored_after_query([(name, "42", 60_000), (name, "7", 10), (name, None, 60_000)])
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert f"{name}_ev_tid_off" in plan, plan
    assert f"{name}_events_pkey" in plan, plan
    assert "Seq Scan" not in plan, plan


@pytest.mark.usefixtures("one_database_thread")
@pytest.mark.parametrize("pad", [0, 70_000], ids=["in the notification", "re-read from storage"])
async def test_live_events_carry_their_commit_time_and_replayed_ones_do_not(
    make_topic: Callable[[str], Topic], admin: Any, pad: int
) -> None:

    name = "m_" + uuid.uuid4().hex[:8]
    await run_sync(make_topic, name)
    await run_sync(publish, admin, name, [{"name": "n", "data": {}}], "http")
    async with live.subscribe(TopicRef(name), from_offset=1) as events:
        replayed = await asyncio.wait_for(anext(events), 15)
        assert replayed.offset == 1 and replayed.committed_at is None
        waiting = asyncio.ensure_future(anext(events))
        hub = live.get_hub()
        while not (name in hub.feeds and hub.feeds[name].subscriptions):
            await asyncio.sleep(0.01)
        before = time.time()
        # A batch bigger than ER_LIVE_INLINE_BYTES is announced without its events, and re-read by the feed.
        await run_sync(publish, admin, name, [{"name": "n", "data": {"pad": "x" * pad}}], "http")
        event = await asyncio.wait_for(waiting, 15)
        assert event.offset == 2
        assert event.committed_at is not None and before <= event.committed_at <= time.time()


@pytest.mark.usefixtures("one_database_thread")
async def test_events_committed_after_the_subscription_are_live_even_when_replayed(
    make_topic: Callable[[str], Topic], admin: Any
) -> None:
    name = "m_" + uuid.uuid4().hex[:8]
    await run_sync(make_topic, name)
    await run_sync(publish, admin, name, [{"name": "n", "data": {"i": i}} for i in range(3)], "http")
    # As if it subscribed when the head was offset 1, and offsets 2 and 3 were committed while it attached.
    async with live.subscribe(TopicRef(name), from_offset=1, live_after=1) as events:
        replayed = [await asyncio.wait_for(anext(events), 15) for _ in range(3)]
    assert [event.offset for event in replayed] == [1, 2, 3]
    assert replayed[0].committed_at is None
    assert all(event.committed_at is not None and event.committed_at <= time.time() for event in replayed[1:])
