"""The REST endpoints of durable consumers (docs/consumers.md), through the real URL routing, middleware, DRF and
services, on the real PostgreSQL and Redis. The long-poll through the real web process is in
tests/test_consumers_long_poll.py."""

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from eventrelay.auth import mint_token
from events.services import publish

pytestmark = pytest.mark.django_db(transaction=True)

BASE = "/api/v1/topics"


class Api:
    """A REST client with a token: ``api.post(path, body)`` → (status, decoded JSON)."""

    def __init__(self, client: Client, token: str) -> None:
        self.client = client
        self.auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = dict(self.auth)
        if body is not None:
            kwargs |= {"data": json.dumps(body), "content_type": "application/json"}
        elif method == "post":  # no body at all
            kwargs |= {"data": b"", "content_type": "application/json"}
        response = getattr(self.client, method)(path, **kwargs)
        return response.status_code, (response.json() if response.content else None)

    def get(self, path: str) -> tuple[int, Any]:
        return self.call("get", path)

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return self.call("post", path, body)

    def delete(self, path: str) -> tuple[int, Any]:
        return self.call("delete", path)


@pytest.fixture
def api(client: Client) -> Api:
    return Api(client, mint_token([], admin=True))


@pytest.fixture
def users(make_topic: Callable[[str], Any], admin: Any) -> str:
    make_topic("users")
    return "users"


def publish_some(admin: Any, ref: str, count: int, name: str = "signed_up") -> None:
    publish(admin, ref, [{"name": name, "data": {"n": n}} for n in range(count)], "http")


def test_a_consumer_is_created_read_listed_and_deleted(api: Api, users: str, admin: Any) -> None:
    publish_some(admin, users, 3)

    status, created = api.post(f"{BASE}/users/consumers", {"name": "billing", "ackWaitSeconds": 5})
    assert status == 201
    assert created | {"createdAt": None} == {
        "name": "billing",
        "topic": "users",
        "startOffset": 1,
        "ackWaitSeconds": 5,
        "maxDeliveries": 20,
        "maxInFlight": 1000,
        "eventNames": [],
        "ordered": False,
        "ackFloor": 0,
        "pending": 0,
        "lag": 3,
        "deadLetters": 0,
        "expired": 0,
        "createdAt": None,
    }
    assert created["createdAt"].endswith("Z")
    assert api.post(f"{BASE}/users/consumers", {"name": "billing"})[0] == 409
    assert api.get(f"{BASE}/users/consumers/billing") == (200, created)
    assert api.get(f"{BASE}/users/consumers") == (200, {"consumers": [created]})

    assert api.delete(f"{BASE}/users/consumers/billing") == (204, None)
    status, body = api.get(f"{BASE}/users/consumers/billing")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_fetch_ack_moves_the_floor_and_events_come_as_stored(api: Api, users: str, admin: Any) -> None:
    as_written = ",".join(f'{{"name":"signed_up","data":{{"n":{n},"exact":1.50}}}}' for n in range(5))
    api.client.post(f"{BASE}/users/events", data=f"[{as_written}]", content_type="application/json", **api.auth)
    api.post(f"{BASE}/users/consumers", {"name": "billing"})

    response = api.client.post(
        f"{BASE}/users/consumers/billing/fetch",
        data=json.dumps({"maxEvents": 3}),
        content_type="application/json",
        **api.auth,
    )
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert b'"exact":1.50' in response.content  # the stored payload, verbatim
    deliveries = response.json()["deliveries"]
    assert [(d["event"]["offset"], d["deliveryCount"]) for d in deliveries] == [(1, 1), (2, 1), (3, 1)]
    assert deliveries[0]["event"]["data"] == {"n": 0, "exact": 1.5}
    assert deliveries[0]["event"]["source"] == "http"
    assert deliveries[0]["event"]["topic"] == "users"

    assert api.post(f"{BASE}/users/consumers/billing/ack", {"ackIds": [d["ackId"] for d in deliveries]}) == (
        200,
        {"staleAckIds": []},
    )
    _, info = api.get(f"{BASE}/users/consumers/billing")
    assert (info["ackFloor"], info["pending"], info["lag"]) == (3, 0, 2)
    # An empty body fetches with the defaults: the other two.
    status, rest = api.post(f"{BASE}/users/consumers/billing/fetch")
    assert status == 200 and [d["event"]["offset"] for d in rest["deliveries"]] == [4, 5]


def test_nack_with_a_reason_dead_letters_and_redrive_brings_it_back(api: Api, users: str, admin: Any) -> None:
    publish_some(admin, users, 2)
    api.post(f"{BASE}/users/consumers", {"name": "billing", "maxDeliveries": 1})
    _, fetched = api.post(f"{BASE}/users/consumers/billing/fetch", {"maxEvents": 1})
    [delivery] = fetched["deliveries"]

    assert api.post(
        f"{BASE}/users/consumers/billing/nack", {"ackIds": [delivery["ackId"]], "reason": "card declined"}
    ) == (200, {"staleAckIds": []})
    status, letters = api.get(f"{BASE}/users/consumers/billing/dead-letters")
    assert status == 200
    assert [(item["offset"], item["deliveries"], item["lastError"]) for item in letters["deadLetters"]] == [
        (1, 1, "card declined")
    ]
    assert letters["deadLetters"][0]["eventId"] == delivery["event"]["eventId"]

    assert api.post(f"{BASE}/users/consumers/billing/dead-letters/redrive", {"offsets": [2]})[0] == 400
    assert api.post(f"{BASE}/users/consumers/billing/dead-letters/redrive", {"offsets": [1]}) == (
        200,
        {"offsets": [1]},
    )
    _, again = api.post(f"{BASE}/users/consumers/billing/fetch", {"maxEvents": 10})
    assert [(d["event"]["offset"], d["deliveryCount"]) for d in again["deliveries"]] == [(1, 1), (2, 1)]


def test_extend_and_seek(api: Api, users: str, admin: Any) -> None:
    publish_some(admin, users, 3)
    api.post(f"{BASE}/users/consumers", {"name": "billing"})
    _, fetched = api.post(f"{BASE}/users/consumers/billing/fetch", {"maxEvents": 2})
    first, second = (d["ackId"] for d in fetched["deliveries"])
    api.post(f"{BASE}/users/consumers/billing/ack", {"ackIds": [first]})

    assert api.post(f"{BASE}/users/consumers/billing/extend", {"ackIds": [first, second]}) == (
        200,
        {"staleAckIds": [first]},
    )
    status, info = api.post(f"{BASE}/users/consumers/billing/seek", {"offset": 2})
    assert status == 200 and (info["pending"], info["ackFloor"]) == (0, 1)
    _, replay = api.post(f"{BASE}/users/consumers/billing/fetch", {"maxEvents": 10})
    assert [d["event"]["offset"] for d in replay["deliveries"]] == [2, 3]
    # The ackId from before the seek acts on nothing.
    assert api.post(f"{BASE}/users/consumers/billing/ack", {"ackIds": [second]}) == (200, {"staleAckIds": [second]})


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("", {"name": "Billing"}, "name"),
        ("", {"name": "b", "maxDeliveries": 0}, "maxDeliveries"),
        ("", {"name": "b", "eventNames": ["a\u0000b"]}, "eventNames[0]"),
        ("", {"name": "b", "color": "red"}, "color"),
        ("/billing/fetch", {"maxEvents": 1001}, "maxEvents"),
        ("/billing/fetch", {"waitMs": "1000"}, "waitMs"),
        ("/billing/ack", {"ackIds": "1-1-1-1"}, "ackIds"),
        ("/billing/ack", {"ackIds": ["not-an-ack-id"]}, "ackIds"),
        ("/billing/nack", {"ackIds": [], "reason": "x\u0000"}, "reason"),
        ("/billing/nack", {"ackIds": [], "delayMs": -1}, "delayMs"),
        ("/billing/seek", {}, "offset"),
        ("/billing/dead-letters/redrive", {"offsets": ["1"]}, "offsets"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    api: Api, users: str, admin: Any, path: str, body: Any, field: str
) -> None:
    publish_some(admin, users, 2)
    api.post(f"{BASE}/users/consumers", {"name": "billing"})

    status, refused = api.post(f"{BASE}/users/consumers{path}", body)

    assert status == 400, refused
    assert refused["error"]["code"] == "invalid" and refused["error"]["field"] == field, refused
    _, info = api.get(f"{BASE}/users/consumers/billing")
    assert (info["pending"], info["ackFloor"]) == (0, 0)
    assert [c["name"] for c in api.get(f"{BASE}/users/consumers")[1]["consumers"]] == ["billing"]


def test_a_body_that_is_not_an_object_or_not_json_is_refused(api: Api, users: str) -> None:
    api.post(f"{BASE}/users/consumers", {"name": "billing"})
    assert api.post(f"{BASE}/users/consumers/billing/fetch", [1])[0] == 400
    response = api.client.post(
        f"{BASE}/users/consumers/billing/fetch", data="{", content_type="application/json", **api.auth
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"


def test_a_token_for_one_id_sees_only_its_own_consumers(client: Client, users: str, admin: Any) -> None:
    publish_some(admin, "users:123", 2)
    publish_some(admin, "users:456", 2)
    mine = Api(client, mint_token(["users:123"]))
    admin_api = Api(client, mint_token([], admin=True))
    admin_api.post(f"{BASE}/users/consumers", {"name": "everything"})

    assert mine.post(f"{BASE}/users:123/consumers", {"name": "mine"})[0] == 201
    _, fetched = mine.post(f"{BASE}/users:123/consumers/mine/fetch", {"maxEvents": 10})
    assert {d["event"]["topic"] for d in fetched["deliveries"]} == {"users:123"}
    assert len(fetched["deliveries"]) == 2
    # The whole topic's consumer, and another id's, are out of reach on every endpoint.
    for method, path in [
        ("post", f"{BASE}/users/consumers"),
        ("get", f"{BASE}/users/consumers"),
        ("get", f"{BASE}/users/consumers/everything"),
        ("post", f"{BASE}/users/consumers/everything/fetch"),
        ("post", f"{BASE}/users/consumers/everything/seek"),
        ("get", f"{BASE}/users/consumers/everything/dead-letters"),
        ("delete", f"{BASE}/users/consumers/everything"),
        ("post", f"{BASE}/users:456/consumers/mine/fetch"),
    ]:
        status, body = mine.call(method, path, {"name": "x", "offset": 1} if method == "post" else None)
        assert status == 403 and body["error"]["code"] == "forbidden", (method, path, body)
    assert admin_api.get(f"{BASE}/users/consumers/everything")[1]["pending"] == 0


def test_no_token_and_a_bad_token_are_refused_on_the_async_fetch_too(client: Client, users: str) -> None:
    path = f"{BASE}/users/consumers/billing/fetch"
    missing = client.post(path)
    assert missing.status_code == 401 and missing["WWW-Authenticate"] == 'Bearer realm="eventrelay"'
    assert missing.json()["error"]["code"] == "unauthenticated"
    bad = client.post(path, HTTP_AUTHORIZATION="Bearer nonsense")
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthenticated"
    assert client.get(path, HTTP_AUTHORIZATION=f"Bearer {mint_token([], admin=True)}").status_code == 405


def test_a_fetch_counts_as_one_request_whatever_it_returns(client: Client, users: str, admin: Any, settings) -> None:
    publish_some(admin, users, 50)
    settings.ER_RATE_LIMIT_REQUESTS_PER_S = 0.001
    settings.ER_RATE_LIMIT_REQUESTS_BURST = 4
    settings.ER_RATE_LIMIT_PUBLISH_PER_S = 0.001
    settings.ER_RATE_LIMIT_PUBLISH_BURST = 5
    worker = Api(client, mint_token(["users"], subject=f"worker-{uuid.uuid4().hex}"))

    assert worker.post(f"{BASE}/users/consumers", {"name": "billing"})[0] == 201  # request 1
    _, fetched = worker.post(f"{BASE}/users/consumers/billing/fetch", {"maxEvents": 50})  # 2
    assert len(fetched["deliveries"]) == 50
    acked = worker.post(f"{BASE}/users/consumers/billing/ack", {"ackIds": [d["ackId"] for d in fetched["deliveries"]]})
    assert acked[0] == 200  # 3
    # 50 events fetched and acked cost no publish budget: a publish of 5 still goes through (request 4) ...
    assert worker.post(f"{BASE}/users/events", [{"name": "n", "data": n} for n in range(5)])[0] == 201
    # ... and the fifth request is over the burst of 4, on the async fetch as anywhere.
    status, refused = worker.post(f"{BASE}/users/consumers/billing/fetch")
    assert status == 429 and refused["error"]["code"] == "rate_limited"
