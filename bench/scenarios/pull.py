"""Scenario 3: gRPC PullEvents in batches of 1,000 against psycopg SELECT of the same rows.

The topic is filled through the product (gRPC PublishEvents, batches of 1,000) before anything is
timed. Both sides then page through the same rows of the same table, 1,000 per call, from offset 1
to the end and round again, for the same duration. The baseline sends the statement a careful client
would (a primary-key range scan, JSON columns read as text, every row fetched and turned into Python
values); the product adds authentication, serialization to protobuf and the network hop.
"""

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from bench.children import Child, ready_then_wait
from bench.common import (
    COLUMNS,
    EVENT_NAME,
    GRPC_OPTIONS,
    Figure,
    ScenarioResult,
    event_data,
    metadata,
    progress,
    timed_loop,
    user_id,
)
from bench.scenarios.publish import measure

if TYPE_CHECKING:
    from bench.run import Bench

BATCH = 1000


def grpc_pull(
    pipe: Any, address: str, token: str, topic: str, rows: int, warmup: float, duration: float
) -> dict[str, Any]:
    import grpc

    from eventrelay.v1 import eventrelay_pb2 as pb
    from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc

    async def main() -> dict[str, Any]:
        async with grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) as channel:
            stub = pb_grpc.EventsStub(channel)
            auth = metadata(token)
            offset = 1

            async def op(worker: int) -> int:
                nonlocal offset
                reply = await stub.PullEvents(
                    pb.PullEventsRequest(topic=topic, offset=offset, batch_size=BATCH), metadata=auth, timeout=60
                )
                offset = reply.next_offset if reply.next_offset <= rows else 1
                return len(reply.events)

            await asyncio.wait_for(channel.channel_ready(), 30)
            ready_then_wait(pipe)
            return await timed_loop(op, 1, warmup, duration)

    return asyncio.run(main())


def psycopg_select(
    pipe: Any, database_url: str, table: str, rows: int, warmup: float, duration: float
) -> dict[str, Any]:
    import psycopg

    columns = COLUMNS.replace("context, data", "context::text, data::text")
    sql = f'SELECT {columns} FROM {table} WHERE "offset" > %s ORDER BY "offset" LIMIT %s'

    async def main() -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as connection:
            after = 0

            async def op(worker: int) -> int:
                nonlocal after
                cursor = await connection.execute(sql, (after, BATCH))
                fetched = await cursor.fetchall()
                after = fetched[-1][0] if fetched and fetched[-1][0] < rows else 0
                return len(fetched)

            ready_then_wait(pipe)
            return await timed_loop(op, 1, warmup, duration)

    return asyncio.run(main())


def fill_topic(bench: "Bench", topic: str, rows: int) -> None:
    """Publish ``rows`` events through the product, 1,000 per call (not timed)."""
    from eventrelay.v1 import eventrelay_pb2 as pb

    stub = bench.grpc_events()
    for start in range(0, rows, BATCH):
        events = [
            pb.NewEvent(event_id=str(uuid.uuid4()), name=EVENT_NAME, user_id=user_id(seq), data=event_data(seq))
            for seq in range(start, min(rows, start + BATCH))
        ]
        stub.PublishEvents(
            pb.PublishEventsRequest(topic=topic, events=events), metadata=metadata(bench.token), timeout=120
        )


def pull(bench: "Bench") -> ScenarioResult:
    mode = bench.mode
    result = ScenarioResult("pull", "gRPC PullEvents, batch 1,000 vs psycopg SELECT")
    topic = bench.new_topic("pull")
    progress(f"filling topic {topic} with {mode.pull_rows:,} events")
    fill_topic(bench, topic, mode.pull_rows)
    bench.check_stored(topic, mode.pull_rows)
    timeout = mode.warmup + mode.duration + 120
    product = measure(
        bench,
        Child(
            *(grpc_pull, bench.stack.grpc_address, bench.token, topic, mode.pull_rows, mode.warmup, mode.duration),
            label="gRPC PullEvents, batch 1,000",
        ),
        timeout,
    )
    baseline = measure(
        bench,
        Child(
            *(
                psycopg_select,
                bench.stack.database_url,
                f'"{topic}_events"',
                mode.pull_rows,
                mode.warmup,
                mode.duration,
            ),
            label="psycopg SELECT, 1,000 rows per query",
        ),
        timeout,
    )
    result.details = {"rows_in_topic": mode.pull_rows, "product": product, "baseline": baseline}
    result.figures.append(
        Figure(
            "pull",
            "gRPC PullEvents, batch 1,000",
            "events/s",
            product["events_per_s"],
            "psycopg SELECT of the same rows, 1,000 per query",
            baseline["events_per_s"],
            "higher",
            ">= 0.5 x baseline",
            product["events_per_s"] >= 0.5 * baseline["events_per_s"],
            notes=f"{mode.pull_rows:,} rows; pull call p50 {product['call_ms']['p50']:.1f} ms, p99 {product['call_ms']['p99']:.1f} ms",
        )
    )
    return result
