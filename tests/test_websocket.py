"""The WebSocket API end to end (docs/websocket.md): real ``websockets`` clients against real
daphne processes on the test database, with events published by a real grpcserver process and over
the WebSocket itself.

Each test checks the frames a client receives (their exact content, offsets and order) and, where a
request should have stored nothing, what a gRPC pull finds in the topic afterwards.
"""

import asyncio
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import jwt
import psycopg
import pytest
from django.db import connection as django_connection
from google.protobuf.timestamp_pb2 import Timestamp
from websockets.exceptions import InvalidStatus

from eventrelay.auth import mint_token
from harness.processes import WebServer
from tests.grpc_client import Client, unique_topic
from tests.helpers import admin_token, last_offset_of, pulled_offsets, token_granting
from tests.ws_client import WsClient, ws_connect

pytestmark = pytest.mark.e2e

OTHER_SECRET = "a-different-secret-that-is-long-enough-0123456789"
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
# Payloads that a lossy JSON round trip would change: a 2**53 + 1 integer, nesting, null, unicode.
DATA = {
    "email": "thomas@example.com",
    "count": 9007199254740993,
    "ratio": 0.5,
    "nested": {"list": [1, "two", None, True], "empty": {}},
    "greeting": "Grüße ✓",
}
CONTEXT = {"ip": "10.0.0.1", "tags": ["a", "b"]}


# --- Fixtures and helpers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web_b(django_db_setup: None) -> Iterator[WebServer]:
    """A second daphne whose live tick is ten minutes: live events can reach it only through Redis."""
    server = WebServer(env={"ER_LIVE_TICK_MS": "600000"}, name="web_b")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def web_small_frames(django_db_setup: None) -> Iterator[WebServer]:
    server = WebServer(env={"ER_WS_MAX_FRAME_BYTES": "10000"}, name="web_small_frames")
    yield server
    server.stop()


def timestamp(text: str) -> Timestamp:
    moment = Timestamp()
    moment.FromJsonString(text)
    return moment


def offsets_of(events: list[dict[str, Any]]) -> list[int]:
    return [event["offset"] for event in events]


class Publisher(threading.Thread):
    """Publishes ``total`` events ``{"n": i}`` over gRPC in batches, as fast as the server takes them."""

    def __init__(self, address: str, topic: str, total: int, batch: int) -> None:
        super().__init__(daemon=True)
        self.address, self.topic, self.total, self.batch = address, topic, total, batch
        self.error: BaseException | None = None

    def run(self) -> None:
        client = Client(self.address, admin_token())
        try:
            for start in range(0, self.total, self.batch):
                client.publish(self.topic, *[{"n": n} for n in range(start, min(start + self.batch, self.total))])
        except BaseException as exc:
            self.error = exc
        finally:
            client.close()


async def assert_still_works(client: WsClient, topic: str) -> None:
    """The connection still subscribes, publishes and delivers after an error frame."""
    subscribed = await client.subscribe(topic, from_offset=1)
    published = await client.publish(topic, [{"name": "after_error", "data": {"ok": True}}])
    event = await client.next_event(topic)

    assert subscribed == {"type": "subscribed", "topic": topic, "offset": 0}
    assert event == {"type": "event", "topic": topic, "event": published["events"][0]}
    assert event["event"]["offset"] == 1


async def frames_before_a_reply(client: WsClient) -> list[dict[str, Any]]:
    """The frames the test has not taken yet, once the server has answered one more, harmless, request (unsubscribing
    from a topic the connection never subscribed to). The server sends a connection's frames in the order it sends
    them, so everything it sent before answering has arrived: a signal to wait for instead of a fixed time."""
    reply = await client.request({"type": "unsubscribe", "topic": "never_subscribed"})
    assert (reply["type"], reply["code"]) == ("error", "invalid"), reply
    return client.pending()


async def wait_until_live(admin_client: Client, topic: str, clients: list[WsClient]) -> tuple[list[int], int]:
    """A live-only subscription starts a moment after its ``subscribed`` frame (the server attaches
    it to the topic's feed in the background): publish probes until every client has received one.
    Returns each client's first offset and the last probe's offset, through which every client has
    then received every probe exactly once and in order."""
    firsts: dict[int, int] = {}
    last_probe = 0
    async with asyncio.timeout(60):
        while len(firsts) < len(clients):
            [probe] = await asyncio.to_thread(admin_client.publish, topic, {"probe": True}, name="probe")
            last_probe = probe.offset
            waiting = [i for i in range(len(clients)) if i not in firsts]
            results = await asyncio.gather(
                *(clients[i].next_event(topic, timeout=0.5) for i in waiting), return_exceptions=True
            )
            for i, result in zip(waiting, results, strict=True):
                if isinstance(result, TimeoutError):
                    continue
                if isinstance(result, BaseException):
                    raise result
                firsts[i] = result["event"]["offset"]
        for i, client in enumerate(clients):
            if firsts[i] < last_probe:
                drained = await client.events_through(topic, last_probe)
                assert offsets_of(drained) == list(range(firsts[i] + 1, last_probe + 1))
    return [firsts[i] for i in range(len(clients))], last_probe


# --- Receiving events: canonical JSON, subscribed offset, replay -----------------------------------


async def test_a_subscriber_receives_an_event_published_over_grpc_as_canonical_json(admin_client, web_server, topics):
    topic = topics("canon")
    ref = f"{topic}:1234"
    admin_client.publish(ref, {"before": 1}, {"before": 2})
    event_id = str(uuid.uuid4())

    async with ws_connect(web_server.ws_url, token_granting(ref)) as client:
        subscribed = await client.subscribe(ref, from_offset=3)
        await asyncio.to_thread(
            admin_client.publish,
            ref,
            DATA,
            name="user_login",
            event_id=event_id,
            user_id="123",
            event_occurred_at=timestamp("2020-01-01T12:34:56.789Z"),
            context=json.dumps(CONTEXT),
        )
        frame = await client.next_event(ref)

    assert subscribed == {"type": "subscribed", "topic": ref, "offset": 2}
    assert frame == {
        "type": "event",
        "topic": ref,
        "event": {
            "eventId": event_id,
            "name": "user_login",
            "topic": ref,
            "source": "grpc",
            "userId": "123",
            "eventOccurredAt": "2020-01-01T12:34:56.789Z",
            "context": CONTEXT,
            "data": DATA,
            "offset": 3,
        },
    }


async def test_a_publish_frame_is_answered_with_the_stored_canonical_events_and_reaches_subscribers(
    admin_client, web_server, topics
):
    topic = topics("wspub")
    ref = f"{topic}:1234"
    given_id = str(uuid.uuid4())

    async with (
        ws_connect(web_server.ws_url, token_granting(topic)) as subscriber,
        ws_connect(web_server.ws_url, token_granting(ref)) as producer,
    ):
        await subscriber.subscribe(topic, from_offset=1)
        published = await producer.request(
            {
                "type": "publish",
                "topic": ref,
                "ref": "r1",
                "events": [
                    {
                        "eventId": given_id,
                        "name": "user_login",
                        "userId": "123",
                        "eventOccurredAt": "2021-02-03T04:05:06.007+02:00",
                        "context": CONTEXT,
                        "data": DATA,
                    },
                    {"name": "page_view", "data": [1, 2, 3]},
                ],
            }
        )
        received = await subscriber.events_through(topic, 2)

    first, second = published["events"]
    assert published == {"type": "published", "ref": "r1", "events": [first, second]}
    assert first == {
        "eventId": given_id,
        "name": "user_login",
        "topic": ref,
        "source": "websocket",
        "userId": "123",
        "eventOccurredAt": "2021-02-03T02:05:06.007Z",
        "context": CONTEXT,
        "data": DATA,
        "offset": 1,
    }
    # Generated by the server: a UUID, and "now" in the canonical timestamp format.
    assert str(uuid.UUID(second["eventId"])) == second["eventId"]
    assert TIMESTAMP_RE.match(second["eventOccurredAt"])
    assert {key: value for key, value in second.items() if key not in ("eventId", "eventOccurredAt")} == {
        "name": "page_view",
        "topic": ref,
        "source": "websocket",
        "userId": None,
        "context": {},
        "data": [1, 2, 3],
        "offset": 2,
    }
    # The subscriber to the whole topic gets exactly what the producer was told was stored.
    assert received == [first, second]
    stored = admin_client.pull(topic, 1).events
    assert [(e.offset, e.source, e.event_id) for e in stored] == [
        (1, "websocket", given_id),
        (2, "websocket", second["eventId"]),
    ]


async def test_subscribed_carries_the_topics_last_offset_and_from_offset_replays_before_live_events(
    admin_client, web_server, topics
):
    topic = topics("replay")
    admin_client.publish(topic, *[{"n": n} for n in range(5)])

    async with ws_connect(web_server.ws_url, token_granting(topic)) as client:
        subscribed = await client.subscribe(topic, from_offset=2)
        replayed = await client.events_through(topic, 5)
        await asyncio.to_thread(admin_client.publish, topic, {"n": 5}, {"n": 6})
        live = await client.events_through(topic, 7)

    assert subscribed == {"type": "subscribed", "topic": topic, "offset": 5}
    assert offsets_of(replayed) == [2, 3, 4, 5]
    assert [event["data"] for event in replayed] == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
    assert offsets_of(live) == [6, 7]
    assert [event["data"] for event in live] == [{"n": 5}, {"n": 6}]


async def test_a_live_subscription_without_from_offset_gets_only_new_events(admin_client, web_server, topics):
    topic = topics("liveonly")
    admin_client.publish(topic, *[{"old": n} for n in range(3)])

    async with ws_connect(web_server.ws_url, token_granting(topic)) as client:
        subscribed = await client.subscribe(topic)
        [first], last_probe = await wait_until_live(admin_client, topic, [client])
        published = await asyncio.to_thread(admin_client.publish, topic, *[{"new": n} for n in range(10)])
        received = await client.events_through(topic, published[-1].offset)

    assert subscribed == {"type": "subscribed", "topic": topic, "offset": 3}
    assert first > 3  # nothing stored before the subscription is replayed
    assert offsets_of(received) == list(range(last_probe + 1, last_probe + 11))
    assert [event["data"] for event in received] == [{"new": n} for n in range(10)]


async def test_without_from_offset_every_event_after_the_subscribed_offset_arrives_even_one_published_at_once(
    admin_client, web_server, topics
):
    # Published the moment "subscribed" arrives, while the server is still attaching the live feed:
    # the reply's offset is a promise, so event 4 must come, not only the events after the attach.
    topic = topics("liveimmediate")
    admin_client.publish(topic, *[{"old": n} for n in range(3)])

    async with ws_connect(web_server.ws_url, token_granting(topic)) as client:
        subscribed = await client.subscribe(topic)
        published = await asyncio.to_thread(admin_client.publish, topic, *[{"new": n} for n in range(5)])
        received = await client.events_through(topic, published[-1].offset)

    assert subscribed["offset"] == 3
    assert offsets_of(received) == [4, 5, 6, 7, 8]


# --- Replay-then-live seam -------------------------------------------------------------------------


@pytest.mark.parametrize("from_offset", [1, 60, 120, 121, 400])
async def test_from_offset_delivers_every_offset_exactly_once_in_order_while_a_publisher_keeps_publishing(
    admin_client, grpc_server, web_server, topics, from_offset
):
    topic = topics("seam")
    admin_client.publish(topic, *[{"stored": n} for n in range(120)])
    publisher = Publisher(grpc_server.address, topic, total=600, batch=7)
    publisher.start()

    async with ws_connect(web_server.ws_url, token_granting(topic)) as client:
        await client.subscribe(topic, from_offset=from_offset)
        received = await client.events_through(topic, 720, timeout=120)
        await asyncio.to_thread(publisher.join, 60)
        # No late duplicate from the seam either: the subscription's next frame is the next event published.
        await asyncio.to_thread(admin_client.publish, topic, {"after": True})
        after = await client.events_through(topic, 721)
        stray = client.pending()

    assert publisher.error is None, publisher.error
    assert offsets_of(received) == list(range(from_offset, 721))
    assert offsets_of(after) == [721]
    assert stray == []
    assert [event["data"] for event in received] == [
        {"stored": offset - 1} if offset <= 120 else {"n": offset - 121} for offset in range(from_offset, 721)
    ]


# --- Several web processes -------------------------------------------------------------------------


async def test_subscribers_on_two_web_processes_each_get_every_event(admin_client, web_server, web_b, topics):
    topic = topics("cross")
    token = admin_token()

    async with ws_connect(web_server.ws_url, token) as on_a, ws_connect(web_b.ws_url, token) as on_b:
        await on_a.subscribe(topic, from_offset=1)
        await on_b.subscribe(topic, from_offset=1)
        for batch in range(10):
            await asyncio.to_thread(admin_client.publish, topic, *[{"grpc": batch, "i": i} for i in range(10)])
        await on_a.publish(topic, [{"name": "from_a", "data": {"ws": "a", "i": i}} for i in range(5)])
        await on_b.publish(topic, [{"name": "from_b", "data": {"ws": "b", "i": i}} for i in range(5)])
        received_on_a = await on_a.events_through(topic, 110)
        received_on_b = await on_b.events_through(topic, 110)

    assert offsets_of(received_on_a) == list(range(1, 111))
    assert received_on_b == received_on_a
    assert [event["source"] for event in received_on_a] == ["grpc"] * 100 + ["websocket"] * 10
    assert [event["name"] for event in received_on_a[100:]] == ["from_a"] * 5 + ["from_b"] * 5


async def test_a_live_subscriber_on_one_web_process_gets_events_published_over_the_websocket_on_another(
    admin_client, web_server, web_b, topics
):
    topic = topics("crosslive")
    token = admin_token()

    async with ws_connect(web_server.ws_url, token) as producer, ws_connect(web_b.ws_url, token) as consumer:
        await consumer.subscribe(topic)
        _, last_probe = await wait_until_live(admin_client, topic, [consumer])
        published = []
        for batch in range(5):
            reply = await producer.publish(topic, [{"name": "burst", "data": {"b": batch, "i": i}} for i in range(20)])
            published += reply["events"]
        received = await consumer.events_through(topic, published[-1]["offset"])

    assert received == published
    assert offsets_of(received) == list(range(last_probe + 1, last_probe + 101))


# --- Many subscribers ------------------------------------------------------------------------------

SUBSCRIBERS = 200
EVENTS = 1000
BATCH = 50


def database_connections() -> int:
    """Connections to the test database right now, from every process."""
    settings = django_connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        dbname="postgres",
        autocommit=True,
    ) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [settings["NAME"]]).fetchone()[
            0
        ]


async def test_two_hundred_concurrent_subscribers_each_receive_all_thousand_events_in_order(
    admin_client, grpc_server, web_server, topics
):
    topic = topics("fanout")
    token = token_granting(topic)
    half = SUBSCRIBERS // 2

    async with AsyncExitStack() as stack:

        async def connect_and_subscribe(from_offset: int | None) -> WsClient:
            client = await stack.enter_async_context(ws_connect(web_server.ws_url, token))
            subscribed = await client.subscribe(topic, from_offset=from_offset)
            assert subscribed["topic"] == topic
            return client

        # Given 100 live subscribers, attached (they have all received the probes)...
        live = list(await asyncio.gather(*(connect_and_subscribe(None) for _ in range(half))))
        firsts, probes = await wait_until_live(admin_client, topic, live)
        final = probes + EVENTS

        # ...when 1,000 events are published in batches of 50 while 100 more subscribe from offset 1...
        async def late_subscriber(delay: float) -> list[dict[str, Any]]:
            await asyncio.sleep(delay)
            client = await connect_and_subscribe(1)
            return await client.events_through(topic, final, timeout=600)

        publisher = Publisher(grpc_server.address, topic, total=EVENTS, batch=BATCH)
        publisher.start()
        results = await asyncio.gather(
            *(client.events_through(topic, final, timeout=600) for client in live),
            *(late_subscriber(delay=i * 0.02) for i in range(half)),
        )
        await asyncio.to_thread(publisher.join, 120)
        # ...the 200 idle subscribers hold no database connection each.
        idle_connections = await asyncio.to_thread(database_connections)

    assert publisher.error is None, publisher.error
    expected_data = [{"n": n} for n in range(EVENTS)]
    for i, received in enumerate(results[:half]):
        # Live subscribers: everything after the probes they already had, nothing twice, in order.
        assert offsets_of(received) == list(range(probes + 1, final + 1)), f"live subscriber {i}"
        assert [event["data"] for event in received] == expected_data, f"live subscriber {i}"
    for i, received in enumerate(results[half:]):
        assert offsets_of(received) == list(range(1, final + 1)), f"fromOffset subscriber {i}"
        assert [event["data"] for event in received[probes:]] == expected_data, f"fromOffset subscriber {i}"
    assert all(first <= probes for first in firsts)
    assert idle_connections < SUBSCRIBERS // 4, f"{idle_connections} database connections for {SUBSCRIBERS} subscribers"


# --- Authentication and topic scoping --------------------------------------------------------------


@pytest.mark.parametrize("other", ["whole_topic", "other_id"])
async def test_a_token_for_one_topic_id_cannot_subscribe_to_the_whole_topic_or_another_id(
    admin_client, web_server, topics, other
):
    topic = topics("scope")
    forbidden_ref = topic if other == "whole_topic" else f"{topic}:456"

    async with (
        ws_connect(web_server.ws_url, token_granting(f"{topic}:123")) as client,
        ws_connect(web_server.ws_url, admin_token()) as witness,
    ):
        # A witness live on the whole topic in the same process: once it has an event, the topic's feed there has
        # offered that event to every subscription it holds.
        await witness.subscribe(topic)
        await wait_until_live(admin_client, topic, [witness])
        error = await client.request({"type": "subscribe", "topic": forbidden_ref, "fromOffset": 1, "ref": "s1"})
        await asyncio.to_thread(admin_client.publish, f"{topic}:456", {"secret": True})
        [last] = await asyncio.to_thread(admin_client.publish, topic, {"secret": True})
        await witness.events_through(topic, last.offset)
        after = await frames_before_a_reply(client)

    assert error["type"] == "error"
    assert error["code"] == "forbidden"
    assert error["ref"] == "s1"
    assert forbidden_ref in error["message"]
    assert after == []


async def test_a_token_for_one_topic_id_never_receives_another_ids_events(admin_client, web_server, topics):
    topic = topics("scope")
    mine, theirs = f"{topic}:123", f"{topic}:456"
    for n in range(20):
        admin_client.publish(theirs, {"secret": n})
        admin_client.publish(mine, {"mine": n})

    async with ws_connect(web_server.ws_url, token_granting(mine)) as client:
        await client.subscribe(mine, from_offset=1)
        replayed = await client.events_through(mine, 40)
        for n in range(20, 30):  # live now, still interleaved
            await asyncio.to_thread(admin_client.publish, theirs, {"secret": n})
            await asyncio.to_thread(admin_client.publish, mine, {"mine": n})
        live = await client.events_through(mine, 60)
        # Another pair: the subscription's next frame must be mine, with none of theirs before it.
        await asyncio.to_thread(admin_client.publish, theirs, {"secret": 30})
        await asyncio.to_thread(admin_client.publish, mine, {"mine": 30})
        next_one = await client.events_through(mine, 62)
        leftovers = client.pending()

    received = replayed + live
    assert offsets_of(received) == list(range(2, 61, 2))
    assert {event["topic"] for event in received} == {mine}
    assert [event["data"] for event in received] == [{"mine": n} for n in range(30)]
    assert [(event["offset"], event["data"]) for event in next_one] == [(62, {"mine": 30})]
    assert leftovers == []


async def test_a_token_for_one_topic_id_cannot_publish_to_another_id(admin_client, web_server, topics):
    topic = topics("scope")

    async with ws_connect(web_server.ws_url, token_granting(f"{topic}:123")) as client:
        error = await client.request(
            {"type": "publish", "topic": f"{topic}:456", "ref": "p1", "events": [{"name": "x", "data": {}}]}
        )

    assert (error["type"], error["code"], error["ref"]) == ("error", "forbidden", "p1")
    assert pulled_offsets(admin_client, topic) == []


def bad_handshake(kind: str) -> tuple[str | None, dict[str, str] | None]:
    """(token for ``?token=``, handshake headers) of a refused connection."""
    claims = {"topics": "anything"}
    return {
        "no_token": (None, None),
        "expired": (mint_token(["anything"], ttl_seconds=-10), None),
        "wrong_secret": (mint_token(["anything"], secret=OTHER_SECRET), None),
        "alg_none": (jwt.encode(claims, None, algorithm="none"), None),
        "not_a_jwt": ("not-a-jwt", None),
        "expired_in_header": (None, {"authorization": f"Bearer {mint_token(['anything'], ttl_seconds=-10)}"}),
        "basic_scheme_header": (None, {"authorization": f"Basic {mint_token(['anything'])}"}),
    }[kind]


@pytest.mark.parametrize(
    "kind",
    ["no_token", "expired", "wrong_secret", "alg_none", "not_a_jwt", "expired_in_header", "basic_scheme_header"],
)
async def test_the_handshake_is_refused_without_a_valid_token(web_server, kind):
    token, headers = bad_handshake(kind)

    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(web_server.ws_url, token, headers=headers):
            pass

    assert refused.value.response.status_code == 403


async def test_a_token_in_the_authorization_header_works_like_the_query_parameter(admin_client, web_server, topics):
    topic = topics("header")

    async with ws_connect(web_server.ws_url, headers={"authorization": f"Bearer {token_granting(topic)}"}) as client:
        subscribed = await client.subscribe(topic, from_offset=1)
        [stored] = await asyncio.to_thread(admin_client.publish, topic, {"via": "header"})
        frame = await client.next_event(topic)

    assert subscribed == {"type": "subscribed", "topic": topic, "offset": 0}
    assert frame["event"]["offset"] == stored.offset == 1
    assert frame["event"]["data"] == {"via": "header"}


# --- Malformed frames ------------------------------------------------------------------------------

MALFORMED = {
    "not_json": ("{not json", None, "not valid JSON"),
    "json_array": (json.dumps([{"type": "subscribe"}]), "type", "JSON object"),
    "no_type": (json.dumps({"topic": "users"}), "type", "no 'type'"),
    "unknown_type": (json.dumps({"type": "dance"}), "type", "unknown frame type 'dance'"),
    "subscribe_without_topic": (json.dumps({"type": "subscribe"}), "topic", "topic must be a string"),
    "subscribe_bad_topic_name": (json.dumps({"type": "subscribe", "topic": "Users!"}), "topic", "'Users!' is invalid"),
    "subscribe_bad_topic_id": (json.dumps({"type": "subscribe", "topic": "users:a b"}), "topic", "'a b' is invalid"),
    "from_offset_text": (
        json.dumps({"type": "subscribe", "topic": "users", "fromOffset": "abc"}),
        "fromOffset",
        ">= 0",
    ),
    "from_offset_negative": (
        json.dumps({"type": "subscribe", "topic": "users", "fromOffset": -1}),
        "fromOffset",
        ">= 0",
    ),
    "from_offset_fraction": (
        json.dumps({"type": "subscribe", "topic": "users", "fromOffset": 1.5}),
        "fromOffset",
        ">= 0",
    ),
    "from_offset_boolean": (
        json.dumps({"type": "subscribe", "topic": "users", "fromOffset": True}),
        "fromOffset",
        ">= 0",
    ),
    "binary_frame": (b'{"type": "subscribe", "topic": "users"}', None, "binary frames are not supported"),
    "publish_without_events": (json.dumps({"type": "publish", "topic": "users"}), "events", "must be a list"),
    "unsubscribe_not_subscribed": (json.dumps({"type": "unsubscribe", "topic": "users"}), "topic", "not subscribed"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_frame_gets_an_invalid_error_and_the_connection_keeps_working(web_server, topics, case):
    frame, field, message = MALFORMED[case]
    topic = topics("malformed")

    async with ws_connect(web_server.ws_url, admin_token()) as client:
        await client.send_raw(frame)
        error = await client.reply()
        await assert_still_works(client, topic)

    assert error["type"] == "error"
    assert error["code"] == "invalid"
    assert error.get("field") == field
    assert message in error["message"]


async def test_an_oversized_frame_gets_an_invalid_error_and_the_connection_keeps_working(
    admin_client, web_small_frames, topics
):
    topic = topics("oversized")
    frame = json.dumps({"type": "publish", "topic": topic, "events": [{"name": "big", "data": "x" * 20_000}]})

    async with ws_connect(web_small_frames.ws_url, admin_token()) as client:
        await client.send_raw(frame)
        error = await client.reply()
        nothing_stored = await asyncio.to_thread(pulled_offsets, admin_client, topic)
        await assert_still_works(client, topic)

    assert len(frame) > 20_000
    assert (error["type"], error["code"]) == ("error", "invalid")
    assert "at most 10000" in error["message"]
    assert nothing_stored == []


async def test_a_batch_with_one_invalid_event_is_rejected_naming_it_and_stores_nothing(
    admin_client, web_server, topics
):
    topic = topics("badbatch")
    events = [
        {"name": "fine", "data": {"n": 0}},
        {"data": {"n": 1}},  # no name
        {"name": "fine", "data": {"n": 2}},
    ]

    async with ws_connect(web_server.ws_url, admin_token()) as client:
        error = await client.request({"type": "publish", "topic": topic, "ref": "batch-1", "events": events})
        nothing_stored = await asyncio.to_thread(pulled_offsets, admin_client, topic)
        head = await asyncio.to_thread(last_offset_of, admin_client, topic)
        await assert_still_works(client, topic)  # and the next good event gets offset 1: no gap

    assert error["type"] == "error"
    assert error["code"] == "invalid"
    assert error["ref"] == "batch-1"
    assert error["field"] == "events[1].name"
    assert error["message"].startswith("events[1].name:")
    assert nothing_stored == []
    assert head == 0


@pytest.mark.parametrize("field", ["topic", "offset", "source"])
async def test_a_publish_frame_may_not_set_server_fields(admin_client, web_server, topics, field):
    topic = topics("serverfield")
    event = {"name": "sneaky", "data": {}, field: {"topic": "other", "offset": 99, "source": "http"}[field]}

    async with ws_connect(web_server.ws_url, admin_token()) as client:
        error = await client.request({"type": "publish", "topic": topic, "events": [event]})

    assert (error["code"], error["field"]) == ("invalid", f"events[0].{field}")
    assert pulled_offsets(admin_client, topic) == []


async def test_subscribing_to_an_unknown_topic_gets_not_found_and_the_connection_keeps_working(web_server, topics):
    missing = unique_topic("missing")
    topic = topics("exists")

    async with ws_connect(web_server.ws_url, admin_token()) as client:
        error = await client.request({"type": "subscribe", "topic": missing, "fromOffset": 1})
        await assert_still_works(client, topic)

    assert error["type"] == "error"
    assert error["code"] == "not_found"
    assert missing in error["message"]


# --- Unsubscribing, several subscriptions ----------------------------------------------------------


async def test_after_unsubscribe_no_more_events_of_that_topic_arrive(admin_client, web_server, topics):
    dropped, kept = topics("dropped"), topics("kept")

    async with (
        ws_connect(web_server.ws_url, admin_token()) as client,
        ws_connect(web_server.ws_url, admin_token()) as witness,
    ):
        # A witness live on `dropped` in the same process: once it has an event, the topic's feed there has offered
        # that event to every subscription it holds.
        await witness.subscribe(dropped)
        _, probes = await wait_until_live(admin_client, dropped, [witness])
        await client.subscribe(dropped, from_offset=probes + 1)
        await client.subscribe(kept, from_offset=1)
        await asyncio.to_thread(admin_client.publish, dropped, {"before": True})
        before = await client.events_through(dropped, probes + 1)

        unsubscribed = await client.request({"type": "unsubscribe", "topic": dropped})
        await asyncio.to_thread(admin_client.publish, dropped, *[{"after": n} for n in range(5)])
        await asyncio.to_thread(admin_client.publish, kept, {"kept": True})
        kept_events = await client.events_through(kept, 1)
        await witness.events_through(dropped, probes + 6)
        later = await frames_before_a_reply(client)

        # Resubscribing from the last offset received + 1 picks up what was published meanwhile.
        await client.subscribe(dropped, from_offset=probes + 2)
        resumed = await client.events_through(dropped, probes + 6)

    assert offsets_of(before) == [probes + 1]
    assert unsubscribed == {"type": "unsubscribed", "topic": dropped}
    assert [(event["topic"], event["data"]) for event in kept_events] == [(kept, {"kept": True})]
    assert later == []
    assert [event["data"] for event in resumed] == [{"after": n} for n in range(5)]


async def test_several_subscriptions_on_one_connection_each_deliver_their_own_events_in_order(
    admin_client, grpc_server, web_server, topics
):
    orders, visits = topics("orders"), topics("visits")
    one_visitor = f"{visits}:7"
    orders_publisher = Publisher(grpc_server.address, orders, total=150, batch=10)

    async with ws_connect(web_server.ws_url, admin_token()) as client:
        await client.subscribe(orders, from_offset=1)
        await client.subscribe(visits, from_offset=1)
        await client.subscribe(one_visitor, from_offset=1)
        orders_publisher.start()
        for n in range(50):
            await asyncio.to_thread(admin_client.publish, f"{visits}:{n % 3 + 6}", {"visit": n})
        await asyncio.to_thread(orders_publisher.join, 60)
        received_orders = await client.events_through(orders, 150)
        received_visits = await client.events_through(visits, 50)
        received_visitor = await client.events_through(one_visitor, 49)

    assert orders_publisher.error is None, orders_publisher.error
    assert offsets_of(received_orders) == list(range(1, 151))
    assert [event["data"] for event in received_orders] == [{"n": n} for n in range(150)]
    assert offsets_of(received_visits) == list(range(1, 51))
    assert [event["data"] for event in received_visits] == [{"visit": n} for n in range(50)]
    # The id subscription sees only id 7 (every third visit), under its own topic reference.
    assert [event["data"] for event in received_visitor] == [{"visit": n} for n in range(1, 50, 3)]
    assert {event["topic"] for event in received_visitor} == {one_visitor}


async def test_subscribing_again_to_the_same_topic_replaces_the_subscription(admin_client, web_server, topics):
    topic = topics("again")
    admin_client.publish(topic, *[{"n": n} for n in range(10)])

    async with ws_connect(web_server.ws_url, admin_token()) as client:
        await client.subscribe(topic, from_offset=1)
        await client.events_through(topic, 10)
        again = await client.subscribe(topic, from_offset=8)
        # Frames of the first subscription read before the second `subscribed` are set aside.
        client.events[topic].clear()
        replayed = await client.events_through(topic, 10)
        await asyncio.to_thread(admin_client.publish, topic, {"n": 10})
        live = await client.events_through(topic, 11)
        # The first subscription, were it still running, would send its 11 before this next event arrives.
        await asyncio.to_thread(admin_client.publish, topic, {"n": 11})
        later = await client.events_through(topic, 12)
        late = client.pending()

    assert again == {"type": "subscribed", "topic": topic, "offset": 10}
    assert offsets_of(replayed) == [8, 9, 10]
    assert offsets_of(live) == [11]
    assert offsets_of(later) == [12]
    assert late == []


async def test_a_subscriber_is_told_when_its_topic_is_deleted(admin_client, web_server):
    topic = unique_topic("deleted")
    admin_client.create_topic(topic)

    async with ws_connect(web_server.ws_url, admin_token()) as client:
        await client.subscribe(topic, from_offset=1)
        await asyncio.to_thread(admin_client.publish, topic, {"n": 0})
        await client.events_through(topic, 1)
        await asyncio.to_thread(admin_client.delete_topic, topic)
        error = await client.reply()

    assert error["type"] == "error"
    assert error["code"] == "not_found"
    assert error["topic"] == topic
