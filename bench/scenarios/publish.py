"""Scenarios 1 and 2: publish throughput, each beside PostgreSQL doing the bare minimum.

1. gRPC PublishEvents in batches (500 in the table; 100, 500 and 1,000 for the growth curve) against
   psycopg COPY of the same rows, one transaction per batch, into an identical table
   (``CREATE TABLE ... (LIKE <topic>_events INCLUDING ALL)``: same columns, defaults and indexes).
2. gRPC PublishEvents with one event per call from 32 concurrent callers on one topic against 32
   psycopg connections each doing one INSERT + COMMIT per event into an identical table.

Both sides run in a load-generator process of their own with the same concurrency, the same warm-up
and the same measured duration, and every event carries a fresh eventId (publishing is idempotent on
it, so reused ids would store nothing).
"""

import asyncio
import itertools
import os
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bench.children import Child, ready_then_wait, run_in_step
from bench.common import (
    COLUMNS,
    EVENT_NAME,
    GRPC_OPTIONS,
    Figure,
    ScenarioResult,
    event_data,
    metadata,
    timed_loop,
    user_id,
)

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
            result.figures.append(
                Figure(
                    "publish_batch",
                    f"gRPC PublishEvents, batches of {batch}",
                    "events/s",
                    product["events_per_s"],
                    f"psycopg COPY, batches of {batch}",
                    baseline["events_per_s"],
                    "higher",
                    ">= 0.5 x baseline",
                    product["events_per_s"] >= 0.5 * baseline["events_per_s"],
                    notes=(
                        f"1 caller each; publish call p50 {product['call_ms']['p50']:.1f} ms, "
                        f"p99 {product['call_ms']['p99']:.1f} ms; {cpu_note(product)}"
                    ),
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
            # The empty call's own CPU, scaled to the baseline's rate: on a small machine the target
            # can be out of reach before any publishing work is done.
            needed = cores_at_rate(ceiling, baseline["events_per_s"])
            result.details["empty_grpc_calls"]["cores_needed_at_baseline_rate"] = needed
            result.figures.append(
                Figure(
                    "publish_single",
                    f"gRPC PublishEvents, 1 event/call, {callers} callers, 1 topic",
                    "events/s",
                    product["events_per_s"],
                    f"psycopg, {callers} connections, INSERT+COMMIT per event",
                    baseline["events_per_s"],
                    "higher",
                    ">= 1.0 x baseline",
                    product["events_per_s"] >= baseline["events_per_s"],
                    notes=(
                        f"publish call p50 {product['call_ms']['p50']:.1f} ms, p99 {product['call_ms']['p99']:.1f} ms; "
                        f"{cpu_note(product)}; an empty gRPC call (health Check) from as many callers: "
                        f"{ceiling['events_per_s']:,.0f}/s, {ceiling['events_per_s'] / baseline['events_per_s']:.2f}x "
                        f"the baseline ({cpu_note(ceiling)}); {budget_note(needed, baseline['events_per_s'])}"
                    ),
                )
            )
    if len(points) > 1:
        result.growth = {
            "title": "Single-event publish by concurrent callers",
            "x_label": "concurrent callers",
            "unit": "events/s",
            "points": points,
        }
    return result
