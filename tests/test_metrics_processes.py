"""Each process kind serves its own Prometheus metrics after a real flow: the web process at /metrics on its HTTP
port (with the figures read from the database), grpc, the Celery worker and beat on a metrics port of their own
(eventrelay.metrics). Every process runs as the Procfile runs it, on the test database."""

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websockets
from prometheus_client.parser import text_string_to_metric_families

from events.services import publish
from harness import processes
from harness.processes import (
    COMMON_ENV,
    TEST_QUEUE,
    VENV_BIN,
    CeleryBeat,
    CeleryWorker,
    GrpcServer,
    WebServer,
    free_port,
    log_of,
    start,
    stop,
    wait_until,
)
from tests.grpc_client import Client, unique_topic
from tests.helpers import admin_token
from tests.ws_client import ws_connect
from topics.services import create_topic
from webhooks.models import DeliveryAttempt, DeliveryStream
from webhooks.services import create_destination

pytestmark = pytest.mark.e2e

FAST_RETRIES = {"ER_WEBHOOK_BACKOFF_BASE_MS": "50", "ER_WEBHOOK_BACKOFF_CAP_MS": "200"}

Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Figures:
    """GET a /metrics page from loopback and parse it: (sample name, sorted labels) -> value."""
    session = requests.Session()
    session.trust_env = False  # no proxy between the test and loopback
    response = session.get(url, timeout=10)
    assert response.status_code == 200, (response.status_code, response.text)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(figures: Figures, name: str, **labels: str) -> float:
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


def names(figures: Figures) -> set[str]:
    return {name for name, _ in figures}


def rest_publish(server: WebServer, topic: str, events: list[dict[str, Any]]) -> None:
    response = requests.post(
        f"{server.base_url}/api/v1/topics/{topic}/events",
        json=events,
        headers={"authorization": f"Bearer {admin_token()}"},
        timeout=30,
        proxies={"http": "", "https": ""},
    )
    assert response.status_code == 201, response.text


# --- web ------------------------------------------------------------------------------------------------------


async def test_the_web_process_counts_publishes_over_http_and_websocket_and_the_frames_it_streamed(
    web_server: WebServer, topics: Any
) -> None:
    topic = topics("m")
    url = f"{web_server.base_url}/metrics"
    idle = value(scrape(url), "eventrelay_live_subscribers", transport="websocket")
    async with (
        ws_connect(web_server.ws_url, admin_token()) as subscriber,
        ws_connect(web_server.ws_url, admin_token()) as producer,
    ):
        await subscriber.subscribe(topic)
        before = scrape(url)
        for call in range(3):  # 3 calls of 4 events over HTTP
            await asyncio.to_thread(rest_publish, web_server, topic, [{"name": "h", "data": {"c": call}}] * 4)
        for call in range(2):  # 2 calls of 5 events over the WebSocket
            await producer.publish(topic, [{"name": "w", "data": {"c": call}}] * 5)
        received = await subscriber.events_through(topic, 22)
        assert [event["offset"] for event in received] == list(range(1, 23))

        def delivered() -> bool:
            moved = scrape(url)
            return (
                value(moved, "eventrelay_live_delivery_seconds_count", transport="websocket")
                - value(before, "eventrelay_live_delivery_seconds_count", transport="websocket")
                >= 22
            )

        await asyncio.to_thread(wait_until, delivered, 30, "22 live frames counted")
        during = scrape(url)
        assert value(during, "eventrelay_live_subscribers", transport="websocket") == idle + 1

    after = scrape(url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(after, "eventrelay_events_published_total", topic=topic, source="http") == 12
    assert value(after, "eventrelay_events_published_total", topic=topic, source="websocket") == 10
    assert moved("eventrelay_publish_duration_seconds_count", transport="http") == 3
    assert moved("eventrelay_publish_duration_seconds_count", transport="websocket") == 2
    # Every frame once: the subscriber got the 22 events live, and nothing else was streamed meanwhile.
    assert moved("eventrelay_live_delivery_seconds_count", transport="websocket") == 22
    assert moved("eventrelay_live_delivery_seconds_bucket", transport="websocket", le="+Inf") == 22
    # The database's figures, from the web process only.
    assert value(after, "eventrelay_topic_last_offset", topic=topic) == received[-1]["offset"]

    def unsubscribed() -> bool:
        return value(scrape(url), "eventrelay_live_subscribers", transport="websocket") == idle

    wait_until(unsubscribed, 30, "the subscription to be gone from live_subscribers")


async def test_a_websocket_subscriber_that_stops_reading_counts_as_one_slow_consumer(
    django_db_setup: None, admin_client: Any
) -> None:
    server = WebServer(env={"ER_WS_MAX_BUFFER_BYTES": "200000"}, name="web_slow_metrics")
    try:
        topic = unique_topic("mslow")
        admin_client.create_topic(topic)
        # max_queue=1: the client library stops reading the socket as soon as one frame waits unread.
        async with websockets.connect(f"{server.ws_url}?token={admin_token()}", max_queue=1, max_size=None) as ws:
            await ws.send(json.dumps({"type": "subscribe", "topic": topic, "fromOffset": 1}))
            for batch in range(10):
                await asyncio.to_thread(admin_client.publish, topic, *[{"b": batch, "pad": "x" * 10_000}] * 100)
            while (frame := json.loads(await asyncio.wait_for(ws.recv(), 60)))["type"] in ("subscribed", "event"):
                pass
            assert frame["code"] == "slow_consumer", frame
        figures = scrape(f"{server.base_url}/metrics")
        assert value(figures, "eventrelay_slow_consumers_total", transport="websocket") == 1
        assert value(figures, "eventrelay_slow_consumers_total", transport="grpc") == 0
    finally:
        server.stop()


# --- grpc -----------------------------------------------------------------------------------------------------


@pytest.fixture
def grpc_with_metrics(django_db_setup: None) -> Iterator[tuple[GrpcServer, str]]:
    port = free_port()
    server = GrpcServer(env={"ER_GRPC_METRICS_PORT": str(port)}, name="grpc_metrics")
    yield server, f"http://127.0.0.1:{port}/metrics"
    server.stop()


def test_the_grpc_process_serves_its_publishes_and_stream_frames_on_its_metrics_port(
    transactional_db: None, grpc_with_metrics: tuple[GrpcServer, str]
) -> None:
    server, url = grpc_with_metrics
    client = Client(server.address, admin_token())
    topic = unique_topic("m")
    client.create_topic(topic)
    try:
        stream = client.stream(topic)
        received: list[Any] = []

        def read() -> None:
            for event in stream:
                received.append(event)
                if len(received) == 12:
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        wait_until(lambda: value(scrape(url), "eventrelay_live_subscribers", transport="grpc") == 1, 30, "the stream")
        for call in range(3):
            client.publish(topic, *[{"c": call, "i": i} for i in range(4)])
        reader.join(60)
        assert [event.offset for event in received] == list(range(1, 13))
        wait_until(
            lambda: value(scrape(url), "eventrelay_live_delivery_seconds_count", transport="grpc") >= 12,
            30,
            "12 frames counted",
        )
        figures = scrape(url)
        assert value(figures, "eventrelay_events_published_total", topic=topic, source="grpc") == 12
        assert value(figures, "eventrelay_publish_duration_seconds_count", transport="grpc") == 3
        # Each event once, including any committed while the stream was attaching (replayed, but live for it).
        assert value(figures, "eventrelay_live_delivery_seconds_count", transport="grpc") == 12
        # What the database holds is the web process's to export, once.
        assert "eventrelay_topic_last_offset" not in names(figures)
        assert "eventrelay_webhook_backlog_events" not in names(figures)
        stream.cancel()
        wait_until(
            lambda: value(scrape(url), "eventrelay_live_subscribers", transport="grpc") == 0, 30, "the stream's end"
        )
    finally:
        client.delete_topic(topic)
        client.close()


# --- worker ---------------------------------------------------------------------------------------------------


def _deliver_with_failures(receiver: Any, admin: Any) -> tuple[list[int], int]:
    """Two destinations, 15 events: ``a`` has two events that fail twice each before they are delivered; ``b`` gives
    up on one event after its two attempts. Returns the stream ids and the number of attempts expected."""
    a, b = unique_topic("ma"), unique_topic("mb")
    for name in (a, b):
        create_topic(name)

    def answer(event: dict[str, Any], tries: int) -> int:
        if event["topic"] == f"{a}:1" and event["data"]["n"] in (3, 7) and tries <= 2:
            return 500
        if event["topic"] == f"{b}:1" and event["data"]["n"] == 2:
            return 500
        return 200

    receiver.answer = answer
    destinations = [
        create_destination(name="a", url=receiver.url, topic=f"{a}:1"),
        create_destination(name="b", url=receiver.url, topic=f"{b}:1", max_attempts=2),
    ]
    publish(admin, f"{a}:1", [{"name": "o", "data": {"n": n}} for n in range(10)], "http")
    publish(admin, f"{b}:1", [{"name": "o", "data": {"n": n}} for n in range(5)], "http")
    streams = [DeliveryStream.objects.get(destination=destination).pk for destination in destinations]
    heads = {streams[0]: 10, streams[1]: 5}

    def done() -> bool:
        return all(DeliveryStream.objects.get(pk=pk).last_offset == head for pk, head in heads.items())

    wait_until(done, 120, "both streams delivered")
    return streams, 20


EXPECTED_OUTCOMES = {"delivered": 14, "failed": 5, "undeliverable": 1}


def _check_outcomes(figures: Figures, streams: list[int], attempts: int) -> None:
    outcomes = {o: value(figures, "eventrelay_webhook_deliveries_total", outcome=o) for o in EXPECTED_OUTCOMES}
    assert outcomes == EXPECTED_OUTCOMES
    assert value(figures, "eventrelay_webhook_delivery_seconds_count") == attempts
    rows = DeliveryAttempt.objects.filter(stream__in=streams)
    assert rows.count() == attempts
    assert rows.filter(status="succeeded").count() == outcomes["delivered"]


def test_the_worker_serves_its_delivery_outcomes_on_its_metrics_port(
    transactional_db: None, receiver: Any, allow_private: None, admin: Any
) -> None:
    port = free_port()
    worker = CeleryWorker(env={**FAST_RETRIES, "ER_WORKER_METRICS_PORT": str(port)}, name="worker_metrics")
    try:
        streams, attempts = _deliver_with_failures(receiver, admin)
        _check_outcomes(scrape(f"http://127.0.0.1:{port}/metrics"), streams, attempts)
    finally:
        worker.stop()


def test_a_prefork_worker_serves_the_sum_of_its_children_with_a_multiprocess_directory(
    transactional_db: None, receiver: Any, allow_private: None, admin: Any, tmp_path: Path
) -> None:
    port = free_port()
    name = "worker_prefork_metrics"
    process = start(
        [
            str(VENV_BIN / "celery"),
            *("-A", "eventrelay", "worker", "--loglevel", "INFO", "--queues", TEST_QUEUE, "--pool", "prefork"),
            *("--concurrency", "3", "--hostname", f"{name}-{os.getpid()}@%h", "--without-mingle", "--without-gossip"),
        ],
        env={
            "DATABASE_URL": processes.test_database_url(),
            **COMMON_ENV,
            **FAST_RETRIES,
            "ER_WORKER_METRICS_PORT": str(port),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        },
        log_name=name,
    )
    try:
        wait_until(lambda: "ready." in log_of(name) or process.poll() is not None, 60, f"{name} to be ready")
        assert process.poll() is None, log_of(name)
        streams, attempts = _deliver_with_failures(receiver, admin)
        _check_outcomes(scrape(f"http://127.0.0.1:{port}/metrics"), streams, attempts)
        # The children did the work: their files are there beside the main process's.
        assert len({path.name.rsplit("_", 1)[-1] for path in tmp_path.glob("*.db")}) >= 2
    finally:
        stop(process)


# --- beat -----------------------------------------------------------------------------------------------------


def test_beat_answers_on_its_metrics_port(django_db_setup: None) -> None:
    port = free_port()
    beat = CeleryBeat(env={"ER_BEAT_METRICS_PORT": str(port)}, name="beat_metrics")
    try:

        def answers() -> bool:
            return "process_cpu_seconds_total" in names(scrape(f"http://127.0.0.1:{port}/metrics"))

        wait_until(answers, 60, "beat's metrics port")
        figures = scrape(f"http://127.0.0.1:{port}/metrics")
        assert "eventrelay_webhook_deliveries_total" in names(figures)
        assert "eventrelay_topic_last_offset" not in names(figures)
    finally:
        beat.stop()


def test_a_process_whose_metrics_port_is_taken_still_starts_and_says_why(django_db_setup: None) -> None:
    first = GrpcServer(env={"ER_GRPC_METRICS_PORT": str(port := free_port())}, name="grpc_metrics_first")
    try:
        second = GrpcServer(env={"ER_GRPC_METRICS_PORT": str(port)}, name="grpc_metrics_second")
        try:
            assert "ER_GRPC_METRICS_PORT" in second.log()
            assert scrape(f"http://127.0.0.1:{port}/metrics")  # the first one's, still answering
        finally:
            second.stop()
    finally:
        first.stop()
