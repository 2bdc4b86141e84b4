"""The stored wire form is written by hand (events.wire): it must be byte for byte what protobuf
itself serializes for the same event, whatever the event holds."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from eventrelay.v1 import eventrelay_pb2 as pb
from events.canonical import StoredEvent
from events.wire import encode_wire, event_message, events_response, pull_response


def stored_event(**overrides) -> StoredEvent:
    fields = {
        "offset": 1,
        "event_id": uuid.UUID("0b6a3f0e-8d4c-4b7e-9a3e-2f1d5c6b7a80"),
        "name": "user.created",
        "topic_name": "users",
        "topic_id": "123",
        "source": "grpc",
        "user_id": "u-1",
        "event_occurred_at": datetime(2026, 11, 28, 4, 30, 15, 123456, tzinfo=UTC),
        "context_json": '{"ip":"127.0.0.1"}',
        "data_json": '{"email":"a@example.com"}',
    }
    return StoredEvent(**{**fields, **overrides})


def protobuf_wire(event: StoredEvent) -> bytes:
    return pb.PullEventsResponse(events=[event_message(event)]).SerializeToString()


CASES = {
    "typical": {},
    "bare topic name": {"topic_id": ""},
    "no user id": {"user_id": None},
    "empty user id": {"user_id": ""},
    "non-ASCII text": {"name": "commande.créée", "data_json": '{"ville":"Zürich","emoji":"😀"}', "user_id": "ユーザー"},
    "long data (multi-byte lengths)": {"data_json": '{"blob":"' + "x" * 70_000 + '"}'},
    "data just under a 2-byte length": {"data_json": '"' + "y" * 16_380 + '"'},
    "large offset": {"offset": 2**53 + 7},
    "offset 127/128 boundary": {"offset": 128},
    "the epoch exactly (empty Timestamp)": {"event_occurred_at": datetime(1970, 1, 1, tzinfo=UTC)},
    "before the epoch": {"event_occurred_at": datetime(1901, 12, 13, 20, 45, 52, tzinfo=UTC)},
    "whole seconds (no nanos)": {"event_occurred_at": datetime(2030, 1, 1, tzinfo=UTC)},
    "year 9999": {"event_occurred_at": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)},
    "other source": {"source": "websocket"},
}


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_the_hand_written_wire_form_is_what_protobuf_serializes(overrides):
    event = stored_event(**overrides)
    assert encode_wire(event) == protobuf_wire(event)


def test_a_response_of_wire_forms_decodes_to_the_events():
    events = [
        stored_event(offset=n, event_occurred_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=n))
        for n in range(1, 300)
    ]
    response = pb.PullEventsResponse.FromString(pull_response(events_response(events), 300))
    assert list(response.events) == [event_message(event) for event in events]
    assert response.next_offset == 300
