"""Topics and events in the admin: create/delete with the table, the event browser, the dashboard,
the token page. Django's test client against the real URL routing and PostgreSQL."""

import html
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from eventrelay.auth import authenticate
from events.services import publish
from tests.helpers import table_exists
from topics.models import Topic
from topics.services import create_topic


@pytest.fixture
def staff(client, db):
    user = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-for-tests-only")
    client.force_login(user)
    return user


@pytest.fixture
def orders(db, admin):
    topic = create_topic("orders")
    for n in range(1, 121):
        publish(
            admin,
            f"orders:{n % 3}",
            [
                {
                    "name": "paid" if n % 2 else "placed",
                    "userId": f"u{n % 5}",
                    "eventOccurredAt": (timezone.now() - timedelta(hours=n)).isoformat(),
                    "data": {"n": n, "nested": {"ok": True}},
                }
            ],
            "grpc",
        )
    topic.refresh_from_db()
    return topic


def offsets_on(page: str) -> list[int]:
    return [int(value) for value in re.findall(r'class="event-row">\s*<td><a href="[^"]+">(\d+)</a>', page)]


def test_the_topic_list_shows_event_counts_and_rate(client, staff, orders):
    page = client.get("/admin/topics/topic/").content.decode()

    assert "orders" in page
    assert '<td class="field-events">120</td>' in page
    assert '<td class="field-events_per_minute">120</td>' in page


def test_adding_a_topic_creates_its_table(client, staff):
    response = client.post("/admin/topics/topic/add/", {"name": "signups"})

    assert response.status_code == 302
    assert Topic.objects.filter(name="signups").exists()
    assert table_exists("signups_events")


@pytest.mark.parametrize("bad", ["Signups", "1signups", "sign ups", "users;drop table x"])
def test_an_invalid_topic_name_is_a_form_error_and_creates_nothing(client, staff, bad):
    response = client.post("/admin/topics/topic/add/", {"name": bad})

    assert response.status_code == 200
    assert "is invalid" in response.content.decode()
    assert not Topic.objects.exists()


def test_deleting_a_topic_asks_first_saying_what_is_dropped_then_drops_it(client, staff, orders):
    url = f"/admin/topics/topic/{orders.pk}/delete/"

    confirmation = client.get(url).content.decode()
    assert "drops table" in confirmation and "<code>orders_events</code>" in confirmation
    assert "<strong>120</strong> events" in confirmation
    assert table_exists("orders_events")  # a GET changes nothing

    client.post(url, {"post": "yes"})
    assert not Topic.objects.filter(name="orders").exists()
    assert not table_exists("orders_events")


def test_the_event_browser_shows_newest_first_and_pages_by_offset(client, staff, orders):
    first = client.get(f"/admin/topics/topic/{orders.pk}/events/").content.decode()
    assert offsets_on(first) == list(range(120, 70, -1))
    older = re.search(r'href="\?([^"]+)" id="older-events"', first).group(1).replace("&amp;", "&")

    second = client.get(f"/admin/topics/topic/{orders.pk}/events/?{older}").content.decode()
    assert offsets_on(second) == list(range(70, 20, -1))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("name=paid", [n for n in range(120, 0, -1) if n % 2][:50]),
        ("topic_id=1", [n for n in range(120, 0, -1) if n % 3 == 1][:50]),
        ("user_id=u3", [n for n in range(120, 0, -1) if n % 5 == 3][:50]),
        ("before=10", list(range(10, 0, -1))),
        ("name=paid&topic_id=1&user_id=u3", [n for n in range(120, 0, -1) if n % 2 and n % 3 == 1 and n % 5 == 3]),
    ],
)
def test_the_event_browser_filters(client, staff, orders, query, expected):
    page = client.get(f"/admin/topics/topic/{orders.pk}/events/?{query}").content.decode()

    assert offsets_on(page) == expected


def test_the_event_browser_filters_by_time_range(client, staff, orders):
    # Event n occurred n hours ago: a window from 10.5 to 5.5 hours ago holds events 6..10.
    start = (timezone.now() - timedelta(hours=10, minutes=30)).strftime("%Y-%m-%dT%H:%M")
    end = (timezone.now() - timedelta(hours=5, minutes=30)).strftime("%Y-%m-%dT%H:%M")

    page = client.get(f"/admin/topics/topic/{orders.pk}/events/", {"occurred_from": start, "occurred_to": end})

    assert offsets_on(page.content.decode()) == [10, 9, 8, 7, 6]


def test_an_event_page_pretty_prints_its_data(client, staff, orders):
    page = html.unescape(client.get(f"/admin/topics/topic/{orders.pk}/events/7/").content.decode())

    assert '"n": 7' in page
    assert '"nested": {\n    "ok": true\n  }' in page
    assert "orders:1" in page
    assert client.get(f"/admin/topics/topic/{orders.pk}/events/999/").status_code == 404


def test_the_dashboard_counts_topics_events_and_problems(client, staff, orders):
    page = client.get("/admin/").content.decode()

    # Each count is a link to the rows behind it (tests/test_console_dashboard.py follows them).
    assert re.search(r'Topics</a></th><td><a href="[^"]+">1</a></td>', page)
    assert re.search(r'Events stored today</th><td><a href="[^"]+">120</a></td>', page)
    assert re.search(r'Undeliverable events</th><td><a href="[^"]+">0</a></td>', page)


def test_a_superuser_mints_a_token_shown_once(client, staff):
    page = client.post("/admin/mint-token/", {"topics": "orders:1, visits", "ttl_seconds": 600}).content.decode()

    token = re.search(r'<textarea readonly rows="4" cols="100" id="token-value">([^<]+)</textarea>', page).group(1)
    principal = authenticate(token)
    assert {str(grant) for grant in principal.grants} == {"orders:1", "visits"}
    assert not principal.admin
    assert "Grant at least one topic" in client.post("/admin/mint-token/", {"ttl_seconds": 60}).content.decode()


def test_a_token_page_refuses_a_bad_grant(client, staff):
    page = client.post("/admin/mint-token/", {"topics": "Orders", "ttl_seconds": 60}).content.decode()

    assert "is invalid" in page
    assert "token-value" not in page


def test_staff_who_are_not_superusers_cannot_mint_tokens(client, db):
    user = get_user_model().objects.create_user("clerk", password="pw", is_staff=True)
    client.force_login(user)

    assert client.get("/admin/mint-token/").status_code == 403


@pytest.mark.parametrize(
    "url", ["/admin/", "/admin/topics/topic/", "/admin/mint-token/", "/admin/topics/topic/1/events/"]
)
def test_non_staff_users_are_sent_to_the_login_page(client, db, url):
    user = get_user_model().objects.create_user("visitor", password="pw")
    client.force_login(user)

    response = client.get(url)

    assert response.status_code == 302 and "/admin/login/" in response["location"]


def test_a_topic_is_added_with_retention_which_its_page_changes_and_the_list_shows(client, staff, admin):
    response = client.post(
        "/admin/topics/topic/add/", {"name": "visits", "retention_max_age_seconds": "", "retention_max_events": "5"}
    )
    assert response.status_code == 302
    topic = Topic.objects.get(name="visits")
    assert (topic.retention_max_age_seconds, topic.retention_max_events) == (None, 5)
    publish(admin, "visits", [{"name": "v", "data": n} for n in range(8)], "http")
    from topics.retention import sweep_topic

    sweep_topic("visits")

    page = client.get("/admin/topics/topic/").content.decode()
    assert '<td class="field-events">5</td>' in page
    assert '<td class="field-first_offset_shown">4</td>' in page
    assert '<td class="field-retention">5 events</td>' in page
    assert re.search(r'<td class="field-size_on_disk">[\d.]+\W+KB</td>', page), page
    change = client.get(f"/admin/topics/topic/{topic.pk}/change/").content.decode()
    assert re.search(r"deleted 3 \(3 in all\)", change)

    response = client.post(
        f"/admin/topics/topic/{topic.pk}/change/", {"retention_max_age_seconds": "3600", "retention_max_events": ""}
    )
    assert response.status_code == 302
    topic.refresh_from_db()
    assert (topic.retention_max_age_seconds, topic.retention_max_events) == (3600, None)
