"""A WebSocket client that stops reading is told slow_consumer; the server's memory stays bounded."""

import asyncio
import json

import pytest
import websockets

from eventrelay.auth import mint_token
from harness.processes import WebServer
from tests.grpc_client import unique_topic
from tests.helpers import rss_kib

pytestmark = pytest.mark.e2e

BUFFER_LIMIT = 1_000_000


@pytest.fixture(scope="module")
def small_buffer_web(django_db_setup):
    server = WebServer(env={"ER_WS_MAX_BUFFER_BYTES": str(BUFFER_LIMIT)}, name="web_small_buffer")
    yield server
    server.stop()


async def recv_json(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=60))


async def test_a_client_that_stops_reading_gets_slow_consumer_and_resumes_without_loss(small_buffer_web, admin_client):
    topic = unique_topic("wsslow")
    admin_client.create_topic(topic)
    url = f"{small_buffer_web.ws_url}?token={mint_token([topic])}"
    # max_queue=1: the client library stops reading the socket as soon as one frame waits unread.
    async with websockets.connect(url, max_queue=1, max_size=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "topic": topic, "fromOffset": 1}))
        assert (await recv_json(ws))["type"] == "subscribed"
        rss_before = rss_kib(small_buffer_web.process.pid)

        # The client reads nothing while ~30 MB of events are published.
        payload = "x" * 10_000
        for batch in range(30):
            await asyncio.to_thread(admin_client.publish, topic, *[{"b": batch, "pad": payload}] * 100)
        await asyncio.sleep(2)  # lets the server dispatch them (not a threshold)
        rss_after = rss_kib(small_buffer_web.process.pid)

        received: list[int] = []
        while True:
            frame = await recv_json(ws)
            if frame["type"] != "event":
                break
            received.append(frame["event"]["offset"])

        assert frame["type"] == "error" and frame["code"] == "slow_consumer", frame
        assert frame["topic"] == topic
        assert frame["lastOffset"] == received[-1]
        assert received == list(range(1, received[-1] + 1))
        assert received[-1] < 3000, "the subscription should have ended before all 3,000 events were buffered"
        # The server held about the buffer limit (plus the kernel's socket buffers), not the 30 MB published.
        assert rss_after - rss_before < 20_000, f"server RSS grew by {rss_after - rss_before} KiB"

        # The same connection resubscribes from the next offset and misses nothing. (A reader this
        # slow may be told slow_consumer again while catching up: it resubscribes again, as documented.)
        await ws.send(json.dumps({"type": "subscribe", "topic": topic, "fromOffset": received[-1] + 1}))
        while received[-1] < 3000:
            frame = await recv_json(ws)
            if frame["type"] == "error" and frame["code"] == "slow_consumer":
                assert frame["lastOffset"] in (None, received[-1])
                await ws.send(json.dumps({"type": "subscribe", "topic": topic, "fromOffset": received[-1] + 1}))
                continue
            if frame["type"] == "subscribed":
                continue
            assert frame["type"] == "event", frame
            received.append(frame["event"]["offset"])

    assert received == list(range(1, 3001))


async def test_a_client_that_keeps_up_is_never_told_it_is_slow(small_buffer_web, admin_client):
    topic = unique_topic("wsfast")
    admin_client.create_topic(topic)
    async with websockets.connect(f"{small_buffer_web.ws_url}?token={mint_token([topic])}", max_size=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "topic": topic, "fromOffset": 1}))
        assert (await recv_json(ws))["type"] == "subscribed"
        payload = "y" * 10_000

        # 1,000 events of 10 KB, 10 per publish: each commit's events (100 KB) are a tenth of the buffer limit.
        # The reader keeps up by definition: the next commit is published once it has the previous one's events,
        # so it is never more than one commit behind. (A publisher racing ahead of a reader in the same process
        # measured the machine: a loaded one left the reader 1 MB behind, over the limit, however fast it read.)
        offsets = []
        for commit in range(1, 101):
            await asyncio.to_thread(admin_client.publish, topic, *[{"pad": payload}] * 10)
            while len(offsets) < commit * 10:
                frame = await recv_json(ws)
                assert frame["type"] == "event", frame
                offsets.append(frame["event"]["offset"])

    assert offsets == list(range(1, 1001))
