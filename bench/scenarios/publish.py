"""Scenarios 1 and 2: publish throughput, each beside PostgreSQL doing the bare minimum.

1. gRPC PublishEvents in batches (500 in the table; 100, 500 and 1,000 for the growth curve) against
   psycopg COPY of the same rows, one transaction per batch, into an identical table
   (``CREATE TABLE ... (LIKE <topic>_events INCLUDING ALL)``: same columns, defaults and indexes).
2. gRPC PublishEvents with one event per call from 32 concurrent callers on one topic against 32
   psycopg connections each doing one INSERT + COMMIT per event into an identical table.

Both sides run in a load-generator process of their own with the same concurrency, the same warm-up
and the same measured duration, and every event carries a fresh eventId (publishing is idempotent on
it, so reused ids would store nothing).

The single-event row's target is against an empty unary gRPC call (the health Check) from as many
callers: the ceiling of a unary call through this gRPC server on this machine; INSERT+COMMIT is reported
beside it. Beside it, with the same baselines and peer: gRPC PublishStream with one event per request from
as many producers, each on a stream of its own, each keeping up to ``STREAM_IN_FLIGHT`` requests
unacknowledged (a pipelining producer, as Kafka's and NATS's asynchronous publishers are).

Each row also has its peer, NATS JetStream on the bench's own nats-server (bench/nats_peer.py), when
it is on PATH: the same ~250-byte payloads to a stream of its own, each message with a fresh
``Nats-Msg-Id`` (JetStream's duplicate detection, the counterpart of our eventId), acknowledged by the
server before it counts: 500 publishes in flight for the batch row, one ``js.publish`` awaited at a time
per producer for the single row.
"""

import asyncio
import itertools
import os
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bench.children import Child, ready_then_wait, run_in_step
from bench.common import (
    COLUMNS,
    EVENT_NAME,
    GRPC_OPTIONS,
    Figure,
    ScenarioResult,
    cores_used,
    cpu_seconds,
    event_data,
    machine_cpu_seconds,
    metadata,
    percentiles,
    timed_loop,
    user_id,
)
from bench.nats_peer import ABSENT_NOTE, NATS_STORE_NOTE

if TYPE_CHECKING:
    from bench.run import Bench


# --- load generators (run in child processes) -------------------------------------------------------


def grpc_publish(
    pipe: Any,
    address: str,
    server_pid: int,
    token: str,
    topic: str,
    batch: int,
    concurrency: int,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    import grpc

    from eventrelay.v1 import eventrelay_pb2 as pb
    from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc

    payloads = [(event_data(seq), user_id(seq)) for seq in range(batch)]

    async def main() -> dict[str, Any]:
        async with grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) as channel:
            stub = pb_grpc.EventsStub(channel)
            auth = metadata(token)

            async def op(worker: int) -> int:
                events = [
                    pb.NewEvent(event_id=str(uuid.uuid4()), name=EVENT_NAME, user_id=uid, data=data)
                    for data, uid in payloads
                ]
                reply = await stub.PublishEvents(
                    pb.PublishEventsRequest(topic=topic, events=events), metadata=auth, timeout=120
                )
                return len(reply.events)

            await asyncio.wait_for(channel.channel_ready(), 30)
            ready_then_wait(pipe)
            return await timed_loop(op, concurrency, warmup, duration, watch={"grpc server": server_pid})

    return asyncio.run(main())


# Requests each PublishStream producer keeps unacknowledged (the server's default window,
# ER_GRPC_PUBLISH_STREAM_MAX_IN_FLIGHT, is 100).
STREAM_IN_FLIGHT = 64


def grpc_publish_stream(
    pipe: Any,
    address: str,
    server_pid: int,
    token: str,
    topic: str,
    producers: int,
    in_flight: int,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    """``producers`` PublishStream streams on one channel, each sending one-event requests while fewer than
    ``in_flight`` are unacknowledged. Counted: the acks that arrive during the ``duration`` after ``warmup``;
    the latency of each is from its request's write to its ack. Returns what ``timed_loop`` returns."""
    import grpc

    from eventrelay.v1 import eventrelay_pb2 as pb
    from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc

    data, uid = event_data(0), user_id(0)

    async def main() -> dict[str, Any]:
        async with grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) as channel:
            stub = pb_grpc.EventsStub(channel)
            auth = metadata(token)
            await asyncio.wait_for(channel.channel_ready(), 30)
            ready_then_wait(pipe)
            start = time.perf_counter()
            counted_from, counted_until = start + warmup, start + warmup + duration
            counted = 0
            last_counted = counted_from
            latencies: list[float] = []

            async def producer() -> None:
                nonlocal counted, last_counted
                call = stub.PublishStream(metadata=auth, timeout=warmup + duration + 120)
                window = asyncio.Semaphore(in_flight)
                written_at: deque[float] = deque()

                async def send() -> None:
                    request_id = 0
                    while time.perf_counter() < counted_until:
                        await window.acquire()
                        event = pb.NewEvent(event_id=str(uuid.uuid4()), name=EVENT_NAME, user_id=uid, data=data)
                        written_at.append(time.perf_counter())
                        await call.write(pb.PublishStreamRequest(request_id=request_id, topic=topic, events=[event]))
                        request_id += 1
                    await call.done_writing()

                async def receive() -> None:
                    nonlocal counted, last_counted
                    while True:
                        ack = await call.read()
                        if ack is grpc.aio.EOF:
                            return
                        if ack.HasField("error"):
                            raise RuntimeError(f"request {ack.request_id} refused: {ack.error.message}")
                        now = time.perf_counter()
                        written = written_at.popleft()
                        window.release()
                        if counted_from <= now < counted_until:
                            counted += len(ack.offsets)
                            last_counted = now
                            latencies.append((now - written) * 1000)

                await asyncio.gather(send(), receive())

            async def sample_cpu() -> dict[str, Any]:
                pids: dict[str, int | None] = {"load generator": None, "grpc server": server_pid}
                await asyncio.sleep(max(0.0, counted_from - time.perf_counter()))
                cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                machine_before = machine_cpu_seconds()
                began = time.perf_counter()
                await asyncio.sleep(max(0.0, counted_until - time.perf_counter()))
                wall = time.perf_counter() - began
                return {
                    "cpu_cores": cores_used(cpu_before, {name: cpu_seconds(pid) for name, pid in pids.items()}, wall),
                    "machine_cores": cores_used(machine_before, machine_cpu_seconds(), wall),
                }

            cpu, *_ = await asyncio.gather(sample_cpu(), *(producer() for _ in range(producers)))
            elapsed = last_counted - counted_from
            return {
                "events": counted,
                "seconds": elapsed,
                "events_per_s": counted / elapsed if elapsed > 0 else 0.0,
                "calls": len(latencies),
                "call_ms": percentiles(latencies),
                **cpu,
                "in_flight_per_stream": in_flight,
            }

    return asyncio.run(main())


def grpc_empty_calls(
    pipe: Any, address: str, server_pid: int, concurrency: int, warmup: float, duration: float
) -> dict[str, Any]:
    """The gRPC framework's own ceiling: the standard health Check (no database, no auth, an empty
    reply), served by the same grpcserver process, from the same number of concurrent callers."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async def main() -> dict[str, Any]:
        async with grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def op(worker: int) -> int:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=60)
                return 1

            await asyncio.wait_for(channel.channel_ready(), 30)
            ready_then_wait(pipe)
            return await timed_loop(op, concurrency, warmup, duration, watch={"grpc server": server_pid})

    return asyncio.run(main())


def psycopg_copy(
    pipe: Any, database_url: str, table: str, batch: int, concurrency: int, warmup: float, duration: float
) -> dict[str, Any]:
    import psycopg

    payloads = [(event_data(seq), user_id(seq)) for seq in range(batch)]
    offsets = itertools.count(1)
    copy_sql = f"COPY {table} ({COLUMNS}) FROM STDIN"

    async def main() -> dict[str, Any]:
        connections = [await psycopg.AsyncConnection.connect(database_url) for _ in range(concurrency)]

        async def op(worker: int) -> int:
            connection = connections[worker]
            now = datetime.now(UTC)
            async with connection.transaction(), connection.cursor() as cursor, cursor.copy(copy_sql) as copy:
                for data, uid in payloads:
                    await copy.write_row((next(offsets), uuid.uuid4(), EVENT_NAME, "", "grpc", uid, now, "{}", data))
            return len(payloads)

        try:
            ready_then_wait(pipe)
            return await timed_loop(op, concurrency, warmup, duration)
        finally:
            for connection in connections:
                await connection.close()

    return asyncio.run(main())


def psycopg_insert(
    pipe: Any, database_url: str, table: str, concurrency: int, warmup: float, duration: float
) -> dict[str, Any]:
    import psycopg

    offsets = itertools.count(1)
    insert_sql = f"INSERT INTO {table} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    data = event_data(0)

    async def main() -> dict[str, Any]:
        connections = [await psycopg.AsyncConnection.connect(database_url, autocommit=True) for _ in range(concurrency)]

        async def op(worker: int) -> int:
            # Autocommit: every INSERT is its own transaction, committed (and flushed to the WAL) alone.
            offset = next(offsets)
            await connections[worker].execute(
                insert_sql,
                (offset, uuid.uuid4(), EVENT_NAME, "", "grpc", user_id(offset), datetime.now(UTC), "{}", data),
            )
            return 1

        try:
            ready_then_wait(pipe)
            return await timed_loop(op, concurrency, warmup, duration)
        finally:
            for connection in connections:
                await connection.close()

    return asyncio.run(main())


def nats_publish(
    pipe: Any,
    url: str,
    server_pid: int,
    in_flight: int,
    producers: int,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    """The peer: NATS JetStream publishes acknowledged by the server, into a stream of their own (made before
    ``ready``, deleted after the measurement). ``in_flight`` 1: each producer awaits ``js.publish`` (the
    publish-with-ack a single-event producer does); more: ``publish_async`` of ``in_flight`` messages, then
    every ack of that window is awaited before the next window (the batch's counterpart)."""
    import nats

    stream = f"BENCH_PUB_{uuid.uuid4().hex[:8].upper()}"
    subject = f"bench.{stream.lower()}"
    payloads = [event_data(seq).encode() for seq in range(in_flight)]

    async def main() -> dict[str, Any]:
        connection = await nats.connect(url, allow_reconnect=False)
        try:
            js = connection.jetstream(publish_async_max_pending=max(in_flight, 1))
            await js.add_stream(name=stream, subjects=[subject])

            async def publish_one(worker: int) -> int:
                await js.publish(subject, payloads[0], headers={"Nats-Msg-Id": str(uuid.uuid4())})
                return 1

            async def publish_window(worker: int) -> int:
                acks = [
                    await js.publish_async(subject, payload, headers={"Nats-Msg-Id": str(uuid.uuid4())})
                    for payload in payloads
                ]
                await asyncio.gather(*acks)
                return len(acks)

            ready_then_wait(pipe)
            measured = await timed_loop(
                publish_one if in_flight == 1 else publish_window,
                producers,
                warmup,
                duration,
                watch={"nats server": server_pid},
            )
            info = await js.stream_info(stream)
            measured["stream_messages"] = info.state.messages
            await js.delete_stream(stream)
            return measured
        finally:
            await connection.close()

    return asyncio.run(main())


# --- scenarios (run in the orchestrator) ------------------------------------------------------------


def cpu_note(result: dict[str, Any]) -> str:
    """``CPU cores: grpc server 0.91, load generator 0.31 (machine busy 1.62, stolen 0.00)``: one
    Python process tops out near 1 core; stolen cores went to other virtual machines."""
    cores = ", ".join(f"{name} {cores:.2f}" for name, cores in sorted(result["cpu_cores"].items()))
    machine = result["machine_cores"]
    return f"CPU cores: {cores} (machine busy {machine['busy']:.2f}, stolen {machine['steal']:.2f})"


def cores_at_rate(measured: dict[str, Any], rate: float) -> dict[str, float]:
    """The cores each watched process would need to run ``measured``'s calls at ``rate`` per second,
    scaled from the CPU it used per call: whether a target is within the machine's reach at all."""
    per_call = {name: cores / measured["events_per_s"] for name, cores in measured["cpu_cores"].items()}
    return {name: round(seconds * rate, 2) for name, seconds in per_call.items()}


def budget_note(needed: dict[str, float], rate: float) -> str:
    """``at 9,031/s it would need grpc server 1.91 + load generator 1.21 = 3.12 of this machine's 2 cores``"""
    parts = " + ".join(f"{name} {cores:.2f}" for name, cores in sorted(needed.items()))
    return (
        f"at {rate:,.0f}/s it would need {parts} = {sum(needed.values()):.2f} of this machine's {os.cpu_count()} cores"
    )


def measure(bench: "Bench", child: Child, timeout: float) -> dict[str, Any]:
    bench.settle_database()
    return run_in_step([child], ready_timeout=60, result_timeout=timeout)[0]


def measure_peer(bench: "Bench", in_flight: int, producers: int, label: str) -> dict[str, Any] | None:
    """The NATS peer's measurement, or None when the bench has no nats-server."""
    if bench.nats is None:
        return None
    mode = bench.mode
    peer = measure(
        bench,
        Child(
            *(nats_publish, bench.nats.url, bench.nats.pid, in_flight, producers, mode.warmup, mode.duration),
            label=label,
        ),
        mode.warmup + mode.duration + 120,
    )
    # What the peer acknowledged, it stored (warm-up publishes included).
    if peer["stream_messages"] < peer["events"]:
        raise RuntimeError(f"NATS stored {peer['stream_messages']} messages, acknowledged {peer['events']}")
    return peer


def peer_note(peer: dict[str, Any] | None) -> str:
    if peer is None:
        return f"{ABSENT_NOTE}; "
    return (
        f"NATS: {NATS_STORE_NOTE}; NATS call p50 {peer['call_ms']['p50']:.1f} ms, p99 {peer['call_ms']['p99']:.1f} ms, "
        f"{cpu_note(peer)}; "
    )


def measure_beside_baseline(
    bench: "Bench", topic: str, product: Child, baseline: Child
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the product's load generator, then its baseline's, and check the product stored its events."""
    timeout = bench.mode.warmup + bench.mode.duration + 120
    product_result = measure(bench, product, timeout)
    baseline_result = measure(bench, baseline, timeout)
    bench.check_stored(topic, product_result["events"], at_least=True)
    return product_result, baseline_result


def publish_batch(bench: "Bench") -> ScenarioResult:
    mode = bench.mode
    result = ScenarioResult("publish_batch", "gRPC PublishEvents in batches vs psycopg COPY")
    points = []
    for batch in mode.publish_batches:
        topic = bench.new_topic(f"pub_b{batch}")
        table = bench.baseline_table(f"copy_b{batch}", topic)
        product, baseline = measure_beside_baseline(
            bench,
            topic,
            Child(
                *(
                    grpc_publish,
                    bench.stack.grpc_address,
                    bench.stack.process("grpc").pid,
                    bench.token,
                    topic,
                    batch,
                    1,
                    mode.warmup,
                    mode.duration,
                ),
                label=f"gRPC PublishEvents, batch {batch}",
            ),
            Child(
                *(psycopg_copy, bench.stack.database_url, table, batch, 1, mode.warmup, mode.duration),
                label=f"psycopg COPY, batch {batch}",
            ),
        )
        points.append({"x": batch, "product": product["events_per_s"], "baseline": baseline["events_per_s"]})
        result.details[f"batch_{batch}"] = {"product": product, "baseline": baseline}
        if batch == mode.publish_batch_main:
            peer = measure_peer(bench, batch, 1, f"NATS JetStream, {batch} publishes in flight")
            result.details[f"batch_{batch}"]["peer"] = peer
            peer_value = None if peer is None else peer["events_per_s"]
            # With no peer, only the COPY half of the target can be judged (the notes say the peer is missing).
            met = product["events_per_s"] >= 0.7 * baseline["events_per_s"] and (
                peer_value is None or product["events_per_s"] > peer_value
            )
            result.figures.append(
                Figure(
                    "publish_batch",
                    f"gRPC PublishEvents, batches of {batch}",
                    "events/s",
                    product["events_per_s"],
                    f"psycopg COPY, batches of {batch}",
                    baseline["events_per_s"],
                    "higher",
                    ">= 0.7 x COPY; ahead of NATS",
                    met,
                    notes=(
                        f"1 caller each; publish call p50 {product['call_ms']['p50']:.1f} ms, "
                        f"p99 {product['call_ms']['p99']:.1f} ms; {cpu_note(product)}; {peer_note(peer)}"
                    ).rstrip("; "),
                    peer_name=f"NATS JetStream, {batch} publishes in flight",
                    peer_value=peer_value,
                )
            )
    result.growth = {
        "title": "Publish throughput by batch size",
        "x_label": "events per PublishEvents call / COPY",
        "unit": "events/s",
        "points": points,
    }
    return result


def publish_single(bench: "Bench") -> ScenarioResult:
    mode = bench.mode
    result = ScenarioResult(
        "publish_single", "gRPC PublishEvents, 1 event per call, concurrent callers vs psycopg INSERT+COMMIT"
    )
    points = []
    for callers in mode.single_callers:
        topic = bench.new_topic(f"pub_c{callers}")
        table = bench.baseline_table(f"insert_c{callers}", topic)
        product, baseline = measure_beside_baseline(
            bench,
            topic,
            Child(
                *(
                    grpc_publish,
                    bench.stack.grpc_address,
                    bench.stack.process("grpc").pid,
                    bench.token,
                    topic,
                    1,
                    callers,
                    mode.warmup,
                    mode.duration,
                ),
                label=f"gRPC PublishEvents, 1 event/call, {callers} callers",
            ),
            Child(
                *(psycopg_insert, bench.stack.database_url, table, callers, mode.warmup, mode.duration),
                label=f"psycopg INSERT+COMMIT, {callers} connections",
            ),
        )
        points.append({"x": callers, "product": product["events_per_s"], "baseline": baseline["events_per_s"]})
        result.details[f"callers_{callers}"] = {"product": product, "baseline": baseline}
        if callers == mode.single_callers_main:
            ceiling = measure(
                bench,
                Child(
                    *(
                        grpc_empty_calls,
                        bench.stack.grpc_address,
                        bench.stack.process("grpc").pid,
                        callers,
                        mode.warmup,
                        mode.duration,
                    ),
                    label=f"gRPC health Check (empty call), {callers} callers",
                ),
                mode.warmup + mode.duration + 120,
            )
            result.details["empty_grpc_calls"] = ceiling
            # The empty call's own CPU, scaled to INSERT+COMMIT's rate: on a small machine that rate
            # can be out of reach before any publishing work is done.
            needed = cores_at_rate(ceiling, baseline["events_per_s"])
            result.details["empty_grpc_calls"]["cores_needed_at_baseline_rate"] = needed
            peer = measure_peer(bench, 1, callers, f"NATS JetStream publish-with-ack, {callers} producers")
            result.details[f"callers_{callers}"]["peer"] = peer
            peer_value = None if peer is None else peer["events_per_s"]
            result.figures.append(
                Figure(
                    "publish_single",
                    f"gRPC PublishEvents, 1 event/call, {callers} callers, 1 topic",
                    "events/s",
                    product["events_per_s"],
                    f"empty gRPC call (health Check), {callers} callers",
                    ceiling["events_per_s"],
                    "higher",
                    ">= 0.6 x the empty call",
                    product["events_per_s"] >= 0.6 * ceiling["events_per_s"],
                    notes=(
                        f"publish call p50 {product['call_ms']['p50']:.1f} ms, p99 {product['call_ms']['p99']:.1f} ms; "
                        f"{cpu_note(product)}; the empty call: {cpu_note(ceiling)}; "
                        f"psycopg INSERT+COMMIT x {callers} connections {baseline['events_per_s']:,.0f}/s "
                        f"({product['events_per_s'] / baseline['events_per_s']:.2f}x, next row; the empty call is "
                        f"{ceiling['events_per_s'] / baseline['events_per_s']:.2f}x it; "
                        f"{budget_note(needed, baseline['events_per_s'])}); {peer_note(peer)}"
                    ).rstrip("; "),
                    peer_name=f"NATS JetStream publish-with-ack, {callers} producers",
                    peer_value=peer_value,
                )
            )
            # The other baseline, reported without a target of its own (SPEC: "report both other ratios").
            result.figures.append(
                Figure(
                    "publish_single",
                    f"gRPC PublishEvents, 1 event/call, {callers} callers: vs INSERT+COMMIT",
                    "events/s",
                    product["events_per_s"],
                    f"psycopg, {callers} connections, INSERT+COMMIT per event",
                    baseline["events_per_s"],
                    "higher",
                    "",
                    None,
                )
            )
            stream_figures(bench, result, callers, ceiling, baseline, peer)
    if len(points) > 1:
        result.growth = {
            "title": "Single-event publish by concurrent callers",
            "x_label": "concurrent callers",
            "unit": "events/s",
            "points": points,
        }
    return result


def stream_figures(
    bench: "Bench",
    result: ScenarioResult,
    producers: int,
    ceiling: dict[str, Any],
    baseline: dict[str, Any],
    peer: dict[str, Any] | None,
) -> None:
    """The PublishStream rows, beside the single-event row's own baselines and peer, measured in the same run."""
    mode = bench.mode
    topic = bench.new_topic(f"pub_stream_c{producers}")
    stream = measure(
        bench,
        Child(
            *(
                grpc_publish_stream,
                bench.stack.grpc_address,
                bench.stack.process("grpc").pid,
                bench.token,
                topic,
                producers,
                STREAM_IN_FLIGHT,
                mode.warmup,
                mode.duration,
            ),
            label=f"gRPC PublishStream, 1 event/request, {producers} streams",
        ),
        mode.warmup + mode.duration + 120,
    )
    bench.check_stored(topic, stream["events"], at_least=True)
    result.details[f"stream_{producers}"] = {"product": stream}
    name = f"PublishStream, 1 event per message, {producers} producers (one stream each)"
    rate = stream["events_per_s"]
    result.figures.append(
        Figure(
            "publish_single",
            name,
            "events/s",
            rate,
            f"empty gRPC call (health Check), {producers} callers",
            ceiling["events_per_s"],
            "higher",
            ">= 0.6 x the empty call",
            rate >= 0.6 * ceiling["events_per_s"],
            notes=(
                f"{STREAM_IN_FLIGHT} requests unacknowledged at most per stream; ack p50 "
                f"{stream['call_ms']['p50']:.1f} ms, p99 {stream['call_ms']['p99']:.1f} ms (from the request's "
                f"write); {cpu_note(stream)}; psycopg INSERT+COMMIT x {producers} connections "
                f"{baseline['events_per_s']:,.0f}/s ({rate / baseline['events_per_s']:.2f}x, next row); "
                f"{peer_note(peer)}"
            ).rstrip("; "),
            peer_name=f"NATS JetStream publish-with-ack, {producers} producers",
            peer_value=None if peer is None else peer["events_per_s"],
        )
    )
    result.figures.append(
        Figure(
            "publish_single",
            f"{name}: vs INSERT+COMMIT",
            "events/s",
            rate,
            f"psycopg, {producers} connections, INSERT+COMMIT per event",
            baseline["events_per_s"],
            "higher",
            "",
            None,
        )
    )
