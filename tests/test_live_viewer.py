"""The live viewer at ``/``: a page whose script subscribes over ``/ws/events``, checked in Chromium
against a real daphne process, with events published by a real grpcserver process.

Each test reads what the page shows (rows, offsets, payloads, error notes) and what the browser sent
(the subscribe frames, where the token went).
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from django.test import Client as DjangoClient
from google.protobuf.timestamp_pb2 import Timestamp
from playwright.sync_api import Page, WebSocket, expect

from eventrelay.auth import mint_token
from harness import processes
from harness.processes import WebServer
from tests.browser import page_fixture, screenshot
from tests.grpc_client import Client, unique_topic

pytestmark = pytest.mark.e2e
page = page_fixture()

# Needs exact integers end to end: 2**53 + 1 changes if the page lets JavaScript round it.
BIG = 9007199254740993


@contextmanager
def fresh_topic(admin_client: Client, name: str) -> Iterator[str]:
    """Topic ``name``, new and empty, deleted afterwards (the transactional flush knows nothing of
    per-topic tables)."""
    try:
        admin_client.create_topic(name)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
        admin_client.delete_topic(name)  # left over from an interrupted run
        admin_client.create_topic(name)
    try:
        yield name
    finally:
        try:
            admin_client.delete_topic(name)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise


@pytest.fixture
def topic(admin_client: Client) -> Iterator[str]:
    with fresh_topic(admin_client, unique_topic("viewer")) as name:
        yield name


def at(seconds: int) -> Timestamp:
    """A fixed moment, ``seconds`` (+ 250 ms) after 2026-01-05T09:30:00Z."""
    moment = Timestamp()
    moment.FromJsonString(f"2026-01-05T09:30:{seconds:02d}.250Z")
    return moment


class Traffic:
    """What the page sent: HTTP request URLs and bodies, WebSocket URLs and frames."""

    def __init__(self, page: Page) -> None:
        self.http: list[str] = []
        self.websockets: list[str] = []
        self.frames_sent: list[dict[str, Any]] = []
        page.on("request", lambda request: self.http.append(f"{request.url} {request.post_data or ''}"))
        page.on("websocket", self._watch)

    def _watch(self, socket: WebSocket) -> None:
        self.websockets.append(socket.url)
        socket.on("framesent", lambda payload: self.frames_sent.append(json.loads(payload)))


def connect(page: Page, token: str, topic: str, from_offset: str = "") -> None:
    page.get_by_label("Token").fill(token)
    page.get_by_label("Topic").fill(topic)
    page.get_by_label("From offset").fill(from_offset)
    page.get_by_role("button", name="Connect", exact=True).click()


def expect_subscribed(page: Page, topic: str) -> None:
    expect(page.locator("#status")).to_contain_text(f"Subscribed to {topic}")


def shown_offsets(page: Page) -> list[int]:
    return [int(offset) for offset in page.locator("#events tr.event td.offset").all_inner_texts()]


def expect_offsets(page: Page, offsets: list[int]) -> None:
    expect(page.locator("#events tr.event td.offset")).to_have_text([str(offset) for offset in offsets])


# --- The page ----------------------------------------------------------------------------------------


def test_the_page_answers_without_a_login() -> None:
    response = DjangoClient().get("/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b'id="token"' in response.content
    assert b"/ws/events" in response.content


def test_the_page_cannot_submit_the_token_to_the_server() -> None:
    """Inputs without a ``name`` are never part of a form submission, even with the script off."""
    html = DjangoClient().get("/").content.decode()

    assert html.count("<input") == 3
    assert " name=" not in html.split("<form", 1)[1].split("</form>", 1)[0]
    assert DjangoClient().post("/", {"token": "x"}).status_code == 405


# --- Live events -------------------------------------------------------------------------------------


def test_it_shows_published_events_newest_first(page: Page, web_server: WebServer, admin_client: Client) -> None:
    with fresh_topic(admin_client, "users"):  # a fixed name and fixed times: the screenshot stays the same
        token = mint_token(["users:123"])
        traffic = Traffic(page)
        page.goto(f"{web_server.base_url}/")
        connect(page, token, "users:123")
        expect_subscribed(page, "users:123")

        (greeting,) = admin_client.publish("users:123", {"hello": "browser"}, name="greeting", event_occurred_at=at(0))
        expect_offsets(page, [greeting.offset])
        login_data = {"email": "thomas@example.com", "count": BIG, "nested": {"list": [1, "two", None, True]}}
        (login,) = admin_client.publish(
            "users:123",
            login_data,
            name="user_login",
            user_id="123",
            event_occurred_at=at(1),
            context='{"ip": "10.0.0.1"}',
        )
        admin_client.publish("users:456", {"not": "for this page"}, name="elsewhere", event_occurred_at=at(2))
        (signup,) = admin_client.publish(
            "users:123", {"plan": "pro", "seats": 5}, name="signup", user_id="123", event_occurred_at=at(3)
        )

        expect_offsets(page, [4, 2, 1])
        assert [greeting.offset, login.offset, signup.offset] == [1, 2, 4]
        greeting_row = page.locator('#events tr[data-offset="1"]')
        expect(greeting_row.locator("td.name")).to_have_text("greeting")
        expect(greeting_row.locator("td.topic")).to_have_text("users:123")
        expect(greeting_row.locator("td.user")).to_have_text("—")
        expect(greeting_row.locator("td.data pre")).to_have_text(json.dumps({"hello": "browser"}, indent=2))
        login_row = page.locator('#events tr[data-offset="2"]')
        expect(login_row.locator("td.user")).to_have_text("123")
        expect(login_row.locator("td.when")).to_have_text("2026-01-05T09:30:01.250Z")
        expect(login_row.locator("td.data pre.context")).to_have_text(json.dumps({"ip": "10.0.0.1"}, indent=2))
        expect(login_row.locator("td.data pre").first).to_have_text(json.dumps(login_data, indent=2))
        expect(page.locator("#event-count")).to_have_text("(3 received, last offset 4)")
        expect(page.get_by_label("From offset")).to_have_value("5")
        screenshot(page, "live-viewer", hide=[page.get_by_label("Token")])

        assert traffic.frames_sent == [{"type": "subscribe", "topic": "users:123"}]
        assert traffic.websockets == [f"{web_server.ws_url}?token={token}"]
        assert not [entry for entry in traffic.http if token in entry]
        assert token not in web_server.log()


def test_a_from_offset_replays_stored_events_before_live_ones(
    page: Page, web_server: WebServer, admin_client: Client, topic: str
) -> None:
    stored = admin_client.publish(topic, {"n": 1}, {"n": 2}, {"n": 3}, name="stored")
    page.goto(f"{web_server.base_url}/")

    connect(page, mint_token([topic]), topic, from_offset=str(stored[1].offset))
    expect_subscribed(page, topic)
    (live,) = admin_client.publish(topic, {"n": 4}, name="live")

    expect_offsets(page, [live.offset, stored[2].offset, stored[1].offset])


def test_connect_after_disconnect_resumes_from_the_last_offset_plus_one(
    page: Page, web_server: WebServer, admin_client: Client, topic: str
) -> None:
    traffic = Traffic(page)
    page.goto(f"{web_server.base_url}/")
    connect(page, mint_token([topic]), topic)
    expect_subscribed(page, topic)
    first = admin_client.publish(topic, {"n": 1}, {"n": 2})
    expect_offsets(page, [2, 1])

    page.get_by_role("button", name="Disconnect").click()
    expect(page.locator("#status")).to_have_text("Disconnected; Connect resumes from offset 3")
    missed = admin_client.publish(topic, {"n": 3}, {"n": 4})
    page.get_by_role("button", name="Connect", exact=True).click()
    expect_subscribed(page, topic)

    expect_offsets(page, [4, 3, 2, 1])
    assert [event.offset for event in first + missed] == [1, 2, 3, 4]
    assert traffic.frames_sent == [
        {"type": "subscribe", "topic": topic},
        {"type": "subscribe", "topic": topic, "fromOffset": 3},
    ]


def test_it_reconnects_by_itself_after_the_server_restarts_and_misses_nothing(
    page: Page, admin_client: Client, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = WebServer(name="web_viewer_restart")
    try:
        traffic = Traffic(page)
        page.goto(f"{server.base_url}/")
        connect(page, mint_token([topic]), topic)
        expect_subscribed(page, topic)
        admin_client.publish(topic, {"n": 1})
        expect_offsets(page, [1])

        server.stop()
        expect(page.locator("#status")).to_contain_text("retrying in")
        admin_client.publish(topic, {"n": 2}, {"n": 3})
        # The same address again, as after a deploy: the page reconnects on its own.
        monkeypatch.setattr(processes, "free_port", lambda: server.port)
        server = WebServer(name="web_viewer_restart")
        expect_subscribed(page, topic)

        expect_offsets(page, [3, 2, 1])
        assert traffic.frames_sent[-1] == {"type": "subscribe", "topic": topic, "fromOffset": 2}
    finally:
        server.stop()


# --- Errors ------------------------------------------------------------------------------------------


def test_it_shows_forbidden_for_a_topic_id_the_token_does_not_grant(
    page: Page, web_server: WebServer, topic: str
) -> None:
    page.goto(f"{web_server.base_url}/")

    connect(page, mint_token([f"{topic}:123"]), f"{topic}:456")

    error = page.locator("#errors .errornote")
    expect(error).to_have_count(1)
    expect(error.locator(".code")).to_have_text("forbidden")
    expect(error).to_contain_text(f"{topic}:456")
    expect(page.locator("#status")).to_have_text("Not subscribed: forbidden")
    expect(page.get_by_role("button", name="Connect", exact=True)).to_be_enabled()
    expect(page.get_by_role("button", name="Disconnect")).to_be_disabled()


def test_it_says_the_server_refused_a_bad_token(page: Page, web_server: WebServer) -> None:
    page.goto(f"{web_server.base_url}/")

    connect(page, "not-a-token", "users:123")

    expect(page.locator("#errors .errornote .code")).to_have_text("unauthenticated")
    expect(page.locator("#errors .errornote")).to_contain_text("token is missing, malformed, expired")
    expect(page.locator("#status")).to_have_text("Connection refused")
    assert shown_offsets(page) == []
