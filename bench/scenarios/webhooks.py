"""Scenario 6: webhook deliveries to a local receiver, 64 streams, 2 Celery workers, against a plain
``requests.Session.post`` loop to the same receiver; then, with ONE worker (as SPEC.md's rows ask), a receiver
that answers in 100 ms (64 streams) and one that answers in 1 s (1,000 streams), against the ideal of one request
in flight per stream up to the worker's concurrency.

The receiver is a process of its own (a threading HTTP/1.1 server with keep-alive that answers 200
and records each POST's topic, offset and arrival time). The product's run: a whole-topic destination
is created paused; K events are published to each of 64 topic ids (64 delivery streams); the clock
starts when the destination is resumed and stops at the last delivery received. The baseline posts
the same number of bodies of the same shape and size, in one loop with one ``requests.Session``.
Order is checked per stream at the receiver: an offset lower than one already received for the same
topic id counts as out of order.
"""

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import requests

from bench.children import Child, ready_then_wait
from bench.common import EVENT_NAME, Figure, ScenarioResult, event_data, metadata, percentiles, progress, user_id

if TYPE_CHECKING:
    from bench.run import Bench

STREAMS = 64


# --- the receiver (child process) -------------------------------------------------------------------


def receiver(pipe: Any) -> dict[str, Any]:
    lock = threading.Lock()
    records: list[tuple[int, str, int]] = []
    latency = [0.0]  # seconds every answer takes (a slow receiver); set with a "latency" message

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in two writes: without TCP_NODELAY, Nagle's algorithm and the
        # client's delayed ACK hold the second one ~40 ms, and every sender would measure that.
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            event = json.loads(body)
            with lock:
                records.append((time.time_ns(), event["topic"], event["offset"]))
            if latency[0]:
                time.sleep(latency[0])
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    class Server(ThreadingHTTPServer):
        # A thousand streams connect at once: the default listen backlog (5) would drop most of their SYNs, and
        # each dropped one costs its sender a second.
        request_queue_size = 4096

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    pipe.send(("ready", f"http://127.0.0.1:{server.server_address[1]}/hook"))
    try:
        while pipe.poll(1800):
            kind, value = pipe.recv()
            if kind == "stop":
                break
            if kind == "reset":
                with lock:
                    records.clear()
                pipe.send(("reset", None))
            elif kind == "latency":
                latency[0] = float(value)
                pipe.send(("latency", None))
            elif kind == "wait":
                # value: (expected count, seconds): wait until that many arrived or the time is up.
                count, seconds = value
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    with lock:
                        if len(records) >= count:
                            break
                    time.sleep(0.02)
                with lock:
                    pipe.send(("records", list(records)))
    finally:
        server.shutdown()
        server.server_close()
    return {}


def order_check(records: list[tuple[int, str, int]]) -> dict[str, Any]:
    highest: dict[str, int] = {}
    seen: set[tuple[str, int]] = set()
    out_of_order = duplicates = 0
    for _, topic, offset in records:
        if (topic, offset) in seen:
            duplicates += 1
            continue
        seen.add((topic, offset))
        if offset < highest.get(topic, 0):
            out_of_order += 1
        highest[topic] = max(highest.get(topic, 0), offset)
    return {"streams_seen": len(highest), "unique": len(seen), "out_of_order": out_of_order, "duplicates": duplicates}


def stream_timing(records: list[tuple[int, str, int]], started_ns: int, latency_s: float) -> dict[str, Any]:
    """Where a slow receiver's run goes besides its answers: how long after the clock started each stream's first
    request arrived, and each stream's time between one request and the next less the receiver's ``latency_s``
    (the sender's own time per event), in ms."""
    first: dict[str, int] = {}
    previous: dict[str, int] = {}
    between: list[float] = []
    for arrived_ns, topic, _ in sorted(records):
        first.setdefault(topic, arrived_ns)
        if topic in previous:
            between.append((arrived_ns - previous[topic]) / 1e6 - latency_s * 1000)
        previous[topic] = arrived_ns
    return {
        "first_request_ms": percentiles([(ns - started_ns) / 1e6 for ns in first.values()], (50,)),
        "between_requests_less_latency_ms": percentiles(between, (50, 90, 99)),
    }


def _timing_note(timing: dict[str, Any]) -> str:
    first, between = timing["first_request_ms"], timing["between_requests_less_latency_ms"]
    if first["p50"] is None or between["p50"] is None:
        return "no stream timing"
    return (
        f"a stream's first request {first['p50']:.0f} ms after the resume (p50; max {first['max']:.0f} ms), "
        f"then {between['p50']:.1f} ms (p50; p90 {between['p90']:.1f}) per event besides the receiver's answer"
    )


# --- the baseline (child process) -------------------------------------------------------------------


def requests_loop(pipe: Any, url: str, bodies: list[bytes]) -> dict[str, Any]:
    session = requests.Session()
    headers = {
        "content-type": "application/json",
        "webhook-id": str(uuid.uuid4()),
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1," + "A" * 44,
        "user-agent": "bench/1",
    }
    session.post(url, data=bodies[0], headers=headers, timeout=10).raise_for_status()  # warm the connection
    ready_then_wait(pipe)
    started_ns = time.time_ns()
    for body in bodies:
        session.post(url, data=body, headers=headers, timeout=10).raise_for_status()
    return {"started_ns": started_ns, "ended_ns": time.time_ns(), "posts": len(bodies)}


def canonical_bodies(topic: str, per_stream: int) -> list[bytes]:
    """Bodies shaped like the product's (canonical JSON), interleaved across the 64 streams."""
    bodies = []
    offset = 0
    for _ in range(per_stream):
        for stream in range(STREAMS):
            offset += 1
            body = {
                "eventId": str(uuid.uuid4()),
                "name": EVENT_NAME,
                "topic": f"{topic}:s{stream:02d}",
                "source": "grpc",
                "userId": user_id(offset),
                "eventOccurredAt": "2026-01-01T00:00:00.000000+00:00",
                "context": {},
                "data": json.loads(event_data(offset)),
                "offset": offset,
            }
            bodies.append(json.dumps(body, separators=(",", ":")).encode())
    return bodies


# --- the scenario -----------------------------------------------------------------------------------


SLOW_RECEIVER_S = 0.1
WIDE_RECEIVER_S = 1.0
# ER_WEBHOOK_CONCURRENCY's default: the requests one worker keeps in flight.
WORKER_CONCURRENCY = 200


def _paused_destination(bench: "Bench", api: requests.Session, name: str, url: str, topic: str) -> int:
    reply = api.post(
        f"{bench.stack.base_url}/api/v1/webhooks",
        json={"name": name, "url": url, "topic": topic, "active": False},
        timeout=30,
    )
    if reply.status_code != 201:
        raise RuntimeError(f"creating the destination answered {reply.status_code}: {reply.text}")
    return int(reply.json()["id"])


class ConnectionSampler:
    """Samples, every 0.1 s from a thread, how many PostgreSQL connections carry ``application_name``."""

    def __init__(self, bench: "Bench", application_name: str) -> None:
        self._bench = bench
        self._name = application_name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.most = 0
        self.samples = 0

    def _run(self) -> None:
        with self._bench.stack.connect_db(autocommit=True) as conn:
            while not self._stop.wait(0.1):
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [self._name]
                ).fetchone()
                self.most = max(self.most, int(row[0]) if row else 0)
                self.samples += 1

    def __enter__(self) -> "ConnectionSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _deliver_backlog(
    bench: "Bench",
    api: requests.Session,
    receiving: Child,
    destination_id: int,
    topic: str,
    per_stream: int,
    streams: int = STREAMS,
    latency_s: float = 0.0,
) -> tuple[int, int, float, dict[str, Any]]:
    """Publish ``per_stream`` events on each of ``streams`` topic ids while the destination is paused, resume it, and
    time the deliveries from the resume to the last one received: (delivered, missing, seconds, order check)."""
    from eventrelay.v1 import eventrelay_pb2 as pb

    total = streams * per_stream
    stub = bench.grpc_events()
    expected: dict[str, list[int]] = {}
    for stream in range(streams):
        ref = f"{topic}:s{stream:02d}"
        events = [
            pb.NewEvent(event_id=str(uuid.uuid4()), name=EVENT_NAME, user_id=user_id(n), data=event_data(n))
            for n in range(per_stream)
        ]
        published = stub.PublishEvents(
            pb.PublishEventsRequest(topic=ref, events=events), metadata=metadata(bench.token), timeout=60
        )
        expected[ref] = [event.offset for event in published.events]
    bench.settle_database()
    receiving.send("reset")
    receiving.receive("reset", 30)
    started_ns = time.time_ns()
    reply = api.post(f"{bench.stack.base_url}/api/v1/webhooks/{destination_id}/resume", timeout=30)
    if reply.status_code not in (200, 204):
        raise RuntimeError(f"resuming the destination answered {reply.status_code}: {reply.text}")
    progress(f"delivering {total:,} webhooks over {streams} streams")
    receiving.send("wait", (total, bench.mode.webhook_deadline))
    records = receiving.receive("records", bench.mode.webhook_deadline + 60)
    order = order_check(records)
    order["timing"] = stream_timing(records, started_ns, latency_s)
    last_ns = max((record[0] for record in records), default=started_ns)
    delivered = order["unique"]
    missing = sum(len(offsets) for offsets in expected.values()) - delivered
    return delivered, missing, (last_ns - started_ns) / 1e9, order


def webhooks(bench: "Bench") -> ScenarioResult:
    mode = bench.mode
    result = ScenarioResult(
        "webhooks",
        "webhook deliveries: 64 streams, 2 workers vs a requests.Session.post loop; slow receivers, 1 worker",
    )
    per_stream = mode.webhook_events_per_stream
    total = STREAMS * per_stream
    topic = bench.new_topic("hooks")
    receiving = Child(receiver)
    try:
        url = receiving.receive("ready", 60)
        api = requests.Session()
        api.headers["authorization"] = f"Bearer {bench.token}"
        reply = api.post(
            f"{bench.stack.base_url}/api/v1/webhooks",
            json={"name": "bench", "url": url, "topic": topic, "active": False},
            timeout=30,
        )
        if reply.status_code != 201:
            raise RuntimeError(f"creating the destination answered {reply.status_code}: {reply.text}")
        destination_id = reply.json()["id"]

        delivered, missing, product_seconds, product_order = _deliver_backlog(
            bench, api, receiving, destination_id, topic, per_stream
        )
        product_rate = delivered / product_seconds if product_seconds > 0 else 0.0
        api.post(f"{bench.stack.base_url}/api/v1/webhooks/{destination_id}/pause", timeout=30)

        # The baseline: the same number of posts, one requests.Session, one loop.
        loop = Child(requests_loop, url, canonical_bodies(topic, per_stream))
        try:
            loop.receive("ready", 60)
            bench.settle_database()
            receiving.send("reset")  # after the loop's warm-up post
            receiving.receive("reset", 30)
            loop.send("go")
            timing = loop.receive("result", 600)
        finally:
            loop.join()
        receiving.send("wait", (total, 30))
        baseline_records = receiving.receive("records", 90)
        baseline_order = order_check(baseline_records)
        baseline_seconds = (timing["ended_ns"] - timing["started_ns"]) / 1e9
        baseline_rate = timing["posts"] / baseline_seconds
        # ONE worker from here on: what many deliveries in flight per worker buy.
        for n in range(2, bench.stack.workers + 1):
            bench.stack.stop_worker(n)
        try:
            receiving.send("latency", SLOW_RECEIVER_S)
            receiving.receive("latency", 30)
            slow_topic = bench.new_topic("hooks_slow")
            slow_id = _paused_destination(bench, api, "bench-slow", url, slow_topic)
            slow_delivered, slow_missing, slow_seconds, slow_order = _deliver_backlog(
                bench,
                api,
                receiving,
                slow_id,
                slow_topic,
                mode.webhook_slow_events_per_stream,
                latency_s=SLOW_RECEIVER_S,
            )
            receiving.send("latency", WIDE_RECEIVER_S)
            receiving.receive("latency", 30)
            wide_topic = bench.new_topic("hooks_wide")
            wide_id = _paused_destination(bench, api, "bench-wide", url, wide_topic)
            with ConnectionSampler(bench, "bench-worker1") as connections:
                wide_delivered, wide_missing, wide_seconds, wide_order = _deliver_backlog(
                    bench,
                    api,
                    receiving,
                    wide_id,
                    wide_topic,
                    mode.webhook_wide_events_per_stream,
                    streams=mode.webhook_wide_streams,
                    latency_s=WIDE_RECEIVER_S,
                )
        finally:
            for n in range(2, bench.stack.workers + 1):
                bench.stack.start_worker(n)
        slow_rate = slow_delivered / slow_seconds if slow_seconds > 0 else 0.0
        wide_rate = wide_delivered / wide_seconds if wide_seconds > 0 else 0.0
    finally:
        receiving.send("stop")
        receiving.join()
    bench.stack.check_alive()
    result.details = {
        "streams": STREAMS,
        "events_per_stream": per_stream,
        "deliveries_expected": total,
        "product": {
            "delivered": delivered,
            "missing": missing,
            "seconds": product_seconds,
            "deliveries_per_s": product_rate,
            **product_order,
        },
        "baseline": {
            "posts": timing["posts"],
            "seconds": baseline_seconds,
            "deliveries_per_s": baseline_rate,
            **baseline_order,
        },
        "workers": bench.stack.workers,
        "slow_receiver": {
            "workers": 1,
            "latency_s": SLOW_RECEIVER_S,
            "events_per_stream": mode.webhook_slow_events_per_stream,
            "delivered": slow_delivered,
            "missing": slow_missing,
            "seconds": slow_seconds,
            "deliveries_per_s": slow_rate,
            **slow_order,
        },
        "wide_receiver": {
            "workers": 1,
            "latency_s": WIDE_RECEIVER_S,
            "streams": mode.webhook_wide_streams,
            "events_per_stream": mode.webhook_wide_events_per_stream,
            "delivered": wide_delivered,
            "missing": wide_missing,
            "seconds": wide_seconds,
            "deliveries_per_s": wide_rate,
            "worker_connections_max": connections.most,
            "worker_connections_samples": connections.samples,
            **wide_order,
        },
    }
    wide_ideal = min(mode.webhook_wide_streams, WORKER_CONCURRENCY) / WIDE_RECEIVER_S
    result.figures = [
        Figure(
            "webhooks",
            f"Webhook deliveries, {STREAMS} streams, {bench.stack.workers} workers",
            "deliveries/s",
            product_rate,
            "requests.Session.post loop, same receiver",
            baseline_rate,
            "higher",
            ">= 1.0 x baseline, order kept",
            product_rate >= baseline_rate and missing == 0 and product_order["out_of_order"] == 0,
            notes=f"{delivered:,} of {total:,} delivered in {product_seconds:.1f} s (clock starts at resume)",
        ),
        Figure(
            "webhooks",
            "Webhook deliveries out of order (per stream)",
            "events",
            product_order["out_of_order"],
            "",
            None,
            "lower",
            "order kept per stream",
            product_order["out_of_order"] == 0,
            baseline_measured=False,
            notes=f"duplicates {product_order['duplicates']}, streams seen {product_order['streams_seen']}",
        ),
        Figure(
            "webhooks_slow",
            f"Webhook deliveries, receiver answering in {SLOW_RECEIVER_S * 1000:.0f} ms, {STREAMS} streams, 1 worker",
            "deliveries/s",
            slow_rate,
            f"one request in flight per stream ({STREAMS} / {SLOW_RECEIVER_S:g} s)",
            STREAMS / SLOW_RECEIVER_S,
            "higher",
            ">= 0.8 x, order kept",
            slow_rate >= 0.8 * STREAMS / SLOW_RECEIVER_S and slow_missing == 0 and slow_order["out_of_order"] == 0,
            baseline_measured=False,
            notes=(
                f"{slow_delivered:,} of {STREAMS * mode.webhook_slow_events_per_stream:,} delivered in "
                f"{slow_seconds:.1f} s; out of order {slow_order['out_of_order']}, duplicates {slow_order['duplicates']}; "
                f"{_timing_note(slow_order['timing'])}"
            ),
        ),
        Figure(
            "webhooks_wide",
            f"Webhook deliveries, receiver answering in {WIDE_RECEIVER_S:g} s, {mode.webhook_wide_streams:,} streams, "
            "1 worker",
            "deliveries/s",
            wide_rate,
            f"min({mode.webhook_wide_streams:,} streams, concurrency {WORKER_CONCURRENCY}) / {WIDE_RECEIVER_S:g} s",
            wide_ideal,
            "higher",
            ">= 0.8 x, order kept, <= 10 PostgreSQL connections for the worker",
            wide_rate >= 0.8 * wide_ideal
            and wide_missing == 0
            and wide_order["out_of_order"] == 0
            and connections.most <= 10,
            baseline_measured=False,
            notes=(
                f"{wide_delivered:,} of {mode.webhook_wide_streams * mode.webhook_wide_events_per_stream:,} delivered "
                f"in {wide_seconds:.1f} s; out of order {wide_order['out_of_order']}, duplicates "
                f"{wide_order['duplicates']}; the worker's PostgreSQL connections at most {connections.most} "
                f"({connections.samples} samples of pg_stat_activity); {_timing_note(wide_order['timing'])}"
            ),
        ),
    ]
    return result
