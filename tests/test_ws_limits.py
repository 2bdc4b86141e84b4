"""WebSocket limits of the real web process: the largest frame it reads (ER_WS_MAX_FRAME_BYTES, with
the transport's ceiling above it) and the subscriptions one connection may hold
(ER_WS_MAX_SUBSCRIPTIONS)."""

import json
import uuid
from collections.abc import Iterator

import pytest
import requests
from websockets.exceptions import ConnectionClosed

from harness.processes import WebServer
from tests.helpers import admin_token
from tests.ws_client import ws_connect

pytestmark = pytest.mark.e2e

SMALL_FRAME_LIMIT = 10_000
# The transport reads a message up to 1 MiB past ER_WS_MAX_FRAME_BYTES (so that it can answer
# `invalid`), and closes the connection with 1009 beyond that.
TRANSPORT_SLACK = 1024 * 1024


# Per test, on committed data (transactional_db): the server process reads what the test creates.
@pytest.fixture
def web(transactional_db: None) -> Iterator[WebServer]:
    server = WebServer(name="outage-ws-limits")
    yield server
    server.stop()


@pytest.fixture
def web_limited(transactional_db: None) -> Iterator[WebServer]:
    server = WebServer(
        env={"ER_WS_MAX_FRAME_BYTES": str(SMALL_FRAME_LIMIT), "ER_WS_MAX_SUBSCRIPTIONS": "3"},
        name="outage-ws-limits-small",
    )
    yield server
    server.stop()


def new_topic(server: WebServer) -> str:
    name = f"wslim_{uuid.uuid4().hex[:8]}"
    response = requests.post(
        f"{server.base_url}/api/v1/topics",
        json={"name": name},
        headers={"authorization": f"Bearer {admin_token()}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return name


def publish_frame(topic: str, data: str) -> str:
    return json.dumps({"type": "publish", "topic": topic, "events": [{"name": "x", "data": data}]})


async def test_a_five_mib_publish_frame_is_stored(web: WebServer) -> None:
    topic = new_topic(web)
    events = [{"name": "big", "data": {"blob": "x" * 200_000, "n": n}} for n in range(27)]
    frame = {"type": "publish", "topic": topic, "ref": "big", "events": events}
    assert len(json.dumps(frame)) > 5 * 1024 * 1024
    async with ws_connect(web.ws_url, admin_token()) as ws:
        reply = await ws.request(frame)
    assert reply["type"] == "published", reply
    assert [(event["offset"], event["data"]["n"]) for event in reply["events"]] == [(n + 1, n) for n in range(27)]


async def test_a_frame_far_over_the_limit_closes_the_connection_with_1009_and_a_reason(
    web_limited: WebServer,
) -> None:
    topic = new_topic(web_limited)
    frame = publish_frame(topic, "x" * (SMALL_FRAME_LIMIT + TRANSPORT_SLACK))
    async with ws_connect(web_limited.ws_url, admin_token()) as ws:
        await ws.send_raw(frame)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.reply()
    assert closed.value.rcvd is not None, "closed without a close frame"
    assert closed.value.rcvd.code == 1009
    assert "exceeds" in closed.value.rcvd.reason


async def test_a_frame_just_over_the_limit_is_answered_invalid_and_the_connection_stays(web_limited: WebServer) -> None:
    topic = new_topic(web_limited)
    frame = publish_frame(topic, "x" * SMALL_FRAME_LIMIT)
    async with ws_connect(web_limited.ws_url, admin_token()) as ws:
        await ws.send_raw(frame)
        error = await ws.reply()
        assert (error["type"], error["code"]) == ("error", "invalid")
        assert f"at most {SMALL_FRAME_LIMIT}" in error["message"]
        await ws.subscribe(topic)


async def test_subscriptions_past_the_limit_are_refused_naming_it(web_limited: WebServer) -> None:
    first, second, third, fourth = (new_topic(web_limited) for _ in range(4))
    async with ws_connect(web_limited.ws_url, admin_token()) as ws:
        for topic in (first, second, third):
            await ws.subscribe(topic)
        # Subscribing again to a topic replaces its subscription: it does not count twice.
        await ws.subscribe(first)

        refused = await ws.request({"type": "subscribe", "topic": fourth, "ref": "four"})
        assert refused["type"] == "error", refused
        assert (refused["code"], refused["ref"], refused["field"]) == ("invalid", "four", "topic")
        assert "ER_WS_MAX_SUBSCRIPTIONS" in refused["message"] and "3" in refused["message"]

        assert (await ws.request({"type": "unsubscribe", "topic": second}))["type"] == "unsubscribed"
        await ws.subscribe(fourth)
        published = await ws.publish(first, [{"name": "still", "data": {}}])
        assert (await ws.next_event(first))["event"]["offset"] == published["events"][0]["offset"]
