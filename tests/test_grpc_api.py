"""The gRPC API end to end (docs/grpc.md): a real grpcio client against a real
``manage.py grpcserver`` process on the test database.

Every status code is reached by a real request, and each test checks both the code and that the
details name the problem, plus what the request did (or did not) leave behind.
"""

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import grpc
import jwt
import pytest
from django.conf import settings
from google.protobuf import descriptor_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from eventrelay.auth import mint_token
from eventrelay.v1 import eventrelay_pb2 as pb
from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc
from harness.processes import GrpcServer
from tests.grpc_client import Client, unique_topic
from tests.helpers import hand_made_token, last_offset_of, pulled_offsets

pytestmark = pytest.mark.e2e

OTHER_SECRET = "a-different-secret-that-is-long-enough-0123456789"


# --- Fixtures and helpers --------------------------------------------------------------------------


@pytest.fixture
def client_for(grpc_server: GrpcServer) -> Iterator[Callable[..., Client]]:
    """``client_for("users:123")`` → a client whose token grants those topics;
    ``client_for(token="...")`` → a client sending exactly that token (``None``: no token at all)."""
    clients: list[Client] = []

    def make(*granted: str, admin: bool = False, token: str | None = "") -> Client:
        if token == "":
            token = mint_token(granted, admin=admin, ttl_seconds=3600)
        client = Client(grpc_server.address, token)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    """Run ``call``, which must fail, and return its error."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def publish_events(client: Client, topic: str, *events: pb.NewEvent) -> list[pb.Event]:
    reply = client.events.PublishEvents(
        pb.PublishEventsRequest(topic=topic, events=list(events)), metadata=client.metadata, timeout=60
    )
    return list(reply.events)


# --- Topics: happy paths ---------------------------------------------------------------------------


def test_create_topic_returns_the_new_empty_topic(admin_client: Client) -> None:
    # Given a name no topic has
    name = unique_topic("created")
    before = datetime.now(UTC)

    # When an admin creates it
    topic = admin_client.create_topic(name)

    # Then the reply describes a topic with no events yet, created just now
    try:
        assert topic.name == name
        assert topic.last_offset == 0
        assert topic.HasField("created_at")
        created_at = topic.created_at.ToDatetime(tzinfo=UTC)
        assert before - timedelta(seconds=5) <= created_at <= datetime.now(UTC) + timedelta(seconds=5)
        # And it exists: listed, and empty when pulled
        assert name in [listed.name for listed in admin_client.list_topics()]
        assert list(admin_client.pull(name, 1).events) == []
    finally:
        admin_client.delete_topic(name)


def test_an_admin_lists_every_topic_with_its_last_offset(admin_client: Client, topics) -> None:
    # Given two topics, one with three events
    busy, idle = topics("busy"), topics("idle")
    admin_client.publish(busy, 1, 2, 3)

    # When an admin lists the topics
    listed = {topic.name: topic for topic in admin_client.list_topics()}

    # Then both are there, with their last offsets and creation times
    assert listed[busy].last_offset == 3
    assert listed[idle].last_offset == 0
    assert listed[busy].created_at.seconds > 0
    assert listed[idle].created_at.seconds > 0


def test_a_non_admin_token_lists_only_the_topics_it_is_granted(admin_client: Client, topics, client_for) -> None:
    # Given three topics, and a token granting one id of the first and the whole second
    scoped, whole, hidden = topics("scoped"), topics("whole"), topics("hidden")
    consumer = client_for(f"{scoped}:123", whole)

    # When that token lists the topics
    names = [topic.name for topic in consumer.list_topics()]

    # Then it sees exactly the two granted topic names, and not the third
    assert sorted(names) == sorted([scoped, whole])
    assert hidden not in names
    assert hidden in [topic.name for topic in admin_client.list_topics()]


def test_delete_topic_removes_it_and_its_events(admin_client: Client, topics) -> None:
    # Given a topic with events
    name = topics("doomed")
    admin_client.publish(name, {"n": 1}, {"n": 2})

    # When an admin deletes it
    reply = admin_client.topics.DeleteTopic(pb.DeleteTopicRequest(name=name), metadata=admin_client.metadata)

    # Then the reply is empty, the topic is no longer listed, and it cannot be published to or pulled
    assert reply == pb.DeleteTopicResponse()
    assert name not in [topic.name for topic in admin_client.list_topics()]
    publish_error = rpc_error(lambda: admin_client.publish(name, {"n": 3}))
    assert publish_error.code() == grpc.StatusCode.NOT_FOUND
    assert f"topic '{name}' does not exist" in publish_error.details()
    pull_error = rpc_error(lambda: admin_client.pull(name, 1))
    assert pull_error.code() == grpc.StatusCode.NOT_FOUND

    # And the name can be used again, starting from offset 1
    admin_client.create_topic(name)
    assert [event.offset for event in admin_client.publish(name, {"n": 4})] == [1]


# --- Events: publish and pull happy paths ----------------------------------------------------------


def test_published_events_come_back_with_server_fields_set(admin_client: Client, topics) -> None:
    # Given a topic, and two events: one with every optional field, one with none
    name = topics("orders")
    event_id = str(uuid.uuid4())
    occurred_at = datetime(2020, 1, 1, 12, 30, 45, 123456, tzinfo=UTC)
    full = pb.NewEvent(
        event_id=event_id,
        name="order_placed",
        user_id="123",
        event_occurred_at=timestamp(occurred_at),
        context=json.dumps({"ip": "127.0.0.1"}),
        data=json.dumps({"total": 42}),
    )
    bare = pb.NewEvent(name="order_viewed", data="null")

    # When they are published to one topic id
    before = datetime.now(UTC)
    first, second = publish_events(admin_client, f"{name}:123", full, bare)
    after = datetime.now(UTC)

    # Then the server set topic, source and consecutive offsets from 1
    assert [first.offset, second.offset] == [1, 2]
    assert {first.topic, second.topic} == {f"{name}:123"}
    assert {first.source, second.source} == {"grpc"}
    # And echoed what was given
    assert first.event_id == event_id
    assert first.name == "order_placed"
    assert first.user_id == "123"
    assert first.event_occurred_at.ToDatetime(tzinfo=UTC) == occurred_at.replace(microsecond=123000)  # to the ms
    assert json.loads(first.context) == {"ip": "127.0.0.1"}
    assert json.loads(first.data) == {"total": 42}
    # And filled in what was not: a fresh UUID, no user, now, an empty context
    assert uuid.UUID(second.event_id)
    assert second.event_id != event_id
    assert second.user_id == ""
    assert before - timedelta(seconds=5) <= second.event_occurred_at.ToDatetime(tzinfo=UTC) <= after
    assert json.loads(second.context) == {}
    assert json.loads(second.data) is None

    # And pulling gives back exactly the same events
    pulled = admin_client.pull(f"{name}:123", 1)
    assert list(pulled.events) == [first, second]
    assert pulled.next_offset == 3
    assert last_offset_of(admin_client, name) == 2


def test_each_event_without_an_id_gets_its_own(admin_client: Client, topics) -> None:
    name = topics("ids")

    events = admin_client.publish(name, 1, 2, 3)

    assert len({event.event_id for event in events}) == 3
    assert all(uuid.UUID(event.event_id) for event in events)


PAYLOADS = [
    pytest.param({"id": 12345678901234567890, "negative": -12345678901234567890}, id="integers-beyond-64-bits"),
    pytest.param({"a": {"b": {"c": [1, [2, [3, {"d": None}]], {"e": True, "f": False}]}}}, id="nested"),
    pytest.param({"name": "Zoë", "city": "東京", "emoji": "🎉", "escaped": 'quote " and \\ backslash'}, id="unicode"),
    pytest.param({"float": 0.1, "exp": 1e-7, "zero": 0, "empty": {}, "list": []}, id="numbers-and-empties"),
    pytest.param([1, "two", 3.0], id="top-level-list"),
    pytest.param("just a string", id="top-level-string"),
    pytest.param(12345678901234567890, id="top-level-big-integer"),
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_data_and_context_json_survive_the_round_trip_exactly(admin_client: Client, topics, payload) -> None:
    # Given a payload as data, and an object holding it as context
    name = topics("json")
    context = {"wrapped": payload, "big": 12345678901234567890}

    # When it is published and pulled back
    [published] = publish_events(
        admin_client, name, pb.NewEvent(name="payload", data=json.dumps(payload), context=json.dumps(context))
    )
    [pulled] = admin_client.pull(name, 1).events

    # Then both replies carry the same JSON values, big integers still integers
    for event in (published, pulled):
        assert json.loads(event.data) == payload
        assert json.loads(event.context) == context
        assert type(json.loads(event.context)["big"]) is int
    assert "12345678901234567890" in pulled.context


def test_json_text_is_kept_exactly_as_sent(admin_client: Client, topics) -> None:
    # Given data and context with their own key order and whitespace
    name = topics("spacing")
    data, context = '{ "b" : 1 ,\n "a" : [ 1 , 2.50 ] }', ' {"z": {}, "a": 1}'

    # When they are published and pulled back
    [published] = publish_events(admin_client, name, pb.NewEvent(name="e", data=data, context=context))
    [pulled] = admin_client.pull(name, 1).events

    # Then both replies carry the producer's text unchanged, not a re-encoding of it
    assert (published.data, published.context) == (data, context)
    assert (pulled.data, pulled.context) == (data, context)


def test_json_text_with_escapes_is_stored_as_its_value(admin_client: Client, topics) -> None:
    # An escape can hide a NUL or a lone surrogate, so such text is re-encoded from its value.
    name = topics("escapes")

    [event] = publish_events(admin_client, name, pb.NewEvent(name="e", data='{"s": "caf\\u00e9 \\u0000"}'))

    assert json.loads(event.data) == {"s": "café \x00"}
    assert json.loads(admin_client.pull(name, 1).events[0].data) == {"s": "café \x00"}


@pytest.mark.parametrize(
    "data",
    ["NaN", '{"x": Infinity}', "[-Infinity]", "1e400", '{"big": -1.5e999}', '"\\ud800"', '{"a": "\\udc00 tail"}'],
)
def test_json_text_that_is_not_storable_json_is_refused(admin_client: Client, topics, data: str) -> None:
    # Python's parser accepts these; PostgreSQL's json type and every JSON consumer would not.
    name = topics("unstorable")

    error = rpc_error(lambda: publish_events(admin_client, name, pb.NewEvent(name="e", data=data)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[0].data" in error.details()
    assert pulled_offsets(admin_client, name) == []


def test_pull_returns_events_from_the_requested_offset_on(admin_client: Client, topics) -> None:
    # Given five events
    name = topics("pull")
    admin_client.publish(name, *range(5))

    # When pulling from offset 3, two at a time
    reply = admin_client.pull(name, 3, batch_size=2)

    # Then offsets 3 and 4 come back, and the next pull should start at 5
    assert [event.offset for event in reply.events] == [3, 4]
    assert [json.loads(event.data) for event in reply.events] == [2, 3]
    assert reply.next_offset == 5
    # And offset 0 means from the start
    assert [event.offset for event in admin_client.pull(name, 0).events] == [1, 2, 3, 4, 5]
    # And past the end there is nothing, with next_offset unchanged
    past_end = admin_client.pull(name, 6)
    assert list(past_end.events) == []
    assert past_end.next_offset == 6


# --- Idempotency -----------------------------------------------------------------------------------


def test_republishing_an_event_id_returns_the_stored_event_and_stores_nothing(admin_client: Client, topics) -> None:
    # Given an event published with an id
    name = topics("idem")
    event_id = str(uuid.uuid4())
    [original] = publish_events(admin_client, name, pb.NewEvent(event_id=event_id, name="paid", data='{"try": 1}'))

    # When the same id is published again (a producer retrying), alongside a new event
    retried, fresh = publish_events(
        admin_client,
        name,
        pb.NewEvent(event_id=event_id, name="paid", data='{"try": 2}'),
        pb.NewEvent(name="shipped", data='{"try": 1}'),
    )

    # Then the retry returns the stored event with its original offset and payload
    assert retried == original
    assert retried.offset == 1
    assert json.loads(retried.data) == {"try": 1}
    # And only the new event got an offset
    assert fresh.offset == 2
    # And a pull shows the event once
    pulled = admin_client.pull(name, 1).events
    assert [(event.event_id, event.offset) for event in pulled] == [(event_id, 1), (fresh.event_id, 2)]
    assert last_offset_of(admin_client, name) == 2


# --- PullEvents paging -----------------------------------------------------------------------------


def publish_many(client: Client, topic: str, count: int, batch: int = 500) -> None:
    for start in range(0, count, batch):
        client.publish(topic, *range(start, min(start + batch, count)))


def test_pulling_walks_a_topic_in_pages_of_at_most_batch_size(admin_client: Client, topics) -> None:
    # Given 2,500 events, published in batches of 500
    name = topics("paging")
    publish_many(admin_client, name, 2500)

    # When a consumer walks the topic with batch_size 1000, following next_offset
    pages = []
    offset = 1
    for _ in range(4):
        reply = admin_client.pull(name, offset, batch_size=1000)
        pages.append(reply)
        offset = reply.next_offset

    # Then it gets 1000, 1000, 500 and then nothing, with next_offset 1001, 2001, 2501, 2501
    assert [len(page.events) for page in pages] == [1000, 1000, 500, 0]
    assert [page.next_offset for page in pages] == [1001, 2001, 2501, 2501]
    # And every offset exactly once, in order, with the payloads in publish order
    offsets = [event.offset for page in pages for event in page.events]
    assert offsets == list(range(1, 2501))
    assert [json.loads(event.data) for page in pages for event in page.events] == list(range(2500))


def test_a_batch_size_above_the_maximum_is_clamped_to_1000(admin_client: Client, topics) -> None:
    name = topics("clamp")
    publish_many(admin_client, name, 1200)

    reply = admin_client.pull(name, 1, batch_size=5000)

    assert len(reply.events) == 1000
    assert reply.events[-1].offset == 1000
    assert reply.next_offset == 1001


def test_a_batch_size_of_zero_means_the_default_of_100(admin_client: Client, topics) -> None:
    name = topics("default")
    publish_many(admin_client, name, 150)

    reply = admin_client.pull(name, 1, batch_size=0)

    assert [event.offset for event in reply.events] == list(range(1, 101))
    assert reply.next_offset == 101


# --- Scoping by topic id ---------------------------------------------------------------------------


def test_a_token_for_one_topic_id_pulls_only_that_ids_events(admin_client: Client, topics, client_for) -> None:
    # Given events of ids 123 and 456, interleaved in one topic
    name = topics("scope")
    admin_client.publish(f"{name}:123", "a")
    admin_client.publish(f"{name}:456", "b")
    admin_client.publish(f"{name}:123", "c")
    admin_client.publish(f"{name}:456", "d")
    consumer = client_for(f"{name}:123")

    # When a token scoped to id 123 pulls that id
    reply = consumer.pull(f"{name}:123", 1)

    # Then it gets only id 123's events, with their topic-wide offsets
    assert [(event.topic, event.offset, json.loads(event.data)) for event in reply.events] == [
        (f"{name}:123", 1, "a"),
        (f"{name}:123", 3, "c"),
    ]
    assert reply.next_offset == 4
    # While the whole topic holds all four
    assert [event.topic for event in admin_client.pull(name, 1).events] == [
        f"{name}:123",
        f"{name}:456",
        f"{name}:123",
        f"{name}:456",
    ]


def test_a_token_for_one_topic_id_may_publish_to_it(admin_client: Client, topics, client_for) -> None:
    name = topics("producer")
    producer = client_for(f"{name}:123")

    [event] = producer.publish(f"{name}:123", {"ok": True})

    assert event.topic == f"{name}:123"
    assert [stored.event_id for stored in admin_client.pull(name, 1).events] == [event.event_id]


# --- INVALID_ARGUMENT ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_name", ["Users", "users;drop table x"])
def test_creating_a_topic_with_a_bad_name_is_invalid_and_creates_nothing(admin_client: Client, bad_name) -> None:
    error = rpc_error(lambda: admin_client.create_topic(bad_name))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"topic name {bad_name!r} is invalid" in error.details()
    assert "lowercase" in error.details()
    assert bad_name not in [topic.name for topic in admin_client.list_topics()]


@pytest.mark.parametrize("bad_name", ["Users", "users;drop table x"])
def test_publishing_to_a_bad_topic_name_is_invalid(admin_client: Client, bad_name) -> None:
    error = rpc_error(lambda: admin_client.publish(bad_name, {"x": 1}))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"topic name {bad_name!r} is invalid" in error.details()


def test_creating_a_topic_without_a_name_is_invalid(admin_client: Client) -> None:
    error = rpc_error(lambda: admin_client.create_topic(""))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "topic name is empty" in error.details()


def test_one_event_with_bad_json_rejects_the_whole_batch(admin_client: Client, topics) -> None:
    # Given a batch whose second event's data is not JSON
    name = topics("badjson")
    batch = [
        pb.NewEvent(name="ok", data='{"n": 0}'),
        pb.NewEvent(name="broken", data='{"n": 1'),
        pb.NewEvent(name="ok", data='{"n": 2}'),
    ]

    # When it is published
    error = rpc_error(lambda: publish_events(admin_client, name, *batch))

    # Then it is invalid, naming the event and field, and nothing was stored
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[1].data" in error.details()
    assert "not valid JSON" in error.details()
    assert pulled_offsets(admin_client, name) == []
    assert last_offset_of(admin_client, name) == 0


def test_context_that_is_not_a_json_object_is_invalid(admin_client: Client, topics) -> None:
    name = topics("badcontext")

    error = rpc_error(lambda: publish_events(admin_client, name, pb.NewEvent(name="e", data="1", context="[1, 2]")))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[0].context" in error.details()
    assert pulled_offsets(admin_client, name) == []


def test_an_event_without_data_is_invalid(admin_client: Client, topics) -> None:
    name = topics("nodata")

    error = rpc_error(lambda: publish_events(admin_client, name, pb.NewEvent(name="e")))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[0].data" in error.details()
    assert "required" in error.details()


def test_an_event_without_a_name_rejects_the_batch(admin_client: Client, topics) -> None:
    # Given a batch whose third event has no name
    name = topics("noname")
    batch = [pb.NewEvent(name="ok", data="1"), pb.NewEvent(name="ok", data="2"), pb.NewEvent(data="3")]

    # When it is published
    error = rpc_error(lambda: publish_events(admin_client, name, *batch))

    # Then it is invalid, naming the event and field, and nothing was stored
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[2].name" in error.details()
    assert "required" in error.details()
    assert pulled_offsets(admin_client, name) == []


def test_an_event_id_that_is_not_a_uuid_is_invalid(admin_client: Client, topics) -> None:
    name = topics("badid")

    error = rpc_error(
        lambda: publish_events(admin_client, name, pb.NewEvent(event_id="not-a-uuid", name="e", data="1"))
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[0].eventId" in error.details()
    assert "not-a-uuid" in error.details()


@pytest.mark.parametrize(
    ("event", "field", "says"),
    [
        (pb.NewEvent(name="e" * 256, data="1"), "events[1].name", "at most 255"),
        (pb.NewEvent(name="a\x00b", data="1"), "events[1].name", "NUL"),
        (pb.NewEvent(name="e", user_id="u" * 256, data="1"), "events[1].userId", "at most 255"),
        (pb.NewEvent(name="e", data='"' + "x" * 300 * 1024 + '"'), "events[1].data", "bytes; at most"),
        (pb.NewEvent(name="e", data="1", context="[1]"), "events[1].context", "JSON object"),
    ],
)
def test_each_field_of_a_grpc_event_is_checked_and_named(admin_client: Client, topics, event, field, says) -> None:
    # gRPC messages are validated field by field, without the producer dict of the other
    # transports (grpc_api.convert.validate_message): every rule must still apply to them.
    name = topics("fields")

    error = rpc_error(lambda: publish_events(admin_client, name, pb.NewEvent(name="ok", data="0"), event))

    assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert field in error.details()
    assert says in error.details()
    assert last_offset_of(admin_client, name) == 0


def test_an_empty_batch_is_invalid(admin_client: Client, topics) -> None:
    name = topics("empty")

    error = rpc_error(lambda: publish_events(admin_client, name))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events is empty" in error.details()
    assert last_offset_of(admin_client, name) == 0


def test_a_negative_offset_is_invalid(admin_client: Client, topics) -> None:
    name = topics("negative")

    error = rpc_error(lambda: admin_client.pull(name, -1))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "offset" in error.details()


# --- NOT_FOUND and ALREADY_EXISTS ------------------------------------------------------------------


def test_publishing_to_an_unknown_topic_is_not_found(admin_client: Client) -> None:
    name = unique_topic("nowhere")

    error = rpc_error(lambda: admin_client.publish(name, {"x": 1}))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert f"topic '{name}' does not exist" in error.details()
    assert name not in [topic.name for topic in admin_client.list_topics()]


def test_pulling_an_unknown_topic_is_not_found(admin_client: Client) -> None:
    name = unique_topic("nowhere")

    error = rpc_error(lambda: admin_client.pull(f"{name}:123", 1))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert f"topic '{name}' does not exist" in error.details()


def test_deleting_an_unknown_topic_is_not_found(admin_client: Client) -> None:
    name = unique_topic("nowhere")

    error = rpc_error(lambda: admin_client.delete_topic(name))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert f"topic '{name}' does not exist" in error.details()


def test_creating_an_existing_topic_already_exists_and_keeps_its_events(admin_client: Client, topics) -> None:
    # Given a topic with two events
    name = topics("twice")
    admin_client.publish(name, 1, 2)

    # When it is created again
    error = rpc_error(lambda: admin_client.create_topic(name))

    # Then that is refused, and the topic and its events are untouched
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert f"topic '{name}' already exists" in error.details()
    assert pulled_offsets(admin_client, name) == [1, 2]
    assert [topic.name for topic in admin_client.list_topics()].count(name) == 1


# --- UNAUTHENTICATED -------------------------------------------------------------------------------


def bad_tokens() -> list:
    now = int(time.time())
    return [
        pytest.param(None, "missing token", id="no-token"),
        pytest.param("garbage", "malformed token", id="garbage"),
        pytest.param(
            jwt.encode({"topics": "", "admin": True}, OTHER_SECRET, algorithm="HS256"),
            "signature does not match",
            id="wrong-secret",
        ),
        pytest.param(
            lambda: jwt.encode(
                {"admin": True, "iat": now - 7200, "exp": now - 3600}, settings.ER_JWT_SECRET, algorithm="HS256"
            ),
            "expired",
            id="expired",
        ),
        pytest.param(
            hand_made_token({"alg": "none", "typ": "JWT"}, {"topics": "", "admin": True}),
            "algorithm 'none' is not accepted",
            id="alg-none",
        ),
        pytest.param(
            lambda: jwt.encode({"admin": True}, settings.ER_JWT_SECRET, algorithm="HS512"),
            "algorithm 'HS512' is not accepted",
            id="hs512",
        ),
    ]


@pytest.mark.parametrize(("token", "reason"), bad_tokens())
def test_a_missing_or_invalid_token_is_unauthenticated_on_every_rpc(
    admin_client: Client, topics, client_for, token, reason
) -> None:
    # Given a topic with one event, and a caller with a token that is absent or not valid
    name = topics("locked")
    admin_client.publish(name, "kept")
    caller = client_for(token=token() if callable(token) else token)

    # When that caller tries each RPC
    calls = {
        "CreateTopic": lambda: caller.create_topic(unique_topic("intruder")),
        "DeleteTopic": lambda: caller.delete_topic(name),
        "ListTopics": caller.list_topics,
        "PublishEvents": lambda: caller.publish(name, "intruder"),
        "PullEvents": lambda: caller.pull(name, 1),
    }
    errors = {rpc_name: rpc_error(call) for rpc_name, call in calls.items()}

    # Then every one is UNAUTHENTICATED, saying why
    assert {rpc_name: error.code() for rpc_name, error in errors.items()} == dict.fromkeys(
        calls, grpc.StatusCode.UNAUTHENTICATED
    )
    for error in errors.values():
        assert reason in error.details()
    # And nothing changed
    assert [json.loads(event.data) for event in admin_client.pull(name, 1).events] == ["kept"]
    assert not [topic for topic in admin_client.list_topics() if topic.name.startswith("intruder_")]


def test_a_non_bearer_authorization_header_is_unauthenticated(admin_client: Client, topics, grpc_server) -> None:
    name = topics("basic")
    with grpc.insecure_channel(grpc_server.address) as channel:
        stub = pb_grpc.EventsStub(channel)
        error = rpc_error(
            lambda: stub.PullEvents(
                pb.PullEventsRequest(topic=name), metadata=[("authorization", "Basic dXNlcjpwYXNz")], timeout=30
            )
        )

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer" in error.details()


# --- PERMISSION_DENIED -----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["{name}:456", "{name}"], ids=["another-id", "whole-topic"])
def test_a_token_for_one_id_may_not_publish_elsewhere(admin_client: Client, topics, client_for, target) -> None:
    # Given a token scoped to id 123 of a topic
    name = topics("users")
    producer = client_for(f"{name}:123")
    refused = target.format(name=name)

    # When it publishes to another id, or to the whole topic
    error = rpc_error(lambda: producer.publish(refused, {"sneaky": True}))

    # Then it is denied, naming the topic, and nothing was stored
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"token does not grant topic '{refused}'" in error.details()
    assert pulled_offsets(admin_client, name) == []


@pytest.mark.parametrize("target", ["{name}:456", "{name}"], ids=["another-id", "whole-topic"])
def test_a_token_for_one_id_may_not_pull_elsewhere(admin_client: Client, topics, client_for, target) -> None:
    # Given events of id 456, and a token scoped to id 123
    name = topics("users")
    admin_client.publish(f"{name}:456", {"secret": True})
    consumer = client_for(f"{name}:123")
    refused = target.format(name=name)

    # When it pulls another id, or the whole topic
    error = rpc_error(lambda: consumer.pull(refused, 1))

    # Then it is denied, naming the topic (and sees no event)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"token does not grant topic '{refused}'" in error.details()
    assert "secret" not in error.details()


def test_a_token_without_the_topic_may_not_touch_it(admin_client: Client, topics, client_for) -> None:
    name, other = topics("mine"), topics("theirs")
    stranger = client_for(name)

    error = rpc_error(lambda: stranger.pull(other, 1))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"token does not grant topic '{other}'" in error.details()


def test_a_non_admin_token_may_not_create_a_topic(admin_client: Client, client_for) -> None:
    # Given a producer token that even grants the name
    name = unique_topic("wanted")
    producer = client_for(name)

    # When it tries to create the topic
    error = rpc_error(lambda: producer.create_topic(name))

    # Then it is denied for want of admin rights, and no topic exists
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "admin" in error.details()
    assert name not in [topic.name for topic in admin_client.list_topics()]


def test_a_non_admin_token_may_not_delete_a_topic(admin_client: Client, topics, client_for) -> None:
    # Given a topic with an event, and a token granting the whole topic
    name = topics("keep")
    admin_client.publish(name, "still here")
    owner = client_for(name)

    # When it tries to delete the topic
    error = rpc_error(lambda: owner.delete_topic(name))

    # Then it is denied for want of admin rights, and the topic and its event remain
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "admin" in error.details()
    assert [json.loads(event.data) for event in admin_client.pull(name, 1).events] == ["still here"]


# --- Health and reflection -------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", "eventrelay.v1.Events", "eventrelay.v1.Topics"])
def test_the_health_service_reports_serving(grpc_server: GrpcServer, service: str) -> None:
    with grpc.insecure_channel(grpc_server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)

    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_the_health_service_does_not_know_other_services(grpc_server: GrpcServer) -> None:
    with grpc.insecure_channel(grpc_server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        error = rpc_error(lambda: stub.Check(health_pb2.HealthCheckRequest(service="nope.v1.Nothing"), timeout=10))

    assert error.code() == grpc.StatusCode.NOT_FOUND


def reflect(address: str, request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        [reply] = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    return reply


def test_reflection_lists_the_eventrelay_services(grpc_server: GrpcServer) -> None:
    reply = reflect(grpc_server.address, reflection_pb2.ServerReflectionRequest(list_services=""))

    names = {service.name for service in reply.list_services_response.service}
    assert {"eventrelay.v1.Topics", "eventrelay.v1.Events"} <= names
    assert "grpc.health.v1.Health" in names


def test_reflection_serves_the_proto_of_the_events_service(grpc_server: GrpcServer) -> None:
    reply = reflect(
        grpc_server.address, reflection_pb2.ServerReflectionRequest(file_containing_symbol="eventrelay.v1.Events")
    )

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in reply.file_descriptor_response.file_descriptor_proto
    ]
    [ours] = [file for file in files if file.package == "eventrelay.v1"]
    assert {service.name for service in ours.service} == {"Topics", "Events", "Consumers"}
    events = next(service for service in ours.service if service.name == "Events")
    assert [method.name for method in events.method] == ["PublishEvents", "PullEvents", "StreamEvents", "PublishStream"]
