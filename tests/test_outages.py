"""A dependency outage answers "unavailable, retry" on every transport, and every process serves again
once the dependency is back, without a restart.

The processes run on a private PostgreSQL (and Redis) that the tests stop and restart; the machine's
shared servers are never touched.
"""

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import requests

from eventrelay.auth import mint_token
from eventrelay.v1 import eventrelay_pb2 as pb
from harness.processes import GrpcServer, WebServer
from tests.faults import PrivatePostgres, PrivateRedis
from tests.grpc_client import Client
from tests.ws_client import ws_connect

pytestmark = pytest.mark.e2e

# Calls made one after another once PostgreSQL is back: each process thread that held a connection
# may answer UNAVAILABLE once (the call that finds its connection dead), then serves.
CALLS_AFTER_RESTART = 30
HEALED_CALLS = 10


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(name="outage-outages")
    yield server
    server.close()


@pytest.fixture
def running_postgres(postgres: PrivatePostgres) -> Iterator[PrivatePostgres]:
    yield postgres
    if not postgres.is_up():
        postgres.start()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[PrivateRedis]:
    server = PrivateRedis(name="outage-outages-redis")
    yield server
    server.close()


@pytest.fixture(scope="module")
def env(postgres: PrivatePostgres, redis_server: PrivateRedis) -> dict[str, str]:
    return {"DATABASE_URL": postgres.url, "REDIS_URL": redis_server.url, "CELERY_BROKER_URL": redis_server.url}


@pytest.fixture(scope="module")
def grpc_server(env: dict[str, str]) -> Iterator[GrpcServer]:
    server = GrpcServer(env=env, name="outage-outages-grpc")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def web(env: dict[str, str]) -> Iterator[WebServer]:
    server = WebServer(env=env, name="outage-outages-web")
    yield server
    server.stop()


@pytest.fixture
def client(grpc_server: GrpcServer) -> Iterator[Client]:
    client = Client(grpc_server.address, mint_token([], admin=True))
    yield client
    client.channel.close()


def new_topic(client: Client) -> str:
    """A new topic (after an earlier test's restart, a server thread may first find its connection dead)."""
    name = f"outage_{uuid.uuid4().hex[:8]}"
    for _ in range(HEALED_CALLS):
        try:
            client.create_topic(name)
            return name
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.ALREADY_EXISTS:  # created by a call answered too late
                return name
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    raise AssertionError(f"could not create {name}")


def rest(web: WebServer, method: str, path: str, body: Any = None) -> requests.Response:
    headers = {"authorization": f"Bearer {mint_token([], admin=True)}"}
    return requests.request(method, f"{web.base_url}/api/v1/{path}", json=body, headers=headers, timeout=30)


def outcomes(call: Any, times: int) -> list[str]:
    """``"ok"`` or the gRPC status code's name of each of ``times`` calls in a row."""
    seen = []
    for _ in range(times):
        try:
            call()
            seen.append("ok")
        except grpc.RpcError as error:
            seen.append(error.code().name)
    return seen


def assert_heals(seen: list[str]) -> None:
    """Every failure says UNAVAILABLE (never UNKNOWN), and the last calls all succeeded."""
    assert set(seen) <= {"ok", "UNAVAILABLE"}, seen
    assert seen[-HEALED_CALLS:] == ["ok"] * HEALED_CALLS, seen


def stream_first(client: Client, topic: str) -> int:
    stream = client.stream(topic, from_offset=1, timeout=30)
    try:
        return next(iter(stream)).offset
    finally:
        stream.cancel()


def test_grpc_serves_again_within_a_few_calls_after_postgres_restarts(
    running_postgres: PrivatePostgres, client: Client
) -> None:
    topic = new_topic(client)
    client.publish(topic, {"n": 1})
    # Many calls, so that every executor thread of the server holds a connection.
    for _ in range(20):
        assert len(client.pull(topic, 1).events) == 1

    running_postgres.restart()

    assert_heals(outcomes(lambda: client.pull(topic, 1), CALLS_AFTER_RESTART))
    published = outcomes(lambda: client.publish(topic, {"n": 2}), CALLS_AFTER_RESTART)
    assert_heals(published)
    assert stream_first(client, topic) == 1
    assert client.pull(topic, 1, batch_size=1000).events[-1].offset == 1 + published.count("ok")


async def test_the_web_process_serves_again_after_postgres_restarts(
    running_postgres: PrivatePostgres, client: Client, web: WebServer
) -> None:
    topic = new_topic(client)
    token = mint_token([], admin=True)
    async with ws_connect(web.ws_url, token) as ws:
        await ws.subscribe(topic)
        running_postgres.restart()
        replies = [await ws.request({"type": "subscribe", "topic": topic, "ref": str(i)}) for i in range(10)]
        assert {reply["type"] for reply in replies} <= {"subscribed", "error"}, replies
        assert all(reply.get("code") == "unavailable" for reply in replies if reply["type"] == "error"), replies
        assert replies[-1]["type"] == "subscribed", replies
        published = await asyncio.to_thread(rest, web, "POST", f"topics/{topic}/events", [{"name": "back", "data": {}}])
        assert published.status_code == 201, published.text
        assert (await ws.next_event(topic))["event"]["offset"] == 1


def assert_unavailable_rpc(call: Any, says: str = "database is unavailable") -> None:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value
    details = raised.value.details() or ""
    assert says in details, details
    assert "OperationalError" not in details and "connection" not in details, details


def assert_unavailable_response(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {"error": {"code": "unavailable", "message": "the database is unavailable; retry later"}}
    assert int(response.headers["Retry-After"]) >= 1


async def test_a_stopped_postgres_is_unavailable_on_every_transport_and_serves_again_once_back(
    running_postgres: PrivatePostgres, client: Client, web: WebServer
) -> None:
    subscribed_topic, other_topic = new_topic(client), new_topic(client)
    token = mint_token([], admin=True)
    async with ws_connect(web.ws_url, token) as ws:
        await ws.subscribe(subscribed_topic)
        # Live before the outage: the subscription's feed starts after the "subscribed" reply, and a feed that
        # would start while PostgreSQL is down ends its subscription (a loaded machine can delay it that long).
        await asyncio.to_thread(rest, web, "POST", f"topics/{subscribed_topic}/events", [{"name": "a", "data": {}}])
        assert (await ws.next_event(subscribed_topic))["event"]["offset"] == 1
        running_postgres.stop()

        assert_unavailable_rpc(lambda: client.pull(other_topic, 1))
        assert_unavailable_rpc(lambda: client.publish(other_topic, {"n": 1}))
        assert_unavailable_rpc(client.list_topics)
        assert_unavailable_rpc(lambda: stream_first(client, other_topic))

        assert_unavailable_response(await asyncio.to_thread(rest, web, "GET", f"topics/{other_topic}/events"))
        assert_unavailable_response(
            await asyncio.to_thread(rest, web, "POST", f"topics/{other_topic}/events", [{"name": "lost", "data": {}}])
        )
        assert_unavailable_response(await asyncio.to_thread(rest, web, "GET", "topics"))

        reply = await ws.request({"type": "subscribe", "topic": other_topic, "ref": "s1"})
        assert reply == {
            "type": "error",
            "code": "unavailable",
            "message": "the database is unavailable; retry later",
            "ref": "s1",
        }
        reply = await ws.request(
            {"type": "publish", "topic": other_topic, "ref": "p1", "events": [{"name": "x", "data": {}}]}
        )
        assert (reply["type"], reply["code"], reply["ref"]) == ("error", "unavailable", "p1")

        running_postgres.start()

        # The same connection subscribes again, and its first subscription is still live.
        replies = [await ws.request({"type": "subscribe", "topic": other_topic, "ref": str(i)}) for i in range(10)]
        assert replies[-1]["type"] == "subscribed", replies
        published = await asyncio.to_thread(
            rest, web, "POST", f"topics/{subscribed_topic}/events", [{"name": "a", "data": {}}]
        )
        assert published.status_code == 201, published.text
        assert (await ws.next_event(subscribed_topic))["event"]["offset"] == 2
        published = await asyncio.to_thread(
            rest, web, "POST", f"topics/{other_topic}/events", [{"name": "b", "data": {}}]
        )
        assert published.status_code == 201, published.text
        assert (await ws.next_event(other_topic))["event"]["offset"] == 1

    assert_heals(outcomes(lambda: client.pull(other_topic, 1), CALLS_AFTER_RESTART))


async def test_a_stopped_redis_is_unavailable_to_live_subscriptions_and_they_work_once_back(
    redis_server: PrivateRedis, client: Client, web: WebServer
) -> None:
    topic = new_topic(client)
    token = mint_token([], admin=True)
    async with ws_connect(web.ws_url, token) as ws:
        redis_server.stop()
        try:
            # Subscribed (the topic exists), then the live feed cannot start: the subscription ends
            # with unavailable, and the client resubscribes by offset.
            assert (await ws.request({"type": "subscribe", "topic": topic, "ref": "s1"}))["type"] == "subscribed"
            assert await ws.reply() == {
                "type": "error",
                "code": "unavailable",
                "message": "Redis (live events) is unavailable; retry later",
                "topic": topic,
            }
            assert_unavailable_rpc(lambda: stream_first(client, topic), "Redis (live events) is unavailable")
        finally:
            redis_server.start()
        replies = [await ws.request({"type": "subscribe", "topic": topic, "ref": str(i)}) for i in range(10)]
        assert replies[-1]["type"] == "subscribed", replies
        published = await asyncio.to_thread(rest, web, "POST", f"topics/{topic}/events", [{"name": "a", "data": {}}])
        assert published.status_code == 201, published.text
        assert (await ws.next_event(topic))["event"]["offset"] == 1


# --- Durable consumers ---------------------------------------------------------------------------------


def consumer_call(client: Client, method: str, request: Any) -> Any:
    return getattr(client.consumers, method)(request, metadata=client.metadata, timeout=30)


def until_served(call: Any) -> Any:
    """``call()`` once it succeeds; every failure before it says UNAVAILABLE."""
    for _ in range(CALLS_AFTER_RESTART):
        try:
            return call()
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    raise AssertionError("never served again")


def test_consumers_are_unavailable_while_postgres_is_down_and_lose_no_ack_or_lease(
    running_postgres: PrivatePostgres, client: Client, web: WebServer
) -> None:
    topic = new_topic(client)
    client.publish(topic, *({"n": n} for n in range(3)))
    ref = pb.ConsumerRef(topic=topic, consumer="billing")
    consumer_call(client, "CreateConsumer", pb.CreateConsumerRequest(topic=topic, consumer="billing"))
    first, second, third = consumer_call(
        client, "Fetch", pb.FetchRequest(topic=topic, consumer="billing", max_events=3)
    ).deliveries
    consumer_call(client, "Ack", pb.AckRequest(topic=topic, consumer="billing", ack_ids=[first.ack_id]))

    running_postgres.stop()
    assert_unavailable_rpc(lambda: consumer_call(client, "Fetch", pb.FetchRequest(topic=topic, consumer="billing")))
    assert_unavailable_rpc(
        lambda: consumer_call(client, "Ack", pb.AckRequest(topic=topic, consumer="billing", ack_ids=[second.ack_id]))
    )
    assert_unavailable_rpc(lambda: consumer_call(client, "GetConsumer", ref))
    assert_unavailable_response(rest(web, "POST", f"topics/{topic}/consumers/billing/fetch", {"waitMs": 1000}))
    assert_unavailable_response(rest(web, "POST", f"topics/{topic}/consumers/billing/ack", {"ackIds": [third.ack_id]}))
    running_postgres.start()

    # The ack from before the outage held, the two leases are still out (nothing to fetch), and acking them now
    # moves the floor to the end.
    info = until_served(lambda: consumer_call(client, "GetConsumer", ref))
    assert (info.ack_floor, info.pending) == (1, 2)
    # (With nothing new to lease, the fetch runs on a worker thread: one whose connection the restart ended
    # answers UNAVAILABLE once, as every thread may; see CALLS_AFTER_RESTART.)
    assert not until_served(
        lambda: consumer_call(client, "Fetch", pb.FetchRequest(topic=topic, consumer="billing"))
    ).deliveries
    acked = rest(web, "POST", f"topics/{topic}/consumers/billing/ack", {"ackIds": [second.ack_id, third.ack_id]})
    assert acked.status_code == 200 and acked.json() == {"staleAckIds": []}, acked.text
    info = consumer_call(client, "GetConsumer", ref)
    assert (info.ack_floor, info.pending, info.lag) == (3, 0, 0)


def test_a_fetch_is_served_at_once_after_a_long_postgres_outage(
    running_postgres: PrivatePostgres, client: Client
) -> None:
    """The asyncio pool of fetches and acks retries its connections with a doubling delay while PostgreSQL is
    down. After an outage of a quarter of a minute its next try is that far off again: the first fetch once
    PostgreSQL is back must not wait for it (and time out as unavailable), but connect then."""
    topic = new_topic(client)
    client.publish(topic, {"n": 0}, {"n": 1})
    consumer_call(client, "CreateConsumer", pb.CreateConsumerRequest(topic=topic, consumer="billing"))
    fetch = pb.FetchRequest(topic=topic, consumer="billing", max_events=1)
    assert consumer_call(client, "Fetch", fetch).deliveries  # (the consumer is known now: fetches take the pool)

    running_postgres.stop()
    assert_unavailable_rpc(lambda: consumer_call(client, "Fetch", fetch))
    time.sleep(15)  # (the pool's tries meanwhile: 1, 3, 7 and 15 s after the first)
    running_postgres.start()

    assert [delivery.event.offset for delivery in consumer_call(client, "Fetch", fetch).deliveries] == [2]


def test_a_long_poll_still_finds_new_events_while_redis_is_down(
    redis_server: PrivateRedis, client: Client, web: WebServer
) -> None:
    topic = new_topic(client)
    until_served(
        lambda: consumer_call(client, "CreateConsumer", pb.CreateConsumerRequest(topic=topic, consumer="billing"))
    )
    redis_server.stop()
    try:
        # Nothing wakes the fetches (the live hub cannot be reached): they poll PostgreSQL meanwhile.
        started = time.monotonic()
        grpc_poll = client.consumers.Fetch.future(
            pb.FetchRequest(topic=topic, consumer="billing", max_events=1, wait_ms=20_000),
            metadata=client.metadata,
            timeout=60,
        )
        client.publish(topic, {"n": 1}, {"n": 2})
        # (After an earlier test's PostgreSQL restart, a web thread's first call may find its connection dead
        # and answer 503 once: a client retries.)
        for _ in range(HEALED_CALLS):
            rest_poll = rest(web, "POST", f"topics/{topic}/consumers/billing/fetch", {"maxEvents": 1, "waitMs": 20_000})
            if rest_poll.status_code != 503:
                break
        grpc_offsets = [delivery.event.offset for delivery in grpc_poll.result().deliveries]
        took = time.monotonic() - started
    finally:
        redis_server.start()
    assert rest_poll.status_code == 200, rest_poll.text
    rest_offsets = [delivery["event"]["offset"] for delivery in rest_poll.json()["deliveries"]]
    assert sorted(grpc_offsets + rest_offsets) == [1, 2]
    assert took < 20  # found by polling, not only by the last look at its deadline
