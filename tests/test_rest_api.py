"""The REST API (docs/rest.md): every endpoint through Django's test client, the real URL
routing and the real PostgreSQL.

Each test says who calls (an admin token, a token scoped to ``users:123`` …), what it sends, and then
checks what the API answered *and* what it did: topic rows and tables, stored events and their
offsets, destination rows. Errors must come back in the one shape of docs/rest.md,
``{"error": {"code", "message", "field"?}}``.
"""

import base64
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from django.conf import settings
from django.http import HttpResponse
from django.test import Client

from eventrelay.auth import mint_token
from tests.helpers import b64url, stored_offsets, table_exists
from topics.models import Topic
from topics.tables import events_table_name
from webhooks.models import DeliveryAttempt, DeliveryStream, Destination

OTHER_SECRET = "a-different-secret-that-is-long-enough-0123456789"
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
WWW_AUTHENTICATE = 'Bearer realm="eventrelay"'
NOTHING = object()

pytestmark = pytest.mark.django_db


# --- A JSON client with a bearer token -------------------------------------------------------------


class Api:
    """Django's test client speaking JSON to ``/api/v1/`` with ``authorization: Bearer <token>``."""

    def __init__(self, client: Client, token: str | None) -> None:
        self.client = client
        self.token = token

    def call(self, method: str, path: str, body: Any = NOTHING, *, raw: str | None = None, **headers: str) -> Any:
        if self.token is not None:
            headers.setdefault("HTTP_AUTHORIZATION", f"Bearer {self.token}")
        data = raw if raw is not None else "" if body is NOTHING else json.dumps(body)
        return self.client.generic(method, f"/api/v1/{path}", data=data, content_type="application/json", **headers)

    def get(self, path: str, **headers: str) -> Any:
        return self.call("GET", path, **headers)

    def post(self, path: str, body: Any = NOTHING, **kwargs: Any) -> Any:
        return self.call("POST", path, body, **kwargs)

    def patch(self, path: str, body: Any = NOTHING, **kwargs: Any) -> Any:
        return self.call("PATCH", path, body, **kwargs)

    def delete(self, path: str, **headers: str) -> Any:
        return self.call("DELETE", path, **headers)


@pytest.fixture
def api_as(client: Client) -> Callable[..., Api]:
    """``api_as("users:123")`` → a client whose token grants those topics; ``api_as(admin=True)``."""

    def make(*topics: str, admin: bool = False) -> Api:
        return Api(client, mint_token(topics, admin=admin))

    return make


@pytest.fixture
def admin_api(api_as: Callable[..., Api]) -> Api:
    return api_as(admin=True)


@pytest.fixture
def users(make_topic: Callable[[str], Topic]) -> Topic:
    return make_topic("users")


def error_of(response: HttpResponse, status: int, code: str) -> dict[str, str]:
    """The ``error`` object of an error response, after checking its status, code and shape."""
    assert response.status_code == status, response.content
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert error["code"] == code, error
    assert set(error) <= {"code", "message", "field"} and error["message"], error
    return error


def last_offset(topic: str) -> int:
    return Topic.objects.get(name=topic).last_offset


def parse_timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- Authentication: 401 with WWW-Authenticate -----------------------------------------------------

BAD_TOKENS = {
    "not a JWT": ("Bearer not-a-jwt", "malformed token"),
    "signed with another secret": (
        "Bearer " + jwt.encode({"topics": "users", "admin": True}, OTHER_SECRET, algorithm="HS256"),
        "signature does not match",
    ),
    "expired": ("Bearer " + mint_token(["users"], admin=True, ttl_seconds=-60), "expired"),
    "alg none": ("Bearer " + b64url({"alg": "none", "typ": "JWT"}) + "." + b64url({"admin": True}) + ".", "'none'"),
    "alg HS512": (
        "Bearer " + jwt.encode({"admin": True}, settings.ER_JWT_SECRET, algorithm="HS512"),
        "'HS512' is not accepted",
    ),
    "another scheme": ("Basic dXNlcjpwYXNz", "malformed authorization header"),
}


def test_a_call_without_a_token_is_refused_with_401_and_www_authenticate(client, users):
    response = Api(client, None).get("topics/users/events")

    error = error_of(response, 401, "unauthenticated")
    assert "missing token" in error["message"]
    assert response["WWW-Authenticate"] == WWW_AUTHENTICATE


@pytest.mark.parametrize("header, reason", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_a_bad_token_cannot_pull(client, users, header, reason):
    response = Api(client, None).get("topics/users/events", HTTP_AUTHORIZATION=header)

    error = error_of(response, 401, "unauthenticated")
    assert reason in error["message"]
    assert response["WWW-Authenticate"] == WWW_AUTHENTICATE


@pytest.mark.parametrize("header, reason", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_a_bad_token_cannot_publish_and_nothing_is_stored(client, users, header, reason):
    response = Api(client, None).post(
        "topics/users/events", {"name": "user_login", "data": {}}, HTTP_AUTHORIZATION=header
    )

    assert reason in error_of(response, 401, "unauthenticated")["message"]
    assert response["WWW-Authenticate"] == WWW_AUTHENTICATE
    assert stored_offsets("users") == []


@pytest.mark.parametrize(
    "method, path",
    [("GET", "topics"), ("POST", "topics"), ("GET", "topics/users"), ("DELETE", "topics/users"), ("GET", "webhooks")],
)
def test_every_endpoint_asks_for_a_token(client, users, method, path):
    response = Api(client, None).call(method, path, {"name": "orders"})

    error_of(response, 401, "unauthenticated")
    assert response["WWW-Authenticate"] == WWW_AUTHENTICATE
    assert table_exists(events_table_name("users")) and not Topic.objects.filter(name="orders").exists()


# --- Topics --------------------------------------------------------------------------------------


def test_an_admin_creates_a_topic_with_its_table(admin_api):
    before = datetime.now(UTC)

    response = admin_api.post("topics", {"name": "signups"})

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {
        "name",
        "firstOffset",
        "lastOffset",
        "retentionMaxAgeSeconds",
        "retentionMaxEvents",
        "createdAt",
    }
    assert body["name"] == "signups" and (body["firstOffset"], body["lastOffset"]) == (1, 0)
    assert (body["retentionMaxAgeSeconds"], body["retentionMaxEvents"]) == (None, None)
    assert before - timedelta(seconds=5) < parse_timestamp(body["createdAt"]) < datetime.now(UTC) + timedelta(seconds=5)
    assert Topic.objects.filter(name="signups").exists()
    assert table_exists(events_table_name("signups"))


@pytest.mark.parametrize(
    "name",
    ["Users", "1users", "user-events", "users:123", "ünicode", "a" * 51, "", " users"],
    ids=["uppercase", "leading digit", "dash", "with id", "non-ascii", "51 chars", "empty", "leading space"],
)
def test_a_bad_topic_name_is_refused_and_nothing_is_created(admin_api, name):
    response = admin_api.post("topics", {"name": name})

    error = error_of(response, 400, "invalid")
    assert error["field"] == "name"
    assert "topic name" in error["message"]
    assert Topic.objects.count() == 0


def test_a_topic_name_that_is_not_a_string_is_refused(admin_api):
    response = admin_api.post("topics", {"name": 42})

    assert error_of(response, 400, "invalid")["field"] == "name"
    assert Topic.objects.count() == 0


def test_a_create_body_that_is_not_json_is_refused(admin_api):
    response = admin_api.post("topics", raw='{"name": "users"')

    assert "not valid JSON" in error_of(response, 400, "invalid")["message"]
    assert Topic.objects.count() == 0


def test_a_create_body_that_is_not_an_object_is_refused(admin_api):
    response = admin_api.post("topics", ["users"])

    assert "JSON object" in error_of(response, 400, "invalid")["message"]
    assert Topic.objects.count() == 0


def test_creating_a_topic_that_exists_is_a_conflict(admin_api, users):
    response = admin_api.post("topics", {"name": "users"})

    error = error_of(response, 409, "conflict")
    assert error["field"] == "name" and "already exists" in error["message"]
    assert Topic.objects.filter(name="users").count() == 1


def test_a_non_admin_token_cannot_create_a_topic(api_as):
    response = api_as("users").post("topics", {"name": "users"})

    assert "admin" in error_of(response, 403, "forbidden")["message"]
    assert not Topic.objects.filter(name="users").exists() and not table_exists(events_table_name("users"))


def test_an_admin_lists_every_topic(admin_api, make_topic):
    make_topic("users")
    make_topic("visits")

    response = admin_api.get("topics")

    assert response.status_code == 200
    topics = response.json()["topics"]
    assert [topic["name"] for topic in topics] == ["users", "visits"]
    assert all(
        set(topic) == {"name", "firstOffset", "lastOffset", "retentionMaxAgeSeconds", "retentionMaxEvents", "createdAt"}
        for topic in topics
    )


def test_a_scoped_token_lists_only_the_topics_it_is_granted(api_as, make_topic):
    for name in ("users", "visits", "checkouts"):
        make_topic(name)

    response = api_as("users:123", "checkouts").get("topics")

    assert response.status_code == 200
    assert [topic["name"] for topic in response.json()["topics"]] == ["checkouts", "users"]


def test_getting_a_topic_shows_its_last_offset(admin_api, users):
    admin_api.post("topics/users/events", [{"name": "a", "data": 1}, {"name": "b", "data": 2}])

    response = admin_api.get("topics/users")

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "users" and body["lastOffset"] == 2
    assert parse_timestamp(body["createdAt"]) == users.created_at


def test_a_scoped_token_may_get_its_topic(api_as, users):
    response = api_as("users:123").get("topics/users")

    assert response.status_code == 200 and response.json()["name"] == "users"


def test_getting_an_unknown_topic_is_404(admin_api):
    error = error_of(admin_api.get("topics/nosuch"), 404, "not_found")

    assert "nosuch" in error["message"]


def test_getting_a_topic_that_is_not_granted_is_404_as_if_it_did_not_exist(api_as, make_topic):
    make_topic("visits")

    error = error_of(api_as("users:123").get("topics/visits"), 404, "not_found")

    assert "visits" in error["message"]


def test_getting_a_topic_by_a_bad_name_is_400(admin_api):
    error_of(admin_api.get("topics/Users"), 400, "invalid")


def test_an_admin_deletes_a_topic_with_its_table_and_events(admin_api, users):
    admin_api.post("topics/users/events", {"name": "a", "data": 1})

    response = admin_api.delete("topics/users")

    assert response.status_code == 204 and response.content == b""
    assert not Topic.objects.filter(name="users").exists()
    assert not table_exists(events_table_name("users"))
    error_of(admin_api.get("topics/users/events"), 404, "not_found")


def test_a_non_admin_token_cannot_delete_a_topic(api_as, admin_api, users):
    admin_api.post("topics/users/events", {"name": "a", "data": 1})

    response = api_as("users").delete("topics/users")

    error_of(response, 403, "forbidden")
    assert table_exists(events_table_name("users")) and stored_offsets("users") == [1]


def test_deleting_an_unknown_topic_is_404(admin_api):
    error_of(admin_api.delete("topics/nosuch"), 404, "not_found")


# --- Publishing ----------------------------------------------------------------------------------


def test_a_single_event_object_is_stored_and_returned_in_canonical_form(api_as, users):
    event_id = str(uuid.uuid4())

    response = api_as("users:123").post(
        "topics/users:123/events",
        {
            "eventId": event_id,
            "name": "user_login",
            "userId": "123",
            "eventOccurredAt": "2020-01-01T02:00:00+02:00",
            "context": {"ip": "127.0.0.1"},
            "data": {"email": "thomas@example.com"},
        },
    )

    assert response.status_code == 201, response.content
    assert response.json() == {
        "events": [
            {
                "eventId": event_id,
                "name": "user_login",
                "topic": "users:123",
                "source": "http",
                "userId": "123",
                "eventOccurredAt": "2020-01-01T00:00:00.000Z",
                "context": {"ip": "127.0.0.1"},
                "data": {"email": "thomas@example.com"},
                "offset": 1,
            }
        ]
    }
    assert stored_offsets("users") == [1] and last_offset("users") == 1


def test_a_list_of_events_is_stored_in_order_with_consecutive_offsets(admin_api, users):
    response = admin_api.post("topics/users/events", [{"name": "e", "data": {"n": n}} for n in range(3)])

    assert response.status_code == 201, response.content
    events = response.json()["events"]
    assert [(event["offset"], event["data"]) for event in events] == [(1, {"n": 0}), (2, {"n": 1}), (3, {"n": 2})]
    assert {event["source"] for event in events} == {"http"}
    assert {event["topic"] for event in events} == {"users"}
    assert stored_offsets("users") == [1, 2, 3]


def test_the_server_fills_in_event_id_occurred_at_context_and_user_id(admin_api, users):
    before = datetime.now(UTC)

    [event] = admin_api.post("topics/users/events", {"name": "e", "data": None}).json()["events"]

    assert uuid.UUID(event["eventId"]).version == 4
    assert TIMESTAMP_RE.match(event["eventOccurredAt"])
    assert before - timedelta(seconds=1) <= parse_timestamp(event["eventOccurredAt"]) <= datetime.now(UTC)
    assert event["context"] == {} and event["userId"] is None and event["data"] is None


def test_payload_json_survives_exactly(admin_api, users):
    data = {"count": 9007199254740993, "ratio": 0.5, "nested": {"list": [1, "two", None, True]}, "text": "Grüße ✓"}

    published = admin_api.post("topics/users/events", {"name": "e", "data": data}).json()["events"]
    pulled = admin_api.get("topics/users/events").json()["events"]

    assert published[0]["data"] == data and pulled[0]["data"] == data
    assert b"9007199254740993" in admin_api.get("topics/users/events").content


def test_republishing_an_event_id_returns_the_stored_event_with_its_offset(admin_api, users):
    event = {"eventId": str(uuid.uuid4()), "name": "e", "data": {"v": 1}}
    [first] = admin_api.post("topics/users/events", event).json()["events"]
    admin_api.post("topics/users/events", {"name": "other", "data": {}})

    response = admin_api.post("topics/users/events", {**event, "data": {"v": "changed"}})

    assert response.status_code == 201
    assert response.json()["events"] == [first]
    assert first["offset"] == 1 and first["data"] == {"v": 1}
    assert stored_offsets("users") == [1, 2]


def test_an_event_id_used_under_another_topic_id_is_a_conflict(admin_api, users):
    event_id = str(uuid.uuid4())
    admin_api.post("topics/users:123/events", {"eventId": event_id, "name": "e", "data": {}})

    response = admin_api.post("topics/users:456/events", {"eventId": event_id, "name": "e", "data": {}})

    error = error_of(response, 409, "conflict")
    assert error["field"] == "eventId" and event_id in error["message"]
    assert stored_offsets("users") == [1]


@pytest.mark.parametrize(
    "bad_event, field",
    [
        ({"name": "e"}, "events[1].data"),
        ({"data": {}}, "events[1].name"),
        ({"name": "", "data": {}}, "events[1].name"),
        ({"name": "e" * 256, "data": {}}, "events[1].name"),
        ({"name": "e", "data": {}, "eventId": "not-a-uuid"}, "events[1].eventId"),
        ({"name": "e", "data": {}, "eventOccurredAt": "yesterday"}, "events[1].eventOccurredAt"),
        ({"name": "e", "data": {}, "eventOccurredAt": "2020-01-01T00:00:00"}, "events[1].eventOccurredAt"),
        ({"name": "e", "data": {}, "context": []}, "events[1].context"),
        ({"name": "e", "data": {}, "userId": 123}, "events[1].userId"),
        ({"name": "e", "data": {}, "offset": 7}, "events[1].offset"),
        ({"name": "e", "data": {}, "colour": "red"}, "events[1].colour"),
        ("not an object", "events[1]"),
    ],
)
def test_one_invalid_event_rejects_the_whole_batch_naming_its_index_and_field(admin_api, users, bad_event, field):
    batch = [{"name": "fine", "data": {}}, bad_event, {"name": "fine", "data": {}}]

    response = admin_api.post("topics/users/events", batch)

    error = error_of(response, 400, "invalid")
    assert error["field"] == field
    assert error["message"].startswith(field)
    assert stored_offsets("users") == [] and last_offset("users") == 0


def test_an_empty_batch_is_refused(admin_api, users):
    error = error_of(admin_api.post("topics/users/events", []), 400, "invalid")

    assert error["field"] == "events"


def test_a_publish_body_that_is_not_json_is_refused(admin_api, users):
    response = admin_api.post("topics/users/events", raw='[{"name": "e", "data": {}}')

    assert "not valid JSON" in error_of(response, 400, "invalid")["message"]
    assert stored_offsets("users") == []


def test_a_publish_without_a_body_is_refused(admin_api, users):
    error_of(admin_api.post("topics/users/events"), 400, "invalid")

    assert stored_offsets("users") == []


@pytest.mark.parametrize("ref", ["Users", "users:", "users:a b", "users:1:2", "users:" + "x" * 256])
def test_a_bad_topic_reference_is_refused(admin_api, users, ref):
    error = error_of(admin_api.post(f"topics/{ref}/events", {"name": "e", "data": {}}), 400, "invalid")

    assert error["field"] == "topic"
    assert stored_offsets("users") == []


def test_publishing_to_an_unknown_topic_is_404(admin_api):
    error = error_of(admin_api.post("topics/nosuch/events", {"name": "e", "data": {}}), 404, "not_found")

    assert "nosuch" in error["message"]


@pytest.mark.parametrize("ref", ["users", "users:456", "visits:123"])
def test_a_token_for_users_123_cannot_publish_elsewhere(api_as, make_topic, ref):
    make_topic("users")
    make_topic("visits")

    response = api_as("users:123").post(f"topics/{ref}/events", {"name": "e", "data": {}})

    assert ref in error_of(response, 403, "forbidden")["message"]
    assert stored_offsets("users") == [] and stored_offsets("visits") == []


def test_a_batch_over_the_event_count_limit_is_too_large_and_nothing_is_stored(admin_api, users, settings):
    settings.ER_MAX_BATCH_EVENTS = 3

    response = admin_api.post("topics/users/events", [{"name": "e", "data": n} for n in range(4)])

    error = error_of(response, 413, "too_large")
    assert error["field"] == "events" and "4 events" in error["message"]
    assert stored_offsets("users") == []
    assert admin_api.post("topics/users/events", [{"name": "e", "data": n} for n in range(3)]).status_code == 201


def test_an_event_over_the_size_limit_is_too_large_and_nothing_is_stored(admin_api, users, settings):
    settings.ER_MAX_EVENT_BYTES = 200

    response = admin_api.post("topics/users/events", [{"name": "e", "data": "small"}, {"name": "e", "data": "x" * 300}])

    assert error_of(response, 413, "too_large")["field"] == "events[1].data"
    assert stored_offsets("users") == []


def test_a_batch_over_the_request_payload_limit_is_too_large(admin_api, users, settings):
    settings.ER_MAX_REQUEST_BYTES = 1000

    response = admin_api.post("topics/users/events", [{"name": "e", "data": "x" * 400} for _ in range(3)])

    assert error_of(response, 413, "too_large")["field"] == "events"
    assert stored_offsets("users") == []


def test_a_request_body_over_data_upload_max_memory_size_is_too_large(admin_api, users, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024

    response = admin_api.post("topics/users/events", {"name": "e", "data": "x" * 2000})

    error_of(response, 413, "too_large")
    assert stored_offsets("users") == []


# --- Pulling -------------------------------------------------------------------------------------


def publish_numbers(api: Api, ref: str, count: int) -> list[dict[str, Any]]:
    response = api.post(f"topics/{ref}/events", [{"name": "n", "data": {"n": n}} for n in range(count)])
    assert response.status_code == 201, response.content
    return response.json()["events"]


def test_pulling_pages_through_a_topic_by_next_offset(admin_api, users):
    published = publish_numbers(admin_api, "users", 5)

    pages = []
    offset = 1
    for _ in range(4):
        response = admin_api.get(f"topics/users/events?offset={offset}&limit=2")
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"events", "nextOffset"}
        pages.append([event["offset"] for event in body["events"]])
        offset = body["nextOffset"]

    assert pages == [[1, 2], [3, 4], [5], []]
    assert offset == 6
    assert admin_api.get("topics/users/events?offset=1&limit=5").json()["events"] == published


def test_pulling_with_no_parameters_starts_at_offset_1_with_the_default_batch(admin_api, users, settings):
    settings.ER_PULL_DEFAULT_BATCH = 3
    publish_numbers(admin_api, "users", 5)

    body = admin_api.get("topics/users/events").json()

    assert [event["offset"] for event in body["events"]] == [1, 2, 3] and body["nextOffset"] == 4


def test_pulling_past_the_end_returns_no_events_and_the_same_offset(admin_api, users):
    publish_numbers(admin_api, "users", 2)

    assert admin_api.get("topics/users/events?offset=10").json() == {"events": [], "nextOffset": 10}


def test_a_limit_over_the_maximum_is_clamped(admin_api, users, settings):
    settings.ER_PULL_MAX_BATCH = 4
    publish_numbers(admin_api, "users", 6)

    body = admin_api.get("topics/users/events?offset=1&limit=1000").json()

    assert [event["offset"] for event in body["events"]] == [1, 2, 3, 4] and body["nextOffset"] == 5


def test_a_limit_over_1000_is_clamped_to_1000_by_default(admin_api, users):
    publish_numbers(admin_api, "users", 1000)
    publish_numbers(admin_api, "users", 1)

    body = admin_api.get("topics/users/events?offset=1&limit=5000").json()

    assert len(body["events"]) == 1000 and body["events"][-1]["offset"] == 1000 and body["nextOffset"] == 1001


@pytest.mark.parametrize(
    "query, field",
    [
        ("offset=abc", "offset"),
        ("offset=-1", "offset"),
        ("offset=1.5", "offset"),
        ("limit=ten", "limit"),
        ("limit=-5", "limit"),
    ],
)
def test_a_bad_offset_or_limit_is_refused(admin_api, users, query, field):
    error = error_of(admin_api.get(f"topics/users/events?{query}"), 400, "invalid")

    assert error["field"] == field


def test_a_token_for_users_123_pulls_only_the_events_of_users_123(api_as, admin_api, users):
    admin_api.post("topics/users:123/events", {"name": "mine", "data": 1})
    admin_api.post("topics/users:456/events", {"name": "theirs", "data": 2})
    admin_api.post("topics/users/events", {"name": "bare", "data": 3})
    admin_api.post("topics/users:123/events", {"name": "mine", "data": 4})

    body = api_as("users:123").get("topics/users:123/events").json()

    assert [(event["offset"], event["topic"], event["data"]) for event in body["events"]] == [
        (1, "users:123", 1),
        (4, "users:123", 4),
    ]
    assert body["nextOffset"] == 5
    everything = admin_api.get("topics/users/events").json()["events"]
    assert [event["topic"] for event in everything] == ["users:123", "users:456", "users", "users:123"]


@pytest.mark.parametrize("ref", ["users", "users:456"])
def test_a_token_for_users_123_cannot_pull_the_whole_topic_or_another_id(api_as, admin_api, users, ref):
    admin_api.post("topics/users:456/events", {"name": "theirs", "data": 2})

    response = api_as("users:123").get(f"topics/{ref}/events")

    assert ref in error_of(response, 403, "forbidden")["message"]
    assert b"theirs" not in response.content


def test_a_token_for_the_whole_topic_pulls_every_id(api_as, admin_api, users):
    admin_api.post("topics/users:123/events", {"name": "a", "data": 1})
    admin_api.post("topics/users:456/events", {"name": "b", "data": 2})

    body = api_as("users").get("topics/users/events").json()

    assert [event["topic"] for event in body["events"]] == ["users:123", "users:456"]


def test_pulling_an_unknown_topic_is_404(admin_api):
    error_of(admin_api.get("topics/nosuch/events"), 404, "not_found")


# --- Webhooks ------------------------------------------------------------------------------------

WEBHOOK = {
    "name": "crm",
    "url": "http://127.0.0.1:9/hook",
    "topic": "users",
    "eventNames": ["user_login"],
    "active": True,
    "maxAttempts": 5,
    "timeoutSeconds": 3,
}


@pytest.fixture
def destination(users: Topic, allow_private: None) -> Destination:
    from webhooks.services import create_destination

    return create_destination(name="crm", url="http://127.0.0.1:9/hook", topic="users")


def test_an_admin_creates_a_webhook_and_sees_its_secret_once(admin_api, users, allow_private):
    response = admin_api.post("webhooks", WEBHOOK)

    assert response.status_code == 201, response.content
    body = response.json()
    assert {key: body[key] for key in WEBHOOK} == WEBHOOK
    assert body["secret"].startswith("whsec_") and len(base64.b64decode(body["secret"][6:])) >= 24
    destination = Destination.objects.get(pk=body["id"])
    assert (destination.name, destination.url, destination.topic, destination.event_names) == (
        "crm",
        "http://127.0.0.1:9/hook",
        "users",
        ["user_login"],
    )
    assert (destination.max_attempts, destination.timeout_seconds, destination.secret) == (5, 3, body["secret"])

    later = admin_api.get(f"webhooks/{body['id']}").json()
    listed = admin_api.get("webhooks").json()["webhooks"]
    assert "secret" not in later and all("secret" not in item for item in listed)
    assert body["secret"] not in admin_api.get("webhooks").content.decode()


def test_a_webhook_needs_only_name_url_and_topic(admin_api, users, allow_private, settings):
    response = admin_api.post("webhooks", {"name": "crm", "url": "http://127.0.0.1:9/hook", "topic": "users:123"})

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["eventNames"] == [] and body["active"] is True
    assert body["maxAttempts"] is None and body["timeoutSeconds"] is None
    destination = Destination.objects.get(pk=body["id"])
    assert destination.effective_max_attempts == settings.ER_WEBHOOK_MAX_ATTEMPTS
    assert DeliveryStream.objects.filter(destination=destination, topic_id="123").exists()


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"url": "not a url"}, "url"),
        ({"url": "ftp://127.0.0.1/hook"}, "url"),
        ({"name": ""}, "name"),
        ({"topic": "Users"}, "topic"),
        ({"maxAttempts": 0}, "maxAttempts"),
        ({"timeoutSeconds": "soon"}, "timeoutSeconds"),
        ({"eventNames": "user_login"}, "eventNames"),
    ],
)
def test_an_invalid_webhook_is_refused_and_nothing_is_created(admin_api, users, allow_private, changes, field):
    response = admin_api.post("webhooks", {**WEBHOOK, **changes})

    assert error_of(response, 400, "invalid")["field"] == field
    assert Destination.objects.count() == 0


def test_a_webhook_missing_its_url_is_refused(admin_api, users, allow_private):
    response = admin_api.post("webhooks", {"name": "crm", "topic": "users"})

    assert error_of(response, 400, "invalid")["field"] == "url"
    assert Destination.objects.count() == 0


def test_a_webhook_to_a_private_address_is_refused_unless_allowed(admin_api, users, settings):
    settings.ER_WEBHOOK_ALLOW_PRIVATE = False

    response = admin_api.post("webhooks", {**WEBHOOK, "url": "http://127.0.0.1:8080/hook"})

    error = error_of(response, 400, "invalid")
    assert error["field"] == "url" and "loopback" in error["message"]
    assert Destination.objects.count() == 0


def test_a_webhook_for_an_unknown_topic_is_404(admin_api, allow_private):
    response = admin_api.post("webhooks", {**WEBHOOK, "topic": "nosuch"})

    assert error_of(response, 404, "not_found")["field"] == "topic"
    assert Destination.objects.count() == 0


def test_a_webhook_body_that_is_not_json_is_refused(admin_api, users, allow_private):
    error_of(admin_api.post("webhooks", raw="{"), 400, "invalid")

    assert Destination.objects.count() == 0


def test_an_admin_lists_the_webhooks(admin_api, users, allow_private):
    admin_api.post("webhooks", {**WEBHOOK, "name": "b_second"})
    admin_api.post("webhooks", {**WEBHOOK, "name": "a_first", "topic": "users:123"})

    response = admin_api.get("webhooks")

    assert response.status_code == 200
    webhooks = response.json()["webhooks"]
    assert [(item["name"], item["topic"]) for item in webhooks] == [("a_first", "users:123"), ("b_second", "users")]


def test_an_admin_gets_a_webhook(admin_api, destination):
    response = admin_api.get(f"webhooks/{destination.pk}")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == destination.pk
    assert (body["name"], body["url"], body["topic"], body["active"]) == ("crm", destination.url, "users", True)
    assert parse_timestamp(body["createdAt"]) == destination.created_at


def test_an_admin_changes_a_webhooks_name_url_event_names_and_max_attempts(admin_api, destination):
    changes = {"name": "crm2", "url": "http://127.0.0.1:10/new", "eventNames": ["a", "b"], "maxAttempts": 3}

    response = admin_api.patch(f"webhooks/{destination.pk}", changes)

    assert response.status_code == 200, response.content
    assert {key: response.json()[key] for key in changes} == changes
    destination.refresh_from_db()
    assert (destination.name, destination.url, destination.event_names, destination.max_attempts) == (
        "crm2",
        "http://127.0.0.1:10/new",
        ["a", "b"],
        3,
    )
    assert destination.topic == "users"


def test_a_webhooks_topic_cannot_be_changed(admin_api, destination, make_topic):
    make_topic("visits")

    response = admin_api.patch(f"webhooks/{destination.pk}", {"topic": "visits", "name": "moved"})

    error = error_of(response, 400, "invalid")
    assert error["field"] == "topic" and "cannot be changed" in error["message"]
    destination.refresh_from_db()
    assert (destination.topic, destination.name) == ("users", "crm")


def test_patching_with_the_same_topic_is_accepted(admin_api, destination):
    response = admin_api.patch(f"webhooks/{destination.pk}", {"topic": "users", "name": "same"})

    assert response.status_code == 200, response.content
    destination.refresh_from_db()
    assert destination.name == "same"


def test_an_invalid_change_is_refused_and_nothing_changes(admin_api, destination):
    response = admin_api.patch(f"webhooks/{destination.pk}", {"name": "renamed", "maxAttempts": 0})

    assert error_of(response, 400, "invalid")["field"] == "maxAttempts"
    destination.refresh_from_db()
    assert (destination.name, destination.max_attempts) == ("crm", None)


def test_a_change_to_a_private_url_is_refused_unless_allowed(admin_api, destination, settings):
    settings.ER_WEBHOOK_ALLOW_PRIVATE = False

    response = admin_api.patch(f"webhooks/{destination.pk}", {"url": "http://10.0.0.1/hook"})

    assert error_of(response, 400, "invalid")["field"] == "url"
    destination.refresh_from_db()
    assert destination.url == "http://127.0.0.1:9/hook"


def test_pausing_and_resuming_a_webhook_flips_its_active_flag(admin_api, destination):
    paused = admin_api.post(f"webhooks/{destination.pk}/pause")

    assert paused.status_code == 200 and paused.json()["active"] is False
    assert Destination.objects.get(pk=destination.pk).active is False

    resumed = admin_api.post(f"webhooks/{destination.pk}/resume")

    assert resumed.status_code == 200 and resumed.json()["active"] is True
    assert Destination.objects.get(pk=destination.pk).active is True


def test_resuming_a_disabled_webhook_clears_its_reason(admin_api, destination):
    Destination.objects.filter(pk=destination.pk).update(active=False, disabled_reason="410 Gone")

    body = admin_api.post(f"webhooks/{destination.pk}/resume").json()

    assert body["active"] is True and body["disabledReason"] == ""
    assert Destination.objects.get(pk=destination.pk).disabled_reason == ""


def test_the_attempts_of_a_webhook_are_listed_newest_first(admin_api, destination):
    stream = DeliveryStream.objects.create(destination=destination, topic_id="123")
    first_event, second_event = uuid.uuid4(), uuid.uuid4()
    at = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
    DeliveryAttempt.objects.create(
        stream=stream,
        event_id=first_event,
        offset=7,
        attempt=1,
        status="failed",
        response_status=503,
        duration_ms=41,
        error="HTTP 503",
        at=at,
    )
    DeliveryAttempt.objects.create(
        stream=stream,
        event_id=first_event,
        offset=7,
        attempt=2,
        status="succeeded",
        response_status=200,
        duration_ms=12,
        error="",
        at=at + timedelta(seconds=2),
    )
    DeliveryAttempt.objects.create(
        stream=stream, event_id=second_event, offset=8, attempt=1, status="pending", at=at + timedelta(seconds=3)
    )

    response = admin_api.get(f"webhooks/{destination.pk}/attempts")

    assert response.status_code == 200
    attempts = response.json()["attempts"]
    assert [(a["eventId"], a["offset"], a["attempt"], a["status"]) for a in attempts] == [
        (str(second_event), 8, 1, "pending"),
        (str(first_event), 7, 2, "succeeded"),
        (str(first_event), 7, 1, "failed"),
    ]
    oldest = attempts[-1]
    assert {"eventId", "offset", "attempt", "status", "durationMs", "error", "at"} <= set(oldest)
    assert (oldest["durationMs"], oldest["error"], oldest["topic"], oldest["responseStatus"]) == (
        41,
        "HTTP 503",
        "users:123",
        503,
    )
    assert parse_timestamp(oldest["at"]) == at
    assert attempts[0]["durationMs"] is None
    assert [a["offset"] for a in admin_api.get(f"webhooks/{destination.pk}/attempts?limit=1").json()["attempts"]] == [8]


def test_attempts_of_other_webhooks_are_not_listed(admin_api, destination, allow_private):
    from webhooks.services import create_destination

    other = create_destination(name="other", url="http://127.0.0.1:9/other", topic="users")
    stream = DeliveryStream.objects.create(destination=other, topic_id="1")
    DeliveryAttempt.objects.create(stream=stream, event_id=uuid.uuid4(), offset=1, attempt=1)

    assert admin_api.get(f"webhooks/{destination.pk}/attempts").json() == {"attempts": []}


def test_an_admin_deletes_a_webhook(admin_api, destination):
    DeliveryStream.objects.create(destination=destination, topic_id="1")

    response = admin_api.delete(f"webhooks/{destination.pk}")

    assert response.status_code == 204 and response.content == b""
    assert not Destination.objects.filter(pk=destination.pk).exists()
    assert not DeliveryStream.objects.filter(destination_id=destination.pk).exists()
    error_of(admin_api.get(f"webhooks/{destination.pk}"), 404, "not_found")


WEBHOOK_ENDPOINTS = [
    ("GET", "webhooks"),
    ("POST", "webhooks"),
    ("GET", "webhooks/{id}"),
    ("PATCH", "webhooks/{id}"),
    ("DELETE", "webhooks/{id}"),
    ("POST", "webhooks/{id}/pause"),
    ("POST", "webhooks/{id}/resume"),
    ("GET", "webhooks/{id}/attempts"),
    ("POST", "webhooks/{id}/rotate-secret"),
    ("POST", "webhooks/{id}/redeliver"),
]


@pytest.mark.parametrize("method, path", WEBHOOK_ENDPOINTS)
def test_a_non_admin_token_cannot_use_any_webhooks_endpoint(api_as, destination, method, path):
    response = api_as("users").call(method, path.format(id=destination.pk), {**WEBHOOK, "name": "changed"})

    assert "admin" in error_of(response, 403, "forbidden")["message"]
    assert Destination.objects.get().name == "crm" and Destination.objects.get().active is True


@pytest.mark.parametrize("method, path", [endpoint for endpoint in WEBHOOK_ENDPOINTS if "{id}" in endpoint[1]])
def test_an_unknown_webhook_id_is_404(admin_api, destination, method, path):
    unknown = destination.pk + 1000

    response = admin_api.call(method, path.format(id=unknown), {"name": "changed"})

    assert str(unknown) in error_of(response, 404, "not_found")["message"]
    assert Destination.objects.get().name == "crm"


# --- Inputs that must be refused, never answered with a 500 -------------------------------------
# Each of these once crashed with a 500 (found by this file and Schemathesis). They are the
# contract: a 400 (or 413) in the one error shape, and nothing stored.


@pytest.mark.parametrize("field", ["name", "userId"])
def test_a_nul_character_in_an_events_name_or_user_id_is_refused(admin_api, users, field):
    response = admin_api.post("topics/users/events", {"name": "e", "data": {}, field: "a\x00b"})

    assert error_of(response, 400, "invalid")["field"] == f"events[0].{field}"
    assert stored_offsets("users") == []


@pytest.mark.parametrize(
    "moment",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"],
    ids=["before year 1 in UTC", "after year 9999 in UTC"],
)
def test_an_occurred_at_postgresql_cannot_store_is_refused_and_the_topic_stays_readable(admin_api, users, moment):
    response = admin_api.post("topics/users/events", {"name": "e", "data": {}, "eventOccurredAt": moment})

    assert error_of(response, 400, "invalid")["field"] == "events[0].eventOccurredAt"
    assert stored_offsets("users") == []
    assert admin_api.get("topics/users/events").json() == {"events": [], "nextOffset": 1}


def test_an_occurred_at_with_any_rfc_3339_offset_is_stored_in_utc(admin_api, users):
    # RFC 3339 allows offsets up to 23:59, PostgreSQL only up to 15:59: it is converted to UTC first.
    response = admin_api.post(
        "topics/users/events", {"name": "e", "data": {}, "eventOccurredAt": "2020-01-01T00:00:00-22:38"}
    )

    assert response.status_code == 201
    assert response.json()["events"][0]["eventOccurredAt"] == "2020-01-01T22:38:00.000Z"
    assert admin_api.get("topics/users/events").json()["events"][0]["eventOccurredAt"] == "2020-01-01T22:38:00.000Z"


@pytest.mark.parametrize(
    "raw, field",
    [('{"name": "e", "data": "\\ud800"}', "events[0].data"), ('{"name": "e\\ud800", "data": 1}', "events[0].name")],
)
def test_a_lone_surrogate_in_an_event_is_refused(admin_api, users, raw, field):
    response = admin_api.post("topics/users/events", raw=raw)

    assert error_of(response, 400, "invalid")["field"] == field
    assert stored_offsets("users") == []


def test_a_body_nested_too_deeply_is_refused(admin_api, users):
    response = admin_api.post("topics/users/events", raw='{"name": "e", "data": ' + "[" * 5000 + "]" * 5000 + "}")

    error_of(response, 400, "invalid")
    assert stored_offsets("users") == []


@pytest.mark.parametrize("field", ["maxAttempts", "timeoutSeconds"])
def test_a_webhook_number_beyond_its_column_is_refused(admin_api, users, allow_private, field):
    response = admin_api.post("webhooks", {**WEBHOOK, field: 2**40})

    assert error_of(response, 400, "invalid")["field"] == field
    assert Destination.objects.count() == 0


@pytest.mark.parametrize(
    "field, value", [("name", "n" * 101), ("url", "http://127.0.0.1/" + "x" * 2000)], ids=["name", "url"]
)
def test_a_webhook_text_longer_than_its_column_is_refused(admin_api, users, allow_private, field, value):
    response = admin_api.post("webhooks", {**WEBHOOK, field: value})

    assert error_of(response, 400, "invalid")["field"] == field
    assert Destination.objects.count() == 0


@pytest.mark.parametrize(
    "changes",
    [{"name": "n" * 101}, {"maxAttempts": 2**40}, {"timeoutSeconds": 2**40}],
    ids=["name", "maxAttempts", "timeoutSeconds"],
)
def test_a_change_beyond_a_webhook_column_is_refused(admin_api, destination, changes):
    response = admin_api.patch(f"webhooks/{destination.pk}", changes)

    assert error_of(response, 400, "invalid")["field"] == next(iter(changes))
    destination.refresh_from_db()
    assert (destination.name, destination.max_attempts, destination.timeout_seconds) == ("crm", None, None)
