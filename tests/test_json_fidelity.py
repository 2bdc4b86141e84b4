"""``data`` and ``context`` on every transport (issue 17, items C and 2): numbers are stored and served
exactly as the producer wrote them, one nesting limit (``ER_MAX_JSON_DEPTH``) holds for gRPC, REST and
the WebSocket alike, and an event stored before that limit existed (a "poison" event, inserted here
straight into its topic table) is still served by every reader: REST pull, a WebSocket subscription,
the admin's event browser.

Readers splice the stored JSON text into their responses; they never parse it, so the tests compare
raw response text, not parsed values (parsing would lose exactly what is being checked).
"""

import asyncio
import html
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
import requests
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client as DjangoClient

from eventrelay.auth import mint_token
from eventrelay.v1 import eventrelay_pb2 as pb
from events.validation import EventsToValidate
from grpc_api.convert import validate_message
from tests.grpc_client import Client
from tests.helpers import token_granting
from tests.ws_client import WsClient, ws_connect
from topics.models import Topic
from topics.services import create_topic
from topics.tables import events_table_name

# Numbers a float round trip changes: more digits than a double holds, an exponent, a value below the
# smallest double (which a float parser makes 0.0), a 2**53 + 1 integer, minus zero.
EXACT_DATA = (
    '{"pi":3.14159265358979323846264338327950288,"hundred":1e2,"tiny":1.5e-400,'
    '"big":9007199254740993,"zero":-0,"list":[1E+2,0.10,2.5]}'
)
EXACT_CONTEXT = '{"ratio":1.000000000000000000001}'


def nested(levels: int) -> str:
    """JSON text nested ``levels`` deep (the outermost array is level 1)."""
    return "[" * levels + "]" * levels


def rest(client: DjangoClient, method: str, path: str, raw: str = "", token: str | None = None) -> Any:
    return client.generic(
        method,
        f"/api/v1/{path}",
        data=raw,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token or mint_token([], admin=True)}",
    )


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    return response.json()["error"]


def stored_payloads(topic_name: str) -> list[tuple[str, str]]:
    table = connection.ops.quote_name(events_table_name(topic_name))
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT context::text, data::text FROM {table} ORDER BY "offset"')
        return cursor.fetchall()


def insert_poison(topic_name: str, data_json: str) -> int:
    """Store an event straight into the topic's table, past all validation (as data stored before a
    limit existed would be), and advance the topic's counter. Returns its offset."""
    table = connection.ops.quote_name(events_table_name(topic_name))
    with connection.cursor() as cursor:
        cursor.execute("SELECT last_offset + 1 FROM topics_topic WHERE name = %s FOR UPDATE", [topic_name])
        [offset] = cursor.fetchone()
        cursor.execute(
            f'INSERT INTO {table} ("offset", event_id, name, topic_id, source, event_occurred_at, context, data) '
            "VALUES (%s, %s, 'poison', '', 'grpc', now(), '{}', %s)",
            [offset, uuid.uuid4(), data_json],
        )
        cursor.execute("UPDATE topics_topic SET last_offset = %s WHERE name = %s", [offset, topic_name])
    return offset


# Deeper than Python's json parser (or orjson) can read back: the event the readers choked on.
POISON_DATA = '{"deep":' + nested(3000) + "}"


# --- REST: numbers kept as written -----------------------------------------------------------------


@pytest.mark.django_db
def test_numbers_published_over_rest_are_stored_and_pulled_exactly_as_written(client):
    create_topic("numbers")
    body = f'[{{"name": "n", "context": {EXACT_CONTEXT}, "data": {EXACT_DATA}}}, {{"name": "m", "data": 1e2}}]'

    published = rest(client, "POST", "topics/numbers/events", body)
    pulled = rest(client, "GET", "topics/numbers/events")

    assert published.status_code == 201, published.content
    assert stored_payloads("numbers") == [(EXACT_CONTEXT, EXACT_DATA), ("{}", "1e2")]
    for response in (published, pulled):
        text = response.content.decode()
        assert f'"context":{EXACT_CONTEXT},"data":{EXACT_DATA},' in text
        assert '"data":1e2,' in text
    assert pulled.status_code == 200 and pulled["Content-Type"] == "application/json"
    assert pulled.json()["nextOffset"] == 3


@pytest.mark.django_db
@pytest.mark.parametrize("number", ["1e400", "-1.5E+309"])
def test_a_number_that_overflows_a_double_is_refused_over_rest_naming_the_field(client, number):
    create_topic("numbers")

    error = error_of(
        rest(
            client,
            "POST",
            "topics/numbers/events",
            f'[{{"name": "a", "data": 1}}, {{"name": "b", "data": [{number}]}}]',
        ),
        400,
    )

    assert error == {
        "code": "invalid",
        "field": "events[1].data",
        "message": f"events[1].data: the number {number} is out of range for a double",
    }
    assert stored_payloads("numbers") == []


@pytest.mark.django_db
def test_an_integer_longer_than_python_can_convert_is_refused_over_rest_not_a_500(client):
    create_topic("numbers")

    error = error_of(rest(client, "POST", "topics/numbers/events", '{"name": "a", "data": [' + "7" * 5000 + "]}"), 400)

    assert error["field"] == "events[0].data"
    assert error["message"] == "events[0].data: has an integer of 5000 digits; at most 4300 are allowed"
    assert stored_payloads("numbers") == []


def test_grpc_text_with_escapes_is_re_encoded_with_its_numbers_as_written():
    # Text with \\u escapes is re-encoded from its parsed value (an escape can hide a NUL): its
    # numbers must come out as they went in.
    [event] = EventsToValidate(
        [pb.NewEvent(name="a", data='{"s": "caf\\u00e9", "n": 1e2, "pi": 3.14159265358979323846, "z": -0}')],
        validate_message,
    ).validated()

    assert event.data_json == '{"s":"café","n":1e2,"pi":3.14159265358979323846,"z":-0}'


# --- REST: one nesting limit -----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["data", "context"])
def test_rest_takes_data_and_context_nested_64_levels_and_refuses_65_naming_the_field(client, field):
    create_topic("nesting")
    deepest = '{"a":' * 63 + "[]" + "}" * 63  # 64 levels, the outermost object is level 1
    too_deep = '{"a":' * 64 + "[]" + "}" * 64
    other = "data" if field == "context" else "context"

    accepted = rest(client, "POST", "topics/nesting/events", f'{{"name": "a", "{field}": {deepest}, "{other}": {{}}}}')
    refused = rest(
        client,
        "POST",
        "topics/nesting/events",
        f'[{{"name": "a", "data": 1}}, {{"name": "b", "{field}": {too_deep}, "{other}": {{}}}}]',
    )

    assert accepted.status_code == 201, accepted.content
    assert error_of(refused, 400) == {
        "code": "invalid",
        "field": f"events[1].{field}",
        "message": f"events[1].{field}: is nested 65 levels deep; at most 64 are allowed",
    }
    assert len(stored_payloads("nesting")) == 1


@pytest.mark.django_db
def test_the_nesting_limit_is_a_setting_and_brackets_inside_strings_do_not_count(client, settings):
    settings.ER_MAX_JSON_DEPTH = 3
    create_topic("nesting")

    accepted = rest(client, "POST", "topics/nesting/events", '{"name": "a", "data": [[{"s": "[[[[{{{{"}], [], {}]}')
    refused = rest(client, "POST", "topics/nesting/events", '{"name": "a", "data": [[[["x"]]]]}')

    assert accepted.status_code == 201, accepted.content
    assert error_of(refused, 400)["message"] == "events[0].data: is nested 4 levels deep; at most 3 are allowed"


# --- Readers of a stored event they could not parse -------------------------------------------------


@pytest.fixture
def staff_client(client: DjangoClient, db: None) -> DjangoClient:
    client.force_login(get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-for-tests-only"))
    return client


@pytest.mark.django_db
def test_rest_pull_serves_a_page_with_a_poison_event_as_stored(client):
    create_topic("poisoned")
    rest(client, "POST", "topics/poisoned/events", '{"name": "before", "data": 1}')
    poison = insert_poison("poisoned", POISON_DATA)
    rest(client, "POST", "topics/poisoned/events", '{"name": "after", "data": 2}')

    response = rest(client, "GET", "topics/poisoned/events")

    assert response.status_code == 200
    text = response.content.decode()
    assert f'"data":{POISON_DATA},"offset":{poison}}}' in text
    assert text.endswith(f'"data":2,"offset":{poison + 1}}}],"nextOffset":{poison + 2}}}')


def test_the_admin_event_browser_shows_a_poison_event_as_stored_text_with_a_note(staff_client):
    topic = create_topic("poisoned")
    offset = insert_poison("poisoned", POISON_DATA)
    insert_poison("poisoned", '{"n":' + "1e2" + ',"pi":3.14159265358979323846264338327950288}')

    listing = staff_client.get(f"/admin/topics/topic/{topic.pk}/events/")
    detail = staff_client.get(f"/admin/topics/topic/{topic.pk}/events/{offset}/")
    readable = staff_client.get(f"/admin/topics/topic/{topic.pk}/events/{offset + 1}/")

    assert listing.status_code == 200
    # The preview of the stored text, once (its cell's title attribute holds the same text in full, for the tooltip).
    shown = re.sub(r' title="[^"]*"', "", listing.content.decode())
    assert html.unescape(shown).count('{"deep":[[[[') == 1
    assert detail.status_code == 200
    page = html.unescape(detail.content.decode())
    assert POISON_DATA in page
    assert "nested 3001 levels deep, too deeply to be shown formatted; shown as stored" in page
    # An event it can format is shown formatted, its numbers as stored.
    assert readable.status_code == 200
    shown = html.unescape(readable.content.decode())
    assert '"n": 1e2,\n  "pi": 3.14159265358979323846264338327950288' in shown
    assert Topic.objects.get(pk=topic.pk).last_offset == offset + 1


# --- Every transport, end to end -------------------------------------------------------------------


def publish_text(client: Client, topic: str, *events: pb.NewEvent) -> list[pb.Event]:
    return list(
        client.events.PublishEvents(
            pb.PublishEventsRequest(topic=topic, events=list(events)), metadata=client.metadata, timeout=60
        ).events
    )


def grpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value


async def raw_reply(client: WsClient, frame: str) -> str:
    await client.send_raw(frame)
    return await asyncio.wait_for(client.connection.recv(), 30)


@pytest.mark.e2e
async def test_numbers_are_kept_as_written_over_the_websocket_and_grpc(admin_client, web_server, topics):
    topic = topics("exact")
    [over_grpc] = await asyncio.to_thread(
        publish_text, admin_client, topic, pb.NewEvent(name="g", data=EXACT_DATA, context=EXACT_CONTEXT)
    )
    frame = (
        f'{{"type": "publish", "topic": "{topic}", "ref": "r", '
        f'"events": [{{"name": "w", "context": {EXACT_CONTEXT}, "data": {EXACT_DATA}}}]}}'
    )

    async with (
        ws_connect(web_server.ws_url, token_granting(topic)) as subscriber,
        ws_connect(web_server.ws_url, token_granting(topic)) as producer,
    ):
        subscribed = await raw_reply(subscriber, json.dumps({"type": "subscribe", "topic": topic, "fromOffset": 1}))
        published = await raw_reply(producer, frame)
        delivered = [await asyncio.wait_for(subscriber.connection.recv(), 30) for _ in range(2)]
    pulled = await asyncio.to_thread(admin_client.pull, topic, 1)
    rest_pulled = await asyncio.to_thread(
        requests.get,
        f"{web_server.base_url}/api/v1/topics/{topic}/events",
        headers={"authorization": f"Bearer {token_granting(topic)}"},
        timeout=30,
    )

    assert json.loads(subscribed)["type"] == "subscribed"
    assert over_grpc.data == EXACT_DATA and over_grpc.context == EXACT_CONTEXT
    exact = f'"context":{EXACT_CONTEXT},"data":{EXACT_DATA},'
    assert published.startswith('{"type":"published","ref":"r","events":[') and exact in published
    assert all(exact in text for text in delivered)
    assert [json.loads(text)["event"]["offset"] for text in delivered] == [1, 2]
    assert [(event.data, event.context) for event in pulled.events] == [(EXACT_DATA, EXACT_CONTEXT)] * 2
    assert rest_pulled.status_code == 200 and rest_pulled.text.count(exact) == 2


@pytest.mark.e2e
async def test_every_transport_refuses_what_rest_refuses_with_the_same_message(admin_client, web_server, topics):
    topic = topics("limits")
    cases = {
        "1e400": "events[0].data: the number 1e400 is out of range for a double",
        "[" + "7" * 5000 + "]": "events[0].data: has an integer of 5000 digits; at most 4300 are allowed",
        nested(65): "events[0].data: is nested 65 levels deep; at most 64 are allowed",
    }

    async with ws_connect(web_server.ws_url, token_granting(topic)) as producer:
        for data, message in cases.items():
            reply = json.loads(
                await raw_reply(
                    producer, f'{{"type": "publish", "topic": "{topic}", "events": [{{"name": "a", "data": {data}}}]}}'
                )
            )
            refused = await asyncio.to_thread(
                grpc_error, lambda data=data: publish_text(admin_client, topic, pb.NewEvent(name="a", data=data))
            )

            assert reply == {"type": "error", "code": "invalid", "message": message, "field": "events[0].data"}
            assert (refused.code(), refused.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    deep_context = await asyncio.to_thread(
        grpc_error,
        lambda: publish_text(
            admin_client, topic, pb.NewEvent(name="a", data="1", context='{"a":' * 64 + "{}" + "}" * 64)
        ),
    )
    assert deep_context.details() == "events[0].context: is nested 65 levels deep; at most 64 are allowed"
    assert list((await asyncio.to_thread(admin_client.pull, topic, 1)).events) == []


@pytest.mark.e2e
async def test_a_websocket_subscription_delivers_a_poison_event_and_the_events_after_it(
    admin_client, web_server, topics
):
    topic = topics("poison")
    poison = await asyncio.to_thread(insert_poison, topic, POISON_DATA)
    [after] = await asyncio.to_thread(admin_client.publish, topic, {"after": True})

    async with ws_connect(web_server.ws_url, token_granting(topic)) as subscriber:
        await raw_reply(subscriber, json.dumps({"type": "subscribe", "topic": topic, "fromOffset": 1}))
        first, second = [await asyncio.wait_for(subscriber.connection.recv(), 30) for _ in range(2)]

    assert first.startswith(f'{{"type":"event","topic":"{topic}","event":{{')
    assert first.endswith(f'"data":{POISON_DATA},"offset":{poison}}}}}')
    assert json.loads(second)["event"]["data"] == {"after": True} and after.offset == poison + 1
