"""Scenarios 4 and 5: publish → live receive latency, over WebSocket and over gRPC streams.

N subscribers on one topic (spread over two load-generator processes, asyncio in each) subscribe
from offset 1 of a fresh, empty topic, so every event of the run is owed to every subscriber and
"lost" is exact. A publisher process then sends one event per PublishEvents call at a fixed rate;
each event's data carries ``t``, the wall clock (``time.time_ns()``) just before the call. A
subscriber stamps each frame with ``time.time_ns()`` as soon as its client library hands it over;
latency = receive stamp - ``t`` (same host, same clock). After the last publish the subscribers get
a bounded drain window; an event not received by then counts as lost. Per subscriber, an offset
lower than one already received counts as reordered, a repeated one as a duplicate.

Frames are kept raw while the run is on and parsed after it, so the clients spend as little CPU as
possible while they measure (they share the machine's two cores with the server).

Baseline: none can be measured here. The reference is Centrifugo's published figure (~12.5k
deliveries/s per CPU at p99 200 ms, a constant quoted beside our numbers, not re-measured).
"""

import asyncio
import gc
import json
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

from bench.children import Child, ready_then_wait
from bench.common import (
    EVENT_NAME,
    GRPC_OPTIONS,
    Figure,
    ScenarioResult,
    cores_used,
    event_data,
    machine_cpu_seconds,
    metadata,
    percentiles,
    progress,
)

if TYPE_CHECKING:
    from bench.run import Bench

CENTRIFUGO_P99_MS = 200.0
CENTRIFUGO_DELIVERIES_PER_CPU_S = 12_500.0
CENTRIFUGO_NOTE = (
    "Centrifugo's published figure (~12.5k deliveries/s per CPU at p99 200 ms): a constant reference, not measured here"
)
TARGET_P99_MS = 100.0
CONNECT_CONCURRENCY = 50


# --- the subscriber side (child processes) ----------------------------------------------------------


def _wait_for_message(pipe: Any, kind: str, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise TimeoutError(f"no '{kind}' from the parent")
    got, value = pipe.recv()
    if got != kind:
        raise RuntimeError(f"expected '{kind}', got {got!r}")
    return value


def _summarize(
    received: list[list[tuple[int, int, int]]], expected: list[int], extra: dict[str, Any]
) -> dict[str, Any]:
    """``received``: per subscriber, (receive ns, offset, publish ns) in arrival order."""
    expected_set = set(expected)
    latencies: list[float] = []
    # Per event, its slowest delivery: tells a few slow events (a stall) from a steady tail.
    worst_by_offset: dict[int, float] = {}
    lost = reordered = duplicates = complete = 0
    for frames in received:
        seen: set[int] = set()
        highest = 0
        for received_ns, offset, published_ns in frames:
            if offset in seen:
                duplicates += 1
                continue
            seen.add(offset)
            if offset < highest:
                reordered += 1
            highest = max(highest, offset)
            if offset in expected_set:
                latency = (received_ns - published_ns) / 1e6
                latencies.append(latency)
                worst_by_offset[offset] = max(latency, worst_by_offset.get(offset, 0.0))
        missing = len(expected_set - seen)
        lost += missing
        complete += missing == 0
    return {
        "subscribers": len(received),
        "complete_subscribers": complete,
        "deliveries": len(latencies),
        "lost": lost,
        "reordered": reordered,
        "duplicates": duplicates,
        "latencies_ms": latencies,
        "worst_by_offset": worst_by_offset,
        **extra,
    }


async def _drain(pipe: Any, last_offset_of: Any, count: int) -> dict[str, Any]:
    """Wait for the parent's 'finish' (expected offsets, drain deadline), then until every
    subscriber has the last offset or the deadline passes."""
    finish = await asyncio.to_thread(_wait_for_message, pipe, "finish", 900)
    expected, drain_seconds = finish["expected"], finish["drain_seconds"]
    deadline = time.monotonic() + drain_seconds
    last = max(expected) if expected else 0
    pending = set(range(count))
    while pending and time.monotonic() < deadline:
        pending = {index for index in pending if last_offset_of(index) < last}
        await asyncio.sleep(0.05)
    return {"expected": expected, "drain_waited_s": drain_seconds - max(0.0, deadline - time.monotonic())}


def ws_subscribers(pipe: Any, ws_url: str, token: str, topic: str, count: int) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    async def main() -> dict[str, Any]:
        semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)
        frames: list[list[tuple[int, str]]] = [[] for _ in range(count)]
        connections: list[Any] = [None] * count
        errors: Counter[str] = Counter()
        closed_early = 0

        async def open_one(index: int) -> None:
            async with semaphore:
                connection = await connect(
                    f"{ws_url}?token={token}", open_timeout=60, compression=None, ping_interval=None, max_size=None
                )
                await connection.send(json.dumps({"type": "subscribe", "topic": topic, "fromOffset": 1}))
                reply = json.loads(await asyncio.wait_for(connection.recv(), 60))
                if reply.get("type") != "subscribed":
                    raise RuntimeError(f"subscribe answered {reply}")
                connections[index] = connection

        async def read(index: int) -> None:
            nonlocal closed_early
            sink = frames[index]
            try:
                async for raw in connections[index]:
                    sink.append((time.time_ns(), raw))
            except Exception:  # noqa: BLE001 - a dropped connection is counted, not fatal
                pass
            if not finishing:
                closed_early += 1

        def last_offset_of(index: int) -> int:
            sink = frames[index]
            for _, raw in reversed(sink):
                frame = json.loads(raw)
                if frame.get("type") == "event":
                    return frame["event"]["offset"]
            return 0

        started = time.monotonic()
        outcomes = await asyncio.gather(*(open_one(index) for index in range(count)), return_exceptions=True)
        failures = [repr(outcome) for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            for connection in connections:
                if connection is not None:
                    await connection.close()
            raise RuntimeError(f"{len(failures)} of {count} WebSocket subscriptions failed, first: {failures[0]}")
        connect_seconds = time.monotonic() - started
        finishing = False
        readers = [asyncio.create_task(read(index)) for index in range(count)]
        # A measuring process must not pause itself: a full garbage collection over every open
        # connection's objects stalls all reads for tens of milliseconds and shows up as latency.
        # The run is bounded, so collecting nothing until it ends costs only memory.
        gc.disable()
        await asyncio.to_thread(ready_then_wait, pipe, {"connected": count, "connect_seconds": connect_seconds})
        drained = await _drain(pipe, last_offset_of, count)
        finishing = True
        await asyncio.gather(*(connection.close() for connection in connections), return_exceptions=True)
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

        received: list[list[tuple[int, int, int]]] = []
        for sink in frames:
            parsed = []
            for received_ns, raw in sink:
                frame = json.loads(raw)
                if frame.get("type") != "event":
                    errors[frame.get("code", frame.get("type", "?"))] += 1
                    continue
                event = frame["event"]
                parsed.append((received_ns, event["offset"], event["data"]["t"]))
            received.append(parsed)
        return _summarize(
            received,
            drained["expected"],
            {
                "errors": dict(errors),
                "closed_early": closed_early,
                "connect_seconds": connect_seconds,
                "drain_waited_s": drained["drain_waited_s"],
            },
        )

    return asyncio.run(main())


def grpc_subscribers(
    pipe: Any, address: str, token: str, topic: str, count: int, streams_per_channel: int = 50
) -> dict[str, Any]:
    import grpc

    from eventrelay.v1 import eventrelay_pb2 as pb
    from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc

    async def main() -> dict[str, Any]:
        channels = [
            grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) for _ in range(-(-count // streams_per_channel))
        ]
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 30)
        stubs = [pb_grpc.EventsStub(channel) for channel in channels]
        frames: list[list[tuple[int, int, str]]] = [[] for _ in range(count)]
        calls: list[Any] = []
        errors: Counter[str] = Counter()
        closed_early = 0
        finishing = False

        async def read(index: int) -> None:
            nonlocal closed_early
            call = stubs[index // streams_per_channel].StreamEvents(
                pb.StreamEventsRequest(topic=topic, from_offset=1), metadata=metadata(token), timeout=None
            )
            calls.append(call)
            sink = frames[index]
            try:
                async for message in call:
                    sink.append((time.time_ns(), message.offset, message.data))
            except grpc.aio.AioRpcError as error:
                if not finishing:
                    errors[error.code().name] += 1
            except asyncio.CancelledError:
                return
            if not finishing:
                closed_early += 1

        def last_offset_of(index: int) -> int:
            sink = frames[index]
            return sink[-1][1] if sink else 0

        readers = [asyncio.create_task(read(index)) for index in range(count)]
        # No "subscribed" message exists in gRPC: give the server a moment to attach every stream
        # (from_offset=1 makes the timing irrelevant for correctness anyway).
        await asyncio.sleep(1.0)
        gc.disable()  # as for the WebSocket subscribers
        await asyncio.to_thread(ready_then_wait, pipe, {"connected": count})
        drained = await _drain(pipe, last_offset_of, count)
        finishing = True
        for call in calls:
            call.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for channel in channels:
            await channel.close()
        received = [[(ns, offset, json.loads(data)["t"]) for ns, offset, data in sink] for sink in frames]
        return _summarize(
            received,
            drained["expected"],
            {"errors": dict(errors), "closed_early": closed_early, "drain_waited_s": drained["drain_waited_s"]},
        )

    return asyncio.run(main())


# --- the publisher (child process) ------------------------------------------------------------------


def paced_publisher(pipe: Any, address: str, token: str, topic: str, rate: float, duration: float) -> dict[str, Any]:
    """One event per PublishEvents call, ``rate`` calls/s for ``duration`` seconds, open loop: each
    call starts on its schedule whether or not the previous ones have answered (a slow publish
    must not lower the offered load)."""
    import grpc

    from eventrelay.v1 import eventrelay_pb2 as pb
    from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc

    async def main() -> dict[str, Any]:
        async with grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            stub = pb_grpc.EventsStub(channel)
            auth = metadata(token)
            call_ms: list[float] = []

            async def publish(seq: int) -> int:
                began = time.perf_counter()
                event = pb.NewEvent(event_id=str(uuid.uuid4()), name=EVENT_NAME, data=event_data(seq, t=time.time_ns()))
                reply = await stub.PublishEvents(
                    pb.PublishEventsRequest(topic=topic, events=[event]), metadata=auth, timeout=60
                )
                call_ms.append((time.perf_counter() - began) * 1000)
                return reply.events[0].offset

            await asyncio.to_thread(ready_then_wait, pipe)
            calls = []
            started = time.monotonic()
            for seq in range(int(rate * duration)):
                pause = started + seq / rate - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                calls.append(asyncio.create_task(publish(seq)))
            offsets = sorted(await asyncio.gather(*calls))
            elapsed = time.monotonic() - started
        return {
            "offsets": offsets,
            "published": len(offsets),
            "seconds": elapsed,
            "rate": len(offsets) / elapsed,
            "call_ms": percentiles(call_ms),
        }

    return asyncio.run(main())


# --- the scenarios (orchestrator) -------------------------------------------------------------------


def run_fanout(bench: "Bench", transport: str, subscribers: int, rate: float, duration: float) -> dict[str, Any]:
    """One fan-out run on a fresh topic; returns the merged measurements."""
    topic = bench.new_topic(f"{transport}_fan_{subscribers}")
    processes = 2 if subscribers >= 2 else 1
    shares = [subscribers // processes + (1 if index < subscribers % processes else 0) for index in range(processes)]
    if transport == "ws":
        children = [Child(ws_subscribers, bench.stack.ws_url, bench.token, topic, share) for share in shares]
    else:
        children = [Child(grpc_subscribers, bench.stack.grpc_address, bench.token, topic, share) for share in shares]
    publisher = Child(paced_publisher, bench.stack.grpc_address, bench.token, topic, rate, duration)
    try:
        readies = [child.receive("ready", 300) for child in children]
        publisher.receive("ready", 60)
        bench.settle_database()
        for child in children:
            child.send("go")
        time.sleep(0.5)
        publisher.send("go")
        machine_before, began = machine_cpu_seconds(), time.perf_counter()
        progress(f"publishing {rate:g} events/s for {duration:g} s to {subscribers:,} {transport} subscribers")
        published = publisher.receive("result", duration * 3 + 60)
        machine_after, wall = machine_cpu_seconds(), time.perf_counter() - began
        for child in children:
            child.send("finish", {"expected": published["offsets"], "drain_seconds": bench.mode.drain})
        results = [child.receive("result", bench.mode.drain + 300) for child in children]
    finally:
        for child in [*children, publisher]:
            child.join()
    bench.stack.check_alive()
    latencies = [latency for result in results for latency in result["latencies_ms"]]
    worst_by_offset: dict[int, float] = {}
    for result in results:
        for offset, latency in result["worst_by_offset"].items():
            worst_by_offset[int(offset)] = max(latency, worst_by_offset.get(int(offset), 0.0))
    errors: Counter[str] = Counter()
    for result in results:
        errors.update(result["errors"])
    offered = published["rate"] * subscribers
    return {
        "subscribers": subscribers,
        "rate_per_s": rate,
        "published": published["published"],
        "publish_rate": published["rate"],
        "publish_call_ms": published["call_ms"],
        "offered_deliveries_per_s": offered,
        "delivered": sum(result["deliveries"] for result in results),
        "expected_deliveries": published["published"] * subscribers,
        "latency_ms": percentiles(latencies),
        # Each event's slowest delivery, over the events: its p50 against the p99 above shows whether
        # the tail is every event's last subscribers or a few slow events (and which).
        "event_worst_ms": percentiles(list(worst_by_offset.values())),
        "slowest_events_ms": dict(sorted(worst_by_offset.items(), key=lambda item: -item[1])[:5]),
        "lost": sum(result["lost"] for result in results),
        "reordered": sum(result["reordered"] for result in results),
        "duplicates": sum(result["duplicates"] for result in results),
        "complete_subscribers": sum(result["complete_subscribers"] for result in results),
        "closed_early": sum(result["closed_early"] for result in results),
        "errors": dict(errors),
        "connect_seconds": max((ready or {}).get("connect_seconds", 0) for ready in readies),
        "drain_waited_s": max(result["drain_waited_s"] for result in results),
        "drain_s": bench.mode.drain,
        # While publishing: of the machine's cores, how many were busy and how many the hypervisor took.
        "machine_cores": cores_used(machine_before, machine_after, wall),
    }


def _latency_figures(scenario: str, label: str, run: dict[str, Any], check_order: bool) -> list[Figure]:
    latency = run["latency_ms"]
    p99 = latency["p99"]
    note = (
        f"{run['subscribers']:,} subscribers x {run['publish_rate']:.1f} events/s = {run['offered_deliveries_per_s']:,.0f} deliveries/s offered; "
        f"p50 {_ms(latency['p50'])}, p95 {_ms(latency['p95'])}, max {_ms(latency['max'])}; "
        f"machine busy {run['machine_cores']['busy']:.2f} cores, stolen {run['machine_cores']['steal']:.2f}"
    )
    figures = [
        Figure(
            scenario,
            f"{label}: latency p99",
            "ms",
            p99,
            "Centrifugo published p99 (constant)",
            CENTRIFUGO_P99_MS,
            "lower",
            "p99 <= 100 ms",
            p99 is not None and p99 <= TARGET_P99_MS,
            baseline_measured=False,
            notes=note,
        ),
        *(
            Figure(
                scenario,
                f"{label}: latency {p}",
                "ms",
                latency[p],
                "",
                None,
                "lower",
                "",
                None,
                baseline_measured=False,
            )
            for p in ("p50", "p95")
        ),
        Figure(
            scenario,
            f"{label}: lost",
            "events",
            run["lost"],
            "",
            None,
            "lower",
            "0 lost",
            run["lost"] == 0,
            baseline_measured=False,
            notes=f"not received within {run['drain_s']:g} s of the last publish, of {run['expected_deliveries']:,} owed; "
            f"error frames {run['errors'] or 'none'}; connections closed early {run['closed_early']}",
        ),
    ]
    if check_order:
        figures.append(
            Figure(
                scenario,
                f"{label}: reordered",
                "events",
                run["reordered"],
                "",
                None,
                "lower",
                "0 reordered",
                run["reordered"] == 0,
                baseline_measured=False,
                notes=f"duplicates {run['duplicates']}",
            )
        )
    return figures


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def ws_fanout(bench: "Bench") -> ScenarioResult:
    mode = bench.mode
    result = ScenarioResult("ws_fanout", "publish → WebSocket receive")
    runs = {}
    for subscribers in mode.ws_subscriber_steps:
        runs[subscribers] = run_fanout(bench, "ws", subscribers, mode.ws_rate, mode.fanout_duration)
        time.sleep(1)  # let the web process close the previous run's connections
    main = runs[mode.ws_subscribers]
    label = f"WebSocket, {mode.ws_subscribers:,} subscribers, {mode.ws_rate:g} events/s"
    result.figures = _latency_figures("ws_fanout", label, main, check_order=True)
    result.details = {"runs": runs, "baseline_reference": CENTRIFUGO_NOTE}
    result.growth = {
        "title": "WebSocket fan-out latency by subscriber count",
        "x_label": "subscribers on one topic",
        "unit": "ms",
        "points": [
            {
                "x": n,
                "p50": run["latency_ms"]["p50"],
                "p95": run["latency_ms"]["p95"],
                "p99": run["latency_ms"]["p99"],
                "lost": run["lost"],
            }
            for n, run in runs.items()
        ],
    }
    return result


def grpc_fanout(bench: "Bench") -> ScenarioResult:
    mode = bench.mode
    result = ScenarioResult("grpc_fanout", "publish → gRPC stream receive")
    run = run_fanout(bench, "grpc", mode.grpc_streams, mode.grpc_rate, mode.fanout_duration)
    label = f"gRPC streams, {mode.grpc_streams:,} streams, {mode.grpc_rate:g} events/s"
    result.figures = _latency_figures("grpc_fanout", label, run, check_order=False)
    result.details = {"run": run, "baseline_reference": CENTRIFUGO_NOTE}
    return result
