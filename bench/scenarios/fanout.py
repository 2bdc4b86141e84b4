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

Peer of the WebSocket row: NATS core subscribers on the bench's own nats-server (bench/nats_peer.py),
the same count, each with a connection of its own, spread over the same two processes, and a paced
publisher at the same rate, with the same stamps, drain window and counting. Core NATS stores nothing:
a subscriber gets only what is published while it is subscribed, and a message not taken in time is
dropped (counted as lost), where ours replay from an offset.

Two more WebSocket figures: frames delivered per CPU-second of the web process (its utime + stime from
/proc over the publishing and the drain), and the memory an idle WebSocket connection costs the web
process (its RSS before and after opening that many subscribed, silent connections, divided by them).
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
    cpu_seconds,
    event_data,
    machine_cpu_seconds,
    metadata,
    percentiles,
    progress,
    rss_bytes,
)
from bench.nats_peer import ABSENT_NOTE

if TYPE_CHECKING:
    from bench.run import Bench

CENTRIFUGO_P99_MS = 200.0
CENTRIFUGO_DELIVERIES_PER_CPU_S = 12_500.0
CENTRIFUGO_NOTE = (
    "Centrifugo's published figure (~12.5k deliveries/s per CPU at p99 200 ms): a constant reference, not measured here"
)
TARGET_P99_MS = 100.0
CONNECT_CONCURRENCY = 50
TARGET_FRAMES_PER_CPU_S = 25_000.0
CENTRIFUGO_BYTES_PER_CONNECTION = 30 * 1024
TARGET_BYTES_PER_IDLE_CONNECTION = 50 * 1024
NATS_CORE_NOTE = (
    "core NATS: no storage and no replay (a subscriber gets what is published while it is subscribed; a message "
    "it cannot take in time is dropped), order kept per publisher"
)


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
    # The parent stops the server's CPU clock here, before the connections are closed.
    pipe.send(("drained", None))
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


def nats_subscribers(pipe: Any, url: str, subject: str, count: int) -> dict[str, Any]:
    """The peer's subscribers: one core NATS connection and subscription each, stamping every message on arrival."""
    import nats

    async def main() -> dict[str, Any]:
        semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)
        frames: list[list[tuple[int, bytes]]] = [[] for _ in range(count)]
        connections: list[Any] = [None] * count
        errors: Counter[str] = Counter()
        closed_early = 0
        finishing = False

        async def on_error(error: Exception) -> None:
            errors[type(error).__name__] += 1

        async def on_disconnect() -> None:
            nonlocal closed_early
            if not finishing:
                closed_early += 1

        async def open_one(index: int) -> None:
            sink = frames[index]

            async def on_message(message: Any) -> None:
                sink.append((time.time_ns(), message.data))

            async with semaphore:
                connection = await nats.connect(
                    url,
                    allow_reconnect=False,
                    connect_timeout=60,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                )
                await connection.subscribe(subject, cb=on_message)
                # The server has the interest once it answers the PING that follows the SUB.
                await connection.flush(timeout=60)
                connections[index] = connection

        def last_offset_of(index: int) -> int:
            sink = frames[index]
            return int(json.loads(sink[-1][1])["seq"]) if sink else 0

        started = time.monotonic()
        outcomes = await asyncio.gather(*(open_one(index) for index in range(count)), return_exceptions=True)
        failures = [repr(outcome) for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            await asyncio.gather(*(c.close() for c in connections if c is not None), return_exceptions=True)
            raise RuntimeError(f"{len(failures)} of {count} NATS subscriptions failed, first: {failures[0]}")
        connect_seconds = time.monotonic() - started
        gc.disable()  # as for the WebSocket subscribers
        await asyncio.to_thread(ready_then_wait, pipe, {"connected": count, "connect_seconds": connect_seconds})
        drained = await _drain(pipe, last_offset_of, count)
        finishing = True
        await asyncio.gather(*(connection.close() for connection in connections), return_exceptions=True)
        received = [
            [(ns, int(data["seq"]), int(data["t"])) for ns, data in ((ns, json.loads(raw)) for ns, raw in sink)]
            for sink in frames
        ]
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


def ws_idle_connections(pipe: Any, ws_url: str, token: str, topic: str, count: int) -> dict[str, Any]:
    """``count`` WebSocket connections, each subscribed (live, no replay) to a topic nothing is published to,
    held open and silent until the parent has weighed the web process, then closed."""
    from websockets.asyncio.client import connect

    async def main() -> dict[str, Any]:
        semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)
        connections: list[Any] = []

        async def open_one() -> None:
            async with semaphore:
                connection = await connect(
                    f"{ws_url}?token={token}", open_timeout=60, compression=None, ping_interval=None, max_size=None
                )
                connections.append(connection)
                await connection.send(json.dumps({"type": "subscribe", "topic": topic}))
                reply = json.loads(await asyncio.wait_for(connection.recv(), 60))
                if reply.get("type") != "subscribed":
                    raise RuntimeError(f"subscribe answered {reply}")

        started = time.monotonic()
        try:
            await asyncio.gather(*(open_one() for _ in range(count)))
            connect_seconds = time.monotonic() - started
            await asyncio.to_thread(ready_then_wait, pipe, {"connected": len(connections)})
        finally:
            await asyncio.gather(*(connection.close() for connection in connections), return_exceptions=True)
        return {"connections": len(connections), "connect_seconds": connect_seconds}

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


def nats_paced_publisher(pipe: Any, url: str, subject: str, rate: float, duration: float) -> dict[str, Any]:
    """The peer's publisher: core NATS publishes of the same events at the same pace, open loop like ours.
    A message's ``seq`` (1, 2, ...) stands for its offset; ``t`` is stamped just before the publish call."""
    import nats

    async def main() -> dict[str, Any]:
        connection = await nats.connect(url, allow_reconnect=False)
        call_ms: list[float] = []
        try:
            await asyncio.to_thread(ready_then_wait, pipe)
            started = time.monotonic()
            count = int(rate * duration)
            for index in range(count):
                pause = started + index / rate - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                began = time.perf_counter()
                await connection.publish(subject, event_data(index + 1, t=time.time_ns()).encode())
                call_ms.append((time.perf_counter() - began) * 1000)
            await connection.flush(timeout=60)
            elapsed = time.monotonic() - started
        finally:
            await connection.close()
        return {
            "offsets": list(range(1, count + 1)),
            "published": count,
            "seconds": elapsed,
            "rate": count / elapsed,
            "call_ms": percentiles(call_ms),
        }

    return asyncio.run(main())


# --- the scenarios (orchestrator) -------------------------------------------------------------------


def run_fanout(bench: "Bench", transport: str, subscribers: int, rate: float, duration: float) -> dict[str, Any]:
    """One fan-out run on a fresh topic (``transport`` ws or grpc) or, for the peer, a fresh core NATS subject
    (``nats``); returns the merged measurements."""
    processes = 2 if subscribers >= 2 else 1
    shares = [subscribers // processes + (1 if index < subscribers % processes else 0) for index in range(processes)]
    if transport == "nats":
        if bench.nats is None:
            raise RuntimeError(ABSENT_NOTE)
        subject = f"bench.fan.{uuid.uuid4().hex[:8]}"
        server_name, server_pid = "nats server", bench.nats.pid
        children = [Child(nats_subscribers, bench.nats.url, subject, share) for share in shares]
        publisher = Child(nats_paced_publisher, bench.nats.url, subject, rate, duration)
    else:
        topic = bench.new_topic(f"{transport}_fan_{subscribers}")
        if transport == "ws":
            server_name, server_pid = "web", bench.stack.process("web").pid
            children = [Child(ws_subscribers, bench.stack.ws_url, bench.token, topic, share) for share in shares]
        else:
            # The gRPC server both serves the publishes and streams them out.
            server_name, server_pid = "grpc server", bench.stack.process("grpc").pid
            children = [
                Child(grpc_subscribers, bench.stack.grpc_address, bench.token, topic, share) for share in shares
            ]
        publisher = Child(paced_publisher, bench.stack.grpc_address, bench.token, topic, rate, duration)
    try:
        readies = [child.receive("ready", 300) for child in children]
        publisher.receive("ready", 60)
        bench.settle_database()
        for child in children:
            child.send("go")
        time.sleep(0.5)
        server_cpu_before = cpu_seconds(server_pid)
        publisher.send("go")
        machine_before, began = machine_cpu_seconds(), time.perf_counter()
        progress(f"publishing {rate:g} events/s for {duration:g} s to {subscribers:,} {transport} subscribers")
        published = publisher.receive("result", duration * 3 + 60)
        machine_after, wall = machine_cpu_seconds(), time.perf_counter() - began
        for child in children:
            child.send("finish", {"expected": published["offsets"], "drain_seconds": bench.mode.drain})
        for child in children:
            child.receive("drained", bench.mode.drain + 300)
        server_cpu = cpu_seconds(server_pid) - server_cpu_before
        results = [child.receive("result", 300) for child in children]
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
        # The CPU the serving process (web, grpc server, nats-server) spent from the first publish until every
        # subscriber had the last event (or the drain window ended), and the deliveries it made per CPU-second.
        "server": server_name,
        "server_cpu_s": round(server_cpu, 3),
        "deliveries_per_server_cpu_s": (
            sum(result["deliveries"] for result in results) / server_cpu if server_cpu > 0 else None
        ),
    }


def _latency_figures(
    scenario: str,
    label: str,
    run: dict[str, Any],
    check_order: bool,
    peer_name: str = "",
    peer: dict[str, Any] | None = None,
    peer_note: str = "",
) -> list[Figure]:
    """The latency, lost and (``check_order``) reordered rows of one run, each beside ``peer``'s same figure
    when a peer is named (``peer`` None: named but not measured, ``peer_note`` says why)."""
    latency = run["latency_ms"]
    p99 = latency["p99"]
    peer_latency = peer["latency_ms"] if peer is not None else {}

    def peer_fields(value: float | None) -> dict[str, Any]:
        return {"peer_name": peer_name, "peer_value": value} if peer_name else {}

    note = (
        f"{run['subscribers']:,} subscribers x {run['publish_rate']:.1f} events/s = {run['offered_deliveries_per_s']:,.0f} deliveries/s offered; "
        f"p50 {_ms(latency['p50'])}, p95 {_ms(latency['p95'])}, max {_ms(latency['max'])}; "
        f"machine busy {run['machine_cores']['busy']:.2f} cores, stolen {run['machine_cores']['steal']:.2f}"
        + (f"; {peer_note}" if peer_note else "")
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
            **peer_fields(peer_latency.get("p99")),
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
                **peer_fields(peer_latency.get(p)),
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
            f"error frames {run['errors'] or 'none'}; connections closed early {run['closed_early']}"
            + (
                f"; NATS: errors {peer['errors'] or 'none'}, connections closed early {peer['closed_early']}"
                if peer is not None
                else ""
            ),
            **peer_fields(None if peer is None else peer["lost"]),
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
                notes=f"duplicates {run['duplicates']}"
                + ("" if peer is None else f"; NATS duplicates {peer['duplicates']}"),
                **peer_fields(None if peer is None else peer["reordered"]),
            )
        )
    return figures


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def idle_memory(bench: "Bench", connections: int) -> dict[str, Any]:
    """The web process's RSS before ``connections`` idle, subscribed WebSocket connections, with them all open,
    and after they closed. Measured before any fan-out run: memory those runs freed stays in the process and
    would be reused by the idle connections, hiding their cost."""
    topic = bench.new_topic(f"ws_idle_{connections}")
    web = bench.stack.process("web").pid
    processes = 2 if connections >= 2 else 1
    shares = [connections // processes + (1 if index < connections % processes else 0) for index in range(processes)]
    bench.wait_for_quiet()
    before = rss_bytes(web)
    children = [Child(ws_idle_connections, bench.stack.ws_url, bench.token, topic, share) for share in shares]
    try:
        progress(f"opening {connections:,} idle WebSocket connections")
        readies = [child.receive("ready", 300) for child in children]
        time.sleep(1.0)  # let the web process finish what the last handshakes started
        held = rss_bytes(web)
        for child in children:
            child.send("go")
        results = [child.receive("result", 120) for child in children]
    finally:
        for child in children:
            child.join()
    time.sleep(2.0)
    bench.stack.check_alive()
    opened = sum(ready["connected"] for ready in readies)
    return {
        "connections": opened,
        "rss_before_bytes": before,
        "rss_held_bytes": held,
        "rss_after_close_bytes": rss_bytes(web),
        "bytes_per_connection": (held - before) / opened if opened else None,
        "connect_seconds": max(result["connect_seconds"] for result in results),
    }


def ws_fanout(bench: "Bench") -> ScenarioResult:
    mode = bench.mode
    result = ScenarioResult("ws_fanout", "publish → WebSocket receive")
    idle = idle_memory(bench, mode.ws_idle_connections)
    runs = {}
    for subscribers in mode.ws_subscriber_steps:
        runs[subscribers] = run_fanout(bench, "ws", subscribers, mode.ws_rate, mode.fanout_duration)
        time.sleep(1)  # let the web process close the previous run's connections
    main = runs[mode.ws_subscribers]
    peer: dict[str, Any] | None = None
    if bench.nats is not None:
        peer = run_fanout(bench, "nats", mode.ws_subscribers, mode.ws_rate, mode.fanout_duration)
    label = f"WebSocket, {mode.ws_subscribers:,} subscribers, {mode.ws_rate:g} events/s"
    peer_name = f"NATS core, {mode.ws_subscribers:,} subscribers, {mode.ws_rate:g} msgs/s"
    if peer is None:
        peer_note = ABSENT_NOTE
    else:
        peer_note = (
            f"NATS core: p50 {_ms(peer['latency_ms']['p50'])}, p95 {_ms(peer['latency_ms']['p95'])}, "
            f"max {_ms(peer['latency_ms']['max'])}, {peer['delivered']:,} of {peer['expected_deliveries']:,} delivered; "
            f"{NATS_CORE_NOTE}"
        )
    result.figures = _latency_figures(
        "ws_fanout", label, main, check_order=True, peer_name=peer_name, peer=peer, peer_note=peer_note
    )
    # SPEC.md's row for the largest count (5,000 full): p99 <= 1 s with nothing lost.
    largest = max(mode.ws_subscriber_steps)
    widest = runs[largest]
    result.figures.append(
        Figure(
            "ws_fanout",
            f"WebSocket, {largest:,} subscribers, {mode.ws_rate:g} events/s: latency p99, nothing lost",
            "ms",
            widest["latency_ms"]["p99"],
            "",
            None,
            "lower",
            "p99 <= 1 s, 0 lost",
            widest["latency_ms"]["p99"] <= 1000 and widest["lost"] == 0,
            baseline_measured=False,
            notes=f"p50 {_ms(widest['latency_ms']['p50'])}, p95 {_ms(widest['latency_ms']['p95'])}, max "
            f"{_ms(widest['latency_ms']['max'])}; lost {widest['lost']:,} of {widest['expected_deliveries']:,}",
        )
    )
    frames_per_cpu = main["deliveries_per_server_cpu_s"]
    nats_per_cpu = None if peer is None else peer["deliveries_per_server_cpu_s"]
    result.figures.append(
        Figure(
            "ws_fanout",
            f"WebSocket frames per CPU-second of the web process ({mode.ws_subscribers:,} subscribers, "
            f"{mode.ws_rate:g} events/s)",
            "frames/CPU-s",
            frames_per_cpu,
            "Centrifugo published deliveries/s per CPU (constant)",
            CENTRIFUGO_DELIVERIES_PER_CPU_S,
            "higher",
            ">= 25,000",
            frames_per_cpu is not None and frames_per_cpu >= TARGET_FRAMES_PER_CPU_S,
            baseline_measured=False,
            notes=f"{main['delivered']:,} event frames for {main['server_cpu_s']:.2f} CPU-s of the web process (utime + "
            "stime from /proc, from the first publish until every subscriber had the last event)"
            + ("" if nats_per_cpu is None else f"; nats-server in the peer run: {nats_per_cpu:,.0f} messages/CPU-s"),
        )
    )
    per_connection = idle["bytes_per_connection"]
    result.figures.append(
        Figure(
            "ws_fanout",
            f"memory per idle WebSocket connection ({idle['connections']:,} connections)",
            "KB",
            None if per_connection is None else per_connection / 1024,
            "Centrifugo ~30 KB per connection at 1M (constant)",
            CENTRIFUGO_BYTES_PER_CONNECTION / 1024,
            "lower",
            "<= 50 KB",
            per_connection is not None and per_connection <= TARGET_BYTES_PER_IDLE_CONNECTION,
            baseline_measured=False,
            notes=f"RSS of the web process {idle['rss_before_bytes'] / 2**20:,.1f} MiB before, "
            f"{idle['rss_held_bytes'] / 2**20:,.1f} MiB with the connections open (each subscribed to a silent "
            f"topic), {idle['rss_after_close_bytes'] / 2**20:,.1f} MiB after they closed; KB = 1,024 bytes",
        )
    )
    result.details = {"runs": runs, "peer_run": peer, "idle_memory": idle, "baseline_reference": CENTRIFUGO_NOTE}
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
