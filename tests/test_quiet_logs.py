"""What the processes log is for an operator: our bugs (5xx) with their traceback; a client's mistakes at INFO at
most (``django.request``'s 4xx lines lowered from WARNING to INFO, without a traceback); and no asyncio noise when a
client cancels a stream it just opened. (tests/test_logs.py: one line each, JSON, request ids.)
"""

import asyncio
import contextlib
import gc
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import requests
import websockets
from django.test import Client

from eventrelay.auth import Principal, mint_token
from eventrelay.db import run_sync
from eventrelay.logfilters import ClientErrorsAtInfo
from eventrelay.refs import TopicRef
from events import live
from events.services import publish
from harness.processes import GrpcServer, WebServer, wait_until
from tests.grpc_client import Client as GrpcClient
from tests.grpc_client import unique_topic
from topics.models import Topic

WAIT = 30  # seconds; far longer than anything here takes, short enough to fail rather than hang
# A line the processes' logging (eventrelay/settings.py LOGGING) writes at WARNING or above.
LOUD_LINE = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) ", re.MULTILINE)


def loud_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if LOUD_LINE.match(line)]


# --- Client errors over HTTP: INFO at most ----------------------------------------------------------


@pytest.fixture
def quiet_web_server(django_db_setup: None) -> Iterator[WebServer]:
    server = WebServer(name="rest-quiet-logs-web")
    yield server
    server.stop()


def test_a_batch_of_client_errors_leaves_no_warning_in_the_web_process_log(quiet_web_server, transactional_db):
    api = f"{quiet_web_server.base_url}/api/v1"
    admin = {"authorization": f"Bearer {mint_token([], admin=True)}"}
    reader = {"authorization": f"Bearer {mint_token(['users'])}"}
    topic = unique_topic("quiet")
    answers = [
        requests.get(f"{api}/topics", timeout=30).status_code,  # 401: no token
        requests.get(f"{api}/topics", headers={"authorization": "Bearer nope"}, timeout=30).status_code,  # 401
        requests.post(f"{api}/topics", json={"name": "x"}, headers=reader, timeout=30).status_code,  # 403
        requests.get(f"{api}/topics/{topic}", headers=admin, timeout=30).status_code,  # 404
        requests.get(f"{api}/topics/", headers=admin, timeout=30).status_code,  # 404: no such path
        requests.get(f"{api}/webhooks/null%2Cnull", headers=admin, timeout=30).status_code,  # 404
        requests.put(f"{api}/topics", headers=admin, timeout=30).status_code,  # 405
        requests.post(f"{api}/topics", json={"name": "Bad Name"}, headers=admin, timeout=30).status_code,  # 400
        requests.post(
            f"{api}/topics", data="{not json", headers={**admin, "content-type": "application/json"}, timeout=30
        ).status_code,  # 400
        requests.post(f"{api}/topics", json={"name": topic}, headers=admin, timeout=30).status_code,  # 201
        requests.post(f"{api}/topics", json={"name": topic}, headers=admin, timeout=30).status_code,  # 409
        requests.post(
            f"{api}/topics/{topic}/events", json={"name": "big", "data": "x" * 300_000}, headers=admin, timeout=30
        ).status_code,  # 413: over ER_MAX_EVENT_BYTES
        requests.delete(f"{api}/topics/{topic}", headers=admin, timeout=30).status_code,  # 204
    ]
    # A WebSocket handshake with a bad token is refused (403), and a bad frame gets an error frame.
    with pytest.raises(websockets.InvalidStatus):
        asyncio.run(websockets.connect(f"{quiet_web_server.ws_url}?token=nope", open_timeout=30).__aenter__())

    async def bad_frame() -> dict[str, Any]:
        async with websockets.connect(f"{quiet_web_server.ws_url}?token={mint_token(['users'])}") as ws:
            await ws.send("{not json")
            return json.loads(await asyncio.wait_for(ws.recv(), WAIT))

    frame = asyncio.run(bad_frame())
    last = requests.get(f"{api}/the-last-request-of-the-batch", timeout=30).status_code

    assert answers == [401, 401, 403, 404, 404, 404, 405, 400, 400, 201, 409, 413, 204]
    assert frame["type"] == "error" and last == 404
    # The last request's line is in the log: everything logged before it is there too.
    last_line = "Not Found: /api/v1/the-last-request-of-the-batch"
    wait_until(lambda: last_line in quiet_web_server.log(), WAIT, "the line of the last request")
    log = quiet_web_server.log()
    assert log.count("INFO django.request [") == 12, log  # each client error is one INFO line
    assert log.count("Conflict: /api/v1/topics") == 1, log
    assert loud_lines(log) == [], log
    assert "Traceback" not in log


def test_a_server_error_is_still_logged_at_error_with_its_traceback(monkeypatch, caplog, db):
    def broken(principal: Principal) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr("api.views.list_topics_as", broken)
    client = Client(raise_request_exception=False)

    with caplog.at_level(logging.DEBUG, logger="django.request"):
        client.get("/api/v1/topics", HTTP_AUTHORIZATION=f"Bearer {mint_token([], admin=True)}")
        client.get("/api/v1/topics")  # and a 401 beside it

    [server_error] = [record for record in caplog.records if getattr(record, "status_code", None) == 500]
    assert server_error.levelno == logging.ERROR and server_error.name == "django.request"
    assert server_error.exc_info and server_error.exc_info[0] is RuntimeError
    [client_error] = [record for record in caplog.records if getattr(record, "status_code", None) == 401]
    # The console handler's filter (settings.LOGGING) lowers it; the 500 it leaves as it is.
    assert ClientErrorsAtInfo().filter(client_error) and ClientErrorsAtInfo().filter(server_error)
    assert client_error.levelno == logging.INFO and server_error.levelno == logging.ERROR


def test_a_client_error_is_one_info_line_without_its_traceback_at_the_usual_level(caplog, db):
    with caplog.at_level(logging.INFO):
        response = Client().get("/api/v1/topics")

    assert response.status_code == 401
    [line] = [record for record in caplog.records if record.name == "django.request"]
    assert ClientErrorsAtInfo().filter(line)
    assert (line.levelno, line.exc_info, line.getMessage()) == (logging.INFO, None, "Unauthorized: /api/v1/topics")


# --- Streams cancelled right after they were opened -----------------------------------------------


@pytest.fixture
def quiet_grpc_server(django_db_setup: None) -> Iterator[GrpcServer]:
    server = GrpcServer(name="rest-quiet-logs-grpc")
    yield server
    server.stop()


def test_streams_cancelled_right_after_opening_log_nothing_even_at_shutdown(quiet_grpc_server, transactional_db):
    client = GrpcClient(quiet_grpc_server.address, mint_token([], admin=True))
    topics = [unique_topic("cancel") for _ in range(4)]
    try:
        for topic in topics:
            client.create_topic(topic)
        # Each stream is cancelled as soon as it is sent: most are still starting their topic's feed then.
        for _ in range(60):
            streams = [client.stream(topic) for topic in topics]
            for stream in streams:
                stream.cancel()
        # The server still streams: a stream opened now gets an event published after it.
        stream = client.stream(topics[0], from_offset=1)
        client.publish(topics[0], {"n": 1})
        assert next(stream).offset == 1
        stream.cancel()
        # And so do clients meeting mistakes of their own (unknown topic, bad name): nothing logged for those.
        for bad in (unique_topic("missing"), "Bad Name"):
            with pytest.raises(grpc.RpcError):
                next(client.stream(bad))
    finally:
        for topic in topics:
            with contextlib.suppress(grpc.RpcError):
                client.delete_topic(topic)
        client.close()

    quiet_grpc_server.stop()
    assert quiet_grpc_server.process.returncode is not None
    log = quiet_grpc_server.log()
    assert "gRPC server stopped" in log, log
    assert "never retrieved" not in log, log
    assert "CancelledError" not in log, log
    assert loud_lines(log) == [], log


# --- The live hub: a feed whose starter is cancelled -----------------------------------------------


@pytest.fixture
def held_topic_head(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The first feed start waits, inside its start, until the test sets the returned event."""
    release = threading.Event()
    original = live._topic_head
    calls = 0

    def held(topic_name: str) -> tuple[int, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            release.wait(WAIT)
        return original(topic_name)

    monkeypatch.setattr(live, "_topic_head", held)
    yield release
    release.set()


async def test_when_the_subscriber_starting_a_feed_is_cancelled_the_one_waiting_for_it_still_gets_events(
    one_database_thread: None,
    make_topic: Callable[[str], Topic],
    admin: Principal,
    held_topic_head: threading.Event,
) -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda loop, context: unhandled.append(context))
    topic = unique_topic("starter")
    await run_sync(make_topic, topic)
    hub = live.get_hub()

    starter = asyncio.create_task(hub.attach(TopicRef(topic)))
    while topic not in hub.feeds:
        await asyncio.sleep(0)
    first_feed = hub.feeds[topic]
    waiter = asyncio.create_task(hub.attach(TopicRef(topic)))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not first_feed.ready.done()  # both wait for the feed's start, held inside it

    starter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starter
    held_topic_head.set()

    subscription = await asyncio.wait_for(waiter, WAIT)
    assert subscription.feed is not first_feed and not subscription.feed.closed
    await run_sync(publish, admin, topic, [{"name": "n", "data": 1}], "http")
    assert (await asyncio.wait_for(subscription.next_event(), WAIT)).offset == 1
    subscription.feed.detach(subscription)

    # The cancelled start's future is gone without anybody having had to read it: nothing is reported.
    del first_feed, starter
    gc.collect()
    await asyncio.sleep(0)
    assert unhandled == []
