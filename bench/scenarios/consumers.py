"""Durable consumer: Fetch(100) + Ack of each batch, 4 workers, over a topic of stored events, beside NATS JetStream's
durable pull consumer doing the same (fetch(100), ack each message) on the same box in the same run.

Each side's events are stored before anything is timed. Every worker is a process of its own; the clock runs from
the moment all are told to go until the last one finds nothing left. Each worker reports the offsets (sequences)
it was handed, so the result also says how many events were lost and how many were handed out twice: with a
30 s lease and a run shorter than that, a second handout would be a lease given to two workers at once.
"""

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

from bench.children import Child, ready_then_wait, run_in_step
from bench.common import GRPC_OPTIONS, Figure, ScenarioResult, event_data, metadata, percentiles, progress
from bench.nats_peer import ABSENT_NOTE, NATS_STORE_NOTE
from bench.scenarios.pull import fill_topic

if TYPE_CHECKING:
    from bench.run import Bench

WORKERS = 4
BATCH = 100


def grpc_worker(pipe: Any, address: str, token: str, topic: str, consumer: str, acking_fetch: bool) -> dict[str, Any]:
    """Fetch(100) and Ack each batch; with ``acking_fetch``, each Fetch carries the previous batch's ackIds
    instead (FetchRequest.ack_ids), and only the last batch is acked by an Ack."""
    import grpc

    from eventrelay.v1 import eventrelay_pb2 as pb
    from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc

    async def main() -> dict[str, Any]:
        async with grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) as channel:
            stub = pb_grpc.ConsumersStub(channel)
            auth = metadata(token)
            await asyncio.wait_for(channel.channel_ready(), 30)
            ready_then_wait(pipe)
            offsets: list[int] = []
            fetch_ms: list[float] = []
            ack_ms: list[float] = []

            async def ack(ack_ids: list[str]) -> None:
                sent = time.perf_counter()
                await stub.Ack(
                    pb.AckRequest(topic=topic, consumer=consumer, ack_ids=ack_ids), metadata=auth, timeout=60
                )
                ack_ms.append((time.perf_counter() - sent) * 1000)

            # A batch's Ack goes out while the next Fetch runs, and its answer is awaited (an error would end the
            # run) before the next batch's Ack: one ack in flight per worker. nats-py's ack() does not wait for
            # the server at all.
            acking: asyncio.Task[None] | None = None
            previous: list[str] = []
            started = time.perf_counter()
            while True:
                before = time.perf_counter()
                reply = await stub.Fetch(
                    pb.FetchRequest(topic=topic, consumer=consumer, max_events=BATCH, ack_ids=previous),
                    metadata=auth,
                    timeout=60,
                )
                fetch_ms.append((time.perf_counter() - before) * 1000)
                if acking_fetch:
                    if not reply.deliveries:
                        previous = []  # (this fetch acked the last batch)
                        break
                    offsets.extend(delivery.event.offset for delivery in reply.deliveries)
                    previous = [d.ack_id for d in reply.deliveries]
                    continue
                if acking is not None:
                    await acking
                    acking = None
                if not reply.deliveries:
                    break
                offsets.extend(delivery.event.offset for delivery in reply.deliveries)
                acking = asyncio.create_task(ack([d.ack_id for d in reply.deliveries]))
            if previous:
                await ack(previous)
            return {
                "seconds": time.perf_counter() - started,
                "offsets": offsets,
                "fetch_ms": fetch_ms,
                "ack_ms": ack_ms,
            }

    return asyncio.run(main())


def nats_worker(pipe: Any, url: str, stream: str, subject: str, durable: str) -> dict[str, Any]:
    import nats
    from nats.errors import TimeoutError as NatsTimeout

    async def main() -> dict[str, Any]:
        connection = await nats.connect(url)
        try:
            subscription = await connection.jetstream().pull_subscribe(subject, durable=durable, stream=stream)
            ready_then_wait(pipe)
            offsets: list[int] = []
            fetch_ms: list[float] = []
            ack_ms: list[float] = []
            started = time.perf_counter()
            while True:
                before = time.perf_counter()
                try:
                    messages = await subscription.fetch(BATCH, timeout=1)
                except (NatsTimeout, TimeoutError):  # (nats-py raises either when nothing is left)
                    break
                fetched = time.perf_counter()
                fetch_ms.append((fetched - before) * 1000)
                for message in messages:
                    offsets.append(message.metadata.sequence.stream)
                    await message.ack()
                ack_ms.append((time.perf_counter() - fetched) * 1000)
            await connection.flush()
            # The last fetch waited for its timeout to learn that nothing was left; that second is not work.
            return {"seconds": before - started, "offsets": offsets, "fetch_ms": fetch_ms, "ack_ms": ack_ms}
        finally:
            await connection.close()

    return asyncio.run(main())


def _summary(results: list[dict[str, Any]], total: int) -> dict[str, Any]:
    handed = [offset for result in results for offset in result["offsets"]]
    seconds = max(result["seconds"] for result in results)
    return {
        "events": len(set(handed)),
        "seconds": seconds,
        "events_per_s": len(set(handed)) / seconds if seconds else None,
        "lost": total - len(set(handed)),
        "handed_out_twice": len(handed) - len(set(handed)),
        "fetch_ms": percentiles([ms for result in results for ms in result["fetch_ms"]]),
        "ack_ms": percentiles([ms for result in results for ms in result["ack_ms"]]),
    }


def _met(summary: dict[str, Any], peer: dict[str, Any] | None) -> bool | None:
    """The target of both rows: at least NATS's rate, nothing lost, nothing handed out twice (None without NATS)."""
    if peer is None:
        return None
    return bool(
        summary["events_per_s"] >= peer["events_per_s"] and not summary["lost"] and not summary["handed_out_twice"]
    )


def _fill_nats(url: str, stream: str, subject: str, total: int) -> None:
    import nats

    async def main() -> None:
        connection = await nats.connect(url)
        try:
            js = connection.jetstream()
            await js.add_stream(name=stream, subjects=[subject])
            for start in range(0, total, 500):
                acks = [
                    await js.publish_async(subject, event_data(seq).encode())
                    for seq in range(start, min(total, start + 500))
                ]
                await asyncio.gather(*acks)
            await js.add_consumer(stream, durable_name=stream.lower(), ack_policy="explicit", ack_wait=30)
        finally:
            await connection.close()

    asyncio.run(main())


def _delete_nats_stream(url: str, stream: str) -> None:
    import nats

    async def main() -> None:
        connection = await nats.connect(url)
        try:
            await connection.jetstream().delete_stream(stream)
        finally:
            await connection.close()

    asyncio.run(main())


def consumers(bench: "Bench") -> ScenarioResult:
    from eventrelay.v1 import eventrelay_pb2 as pb
    from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc

    mode = bench.mode
    total = mode.pull_rows
    result = ScenarioResult("consumers", "Consumer Fetch(100) + Ack, 4 workers vs NATS JetStream durable pull consumer")
    topic = bench.new_topic("consumers")
    progress(f"filling topic {topic} with {total:,} events")
    fill_topic(bench, topic, total)
    bench.check_stored(topic, total)
    stub = pb_grpc.ConsumersStub(bench.grpc_channel())
    timeout = 600

    def run_ours(consumer: str, acking_fetch: bool) -> dict[str, Any]:
        stub.CreateConsumer(pb.CreateConsumerRequest(topic=topic, consumer=consumer), metadata=metadata(bench.token))
        bench.settle_database()
        return _summary(
            run_in_step(
                [
                    Child(
                        *(grpc_worker, bench.stack.grpc_address, bench.token, topic, consumer, acking_fetch),
                        label=f"consumer worker {n}",
                    )
                    for n in range(WORKERS)
                ],
                ready_timeout=60,
                result_timeout=timeout,
            ),
            total,
        )

    ours = run_ours("bench", acking_fetch=False)
    acking = run_ours("bench-acking", acking_fetch=True)
    peer: dict[str, Any] | None = None
    note = ""
    url = bench.nats_url
    if url is not None:
        stream = f"BENCH_{uuid.uuid4().hex[:8].upper()}"
        subject = f"bench.{stream.lower()}"
        progress(f"filling NATS JetStream stream {stream} with {total:,} messages")
        _fill_nats(url, stream, subject, total)
        bench.settle_database()  # the fill's own writes (and ours) are not the peer's measurement
        try:
            peer = _summary(
                run_in_step(
                    [
                        Child(nats_worker, url, stream, subject, stream.lower(), label=f"NATS pull worker {n}")
                        for n in range(WORKERS)
                    ],
                    ready_timeout=60,
                    result_timeout=timeout,
                ),
                total,
            )
        finally:
            _delete_nats_stream(url, stream)
        note = (
            f"NATS: {NATS_STORE_NOTE}; NATS fetch p50 {peer['fetch_ms']['p50']:.1f} ms, "
            f"ack-all p50 {peer['ack_ms']['p50']:.1f} ms, lost {peer['lost']}, handed out twice "
            f"{peer['handed_out_twice']}; "
        )
    else:
        note = f"{ABSENT_NOTE}; "
    result.details = {
        "events": total,
        "workers": WORKERS,
        "batch": BATCH,
        "product": ours,
        "product_acking_fetch": acking,
        "peer": peer,
    }
    result.figures.append(
        Figure(
            "consumers",
            "Consumer Fetch(100) + Ack, 4 workers",
            "events/s",
            ours["events_per_s"],
            "",
            None,
            "higher",
            ">= 1.0 x NATS, 0 lost, 0 handed out twice",
            _met(ours, peer),
            baseline_measured=False,
            notes=note + f"ours: {total:,} events, lost {ours['lost']}, handed out twice {ours['handed_out_twice']}; "
            f"Fetch p50 {ours['fetch_ms']['p50']:.1f} ms p99 {ours['fetch_ms']['p99']:.1f} ms, "
            f"Ack p50 {ours['ack_ms']['p50']:.1f} ms p99 {ours['ack_ms']['p99']:.1f} ms",
            peer_name="NATS JetStream durable pull consumer, fetch(100) + ack each, 4 workers",
            peer_value=None if peer is None else peer["events_per_s"],
        )
    )
    result.figures.append(
        Figure(
            "consumers_acking_fetch",
            "Consumer Fetch(100) acking the previous batch, 4 workers",
            "events/s",
            acking["events_per_s"],
            "",
            None,
            "higher",
            ">= 1.0 x NATS, 0 lost, 0 handed out twice",
            _met(acking, peer),
            baseline_measured=False,
            notes=note + f"ours: each Fetch carries the previous batch's ackIds (FetchRequest.ack_ids, one call per "
            f"batch, as NATS's AckNext); {total:,} events, lost {acking['lost']}, handed out twice "
            f"{acking['handed_out_twice']}; Fetch p50 {acking['fetch_ms']['p50']:.1f} ms "
            f"p99 {acking['fetch_ms']['p99']:.1f} ms",
            peer_name="NATS JetStream durable pull consumer, fetch(100) + ack each, 4 workers",
            peer_value=None if peer is None else peer["events_per_s"],
        )
    )
    return result
