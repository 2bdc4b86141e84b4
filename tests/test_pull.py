"""The pull service: offsets, batch clamping, next_offset and topic-id scoping."""

import pytest
from django.db import connection
from django.test import override_settings

from eventrelay.errors import Forbidden, InvalidInput, NotFound
from events.services import publish, pull, pull_encoded


@pytest.fixture
def users(make_topic, admin):
    make_topic("users")
    # Offsets 1..30 alternate between users:123 and users:456.
    for offset in range(1, 31):
        topic_id = "123" if offset % 2 else "456"
        publish(admin, f"users:{topic_id}", [{"name": "e", "data": {"n": offset}}], "http")


def offsets(result):
    return [event.offset for event in result.events]


def test_pull_returns_events_from_the_offset_ascending_with_the_next_offset(users, admin):
    result = pull(admin, "users", 5, 10)

    assert offsets(result) == list(range(5, 15))
    assert result.next_offset == 15


def test_pull_past_the_end_returns_nothing_and_keeps_the_offset(users, admin):
    result = pull(admin, "users", 31, 10)

    assert result.events == []
    assert result.next_offset == 31


def test_offset_zero_reads_from_the_start(users, admin):
    assert offsets(pull(admin, "users", 0, 3)) == [1, 2, 3]


def test_batch_size_defaults_to_100_and_is_clamped_to_the_maximum(users, admin):
    with override_settings(ER_PULL_DEFAULT_BATCH=4, ER_PULL_MAX_BATCH=7):
        assert len(pull(admin, "users", 1).events) == 4
        assert len(pull(admin, "users", 1, 0).events) == 4
        assert len(pull(admin, "users", 1, 5000).events) == 7


def test_a_topic_id_pull_sees_only_that_id_with_exact_next_offsets(users, principal_for):
    consumer = principal_for("users:123")

    first = pull(consumer, "users:123", 1, 5)
    second = pull(consumer, "users:123", first.next_offset, 5)

    assert offsets(first) == [1, 3, 5, 7, 9]
    assert first.next_offset == 10
    assert offsets(second) == [11, 13, 15, 17, 19]
    assert all(event.topic == "users:123" for event in first.events + second.events)


def test_a_token_for_one_topic_id_cannot_pull_the_whole_topic_or_another_id(users, principal_for):
    consumer = principal_for("users:123")

    with pytest.raises(Forbidden):
        pull(consumer, "users", 1)
    with pytest.raises(Forbidden):
        pull(consumer, "users:456", 1)


def test_a_whole_topic_grant_reads_every_id(users, principal_for):
    consumer = principal_for("users")

    assert offsets(pull(consumer, "users", 1, 100)) == list(range(1, 31))
    assert offsets(pull(consumer, "users:456", 1, 100)) == list(range(2, 31, 2))


@pytest.mark.parametrize(("offset", "batch_size", "field"), [(-1, 10, "offset"), (1, -5, "batchSize")])
def test_negative_offsets_and_batch_sizes_are_invalid(users, admin, offset, batch_size, field):
    with pytest.raises(InvalidInput) as error:
        pull(admin, "users", offset, batch_size)
    assert error.value.field == field


def test_pulling_an_unknown_topic_is_not_found(db, admin):
    with pytest.raises(NotFound):
        pull(admin, "ghosts", 1)


# --- the gRPC pull: PostgreSQL joins the events' stored wire forms ---------------------------------


def pull_wire(principal, ref, offset, size) -> bytes:
    """What the gRPC PullEvents answers: the encoded pull, made a PullEventsResponse."""
    from grpc_api.wire import pull_response

    page = pull_encoded(principal, ref, offset, size)
    return pull_response(page.joined, page.next_offset)


def decoded(wire_response: bytes):
    from eventrelay.v1 import eventrelay_pb2 as pb

    return pb.PullEventsResponse.FromString(wire_response)


def as_messages(events):
    from grpc_api.wire import event_message

    return [event_message(event) for event in events]


@pytest.mark.parametrize("ref, offset, size", [("users", 5, 10), ("users", 0, 3), ("users:123", 4, 5)])
def test_the_wire_pull_is_the_pull_encoded(users, admin, ref, offset, size):
    expected = pull(admin, ref, offset, size)

    response = decoded(pull_wire(admin, ref, offset, size))

    assert list(response.events) == as_messages(expected.events)
    assert response.next_offset == expected.next_offset


def test_the_wire_pull_past_the_end_keeps_the_offset(users, admin):
    response = decoded(pull_wire(admin, "users", 31, 10))

    assert list(response.events) == []
    assert response.next_offset == 31


def test_rows_stored_without_a_wire_form_are_encoded_when_read(users, admin):
    # Rows stored before the wire column existed have NULL there.
    with connection.cursor() as cursor:
        cursor.execute('UPDATE users_events SET wire = NULL WHERE "offset" IN (6, 9)')

    response = decoded(pull_wire(admin, "users", 5, 10))

    assert list(response.events) == as_messages(pull(admin, "users", 5, 10).events)
    assert [event.offset for event in response.events] == list(range(5, 15))


def test_the_wire_pull_of_a_missing_topic_is_not_found_and_leaves_the_transaction_usable(db, admin):
    with pytest.raises(NotFound):
        pull_wire(admin, "nosuchtopic", 1, 10)

    # The test runs inside a transaction: the failed read must not have aborted it.
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_the_wire_pull_is_authorized_like_pull(users, principal_for):
    with pytest.raises(Forbidden):
        pull_wire(principal_for("users:123"), "users:456", 1, 10)
    with pytest.raises(Forbidden):
        pull_wire(principal_for("users:123"), "users", 1, 10)


def test_the_migration_adds_the_wire_column_to_existing_topic_tables(users):
    from importlib import import_module

    from django.apps import apps

    migration = import_module("topics.migrations.0002_event_wire_column")
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE users_events DROP COLUMN wire")

    with connection.schema_editor() as editor:
        migration.add_wire_column(apps, editor)

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = 'users_events' AND column_name = 'wire'"
        )
        assert cursor.fetchone() == ("bytea",)
