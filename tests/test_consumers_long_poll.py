"""Long-polling fetches hold no PostgreSQL connection while they wait: 1,000 of them over gRPC, on 1,000 consumers,
against a private PostgreSQL with ``max_connections`` 100, all wait and all return the event published meanwhile.
Over REST the same (Django's middleware parks an idle thread per request in the web process meanwhile: the figure
is printed, see docs/consumers.md)."""

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest

from eventrelay.auth import mint_token
from eventrelay.v1 import eventrelay_pb2 as pb
from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc
from harness.processes import GrpcServer, WebServer
from tests.faults import PrivatePostgres

pytestmark = pytest.mark.e2e

APPLICATION_NAME = "consumers-long-poll-grpc"
WEB_APPLICATION_NAME = "consumers-long-poll-web"
WAITING = 1000
WAITING_REST = 500


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(name="consumers-long-poll", max_connections=100)
    yield server
    server.close()


@pytest.fixture(scope="module")
def server(postgres: PrivatePostgres) -> Iterator[GrpcServer]:
    grpc_server = GrpcServer(
        env={"DATABASE_URL": postgres.url, "ER_DB_APPLICATION_NAME": APPLICATION_NAME}, name="consumers-long-poll"
    )
    yield grpc_server
    grpc_server.stop()


@pytest.fixture(scope="module")
def web(postgres: PrivatePostgres) -> Iterator[WebServer]:
    web_server = WebServer(
        env={"DATABASE_URL": postgres.url, "ER_DB_APPLICATION_NAME": WEB_APPLICATION_NAME},
        name="consumers-long-poll-web",
    )
    yield web_server
    web_server.stop()


async def http_post(port: int, path: str, token: str, body: bytes = b"") -> tuple[int, bytes]:
    """One ``POST`` on a connection of its own (``Connection: close``): the status and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 60)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def test_a_thousand_waiting_fetches_hold_no_connection_and_all_wake_for_a_publish(
    postgres: PrivatePostgres, server: GrpcServer
) -> None:
    topic = f"lp_{uuid.uuid4().hex[:8]}"
    auth = (("authorization", f"Bearer {mint_token([], admin=True)}"),)

    async def main() -> tuple[list[pb.FetchResponse], int, float]:
        async with grpc.aio.insecure_channel(server.address) as channel:
            topics = pb_grpc.TopicsStub(channel)
            events = pb_grpc.EventsStub(channel)
            consumers = pb_grpc.ConsumersStub(channel)
            await topics.CreateTopic(pb.CreateTopicRequest(name=topic), metadata=auth)
            for start in range(0, WAITING, 100):
                await asyncio.gather(
                    *(
                        consumers.CreateConsumer(pb.CreateConsumerRequest(topic=topic, consumer=f"c{n}"), metadata=auth)
                        for n in range(start, start + 100)
                    )
                )
            polls = [
                asyncio.ensure_future(
                    consumers.Fetch(
                        pb.FetchRequest(topic=topic, consumer=f"c{n}", wait_ms=30_000), metadata=auth, timeout=60
                    )
                )
                for n in range(WAITING)
            ]
            # Give the fetches time to reach their wait (none may return meanwhile: nothing is published). The
            # assertions do not depend on it: a fetch that had not read its consumer yet finds the event at once.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(poll.done() for poll in polls):
                await asyncio.sleep(0.5)
            connections = postgres.connections(APPLICATION_NAME)
            assert not any(poll.done() for poll in polls), [poll.exception() for poll in polls if poll.done()][:3]
            published_at = time.monotonic()
            await events.PublishEvents(
                pb.PublishEventsRequest(topic=topic, events=[pb.NewEvent(name="wake", data="{}")]), metadata=auth
            )
            replies = await asyncio.gather(*polls)
            return replies, connections, time.monotonic() - published_at

    replies, connections, took = asyncio.run(main())
    print(
        f"{WAITING} waiting fetches: {connections} PostgreSQL connections; all returned {took * 1000:.0f} ms after the publish"
    )
    assert [len(reply.deliveries) for reply in replies] == [1] * WAITING
    assert connections < 100


def test_waiting_rest_fetches_hold_no_connection_and_all_wake_for_a_publish(
    postgres: PrivatePostgres, web: WebServer
) -> None:
    topic = f"lpr_{uuid.uuid4().hex[:8]}"
    token = mint_token([], admin=True)

    async def main() -> tuple[list[tuple[int, bytes]], int, int, int, float]:
        assert (await http_post(web.port, "/api/v1/topics", token, json.dumps({"name": topic}).encode()))[0] == 201
        for start in range(0, WAITING_REST, 20):  # (each creation is a thread and a connection of its own)
            created = await asyncio.gather(
                *(
                    http_post(web.port, f"/api/v1/topics/{topic}/consumers", token, f'{{"name":"c{n}"}}'.encode())
                    for n in range(start, start + 20)
                )
            )
            assert {status for status, _ in created} == {201}, created[:3]
        # An empty body is a fetch with the defaults.
        assert await http_post(web.port, f"/api/v1/topics/{topic}/consumers/c0/fetch", token) == (
            200,
            b'{"deliveries":[],"staleAckIds":[]}',
        )
        threads_before = threads_of(web.process.pid)
        polls = [
            asyncio.ensure_future(
                http_post(web.port, f"/api/v1/topics/{topic}/consumers/c{n}/fetch", token, b'{"waitMs":30000}')
            )
            for n in range(WAITING_REST)
        ]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(poll.done() for poll in polls):
            await asyncio.sleep(0.5)
        assert not any(poll.done() for poll in polls), [poll.result() for poll in polls if poll.done()][:3]
        connections = postgres.connections(WEB_APPLICATION_NAME)
        threads_waiting = threads_of(web.process.pid)
        published_at = time.monotonic()
        body = json.dumps({"name": "wake", "data": {}}).encode()
        assert (await http_post(web.port, f"/api/v1/topics/{topic}/events", token, body))[0] == 201
        replies = await asyncio.gather(*polls)
        return replies, connections, threads_before, threads_waiting, time.monotonic() - published_at

    replies, connections, threads_before, threads_waiting, took = asyncio.run(main())
    print(
        f"{WAITING_REST} waiting REST fetches: {connections} PostgreSQL connections, web process threads "
        f"{threads_before} before and {threads_waiting} while they waited; all returned {took * 1000:.0f} ms after "
        "the publish"
    )
    assert [status for status, _ in replies] == [200] * WAITING_REST
    assert [len(json.loads(body)["deliveries"]) for _, body in replies] == [1] * WAITING_REST
    assert connections < 100
