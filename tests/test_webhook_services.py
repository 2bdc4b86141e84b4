"""webhooks.services: a destination and its stream are created together or not at all, on every path (the service
and the REST API); a refusal names the same field on create and on update (the models' snake_case names), and the
REST API shows its own camelCase names for them."""

import json

import pytest
from django.db import DatabaseError, connection

from eventrelay.auth import mint_token
from eventrelay.errors import InvalidInput
from webhooks.models import DeliveryStream, Destination
from webhooks.services import create_destination, update_destination

URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def orders(make_topic, allow_private):
    return make_topic("orders")


@pytest.fixture
def streams_cannot_be_created(db):
    """A PostgreSQL trigger that refuses every new delivery stream: a failure between a destination's row and its
    stream's. Created inside the test's transaction, so it is rolled back with it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION er_test_refuse_stream() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'no delivery stream today'; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER er_test_refuse_stream BEFORE INSERT ON {DeliveryStream._meta.db_table} "
            "FOR EACH ROW EXECUTE FUNCTION er_test_refuse_stream()"
        )


def post_webhook(client, body):
    return client.post(
        "/api/v1/webhooks",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {mint_token([], admin=True)}",
    )


def test_a_destination_whose_stream_cannot_be_created_is_not_created_either(orders, streams_cannot_be_created):
    with pytest.raises(DatabaseError, match="no delivery stream today"):
        create_destination(name="crm", url=URL, topic="orders:1")

    assert not Destination.objects.exists()


def test_over_rest_a_destination_whose_stream_cannot_be_created_is_not_created_either(
    client, orders, streams_cannot_be_created
):
    client.raise_request_exception = False

    response = post_webhook(client, {"name": "crm", "url": URL, "topic": "orders:1"})

    assert response.status_code == 500
    assert not Destination.objects.exists()


@pytest.mark.parametrize(
    "field, value",
    [("max_attempts", 0), ("timeout_seconds", 301), ("backoff_base_ms", 0), ("backoff_cap_ms", -1)],
)
def test_a_limit_is_refused_naming_the_same_field_on_create_and_on_update(orders, field, value):
    with pytest.raises(InvalidInput) as on_create:
        create_destination(name="crm", url=URL, topic="orders", **{field: value})
    destination = create_destination(name="crm", url=URL, topic="orders")
    with pytest.raises(InvalidInput) as on_update:
        update_destination(destination, {field: value})

    assert on_create.value.field == on_update.value.field == field
    assert on_create.value.message == on_update.value.message
    assert on_create.value.message.startswith(f"{field} must be a whole number from 1 to ")


def test_event_names_and_start_offset_are_refused_under_their_own_names(orders):
    with pytest.raises(InvalidInput) as names:
        create_destination(name="crm", url=URL, topic="orders", event_names="placed")
    with pytest.raises(InvalidInput) as offset:
        create_destination(name="crm", url=URL, topic="orders", start_offset=5)

    assert (names.value.field, offset.value.field) == ("event_names", "start_offset")
    assert offset.value.message == "start_offset must be between 0 and 0"


def test_the_rest_api_names_a_refused_start_offset_in_camel_case(client, orders):
    response = post_webhook(client, {"name": "crm", "url": URL, "topic": "orders", "startOffset": 5})

    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "invalid", "message": "startOffset must be between 0 and 0", "field": "startOffset"}
    }
    assert not Destination.objects.exists()
