"""The admin console in Chromium, against the real web process (daphne) on the test database: log in
through the login form, create a topic, browse events published through the REST API, create a webhook
destination and watch a real Celery worker deliver to a local receiver, mint a token and use it in the
live viewer, delete a topic through its confirmation page.

Saves the screenshots the README shows (``docs/screenshots/topic-list.png``, ``event-browser.png``,
``destination.png``). They use fixed topic names, event times and data, and grey out what changes from
run to run (creation times, the receiver's port, lease ages), so a rerun gives the same pictures.
"""

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client as DjangoClient
from playwright.sync_api import Locator, Page, Response, expect

from eventrelay.auth import authenticate, mint_token
from harness.processes import CeleryWorker, WebServer
from tests.browser import page_fixture, screenshot
from tests.grpc_client import unique_topic
from tests.helpers import table_exists
from tests.webhook_receiver import Receiver
from topics.models import Topic
from topics.services import delete_topic

pytestmark = pytest.mark.e2e
page = page_fixture()

PASSWORD = "pw-for-browser-tests-only"


# --- Fixtures and helpers ----------------------------------------------------------------------------


@pytest.fixture
def web(transactional_db: None) -> Iterator[WebServer]:
    """A web process of the test's own, not the session's: the admin logs every change with a content
    type id the process caches for its lifetime, and the flush after each transactional test creates
    the content types again under new ids. A process that served an earlier test would log a stale id
    (IntegrityError on django_admin_log)."""
    server = WebServer(name="web_admin_browser")
    yield server
    server.stop()


@pytest.fixture
def superuser(transactional_db: None) -> AbstractBaseUser:
    """Committed, so the web process sees it."""
    return get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)


@pytest.fixture
def dropped_afterwards(transactional_db: None) -> Iterator[list[str]]:
    """Names of topics a test creates through the admin, dropped afterwards if still there (the
    transactional flush empties Django's tables but knows nothing of per-topic tables)."""
    names: list[str] = []
    yield names
    for name in names:
        if Topic.objects.filter(name=name).exists():
            delete_topic(name)


@pytest.fixture
def worker(transactional_db: None) -> Iterator[CeleryWorker]:
    process = CeleryWorker(name="admin_browser_worker")
    yield process
    process.stop()


def at(seconds: int) -> str:
    """A fixed moment, ``seconds`` (+ 250 ms) after 2026-01-05T09:30:00Z."""
    return f"2026-01-05T09:30:{seconds:02d}.250Z"


def publish(web: WebServer, ref: str, *events: dict[str, Any]) -> list[dict[str, Any]]:
    """Publish through the REST API with an admin token; the stored events as the API returns them."""
    response = requests.post(
        f"{web.base_url}/api/v1/topics/{ref}/events",
        json=list(events),
        headers={"authorization": f"Bearer {mint_token([], admin=True)}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["events"]


def log_in(page: Page, web: WebServer) -> None:
    """As the ``superuser``, through the login form the admin sends an anonymous visitor to."""
    page.goto(f"{web.base_url}/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/$"))
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{web.base_url}/admin/")


def topic_row(page: Page, name: str) -> Locator:
    return page.locator("#result_list tbody tr").filter(has=page.get_by_role("link", name=name, exact=True))


def event_offsets(page: Page) -> Locator:
    return page.locator("#result_list tr.event-row td:first-child")


def blanked(*locators: Locator) -> list[Locator]:
    """``locators`` for ``screenshot(hide=...)``, their text first replaced by a placeholder of fixed
    length: a time's text varies in width ("midnight", "11:59 p.m."), and with it the grey box and the
    table's columns."""
    for locator in locators:
        locator.evaluate_all("elements => elements.forEach(element => { element.textContent = '0'.repeat(20) })")
    return list(locators)


def reload_until(page: Page, condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    """Reload the page until ``condition()`` holds: admin pages do not update by themselves."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.3)
        page.reload()


ORDER_EVENTS = [
    {
        "name": "order_placed",
        "userId": "u1",
        "eventOccurredAt": at(0),
        "data": {"order": 1001, "items": [{"sku": "A-1", "qty": 2}], "total": "39.90"},
    },
    {"name": "order_paid", "userId": "u1", "eventOccurredAt": at(1), "data": {"order": 1001, "method": "card"}},
    {
        "name": "order_placed",
        "userId": "u2",
        "eventOccurredAt": at(2),
        "context": {"ip": "10.0.0.7"},
        "data": {"order": 1002, "items": [{"sku": "B-7", "qty": 1}], "total": "12.00", "note": "gift wrap ✓"},
    },
    {"name": "order_shipped", "userId": "u1", "eventOccurredAt": at(3), "data": {"order": 1001, "carrier": "DHL"}},
]


# --- Logging in --------------------------------------------------------------------------------------


def test_a_superuser_logs_in_through_the_form_and_sees_the_dashboard(
    page: Page, web: WebServer, superuser: AbstractBaseUser, make_topic: Callable[[str], Topic]
) -> None:
    make_topic(unique_topic("dash"))

    log_in(page, web)

    dashboard = page.locator("#eventrelay-dashboard")
    expect(dashboard.get_by_role("heading")).to_have_text("EventRelay")
    expect(dashboard.locator("tr").filter(has_text="Topics").locator("td")).to_have_text("1")
    expect(dashboard.locator("tr").filter(has_text="Undeliverable events").locator("td")).to_have_text("0")
    expect(dashboard.get_by_role("link", name="Mint an API token")).to_be_visible()


def test_the_admin_loads_its_stylesheets_and_scripts_from_the_web_process(
    page: Page, web: WebServer, superuser: AbstractBaseUser
) -> None:
    static: list[Response] = []
    page.on("response", lambda response: static.append(response) if "/static/" in response.url else None)

    log_in(page, web)
    page.wait_for_load_state("load")  # the dashboard's own stylesheets arrive after its URL changes

    assert {urlsplit(response.url).path for response in static} >= {
        "/static/admin/css/base.css",
        "/static/admin/css/dashboard.css",
        "/static/admin/js/theme.js",
    }
    # 304: a file the login page loaded already, revalidated by the dashboard.
    assert {response.url: response.status for response in static if response.status not in (200, 304)} == {}
    expect(page.locator("#header")).to_have_css("background-color", "rgb(65, 118, 144)")  # the admin's --secondary


def test_a_logged_in_user_who_is_not_staff_is_sent_to_the_login_page(
    page: Page, web: WebServer, transactional_db: None
) -> None:
    user = get_user_model().objects.create_user("visitor", "visitor@example.com", PASSWORD)
    session = DjangoClient()
    session.force_login(user)
    cookie = session.cookies["sessionid"].value
    page.context.add_cookies([{"name": "sessionid", "value": cookie, "url": web.base_url}])

    page.goto(f"{web.base_url}/admin/")

    expect(page).to_have_url(f"{web.base_url}/admin/login/?next=/admin/")
    expect(page.locator(".errornote")).to_contain_text(
        "You are authenticated as visitor, but are not authorized to access this page"
    )
    expect(page.locator("#eventrelay-dashboard")).to_have_count(0)
    refused = requests.get(f"{web.base_url}/admin/mint-token/", cookies={"sessionid": cookie}, timeout=10)
    assert refused.url == f"{web.base_url}/admin/login/?next=/admin/mint-token/"
    assert "not authorized" in refused.text


# --- Topics and the event browser --------------------------------------------------------------------


def test_a_topic_created_with_the_add_form_gets_its_table_and_lists_with_no_events(
    page: Page, web: WebServer, superuser: AbstractBaseUser, dropped_afterwards: list[str]
) -> None:
    name = unique_topic("admin")
    dropped_afterwards.append(name)
    log_in(page, web)

    page.locator("#eventrelay-dashboard").get_by_role("link", name="Topics").click()
    page.get_by_role("link", name="Add topic").click()
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Save", exact=True).click()

    expect(page).to_have_url(f"{web.base_url}/admin/topics/topic/")
    expect(page.locator(".messagelist .success")).to_contain_text(name)
    row = topic_row(page, name)
    expect(row.locator("td.field-events")).to_have_text("0")
    expect(row.get_by_role("link", name="Browse events")).to_be_visible()
    topic = Topic.objects.get(name=name)
    assert topic.last_offset == 0
    assert table_exists(topic.table_name)


def test_the_add_form_refuses_a_bad_topic_name_and_creates_nothing(
    page: Page, web: WebServer, superuser: AbstractBaseUser
) -> None:
    log_in(page, web)
    page.goto(f"{web.base_url}/admin/topics/topic/add/")

    page.get_by_label("Name").fill("Not-A-Name")
    page.get_by_role("button", name="Save", exact=True).click()

    expect(page.locator(".errorlist")).to_be_visible()
    assert not Topic.objects.exists()


def test_events_published_through_the_api_show_in_the_event_browser_newest_first(
    page: Page, web: WebServer, superuser: AbstractBaseUser, make_topic: Callable[[str], Topic]
) -> None:
    make_topic("orders")  # a fixed name, times and data: the screenshots stay the same
    stored = publish(web, "orders:123", *ORDER_EVENTS[:2])
    stored += publish(web, "orders:456", ORDER_EVENTS[2])
    stored += publish(web, "orders:123", ORDER_EVENTS[3])
    assert [event["offset"] for event in stored] == [1, 2, 3, 4]
    log_in(page, web)

    page.locator("#eventrelay-dashboard").get_by_role("link", name="Topics").click()
    row = topic_row(page, "orders")
    expect(row.locator("td.field-events")).to_have_text("4")
    expect(row.locator("td.field-events_per_minute")).to_have_text("4")
    screenshot(page, "topic-list", hide=blanked(page.locator("td.field-created_at")))
    row.get_by_role("link", name="Browse events").click()

    expect(page.get_by_role("heading", name="Events of orders")).to_be_visible()
    expect(event_offsets(page)).to_have_text(["4", "3", "2", "1"])
    newest = page.locator("#result_list tr.event-row").first
    expect(newest.locator("td")).to_have_text(
        ["4", "order_shipped", "orders:123", "u1", at(3), "http", '{"order":1001,"carrier":"DHL"}']  # as stored
    )
    screenshot(page, "event-browser")

    page.get_by_label("Event name").fill("order_placed")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"[?&]name=order_placed(&|$)"))
    expect(event_offsets(page)).to_have_text(["3", "1"])
    page.get_by_label("Topic id").fill("456")
    page.get_by_role("button", name="Filter").click()
    expect(event_offsets(page)).to_have_text(["3"])

    page.get_by_role("link", name="3", exact=True).click()
    expect(page).to_have_url(re.compile(r"/admin/topics/topic/\d+/events/3/$"))
    expect(page.locator("#event-data")).to_have_text(json.dumps(ORDER_EVENTS[2]["data"], indent=2, ensure_ascii=False))
    expect(page.locator("#event-context")).to_have_text(json.dumps({"ip": "10.0.0.7"}, indent=2))
    fields = page.locator("fieldset .form-row")
    expect(fields.filter(has_text="Event id").locator(".readonly")).to_have_text(stored[2]["eventId"])
    expect(fields.filter(has_text="Topic").locator(".readonly")).to_have_text("orders:456")
    expect(fields.filter(has_text="User id").locator(".readonly")).to_have_text("u2")
    expect(fields.filter(has_text="Occurred at").locator(".readonly")).to_have_text(at(2))


# --- Webhook destinations ----------------------------------------------------------------------------


def test_a_destination_created_with_the_add_form_delivers_and_its_page_shows_the_cursor(
    page: Page,
    web: WebServer,
    superuser: AbstractBaseUser,
    make_topic: Callable[[str], Topic],
    receiver: Receiver,
    worker: CeleryWorker,
) -> None:
    make_topic("orders")
    publish(web, "orders:123", ORDER_EVENTS[0])  # before the destination: not delivered
    log_in(page, web)

    page.get_by_role("link", name="Destinations", exact=True).click()
    page.get_by_role("link", name="Add destination").click()
    page.get_by_label("Name:", exact=True).fill("billing")
    page.get_by_label("URL:", exact=True).fill(receiver.url)
    page.get_by_label("Topic:", exact=True).fill("orders:123")
    page.get_by_role("button", name="Save", exact=True).click()

    expect(page.locator(".messagelist .success").first).to_contain_text("Signing secret of “billing”")
    row = page.locator("#result_list tbody tr").filter(has=page.get_by_role("link", name="billing", exact=True))
    expect(row.locator("td.field-state")).to_have_text("active")
    row.get_by_role("link", name="billing", exact=True).click()
    expect(page.locator("#streams-group")).to_be_visible()

    (paid,) = publish(web, "orders:123", ORDER_EVENTS[1])
    stream = page.locator("#streams-group tbody tr.has_original")
    reload_until(page, lambda: stream.locator("td.field-last_offset").inner_text() == "2", "the cursor to reach 2")

    assert receiver.offsets("orders:123", answered_ok=True) == [paid["offset"]] == [2]
    assert receiver.of("orders:123")[0].event["data"] == ORDER_EVENTS[1]["data"]
    expect(stream.locator("td.field-stream_topic")).to_have_text("orders:123")
    expect(stream.locator("td.field-backlog")).to_have_text("0")
    expect(stream.locator("td.field-attempts")).to_have_text("0")
    expect(stream.locator("td.field-delivered")).to_have_text("1")
    expect(page.locator(".field-delivery_summary")).to_contain_text("topic head: offset 2")
    screenshot(
        page,
        "destination",
        hide=[
            page.locator("#id_url"),  # the receiver's port
            *blanked(
                page.locator(".field-created_at .readonly"),
                page.locator(".field-updated_at .readonly"),
                stream.locator("td.field-lease"),
            ),
        ],
    )

    page.locator(".field-delivery_summary").get_by_role("link", name="delivery attempts").click()
    attempt = page.locator("#result_list tbody tr")
    expect(attempt).to_have_count(1)
    expect(attempt.locator("td.field-offset")).to_have_text("2")
    expect(attempt.locator("td.field-status")).to_have_text("Succeeded")
    expect(attempt.locator("td.field-response_status")).to_have_text("200")


# --- Tokens and the live viewer ----------------------------------------------------------------------


def test_a_token_minted_in_the_admin_subscribes_the_live_viewer(
    page: Page, web: WebServer, superuser: AbstractBaseUser, make_topic: Callable[[str], Topic]
) -> None:
    name = make_topic(unique_topic("minted")).name
    log_in(page, web)

    page.get_by_role("link", name="Mint an API token").click()
    page.get_by_label("Topics").fill(f"{name}:123")
    page.get_by_role("button", name="Mint token").click()
    token = page.locator("#token-value").input_value()

    principal = authenticate(token)
    assert not principal.admin
    assert {str(grant) for grant in principal.grants} == {f"{name}:123"}

    page.goto(f"{web.base_url}/")
    page.get_by_label("Token").fill(token)
    page.get_by_label("Topic").fill(f"{name}:123")
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("#status")).to_contain_text(f"Subscribed to {name}:123")
    (event,) = publish(web, f"{name}:123", {"name": "hello", "data": {"from": "the admin's token"}})

    row = page.locator(f'#events tr[data-offset="{event["offset"]}"]')
    expect(row.locator("td.name")).to_have_text("hello")
    expect(row.locator("td.data pre").first).to_have_text(json.dumps({"from": "the admin's token"}, indent=2))


# --- Deleting a topic --------------------------------------------------------------------------------


def test_deleting_a_topic_drops_its_table_after_a_confirmation_naming_it(
    page: Page, web: WebServer, superuser: AbstractBaseUser, make_topic: Callable[[str], Topic]
) -> None:
    topic = make_topic(unique_topic("doomed"))
    publish(web, f"{topic.name}:1", {"name": "a", "data": {}}, {"name": "b", "data": {}})
    log_in(page, web)
    page.locator("#eventrelay-dashboard").get_by_role("link", name="Topics").click()

    page.get_by_role("link", name=topic.name, exact=True).click()
    page.get_by_role("link", name="Delete", exact=True).click()

    expect(page.locator("#drop-warning")).to_have_text(
        f"Deleting topic {topic.name} drops table {topic.table_name} and its 2 events. This cannot be undone."
    )
    assert table_exists(topic.table_name)
    page.get_by_role("button", name=re.compile(r"^Yes, I.m sure$")).click()

    expect(page).to_have_url(f"{web.base_url}/admin/topics/topic/")
    expect(page.locator(".messagelist .success")).to_contain_text(topic.name)
    expect(page.get_by_role("link", name=topic.name, exact=True)).to_have_count(0)
    assert not Topic.objects.filter(name=topic.name).exists()
    assert not table_exists(topic.table_name)
