"""Rate limits on every entry point, shared across processes through Redis (GCRA)."""

import asyncio
import json
import subprocess
import uuid

import grpc
import pytest
import requests
import websockets

from eventrelay import ratelimit
from eventrelay.auth import mint_token
from eventrelay.errors import RateLimited
from harness.processes import GrpcServer, WebServer, free_port, log_of, wait_until
from tests.grpc_client import Client, unique_topic

LIMITS = {
    "ER_RATE_LIMIT_PUBLISH_PER_S": "1",
    "ER_RATE_LIMIT_PUBLISH_BURST": "20",
    "ER_RATE_LIMIT_REQUESTS_PER_S": "1",
    "ER_RATE_LIMIT_REQUESTS_BURST": "30",
    "ER_RATE_LIMIT_AUTH_FAILURES_PER_S": "1",
    "ER_RATE_LIMIT_AUTH_FAILURES_BURST": "5",
}


def producer_token(topic: str) -> str:
    """A token with a subject of its own: its budget is untouched by any other test or run."""
    return mint_token([topic], subject=f"producer-{uuid.uuid4().hex}")


# --- the limiter itself, against the real Redis ------------------------------------------------------------


@pytest.fixture
def limits_on(settings):
    settings.ER_RATE_LIMIT_PUBLISH_PER_S = 1
    settings.ER_RATE_LIMIT_PUBLISH_BURST = 10
    settings.ER_RATE_LIMIT_REQUESTS_PER_S = 2
    settings.ER_RATE_LIMIT_REQUESTS_BURST = 5
    return settings


def allowed_in_a_row(action: str, who: str, attempts: int, cost: int = 1) -> int:
    allowed = 0
    for _ in range(attempts):
        try:
            ratelimit.check(action, who, cost)
            allowed += 1
        except RateLimited:
            pass
    return allowed


def test_a_full_bucket_allows_exactly_the_burst_then_refuses_with_a_retry_hint(limits_on):
    who = uuid.uuid4().hex

    assert allowed_in_a_row("request", who, 20) == 5
    with pytest.raises(RateLimited) as refused:
        ratelimit.check("request", who)
    assert 0 < refused.value.retry_after_ms <= 500  # 2/s: the next unit is at most half a second away


def test_after_the_retry_hint_the_steady_rate_allows_one_more(limits_on):
    who = uuid.uuid4().hex
    allowed_in_a_row("request", who, 5)
    with pytest.raises(RateLimited) as refused:
        ratelimit.check("request", who)

    import time

    time.sleep(refused.value.retry_after_ms / 1000 + 0.05)

    assert allowed_in_a_row("request", who, 5) == 1


def test_publish_budgets_count_events_not_calls(limits_on):
    who = uuid.uuid4().hex

    ratelimit.check("publish", who, cost=7)
    with pytest.raises(RateLimited, match="4 events"):
        ratelimit.check("publish", who, cost=4)
    ratelimit.check("publish", who, cost=3)  # exactly the burst of 10


def test_a_zero_limit_is_off(settings):
    settings.ER_RATE_LIMIT_REQUESTS_PER_S = 0
    assert allowed_in_a_row("request", uuid.uuid4().hex, 1000) == 1000


# --- gRPC ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_grpc(django_db_setup):
    servers = [GrpcServer(env=LIMITS, name=f"grpc_limited_{n}") for n in range(2)]
    yield servers
    for server in servers:
        server.stop()


def test_grpc_refuses_a_producer_over_its_budget_and_not_another(admin_client, limited_grpc):
    topic = unique_topic("limited")
    admin_client.create_topic(topic)
    noisy = Client(limited_grpc[0].address, producer_token(topic))
    quiet = Client(limited_grpc[0].address, producer_token(topic))

    noisy.publish(topic, *[{"n": i} for i in range(20)])  # the whole burst
    with pytest.raises(grpc.RpcError) as refused:
        noisy.publish(topic, {"n": 20})
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_after = dict(refused.value.trailing_metadata())["retry-after-ms"]
    assert 0 < int(retry_after) <= 1000

    assert quiet.publish(topic, {"quiet": True})[0].offset == 21  # unaffected at the same moment
    noisy.close()
    quiet.close()


def test_the_budget_is_shared_by_two_grpc_servers(admin_client, limited_grpc):
    topic = unique_topic("shared")
    admin_client.create_topic(topic)
    token = producer_token(topic)
    first, second = Client(limited_grpc[0].address, token), Client(limited_grpc[1].address, token)

    first.publish(topic, *[{"n": i} for i in range(15)])
    with pytest.raises(grpc.RpcError) as refused:
        second.publish(topic, *[{"n": i} for i in range(10)])  # 15 + 10 > 20, even on another process

    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert second.publish(topic, *[{"n": i} for i in range(5)])[-1].offset == 20
    first.close()
    second.close()


def test_refused_tokens_are_limited_per_ip(admin_client, limited_grpc):
    attacker = Client(limited_grpc[0].address, "not-a-token")
    codes = []
    for _ in range(8):
        try:
            attacker.list_topics()
        except grpc.RpcError as error:
            codes.append(error.code())
    attacker.close()

    assert grpc.StatusCode.UNAUTHENTICATED in codes
    assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- REST and WebSocket on the real web process ------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_web(django_db_setup):
    server = WebServer(env=LIMITS, name="web_limited")
    yield server
    server.stop()


def test_rest_answers_429_with_retry_after_for_a_producer_over_its_budget(admin_client, limited_web):
    topic = unique_topic("restlimited")
    admin_client.create_topic(topic)
    url = f"{limited_web.base_url}/api/v1/topics/{topic}/events"
    noisy = {"authorization": f"Bearer {producer_token(topic)}"}
    quiet = {"authorization": f"Bearer {producer_token(topic)}"}

    assert requests.post(url, json=[{"name": "e", "data": i} for i in range(20)], headers=noisy).status_code == 201
    refused = requests.post(url, json={"name": "e", "data": 21}, headers=noisy)

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert requests.post(url, json={"name": "e", "data": "quiet"}, headers=quiet).status_code == 201


async def test_websocket_sends_rate_limited_with_a_retry_hint_and_keeps_the_connection(admin_client, limited_web):
    topic = unique_topic("wslimited")
    await asyncio.to_thread(admin_client.create_topic, topic)
    async with websockets.connect(f"{limited_web.ws_url}?token={producer_token(topic)}") as ws:

        async def publish(count: int, ref: str) -> dict:
            events = [{"name": "e", "data": i} for i in range(count)]
            await ws.send(json.dumps({"type": "publish", "topic": topic, "ref": ref, "events": events}))
            return json.loads(await asyncio.wait_for(ws.recv(), 30))

        assert (await publish(20, "r1"))["type"] == "published"
        refused = await publish(1, "r2")
        assert refused["type"] == "error" and refused["code"] == "rate_limited" and refused["ref"] == "r2"
        assert refused["retryAfterMs"] > 0

        await asyncio.sleep(refused["retryAfterMs"] / 1000 + 0.1)
        assert (await publish(1, "r3"))["type"] == "published"  # same connection, budget refilled


# --- Redis down: fail open, with a warning; Redis back: limits again -----------------------------------------


def test_with_redis_down_requests_succeed_with_a_warning_and_limits_return_with_it(admin_client):
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis_process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    server = GrpcServer(env={**LIMITS, "ER_RATE_LIMIT_REDIS_URL": f"redis://127.0.0.1:{port}/0"}, name="grpc_own_redis")
    try:
        topic = unique_topic("failopen")
        admin_client.create_topic(topic)
        client = Client(server.address, producer_token(topic))
        client.publish(topic, *[{"n": i} for i in range(20)])
        with pytest.raises(grpc.RpcError):
            client.publish(topic, {"n": "over"})

        redis_process.terminate()
        redis_process.wait(10)
        # Over the limit, but the limiter cannot reach Redis: allowed (fail-open), and logged.
        assert len(client.publish(topic, *[{"n": i} for i in range(20)])) == 20
        assert "rate limiter cannot reach Redis" in log_of("grpc_own_redis")

        redis_process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_until(lambda: _publish_refused(client, topic), 30, "limits to apply again once Redis is back")
        client.close()
    finally:
        server.stop()
        redis_process.terminate()
        redis_process.wait(10)


def _publish_refused(client: Client, topic: str) -> bool:
    try:
        client.publish(topic, *[{"n": i} for i in range(15)])
    except grpc.RpcError as error:
        return error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    return False
