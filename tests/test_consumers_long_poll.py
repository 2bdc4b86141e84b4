"""Long-polling fetches hold no PostgreSQL connection while they wait: 1,000 of them, on 1,000 consumers, against a
private PostgreSQL with ``max_connections`` 100, all wait and all return the event published meanwhile."""

import asyncio
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest

from eventrelay.auth import mint_token
from eventrelay.v1 import eventrelay_pb2 as pb
from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc
from harness.processes import GrpcServer
from tests.faults import PrivatePostgres

pytestmark = pytest.mark.e2e

APPLICATION_NAME = "consumers-long-poll-grpc"
WAITING = 1000


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
