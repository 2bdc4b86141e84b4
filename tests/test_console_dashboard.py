"""The admin dashboard (``console.dashboard``) through Django's test client on the real PostgreSQL: the last hour
of events per topic, webhook outcomes, backlogs per destination and consumer lag are counted right; each figure
links to a page that lists exactly the rows it counts; the page's queries do not grow with the number of topics;
the per-topic counts are index probes. Also the event browser's count line and time filters, the token page's
labels and the favicon."""

import re
import uuid
from datetime import datetime, timedelta
from html import unescape

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from console import dashboard
from consumers.services import create_consumer
from topics.models import Topic
from topics.tables import first_offsets_stored_query
from webhooks.models import DeliveryAttempt, DeliveryStream, Destination, UndeliverableEvent
from webhooks.services import create_destination

INDEX = "/admin/"


def store(topic: Topic, *moments: datetime, topic_id: str = "1", name: str = "e") -> list[int]:
    """Events stored at ``moments`` (in order, as PostgreSQL would have stored them); their offsets."""
    topic.refresh_from_db()
    offsets = list(range(topic.last_offset + 1, topic.last_offset + 1 + len(moments)))
    with connection.cursor() as cursor:
        cursor.executemany(
            f'INSERT INTO "{topic.table_name}" ("offset", event_id, name, topic_id, source, event_occurred_at, '
            "context, data, stored_at) VALUES (%s, %s, %s, %s, 'http', %s, '{}', '{}', %s)",
            [
                (offset, uuid.uuid4(), name, topic_id, moment, moment)
                for offset, moment in zip(offsets, moments, strict=True)
            ],
        )
    Topic.objects.filter(pk=topic.pk).update(last_offset=F("last_offset") + len(moments))
    topic.refresh_from_db()
    return offsets


def minute(now: datetime, ago: int, second: int = 10) -> datetime:
    """``second`` seconds into the minute that started ``ago`` minutes before ``now``'s."""
    return now.replace(second=0, microsecond=0) - timedelta(minutes=ago) + timedelta(seconds=second)


def hrefs(html: str, css_class: str) -> dict[int, str]:
    """The chart's bar links of ``css_class``, by the count each bar shows."""
    found = re.findall(rf'<a href="([^"]+)" class="chart-link"><rect class="{css_class}"[^>]* data-value="(\d+)"', html)
    return {int(value): unescape(href) for href, value in found}


def link_of(html: str, css_class: str, text: str) -> str:
    match = re.search(rf'<a class="{css_class}" href="([^"]+)"[^>]*>{re.escape(text)}</a>', html)
    assert match, f"no link {css_class!r} showing {text!r}"
    return unescape(match.group(1))


def shown_offsets(response) -> list[int]:
    return [row["offset"] for row in response.context["rows"]]


def changelist_pks(response) -> set[int]:
    return {obj.pk for obj in response.context["cl"].result_list}


@pytest.fixture
def now() -> datetime:
    return timezone.now()


# --- Events per minute per topic ------------------------------------------------------------------------------


def test_it_counts_each_topics_events_per_minute_over_the_last_hour(make_topic, now):
    orders, visits = make_topic("orders"), make_topic("visits")
    store(orders, *[minute(now, 120)] * 4)  # two hours ago: not in the hour
    store(orders, *[minute(now, 5, s) for s in (1, 2, 3)])
    store(orders, minute(now, 2), minute(now, 2, 40))
    store(visits, minute(now, 1))

    activity = {item.topic.name: item for item in dashboard.topic_activity(now)}

    per_minute = activity["orders"].per_minute
    assert len(per_minute) == dashboard.MINUTES
    assert per_minute[-6] == 3 and per_minute[-3] == 2
    assert sum(per_minute) == activity["orders"].last_hour == 5
    assert activity["orders"].newest_of_minute[-6] == 7 and activity["orders"].newest_of_minute[-3] == 9
    assert activity["visits"].per_minute[-2] == 1 and activity["visits"].last_hour == 1
    assert [item.topic.name for item in dashboard.topic_activity(now)] == ["orders", "visits"]  # busiest first


def test_a_minutes_bar_links_to_the_event_browser_starting_at_that_minutes_newest_event(staff, make_topic):
    orders = make_topic("orders")
    now = timezone.now()
    store(orders, *[minute(now, 30, s) for s in (1, 2, 3)])  # offsets 1-3
    store(orders, minute(now, 20), minute(now, 20, 30))  # offsets 4-5

    html = staff.get(INDEX).content.decode()

    bars = hrefs(html, "bar-events")
    assert set(bars) == {3, 2}
    two = staff.get(bars[2])
    assert shown_offsets(two)[:2] == [5, 4]
    three = staff.get(bars[3])
    assert shown_offsets(three)[:3] == [3, 2, 1]
    hour = link_of(html, "er-last-hour", "5")
    assert hour == reverse("admin:topics_topic_events", args=[orders.pk])
    assert shown_offsets(staff.get(hour)) == [5, 4, 3, 2, 1]


def test_the_summary_counts_topics_events_and_failing_destinations_with_links(staff, make_topic, allow_private, now):
    orders = make_topic("orders")
    store(orders, minute(now, 3), minute(now, 2))
    healthy = create_destination(name="healthy", url="http://127.0.0.1:9/a", topic="orders")
    retrying = create_destination(name="retrying", url="http://127.0.0.1:9/b", topic="orders")
    gone = create_destination(name="gone", url="http://127.0.0.1:9/c", topic="orders")
    DeliveryStream.objects.create(destination=retrying, topic_id="1", attempts=3)
    DeliveryStream.objects.create(destination=healthy, topic_id="1", attempts=0)
    Destination.objects.filter(pk=gone.pk).update(active=False, disabled_reason="receiver answered 410 Gone")

    response = staff.get(INDEX)

    summary = response.context["dashboard"]["summary"]
    assert summary["topics"] == 1 and summary["events_total"] == 2
    assert summary["events_today"] == 2 or minute(now, 3).date() != now.date()
    assert summary["failing_destinations"] == 2
    failing = staff.get(summary["failing_url"])
    assert changelist_pks(failing) == {retrying.pk, gone.pk}


# --- Webhooks ------------------------------------------------------------------------------------------------


@pytest.fixture
def two_destinations(make_topic, allow_private):
    make_topic("orders")
    billing = create_destination(name="billing", url="http://127.0.0.1:9/billing", topic="orders")
    audit = create_destination(name="audit", url="http://127.0.0.1:9/audit", topic="orders")
    return billing, audit


def attempt(destination: Destination, at: datetime, status: str, offset: int = 1) -> DeliveryAttempt:
    stream, _ = DeliveryStream.objects.get_or_create(destination=destination, topic_id="1")
    return DeliveryAttempt.objects.create(
        stream=stream, event_id=uuid.uuid4(), offset=offset, attempt=1, status=status, at=at
    )


def undeliverable(destination: Destination, at: datetime, offset: int) -> UndeliverableEvent:
    stream, _ = DeliveryStream.objects.get_or_create(destination=destination, topic_id="1")
    record = UndeliverableEvent.objects.create(stream=stream, event_id=uuid.uuid4(), offset=offset, attempts=20)
    UndeliverableEvent.objects.filter(pk=record.pk).update(created_at=at)
    return record


def test_webhook_outcomes_are_counted_per_minute_from_the_attempt_rows(two_destinations, now):
    billing, audit = two_destinations
    attempt(billing, minute(now, 90), "succeeded")  # before the hour
    attempt(billing, minute(now, 10, 1), "succeeded")
    attempt(audit, minute(now, 10, 2), "succeeded")
    attempt(billing, minute(now, 10, 3), "failed")
    attempt(billing, minute(now, 4), "pending")  # no outcome yet
    undeliverable(billing, minute(now, 4), offset=7)

    outcomes = dashboard.webhook_outcomes(now)

    assert outcomes.totals == {"delivered": 2, "failed": 1, "undeliverable": 1}


def test_each_outcome_links_to_exactly_the_rows_it_counts(staff, two_destinations):
    billing, audit = two_destinations
    now = timezone.now()
    delivered = {
        attempt(billing, minute(now, 10, 1), "succeeded").pk,
        attempt(audit, minute(now, 10, 2), "succeeded").pk,
    }
    attempt(billing, minute(now, 11), "succeeded")  # the minute before: another bar
    failed = attempt(billing, minute(now, 10, 3), "failed")
    lost = undeliverable(billing, minute(now, 10, 4), offset=7)
    attempt(billing, minute(now, 90), "failed")  # before the hour

    html = staff.get(INDEX).content.decode()

    assert changelist_pks(staff.get(hrefs(html, "bar-delivered")[2])) == delivered
    assert changelist_pks(staff.get(hrefs(html, "bar-failed")[1])) == {failed.pk}
    assert changelist_pks(staff.get(hrefs(html, "bar-undeliverable")[1])) == {lost.pk}
    total = re.search(r'id="webhooks-failed" href="([^"]+)">1<', html)
    assert total and changelist_pks(staff.get(unescape(total.group(1)))) == {failed.pk}


def test_backlog_per_destination_links_to_its_streams_and_its_own_attempts(staff, two_destinations, now):
    billing, audit = two_destinations
    orders = Topic.objects.get(name="orders")
    store(orders, *[minute(now, 3)] * 6)
    mine = attempt(billing, minute(now, 5), "succeeded")
    attempt(audit, minute(now, 5), "succeeded")
    failed = attempt(billing, minute(now, 5, 30), "failed")
    undeliverable(billing, minute(now, 5), offset=3)

    html = staff.get(INDEX).content.decode()
    rows = {row.destination.name: row for row in dashboard.destination_backlogs(timezone.now())}

    assert rows["billing"].backlog == 6 and rows["billing"].delivered == 1 and rows["billing"].failed == 1
    row_html = re.search(r'<tr data-destination="billing">.*?</tr>', html, re.S).group(0)
    streams = staff.get(link_of(row_html, "backlog", "6"))
    assert changelist_pks(streams) == set(billing.streams.values_list("pk", flat=True))
    assert changelist_pks(staff.get(link_of(row_html, "delivered", "1"))) == {mine.pk}
    assert changelist_pks(staff.get(link_of(row_html, "failed", "1"))) == {failed.pk}
    waiting = staff.get(link_of(row_html, "undeliverable", "1"))
    assert {record.stream.destination_id for record in waiting.context["cl"].result_list} == {billing.pk}


# --- Consumers -----------------------------------------------------------------------------------------------


def test_consumer_lag_is_shown_per_consumer_with_a_link_to_it(staff, make_topic, admin, now):
    orders = make_topic("orders")
    store(orders, *[minute(now, 3)] * 4, topic_id="1")
    store(orders, *[minute(now, 2)] * 3, topic_id="2")
    create_consumer(admin, "orders", "everything", {})
    create_consumer(admin, "orders:2", "two", {})

    html = staff.get(INDEX).content.decode()
    rows = {f"{row.lag.topic}/{row.lag.name}": row for row in dashboard.consumer_lags()}

    assert rows["orders/everything"].lag.lag == 7 and rows["orders/everything"].lag.exact
    # An id-scoped consumer's lag is bounded by the range, which holds other ids' events too.
    assert not rows["orders:2/two"].lag.exact and rows["orders:2/two"].lag.lag >= 3
    row_html = re.search(r'<tr data-consumer="orders/everything">.*?</tr>', html, re.S).group(0)
    link = link_of(row_html, "lag", "7")
    assert staff.get(link).context["original"].name == "everything"
    assert "&le; " in re.search(r'<tr data-consumer="orders:2/two">.*?</tr>', html, re.S).group(0)


# --- Bounded -------------------------------------------------------------------------------------------------


def queries_of_the_dashboard(staff) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert staff.get(INDEX).status_code == 200
    return len(queries)


def test_the_dashboard_makes_as_many_queries_for_forty_topics_as_for_two(staff, make_topic, now):
    for index in range(2):
        store(make_topic(f"few_{index}"), minute(now, 3))
    few = queries_of_the_dashboard(staff)

    for index in range(38):
        store(make_topic(f"many_{index}"), minute(now, 3), minute(now, 2))
    many = queries_of_the_dashboard(staff)

    assert many == few
    assert len(dashboard.topic_activity(now)) == 40


def test_the_per_topic_probes_use_the_stored_at_index(make_topic):
    make_topic("big")
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO big_events ("offset", event_id, name, topic_id, source, event_occurred_at, context, data,
                                    stored_at)
            SELECT n, gen_random_uuid(), 'e', (n % 100)::text, 'grpc', now(), '{}', '{}',
                   now() - ((120000 - n) || ' seconds')::interval
            FROM generate_series(1, 120000) AS n
            """
        )
        cursor.execute("ANALYZE big_events")
        starts = dashboard.minute_starts(timezone.now())
        sql, params = first_offsets_stored_query(["big"], starts)
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "big_ev_stored" in plan, plan
    assert "Seq Scan" not in plan, plan


# --- The pages around it -------------------------------------------------------------------------------------


def test_a_filtered_event_browser_says_how_many_events_match_not_how_many_the_table_has(staff, make_topic, now):
    orders = make_topic("orders")
    store(orders, *[minute(now, 3)] * 5, name="a")
    store(orders, *[minute(now, 3)] * 2, name="b")
    url = reverse("admin:topics_topic_events", args=[orders.pk])

    unfiltered = staff.get(url).content.decode()
    filtered = staff.get(url, {"name": "b"}).content.decode()

    assert re.search(r"7 events in table <code>orders_events</code>", unfiltered)
    assert re.search(r"2 events match these filters \(7 in table", filtered)
    assert "1 event matches" in staff.get(url, {"name": "b", "before": "6"}).content.decode()


def test_the_event_browsers_time_filters_take_a_zone_and_say_which_one_applies_without(staff, make_topic, now):
    orders = make_topic("orders")
    store(orders, now)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE orders_events SET event_occurred_at = '2026-01-05T09:30:00Z'")
    url = reverse("admin:topics_topic_events", args=[orders.pk])

    page = staff.get(url).content.decode()
    in_berlin_after = staff.get(url, {"occurred_from": "2026-01-05T10:29:00+01:00"})
    in_berlin_before = staff.get(url, {"occurred_from": "2026-01-05T10:31:00+01:00"})
    no_zone = staff.get(url, {"occurred_from": "2026-01-05T09:31:00"})

    assert "Occurred from (UTC)" in page and "no zone: UTC" in page
    assert shown_offsets(in_berlin_after) == [1]
    assert shown_offsets(in_berlin_before) == []
    assert shown_offsets(no_zone) == []


def test_the_token_page_names_the_lifetime_in_words(staff):
    page = staff.get(reverse("admin:mint_token")).content.decode()

    assert "Lifetime (seconds)" in page
    assert "Ttl seconds" not in page


def test_the_favicon_is_linked_from_admin_pages_and_answers_at_the_root(staff, client):
    page = staff.get(INDEX).content.decode()
    icon = staff.get("/favicon.ico")

    assert 'rel="icon" href="/static/console/favicon.svg"' in page
    assert icon.status_code in (301, 302) and icon["Location"] == "/static/console/favicon.ico"
