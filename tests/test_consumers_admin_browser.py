"""The consumer pages in Chromium, against a real web process (daphne) on the test database: log in, open the
consumer list, open a consumer with a dead letter, redrive it with its button and read the message.

Saves ``docs/screenshots/admin-consumer.png`` (``make screenshots``): fixed topic, consumer, event ids and data,
with the times greyed out, so a rerun gives the same picture.
"""

import re
from collections.abc import Callable, Iterator

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from playwright.sync_api import Page, expect

from consumers import services
from eventrelay.auth import Principal
from events.services import publish
from harness.processes import WebServer
from tests.browser import page_fixture, screenshot
from topics.models import Topic

pytestmark = pytest.mark.e2e
page = page_fixture()

PASSWORD = "pw-for-browser-tests-only"
EVENT_IDS = [f"0b7f8a9c-1d2e-4f50-8a6b-7c8d9e0f1a{n:02d}" for n in range(4)]


@pytest.fixture
def web(transactional_db: None) -> Iterator[WebServer]:
    """A web process of the test's own: the redrive logs a change with a content type id the process caches, and
    each transactional test's flush creates the content types again (tests/test_admin_browser.py says more)."""
    server = WebServer(name="web_consumers_admin_browser")
    yield server
    server.stop()


@pytest.fixture
def superuser(transactional_db: None) -> AbstractBaseUser:
    return get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)


@pytest.fixture
def billing(admin: Principal, make_topic: Callable[[str], Topic]) -> str:
    """Consumer ``billing`` of ``orders``: offset 1 dead-lettered with a reason, 2 leased, 3 and 4 not yet fetched."""
    make_topic("orders")
    publish(
        admin,
        "orders",
        [
            {"eventId": event_id, "name": "order_paid", "userId": f"u{n}", "data": {"order": 1001 + n}}
            for n, event_id in enumerate(EVENT_IDS)
        ],
        "http",
    )
    services.create_consumer(admin, "orders", "billing", {"maxDeliveries": 1, "ackWaitSeconds": 3600})
    first, _leased = services.fetch(admin, "orders", "billing", 2)
    services.nack(admin, "orders", "billing", [first.ack_id], reason="payment provider answered 502")
    return "billing"


def log_in(page: Page, web: WebServer) -> None:
    page.goto(f"{web.base_url}/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/$"))
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{web.base_url}/admin/")


# ``billing`` before ``page``: publishing and nacking announce through async_to_sync, which refuses to run while
# Playwright's loop looks like the running one (tests/browser.py). The test's body leaves the database to the web
# process for the same reason: what it checks, it reads off the pages.
def test_a_dead_letter_is_redriven_from_the_consumer_page(
    billing: str, superuser: AbstractBaseUser, web: WebServer, page: Page
) -> None:
    log_in(page, web)

    page.goto(f"{web.base_url}/admin/consumers/consumer/")
    row = page.locator("#result_list tbody tr").filter(has=page.get_by_role("link", name="billing", exact=True))
    expect(row.locator("td.field-ack_floor")).to_have_text("1")
    expect(row.locator("td.field-lag")).to_have_text("3")
    expect(row.locator("td.field-pending")).to_have_text("1")
    expect(row.locator("td.field-dead_letter_count")).to_have_text("1")
    row.get_by_role("link", name="billing", exact=True).click()

    letters = page.locator("#dead-letters tr.dead-letter")
    expect(letters).to_have_count(1)
    expect(letters.first).to_contain_text("payment provider answered 502")
    screenshot(
        page,
        "admin-consumer",
        hide=[page.locator(".field-created_at .readonly"), letters.locator("td").nth(5)],
    )
    letters.first.get_by_role("button", name="Redrive").click()

    expect(page.locator(".messagelist .success")).to_contain_text("Redrove 1 dead letter(s)")
    expect(page.locator("#dead-letters")).to_contain_text("None")
    # Pending again (waiting for the next fetch), so below the floor: tests/test_consumers_admin.py fetches it.
    page.goto(f"{web.base_url}/admin/consumers/consumer/")
    expect(row.locator("td.field-dead_letter_count")).to_have_text("0")
    expect(row.locator("td.field-pending")).to_have_text("2")
    expect(row.locator("td.field-ack_floor")).to_have_text("0")
