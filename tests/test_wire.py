"""The stored wire form is written by hand (grpc_api.wire): it must be byte for byte what protobuf
itself serializes for the same event, whatever the event holds."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from eventrelay.v1 import eventrelay_pb2 as pb
from events.canonical import StoredEvent, canonical_json
from grpc_api.wire import encode_wire, event_bytes, event_message, events_response, pull_response


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


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_a_streamed_event_is_sent_as_the_message_protobuf_serializes(overrides):
    # Taken from the wire form (the stored one, or one encoded for a live event) by dropping its
    # key and length: the length takes 1 to 3 bytes across these cases.
    event = stored_event(**overrides)
    expected = event_message(event).SerializeToString()
    event_bytes.cache_clear()
    assert event_bytes(event) == expected
    event_bytes.cache_clear()
    assert event_bytes(event._replace(wire=encode_wire(event))) == expected


def test_an_event_is_the_same_event_with_or_without_its_wire_form():
    # A published event carries its wire form, the same event read back may not: they must still
    # be one key in the per-event caches, and the wire form must not flood logs.
    read_back = stored_event()
    published = read_back._replace(wire=encode_wire(read_back))
    assert published == read_back and not published != read_back
    assert hash(published) == hash(read_back)
    assert published != stored_event(offset=2)
    assert published != tuple(published)  # a tuple of the same values is not an event
    assert "wire" not in repr(published) and "offset=1" in repr(published)


def test_streamed_bytes_are_remembered_per_event_not_confused_between_events():
    first, second = stored_event(offset=1), stored_event(offset=2, data_json='{"n":2}')
    assert event_bytes(first) is event_bytes(first)  # encoded once for every stream of the process
    assert pb.Event.FromString(event_bytes(second)).data == '{"n":2}'
    same_offset_other_topic = stored_event(offset=1, topic_name="orders")
    assert pb.Event.FromString(event_bytes(same_offset_other_topic)).topic == "orders:123"
    # A topic deleted and created again reuses offsets, and a producer may reuse its eventId.
    recreated = stored_event(offset=1, data_json='{"recreated":true}')
    assert pb.Event.FromString(event_bytes(recreated)).data == '{"recreated":true}'
    assert json.loads(canonical_json(first))["data"] != json.loads(canonical_json(recreated))["data"]
