"""The operator's pages at 1280 px in Chromium, against a real web process (daphne) on the test database: the
dashboard draws the last hour and its bars lead to the rows behind them; the destination, attempt, undeliverable
and stream lists, the event browser, the event page, the live viewer and the token page show every column inside
the window (long text cut with an ellipsis, figures and times whole), and the live viewer masks the token.

Saves the screenshots of each page (``make screenshots`` writes them to docs/screenshots/). The data are fixed;
what changes from run to run (the clock on the dashboard's axis, creation times) is greyed out.
"""

import re
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
import requests
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import F
from django.utils import timezone
from playwright.sync_api import Locator, Page, expect

from consumers.services import create_consumer
from eventrelay.auth import Principal, mint_token
from harness.processes import WebServer
from tests.browser import page_fixture, screenshot
from topics.models import Topic
from webhooks.models import DeliveryAttempt, DeliveryStream, Destination, UndeliverableEvent
from webhooks.services import create_destination

pytestmark = pytest.mark.e2e
page = page_fixture()

PASSWORD = "pw-for-browser-tests-only"
WIDTH = 1280
PUBLIC_URL = "http://93.184.215.14/hooks/services/T0001/B0002/a-long-path-as-chat-webhooks-have/deliver-here"
# What webhooks.delivery.request_error_in_words records for a receiver that never answers: longer than its column.
LONG_ERROR = "timed out after 10 s waiting for 93.184.215.14:80 to answer"
LONG_DATA = (
    '{"order":1001,"customer":{"id":"c-7","email":"someone.with.a.long.address@example.com"},'
    '"items":[{"sku":"A-1","qty":2,"note":"a note long enough to run past the column"}],"total":"39.90"}'
)
OCCURRED = "2026-01-05T09:30:00.250Z"


# --- Fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture
def web(transactional_db: None) -> Iterator[WebServer]:
    """A web process of the test's own (tests/test_admin_browser.py says why)."""
    server = WebServer(name="web_console_pages_browser")
    yield server
    server.stop()


@pytest.fixture
def superuser(transactional_db: None) -> AbstractBaseUser:
    return get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)


def store(topic: Topic, moments: list[datetime], *, topic_id: str, name: str, data: str = LONG_DATA) -> None:
    """Events stored at ``moments``, in order (the dashboard counts by ``stored_at``)."""
    topic.refresh_from_db()
    first = topic.last_offset + 1
    with connection.cursor() as cursor:
        cursor.executemany(
            f'INSERT INTO "{topic.table_name}" ("offset", event_id, name, topic_id, source, user_id, '
            "event_occurred_at, context, data, stored_at) VALUES (%s, %s, %s, %s, 'http', %s, %s, %s, %s, %s)",
            [
                (
                    first + index,
                    uuid.uuid4(),
                    name,
                    topic_id,
                    f"user-{index % 3}",
                    OCCURRED,
                    '{"ip":"10.0.0.7"}',
                    data,
                    moment,
                )
                for index, moment in enumerate(moments)
            ],
        )
    Topic.objects.filter(pk=topic.pk).update(last_offset=F("last_offset") + len(moments))


@pytest.fixture
def scene(
    transactional_db: None, make_topic: Callable[[str], Topic], admin: Principal, settings: object
) -> dict[str, object]:
    """Two topics with an hour of events, two destinations (one failing, with long errors), attempts of every
    outcome, undeliverable events and a consumer behind."""
    settings.ER_WEBHOOK_ALLOW_PRIVATE = True  # type: ignore[attr-defined]
    now = timezone.now().replace(second=0, microsecond=0)
    orders, signups = make_topic("orders"), make_topic("signups")
    # 59 minutes of events, the current one included: the page, loaded seconds later, may show the hour from a
    # minute further on (its oldest bar gone), and every one of them is still in it.
    for ago in range(58, -1, -1):
        burst = 3 + (ago * 7) % 11  # a shape, not a flat line
        store(
            orders,
            [now - timedelta(minutes=ago, seconds=-2 * n) for n in range(burst)],
            topic_id="123",
            name="order_placed",
        )
        if ago % 4 == 0:
            store(signups, [now - timedelta(minutes=ago)], topic_id="eu", name="user_signed_up", data='{"plan":"pro"}')
    billing = create_destination(name="billing", url=PUBLIC_URL, topic="orders:123", start_offset=0)
    crm = create_destination(name="crm-sync-for-the-sales-team", url=PUBLIC_URL + "?account=42", topic="orders")
    billing_stream, _ = DeliveryStream.objects.update_or_create(
        destination=billing, topic_id="123", defaults={"last_offset": 180, "delivered_count": 180}
    )
    crm_stream, _ = DeliveryStream.objects.update_or_create(
        destination=crm,
        topic_id="123",
        defaults={"last_offset": 40, "attempts": 6, "last_error": LONG_ERROR, "delivered_count": 40},
    )
    Destination.objects.filter(pk=crm.pk).update(failing_since=now - timedelta(minutes=50))
    for ago in range(50, 0, -1):
        DeliveryAttempt.objects.create(
            stream=billing_stream,
            event_id=uuid.uuid4(),
            offset=100 + ago,
            attempt=1,
            status="succeeded",
            response_status=200,
            duration_ms=40 + ago,
            at=now - timedelta(minutes=ago),
        )
        if ago % 3 == 0:
            DeliveryAttempt.objects.create(
                stream=crm_stream,
                event_id=uuid.uuid4(),
                offset=41,
                attempt=ago,
                status="failed",
                error=LONG_ERROR,
                duration_ms=10_000,
                at=now - timedelta(minutes=ago, seconds=20),
            )
    for offset in (31, 35):
        record = UndeliverableEvent.objects.create(
            stream=crm_stream, event_id=uuid.uuid4(), offset=offset, attempts=20, last_error=LONG_ERROR
        )
        UndeliverableEvent.objects.filter(pk=record.pk).update(created_at=now - timedelta(minutes=offset - 20))
    create_consumer(admin, "orders", "invoicing", {})
    create_consumer(admin, "signups:eu", "welcome-mail", {})
    return {"orders": Topic.objects.get(name="orders")}


def log_in(page: Page, web: WebServer) -> None:
    page.goto(f"{web.base_url}/admin/login/?next=/admin/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{web.base_url}/admin/")


def assert_inside_the_window(page: Page, *locators: Locator) -> None:
    """No horizontal scrolling, of the page or of a table's box, and every element of ``locators`` wholly
    inside the 1280 px window."""
    assert page.viewport_size == {"width": WIDTH, "height": 800}
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    scrolled = page.evaluate(
        "[...document.querySelectorAll('.results, .scroll')].filter(e => e.scrollWidth > e.clientWidth + 1)"
        ".map(e => e.className)"
    )
    assert scrolled == [], f"scrolled sideways: {scrolled}"
    for locator in locators:
        expect(locator.first).to_be_visible()
        for element in locator.all():
            box = element.bounding_box()
            assert box is not None
            assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTH + 0.5, (element.inner_text(), box)


def is_cut_with_an_ellipsis(locator: Locator) -> bool:
    return locator.evaluate("e => getComputedStyle(e).textOverflow === 'ellipsis' && e.scrollWidth > e.clientWidth")


def one_line(locator: Locator) -> bool:
    """The element's text sits on one line: every box of its contents starts at the same height."""
    return locator.evaluate(
        """e => {
            const range = document.createRange();
            range.selectNodeContents(e);
            const tops = [...range.getClientRects()].map(rect => rect.top);
            return Math.max(...tops) - Math.min(...tops) < parseFloat(getComputedStyle(e).fontSize);
        }"""
    )


# --- The dashboard -------------------------------------------------------------------------------------------


def test_the_dashboard_draws_the_last_hour_and_its_bars_lead_to_the_rows(
    scene: dict[str, object], superuser: AbstractBaseUser, web: WebServer, page: Page
) -> None:
    log_in(page, web)

    orders = page.locator('.er-topic[data-topic="orders"]')
    expect(orders.locator("rect.bar-events")).to_have_count(59)
    expect(page.locator('.er-topic[data-topic="signups"] rect.bar-events')).to_have_count(15)
    expect(page.locator("#dashboard-webhooks rect.bar-delivered")).to_have_count(50)
    expect(page.locator("#webhooks-failed")).to_have_text("16")
    expect(page.locator("#webhooks-undeliverable")).to_have_text("2")
    expect(page.locator('#dashboard-destinations tr[data-destination="billing"] .backlog')).to_be_visible()
    expect(page.locator('#dashboard-consumers tr[data-consumer="orders/invoicing"] .lag')).to_have_text(
        str(scene["orders"].last_offset)  # type: ignore[attr-defined]
    )
    assert_inside_the_window(
        page,
        page.locator("svg.chart"),
        page.locator("#dashboard-destinations td"),
        page.locator("#dashboard-consumers td"),
    )
    screenshot(page, "admin-dashboard")

    newest_bar = orders.locator("a.chart-link").last
    count = int(newest_bar.locator("rect").get_attribute("data-value") or 0)
    newest_bar.click()
    expect(page.get_by_role("heading", name="Events of orders")).to_be_visible()
    expect(page.locator("#result_list tr.event-row td:first-child").first).to_have_text(
        str(scene["orders"].last_offset)  # type: ignore[attr-defined]
    )
    assert count > 0

    page.go_back()
    page.locator("#webhooks-failed").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(16)
    expect(page.locator("#result_list td.field-status").first).to_have_text("Failed")


# --- The webhook lists ---------------------------------------------------------------------------------------


def test_the_destination_list_shows_backlog_and_undeliverable_at_1280_px(
    scene: dict[str, object], superuser: AbstractBaseUser, web: WebServer, page: Page
) -> None:
    log_in(page, web)
    page.goto(f"{web.base_url}/admin/webhooks/destination/")

    crm = page.locator("#result_list tbody tr").filter(has_text="crm-sync-for-the-sales-team")
    expect(crm.locator("td.field-undeliverable")).to_have_text("2")
    expect(crm.locator("td.field-state")).to_contain_text("failing since")
    assert_inside_the_window(
        page,
        page.locator("#result_list th.column-backlog"),
        page.locator("#result_list th.column-undeliverable"),
        page.locator("#result_list td.field-backlog"),
        page.locator("#result_list td.field-undeliverable"),
        page.locator("#result_list td.field-state"),
    )
    assert is_cut_with_an_ellipsis(crm.locator("td.field-shown_url .er-clip"))
    assert (crm.locator("td.field-shown_url .er-clip").get_attribute("title") or "").endswith("?account=42")
    screenshot(page, "destination-list")


def test_the_attempt_list_shows_status_duration_and_error_at_1280_px(
    scene: dict[str, object], superuser: AbstractBaseUser, web: WebServer, page: Page
) -> None:
    log_in(page, web)
    page.goto(f"{web.base_url}/admin/webhooks/deliveryattempt/?status__exact=failed")

    expect(page.locator("#result_list tbody tr")).to_have_count(16)
    assert_inside_the_window(
        page,
        page.locator("#result_list td.field-status"),
        page.locator("#result_list td.field-duration"),
        page.locator("#result_list td.field-error_excerpt"),
        page.locator("#result_list .field-at"),
    )
    first = page.locator("#result_list tbody tr").first
    expect(first.locator("td.field-duration")).to_have_text("10000 ms")
    assert one_line(first.locator(".field-at"))
    assert is_cut_with_an_ellipsis(first.locator("td.field-error_excerpt .er-clip"))
    screenshot(page, "delivery-attempts", hide=[page.locator("#result_list .field-at")])


def test_the_undeliverable_and_stream_lists_fit_1280_px(
    scene: dict[str, object], superuser: AbstractBaseUser, web: WebServer, page: Page
) -> None:
    log_in(page, web)

    page.goto(f"{web.base_url}/admin/webhooks/undeliverableevent/")
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    assert_inside_the_window(
        page,
        page.locator("#result_list td.field-last_error_excerpt"),
        page.locator("#result_list td.field-created_at"),
        page.locator("#result_list td.field-redelivered_at"),
    )
    screenshot(page, "undeliverable-events", hide=[page.locator("#result_list td.field-created_at")])

    page.goto(f"{web.base_url}/admin/webhooks/deliverystream/")
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    assert_inside_the_window(
        page,
        page.locator("#result_list td.field-last_error_excerpt"),
        page.locator("#result_list td.field-delivered"),
        page.locator("#result_list td.field-expired"),
        page.locator("#result_list td.field-lease"),
    )
    screenshot(page, "delivery-streams")


# --- Events --------------------------------------------------------------------------------------------------


def test_the_event_browser_keeps_times_on_one_line_cuts_data_and_counts_what_matches(
    scene: dict[str, object], superuser: AbstractBaseUser, web: WebServer, page: Page
) -> None:
    orders = scene["orders"]
    log_in(page, web)
    page.goto(f"{web.base_url}/admin/topics/topic/{orders.pk}/events/")  # type: ignore[attr-defined]
    expect(page.locator("#event-count")).to_contain_text(f"{orders.last_offset} events in table")  # type: ignore[attr-defined]

    page.get_by_label("User id").fill("user-1")
    page.get_by_label("Occurred from (UTC)").fill("2026-01-05T10:29:00+01:00")
    page.get_by_role("button", name="Filter").click()

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM orders_events WHERE user_id = 'user-1'")
        (matching,) = cursor.fetchone()
    expect(page.locator("#event-count")).to_contain_text(f"{matching} events match these filters")
    row = page.locator("#result_list tr.event-row").first
    expect(row.locator("td.when")).to_have_text(OCCURRED)
    assert one_line(row.locator("td.when"))
    assert is_cut_with_an_ellipsis(row.locator("td.data"))
    assert_inside_the_window(page, page.locator("#result_list thead th"), page.locator("#event-filters input"))
    screenshot(page, "event-browser-filtered")

    row.locator("td:first-child a").click()
    label = page.locator("#event-page .form-row label").first
    expect(label).to_have_css("font-weight", "600")
    assert_inside_the_window(page, page.locator("#event-page .readonly"), page.locator("#event-data"))
    expect(page.locator("#event-data")).to_contain_text("someone.with.a.long.address@example.com")
    screenshot(
        page,
        "event-page",
        hide=[
            page.locator("#event-page .form-row").filter(has_text="Event id").locator(".readonly"),
            page.locator("#event-page .form-row").filter(has_text="Stored at").locator(".readonly"),
        ],
    )


# --- The live viewer and the token page ----------------------------------------------------------------------


def test_the_live_viewer_masks_the_token_and_gives_its_columns_room(
    scene: dict[str, object], superuser: AbstractBaseUser, web: WebServer, page: Page
) -> None:
    token = mint_token(["orders"])
    page.goto(f"{web.base_url}/")

    page.get_by_label("Token").fill(token)
    expect(page.locator("#token")).to_have_attribute("type", "password")
    page.get_by_label("Topic").fill("orders:123")
    # The last few events: a replay of every one would make a page too long to picture.
    page.get_by_label("From offset").fill(str(scene["orders"].last_offset - 2))  # type: ignore[attr-defined]
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("#status")).to_contain_text("Subscribed to orders:123")
    expect(page.locator("#events tr.event").first).to_be_visible()

    first = page.locator("#events tr.event").last
    assert one_line(first.locator("td.when")) and one_line(first.locator("td.name"))
    assert_inside_the_window(page, page.locator("thead th"), page.locator("#events tr.event td.data").first)
    screenshot(page, "live-viewer-connected", hide=[page.locator("#token")])

    page.get_by_role("button", name="Show").click()
    expect(page.locator("#token")).to_have_attribute("type", "text")


def test_the_token_page_says_lifetime_and_the_favicon_is_served(
    superuser: AbstractBaseUser, web: WebServer, page: Page
) -> None:
    log_in(page, web)
    page.goto(f"{web.base_url}/admin/mint-token/")

    expect(page.get_by_label("Lifetime (seconds)")).to_have_value("3600")
    expect(page.get_by_text("Ttl seconds")).to_have_count(0)
    icon = page.locator('link[rel="icon"]').get_attribute("href")
    assert icon and requests.get(f"{web.base_url}{icon}", timeout=10).headers["content-type"] == "image/svg+xml"
    root = requests.get(f"{web.base_url}/favicon.ico", timeout=10)
    assert root.status_code == 200 and root.headers["content-type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    assert re.search(r"/static/console/favicon\.ico$", root.url)
    screenshot(page, "mint-token")
