"""The publish service: whole-batch validation, idempotency, JSON fidelity, scoping."""

import json
import uuid
from datetime import datetime

import pytest
from django.test import override_settings

from eventrelay.errors import AlreadyExists, Forbidden, InvalidInput, NotFound, TooLarge
from eventrelay.v1 import eventrelay_pb2 as pb
from events.canonical import to_canonical
from events.services import publish, pull
from tests.helpers import stored_rows
from tests.test_pull import pull_wire as pulled_wire
from topics.models import Topic


@pytest.fixture
def users(make_topic):
    return make_topic("users")


def test_a_published_event_comes_back_in_canonical_form(users, principal_for):
    producer = principal_for("users:123")
    event_id = str(uuid.uuid4())

    [stored] = publish(
        producer,
        "users:123",
        [
            {
                "eventId": event_id,
                "name": "user_login",
                "userId": "123",
                "eventOccurredAt": "2020-01-01T00:00:00Z",
                "context": {"ip": "127.0.0.1"},
                "data": {"email": "thomas@example.com"},
            }
        ],
        "grpc",
    )

    assert to_canonical(stored) == {
        "eventId": event_id,
        "name": "user_login",
        "topic": "users:123",
        "source": "grpc",
        "userId": "123",
        "eventOccurredAt": "2020-01-01T00:00:00.000Z",
        "context": {"ip": "127.0.0.1"},
        "data": {"email": "thomas@example.com"},
        "offset": 1,
    }
    assert [to_canonical(event) for event in pull(producer, "users:123", 1).events] == [to_canonical(stored)]


def test_missing_optional_fields_get_server_defaults(users, admin):
    [stored] = publish(admin, "users", [{"name": "signup", "data": None}], "http")

    canonical = to_canonical(stored)
    assert uuid.UUID(canonical["eventId"])
    assert canonical["userId"] is None
    assert canonical["context"] == {}
    assert canonical["data"] is None
    assert canonical["eventOccurredAt"].endswith("Z")
    assert canonical["topic"] == "users"


def test_offsets_start_at_one_and_continue_across_batches(users, admin):
    first = publish(admin, "users", [{"name": "a", "data": i} for i in range(3)], "http")
    second = publish(admin, "users:9", [{"name": "b", "data": i} for i in range(2)], "http")

    assert [event.offset for event in first + second] == [1, 2, 3, 4, 5]
    assert Topic.objects.get(name="users").last_offset == 5


def test_republishing_an_event_id_returns_the_original_and_stores_nothing(users, admin):
    event_id = str(uuid.uuid4())
    [original] = publish(admin, "users:1", [{"eventId": event_id, "name": "a", "data": {"v": 1}}], "http")
    publish(admin, "users:1", [{"name": "b", "data": {}}], "http")

    again = publish(
        admin,
        "users:1",
        [{"name": "c", "data": {}}, {"eventId": event_id, "name": "changed", "data": {"v": 2}}],
        "websocket",
    )

    assert again[1] == original  # same offset, same stored content, not the new payload
    assert again[0].offset == 3
    assert len(stored_rows("users")) == 3
    assert Topic.objects.get(name="users").last_offset == 3


def test_an_event_id_repeated_inside_one_batch_is_stored_once(users, admin):
    event_id = str(uuid.uuid4())

    stored = publish(
        admin,
        "users",
        [{"eventId": event_id, "name": "a", "data": 1}, {"eventId": event_id, "name": "a", "data": 1}],
        "http",
    )

    assert stored[0] == stored[1]
    assert len(stored_rows("users")) == 1


def test_an_event_id_stored_under_another_topic_id_is_not_revealed(users, admin, principal_for):
    event_id = str(uuid.uuid4())
    publish(admin, "users:123", [{"eventId": event_id, "name": "secret", "data": {"pin": 1234}}], "http")

    with pytest.raises(AlreadyExists, match="under another topic id"):
        publish(principal_for("users:456"), "users:456", [{"eventId": event_id, "name": "x", "data": {}}], "http")
    assert len(stored_rows("users")) == 1


@pytest.mark.parametrize(
    ("bad_event", "field", "message"),
    [
        ({"data": {}}, "events[2].name", "is required"),
        ({"name": "", "data": {}}, "events[2].name", "is required"),
        ({"name": "x" * 256, "data": {}}, "events[2].name", "256 characters"),
        ({"name": "a"}, "events[2].data", "is required"),
        ({"name": "a", "data": float("nan")}, "events[2].data", "not valid JSON"),
        ({"name": "a", "data": {"set": {1, 2}}}, "events[2].data", "not valid JSON"),
        ({"name": "a", "data": {}, "context": [1]}, "events[2].context", "must be a JSON object"),
        ({"name": "a", "data": {}, "eventId": "not-a-uuid"}, "events[2].eventId", "is not a UUID"),
        ({"name": "a", "data": {}, "userId": 123}, "events[2].userId", "must be a string"),
        ({"name": "a", "data": {}, "eventOccurredAt": "yesterday"}, "events[2].eventOccurredAt", "RFC 3339"),
        (
            {"name": "a", "data": {}, "eventOccurredAt": "2020-01-01T00:00:00"},
            "events[2].eventOccurredAt",
            "no time zone",
        ),
        ({"name": "a", "data": {}, "offset": 7}, "events[2].offset", "set by the server"),
        ({"name": "a", "data": {}, "colour": "red"}, "events[2].colour", "unknown field"),
        ("not an object", "events[2]", "must be a JSON object"),
    ],
)
def test_one_invalid_event_rejects_the_whole_batch_naming_its_index_and_field(users, admin, bad_event, field, message):
    batch = [{"name": "ok", "data": 1}, {"name": "ok", "data": 2}, bad_event, {"name": "ok", "data": 3}]

    with pytest.raises(InvalidInput) as error:
        publish(admin, "users", batch, "http")

    assert error.value.field == field
    assert message in error.value.message
    assert error.value.message.startswith(field)
    assert stored_rows("users") == []
    assert Topic.objects.get(name="users").last_offset == 0


@override_settings(ER_MAX_EVENT_BYTES=1024)
def test_an_oversized_event_rejects_the_batch(users, admin):
    batch = [{"name": "ok", "data": 1}, {"name": "big", "data": "x" * 2000}]

    with pytest.raises(TooLarge) as error:
        publish(admin, "users", batch, "http")

    assert error.value.field == "events[1].data"
    assert "at most 1024" in error.value.message
    assert stored_rows("users") == []


@override_settings(ER_MAX_BATCH_EVENTS=10)
def test_a_batch_over_the_event_count_limit_is_rejected(users, admin):
    with pytest.raises(TooLarge, match="11 events; at most 10"):
        publish(admin, "users", [{"name": "a", "data": i} for i in range(11)], "http")
    assert stored_rows("users") == []


@override_settings(ER_MAX_REQUEST_BYTES=5000)
def test_a_batch_over_the_request_size_limit_is_rejected(users, admin):
    with pytest.raises(TooLarge, match="at most 5000"):
        publish(admin, "users", [{"name": "a", "data": "x" * 1000} for _ in range(6)], "http")
    assert stored_rows("users") == []


@pytest.mark.parametrize("bad_batch", [[], {"name": "a", "data": 1}, None])
def test_a_batch_must_be_a_non_empty_list(users, admin, bad_batch):
    with pytest.raises(InvalidInput) as error:
        publish(admin, "users", bad_batch, "http")
    assert error.value.field == "events"


def test_json_payloads_come_back_exactly_as_sent(users, admin):
    data = {
        "big": 12345678901234567890123456789,
        "negative": -9223372036854775809,
        "floats": [0.1, 3.141592653589793, 1e-07, -2.5e300, 1.7976931348623157e308],
        "nested": {"a": [{"b": {"c": [1, "two", None, True, False]}}]},
        "unicode": 'héllo wörld ✓ 😀 中文 \u0000-free \n\t"quoted"',
        "empty": {"list": [], "object": {}, "string": ""},
    }
    context = {"trace": {"id": "abc", "sampled": True, "depth": 2**63}}

    publish(admin, "users", [{"name": "payload", "data": data, "context": context}], "http")
    [event] = pull(admin, "users", 1).events

    assert to_canonical(event)["data"] == data
    assert to_canonical(event)["context"] == context
    # Integers stay integers (never floats), and floats keep every digit.
    assert isinstance(to_canonical(event)["data"]["big"], int)
    assert json.loads(event.data_json)["floats"] == data["floats"]


def test_text_with_copy_special_characters_is_stored_exactly(users, admin):
    # Rows reach PostgreSQL as COPY text, where a tab ends a column, a newline a row, and \N means NULL.
    name = "tab\there, new\nline, back\\slash, \\N"
    data = {"s": "\\N", "t": "a\tb\\c", "n": "x\ny"}
    events = [{"name": name, "userId": "\\N", "data": data}, {"name": "plain", "data": 1}]

    published = publish(admin, "users", events, "http")
    pulled = pull(admin, "users", 1).events

    assert [(e.name, e.user_id, e.data_json) for e in pulled] == [(e.name, e.user_id, e.data_json) for e in published]
    assert (pulled[0].name, pulled[0].user_id) == (name, "\\N")
    assert json.loads(pulled[0].data_json) == data
    assert pulled[1].user_id is None


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2026-11-28T04:51:43.123456Z",
        "1901-12-13T20:45:52.000001+00:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
        "2026-03-29T02:30:00+05:45",
    ],
)
def test_occurrence_times_are_stored_to_the_millisecond(users, admin, occurred_at):
    # They reach PostgreSQL as COPY text (ISO 8601), formatted once per distinct time in a batch,
    # truncated to what the canonical form carries (every transport then serves the same time).
    expected = datetime.fromisoformat(occurred_at)
    expected = expected.replace(microsecond=expected.microsecond // 1000 * 1000)
    events = [{"name": "a", "data": 1, "eventOccurredAt": occurred_at}, {"name": "b", "data": 2}]

    [first, second] = publish(admin, "users", events, "http")
    pulled = pull(admin, "users", 1).events

    assert pulled[0].event_occurred_at == first.event_occurred_at == expected
    assert pulled[1].event_occurred_at == second.event_occurred_at != expected


def test_a_token_for_one_topic_id_cannot_publish_to_another_or_to_the_whole_topic(users, principal_for):
    producer = principal_for("users:123")

    for ref in ("users", "users:456", "visits:123"):
        with pytest.raises(Forbidden, match=f"does not grant topic '{ref}'"):
            publish(producer, ref, [{"name": "a", "data": 1}], "http")
    assert stored_rows("users") == []


def test_publishing_to_an_unknown_topic_is_not_found(db, admin):
    with pytest.raises(NotFound, match="topic 'ghosts' does not exist"):
        publish(admin, "ghosts", [{"name": "a", "data": 1}], "http")


def test_an_invalid_topic_reference_is_rejected_before_anything_else(db, admin):
    with pytest.raises(InvalidInput, match="must start with a lowercase letter"):
        publish(admin, "Users", [{"name": "a", "data": 1}], "http")


def test_event_ids_in_any_form_uuid_takes_are_stored_and_served_in_canonical_form(users, admin):
    # The eventId text goes into the stored row and the stored gRPC wire form as sent only when it is
    # canonical already (events.validation._parse_event_id); every other form must be rewritten.
    forms = {
        "upper": "12345678-ABCD-4BCD-8BCD-1234567890AB",
        "braces": "{22345678-abcd-4bcd-8bcd-1234567890ab}",
        "urn": "urn:uuid:32345678-abcd-4bcd-8bcd-1234567890ab",
        "no dashes": "42345678abcd4bcd8bcd1234567890ab",
        "non-ASCII digit": "\u06f52345678-abcd-4bcd-8bcd-1234567890ab",
        "canonical": "62345678-abcd-4bcd-8bcd-1234567890ab",
    }
    published = publish(
        admin, "users", [{"eventId": text, "name": name, "data": 1} for name, text in forms.items()], "http"
    )

    expected = [str(uuid.UUID(text)) for text in forms.values()]
    assert [str(event.event_id) for event in published] == expected
    served = pb.PullEventsResponse.FromString(pulled_wire(admin, "users", 1, 100))
    assert [event.event_id for event in served.events] == expected
    assert [to_canonical(event)["eventId"] for event in pull(admin, "users", 1).events] == expected
