"""Browser tests: Playwright's sync API driving Debian's Chromium (``/usr/bin/chromium``; Playwright's
own browser downloads are never used).

A test module makes a ``page`` fixture with one line and saves screenshots with ``screenshot``::

    from tests.browser import page_fixture, screenshot

    page = page_fixture()

    def test_it_shows_the_dashboard(page: Page, web_server: WebServer) -> None:
        page.goto(f"{web_server.base_url}/admin/")
        ...
        screenshot(page, "admin-dashboard")  # .test-logs/<worker>/screenshots/docs/; `make screenshots`: docs/screenshots/

Each test gets its own Chromium with a fresh context (no cookies, storage or cache shared with any
other test), 1280x800, light colour scheme, UTC. An uncaught JavaScript error on the page fails the
test; a failing test leaves a screenshot in ``.test-logs/<worker>/screenshots/`` (``<worker>``: the pytest-xdist worker, gw0, gw1, ...).

Why a browser per test, and not one per session: while Playwright's sync API is running, the thread
looks as if an asyncio loop were running in it (Playwright marks its loop as the running one between
calls, see ``playwright/_impl/_greenlets.py``). pytest-asyncio's ``async def`` tests refuse to start
then, and Django refuses ORM calls. So Playwright lives only as long as one test, and during it the
ORM is allowed (``DJANGO_ALLOW_ASYNC_UNSAFE``): no coroutine of ours runs in that loop, so the guard
Django offers has nothing to protect. Browser tests are plain ``def`` tests.
"""

import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from harness.processes import LOG_DIR, REPO

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# ``screenshot`` writes into the ignored .test-logs/, so a test run leaves the checkout clean; ``make screenshots``
# sets REFRESH_SCREENSHOTS=1 to rewrite the committed images the README shows.
REFRESH_SCREENSHOTS = "REFRESH_SCREENSHOTS"
COMMITTED_SCREENSHOTS = REPO / "docs" / "screenshots"
# Long enough for a loaded machine running the whole suite, short enough to fail usefully.
TIMEOUT_MS = 15_000


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium under Playwright, for the duration of the ``with`` block."""
    if not shutil.which(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make test` as root, or `apt-get install chromium`")
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # see the module docstring
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        if previous is None:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@contextmanager
def open_page(browser: Browser, failure_screenshot: Callable[[], Path | None] = lambda: None) -> Iterator[Page]:
    """A page in a fresh context. On leaving, saves a screenshot to ``failure_screenshot()`` (when it
    returns a path) and fails on any uncaught JavaScript error the page raised."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, color_scheme="light", locale="en-US", timezone_id="UTC"
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
        path = failure_screenshot()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path), full_page=True)
    finally:
        context.close()
    if errors:
        pytest.fail(f"uncaught JavaScript errors on the page: {errors}")


def page_fixture() -> Callable[..., Iterator[Page]]:
    """Make a ``page`` fixture for a test module: ``page = page_fixture()``."""

    @pytest.fixture(name="page")
    def page(request: pytest.FixtureRequest) -> Iterator[Page]:
        failures_before = request.session.testsfailed

        def failure_screenshot() -> Path | None:
            # The test's own report is counted before its fixtures are torn down.
            if request.session.testsfailed == failures_before:
                return None
            return LOG_DIR / "screenshots" / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', request.node.nodeid)}.png"

        expect.set_options(timeout=TIMEOUT_MS)
        with chromium() as browser, open_page(browser, failure_screenshot) as page:
            yield page

    return page


def screenshots_dir() -> Path:
    """docs/screenshots/ when ``REFRESH_SCREENSHOTS=1`` (``make screenshots``), else .test-logs/<worker>/screenshots/docs/."""
    if os.environ.get(REFRESH_SCREENSHOTS) == "1":
        return COMMITTED_SCREENSHOTS
    return LOG_DIR / "screenshots" / "docs"


def screenshot(page: Page, name: str, hide: Sequence[Locator] = ()) -> Path:
    """Save the whole page to ``<screenshots_dir()>/<name>.png``, animations settled. ``hide``: elements
    painted over in grey, for what a committed image should not show (tokens, secrets)."""
    path = screenshots_dir() / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True, animations="disabled", mask=list(hide), mask_color="#c4c4c4")
    return path
