"""The REST API end to end: events published over HTTP to the real web process (daphne) reach every
other way of consuming them, each running as its own real process on the test database: a gRPC
stream (grpcserver), a WebSocket subscriber (the same web process) and a webhook (a Celery worker
posting to a local receiver). Each test compares what the consumer got with the canonical events the
REST API answered, field by field.
"""

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from eventrelay.auth import mint_token
from harness.processes import CeleryWorker, WebServer, wait_until
from tests.grpc_client import Client, unique_topic
from tests.helpers import verify_standard_webhook
from tests.webhook_receiver import Receiver
from tests.ws_client import ws_connect

pytestmark = pytest.mark.e2e

DATA = {"email": "thomas@example.com", "count": 9007199254740993, "nested": {"list": [1, "two", None, True]}}
CONTEXT = {"ip": "10.0.0.1", "tags": ["a", "b"]}


class Rest:
    """``requests`` against the web process's REST API with a bearer token."""

    def __init__(self, server: WebServer, token: str) -> None:
        self.base = f"{server.base_url}/api/v1/"
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy between the test and loopback
        self.session.headers["authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        response = self.session.request(method, self.base + path, json=body, timeout=30)
        assert response.status_code == expect, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def publish(self, ref: str, *events: dict[str, Any]) -> list[dict[str, Any]]:
        return self.call("POST", f"topics/{ref}/events", list(events), expect=201)["events"]


@pytest.fixture
def admin_rest(web_server: WebServer) -> Iterator[Rest]:
    rest = Rest(web_server, mint_token([], admin=True))
    yield rest
    rest.session.close()


@pytest.fixture
def topic(admin_rest: Rest, admin_client: Client) -> Iterator[str]:
    """A new topic (unique name), created and dropped again over REST. ``admin_client`` brings the
    gRPC server and ``transactional_db``: the processes see only committed data."""
    name = unique_topic("rest")
    created = admin_rest.call("POST", "topics", {"name": name}, expect=201)
    assert created["name"] == name and created["lastOffset"] == 0
    yield name
    admin_rest.call("DELETE", f"topics/{name}", expect=204)


@pytest.fixture(scope="module")
def worker(django_db_setup: None) -> Iterator[CeleryWorker]:
    started = CeleryWorker(name="rest_worker")
    yield started
    started.stop()


def new_event(**fields: Any) -> dict[str, Any]:
    return {"eventId": str(uuid.uuid4()), "name": "user_login", "userId": "123", "context": CONTEXT, **fields}


def grpc_as_canonical(event: Any) -> dict[str, Any]:
    """A gRPC ``Event`` in the canonical JSON form, to compare with what REST answered."""
    occurred = event.event_occurred_at.ToDatetime()
    return {
        "eventId": event.event_id,
        "name": event.name,
        "topic": event.topic,
        "source": event.source,
        "userId": event.user_id or None,
        "eventOccurredAt": occurred.isoformat(timespec="milliseconds") + "Z",
        "context": json.loads(event.context),
        "data": json.loads(event.data),
        "offset": event.offset,
    }


# --- HTTP publish → gRPC stream ------------------------------------------------------------------


def test_an_event_published_over_http_reaches_a_grpc_stream(admin_rest, admin_client, topic):
    ref = f"{topic}:123"
    [first] = admin_rest.publish(ref, new_event(data=DATA, eventOccurredAt="2020-01-01T12:34:56.789Z"))
    stream = admin_client.stream(ref, from_offset=1, timeout=60)

    try:
        replayed = next(stream)
        [second] = admin_rest.publish(ref, new_event(data={"live": True}))
        live = next(stream)
    finally:
        stream.cancel()

    assert first["source"] == "http" and first["offset"] == 1
    assert first["eventOccurredAt"] == "2020-01-01T12:34:56.789Z" and first["data"] == DATA
    assert grpc_as_canonical(replayed) == first
    assert grpc_as_canonical(live) == second and second["offset"] == 2


# --- HTTP publish → WebSocket subscriber ---------------------------------------------------------


async def test_an_event_published_over_http_reaches_a_websocket_subscriber(admin_rest, web_server, topic):
    ref = f"{topic}:123"
    async with ws_connect(web_server.ws_url, mint_token([ref])) as client:
        subscribed = await client.subscribe(ref, from_offset=1)
        published = await asyncio.to_thread(
            admin_rest.publish, ref, new_event(data=DATA), new_event(name="user_logout", data={"n": 2})
        )
        frames = [await client.next_event(ref), await client.next_event(ref)]

    assert subscribed == {"type": "subscribed", "topic": ref, "offset": 0}
    assert frames == [{"type": "event", "topic": ref, "event": event} for event in published]
    assert [event["offset"] for event in published] == [1, 2]
    assert {event["source"] for event in published} == {"http"}


# --- HTTP publish → webhook (destination created over HTTP) ---------------------------------------


def test_an_event_published_over_http_is_delivered_by_a_webhook_created_over_http(admin_rest, topic, worker, receiver):
    ref = f"{topic}:7"
    destination = admin_rest.call(
        "POST", "webhooks", {"name": "crm", "url": receiver.url, "topic": ref, "maxAttempts": 3}, expect=201
    )
    assert destination["secret"].startswith("whsec_") and destination["active"] is True

    published = admin_rest.publish(ref, *(new_event(data={"n": n}) for n in range(3)))
    wait_until(lambda: len(receiver.offsets(ref)) >= 3, 60, "three webhook deliveries")

    received = receiver.of(ref)
    assert [request.event for request in received] == published
    for request, event in zip(received, published, strict=True):
        assert json.loads(request.body) == event
        assert request.headers["webhook-id"] == event["eventId"]
        assert verify_standard_webhook(destination["secret"], request.headers, request.body)

    def attempts() -> list[dict[str, Any]]:
        return admin_rest.call("GET", f"webhooks/{destination['id']}/attempts")["attempts"]

    wait_until(lambda: len(attempts()) == 3 and {a["status"] for a in attempts()} == {"succeeded"}, 30, "attempts")
    assert sorted((a["offset"], a["eventId"], a["attempt"]) for a in attempts()) == [
        (event["offset"], event["eventId"], 1) for event in published
    ]
    admin_rest.call("DELETE", f"webhooks/{destination['id']}", expect=204)


@pytest.fixture
def witness_receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def test_a_paused_webhook_delivers_nothing_until_it_is_resumed_over_http(
    admin_rest, topic, worker, receiver, witness_receiver
):
    destination = admin_rest.call("POST", "webhooks", {"name": "crm", "url": receiver.url, "topic": topic}, expect=201)
    paused = admin_rest.call("POST", f"webhooks/{destination['id']}/pause")
    # A witness: an active destination of the same topic, woken by the same publishes, on a receiver of its own.
    witness = admin_rest.call(
        "POST", "webhooks", {"name": "witness", "url": witness_receiver.url, "topic": topic}, expect=201
    )

    published = admin_rest.publish(f"{topic}:1", new_event(data={"n": 1}))
    wait_until(lambda: witness_receiver.offsets(f"{topic}:1") != [], 60, "the witness's delivery of the first event")
    published += admin_rest.publish(f"{topic}:1", new_event(data={"n": 2}))
    # The worker has sent the witness the second event too: it has done the first publish's wake-ups, a wake-up of
    # the paused destination included, had there been one.
    offsets = [event["offset"] for event in published]
    wait_until(lambda: witness_receiver.offsets(f"{topic}:1") == offsets, 60, "the witness's second delivery")
    nothing_yet = receiver.of(f"{topic}:1")
    resumed = admin_rest.call("POST", f"webhooks/{destination['id']}/resume")
    wait_until(lambda: len(receiver.offsets(f"{topic}:1")) >= 2, 60, "the deliveries after resume")

    assert paused["active"] is False and resumed["active"] is True
    assert nothing_yet == []
    assert [request.event for request in receiver.of(f"{topic}:1")] == published
    admin_rest.call("DELETE", f"webhooks/{witness['id']}", expect=204)
    admin_rest.call("DELETE", f"webhooks/{destination['id']}", expect=204)


# --- The web process itself ----------------------------------------------------------------------


def test_the_web_process_serves_the_schema_and_the_docs(web_server):
    schema = requests.get(f"{web_server.base_url}/api/v1/schema?format=json", timeout=30)
    docs = requests.get(f"{web_server.base_url}/api/v1/docs", timeout=30)

    assert schema.status_code == 200 and schema.json()["openapi"].startswith("3.")
    assert docs.status_code == 200 and "swagger-ui" in docs.text.lower()


def test_the_swagger_ui_assets_load_from_the_web_process(web_server):
    page = requests.get(f"{web_server.base_url}/api/v1/docs", timeout=30).text
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)

    statuses = {asset: requests.get(web_server.base_url + asset, timeout=30).status_code for asset in assets}

    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets)
    assert set(statuses.values()) == {200}, statuses


def test_a_request_body_over_the_upload_limit_is_refused_by_the_web_process(admin_rest, topic):
    from django.conf import settings

    # A tiny event padded with whitespace: only the request size is over a limit, not the events.
    body = '{"name": "e", "data": 1}' + " " * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)

    response = admin_rest.session.post(
        f"{admin_rest.base}topics/{topic}/events", data=body, headers={"content-type": "application/json"}, timeout=60
    )

    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "too_large"
    assert admin_rest.call("GET", f"topics/{topic}/events") == {"events": [], "nextOffset": 1}
