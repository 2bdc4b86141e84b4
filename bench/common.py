"""What the scenarios share: the event payload, the timed loop, percentiles, and the result records."""

import asyncio
import json
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

EVENT_NAME = "bench_event"
# The bench's event table columns, in the order the product's own INSERT lists them.
COLUMNS = '"offset", event_id, name, topic_id, source, user_id, event_occurred_at, context, data'
# gRPC messages up to a maximal publish request (16 MiB of payload) plus framing.
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
    ("grpc.max_send_message_length", 32 * 1024 * 1024),
]


def progress(message: str) -> None:
    """One line of progress on stdout (a full run takes minutes)."""
    print(f"bench:   {message}", flush=True)


def event_data(seq: int, **extra: Any) -> str:
    """A ~250-byte JSON object, the size of a typical application event (an order, a login)."""
    return json.dumps(
        {
            "seq": seq,
            **extra,
            "user": f"user-{seq % 1000}",
            "email": f"user{seq % 1000}@example.com",
            "amount": 1999 + seq % 100,
            "currency": "EUR",
            "items": [{"sku": f"SKU-{seq % 50:04d}", "qty": 1 + seq % 3}, {"sku": "SKU-0001", "qty": 2}],
            "tags": ["bench", "checkout", "web"],
        },
        separators=(",", ":"),
    )


def user_id(seq: int) -> str:
    return f"user-{seq % 1000}"


def metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system, every thread) used so far by process ``pid``, or by this process."""
    if pid is None:
        return time.process_time()
    with open(f"/proc/{pid}/stat") as stat:
        # Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` now (``VmRSS`` of ``/proc/<pid>/status``)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def machine_cpu_seconds() -> dict[str, float]:
    """CPU time of the whole machine so far (``/proc/stat``, every core): busy, and stolen by the
    hypervisor for other virtual machines (this one's noise, when it is not ours)."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in stat.readline().split()[1:9])
    tick = os.sysconf("SC_CLK_TCK")
    return {"busy": (user + nice + system + irq + softirq) / tick, "steal": steal / tick}


def cores_used(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """CPU seconds read before and after ``wall`` seconds (per key), as cores used in between."""
    return {key: round((after[key] - before[key]) / wall, 2) for key in after}


async def timed_loop(
    op: Callable[[int], Awaitable[int]],
    concurrency: int,
    warmup: float,
    duration: float,
    watch: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Run ``op(worker)`` from ``concurrency`` tasks: ``warmup`` seconds uncounted, then ``duration``
    seconds counted. ``op`` returns how many events it handled. Returns events/s, call latencies and
    the CPU cores used during the counted phase by this load generator and by the ``watch``ed
    processes (name → pid), and the whole machine's busy and stolen cores: on a shared 2-core
    machine, where the time goes is part of the result."""

    async def phase(seconds: float, record: bool) -> tuple[int, float, list[float]]:
        start = time.perf_counter()
        end = start + seconds
        count = 0
        last = start
        latencies: list[float] = []

        async def worker(index: int) -> None:
            nonlocal count, last
            while time.perf_counter() < end:
                began = time.perf_counter()
                handled = await op(index)
                finished = time.perf_counter()
                count += handled
                last = max(last, finished)
                if record:
                    latencies.append((finished - began) * 1000)

        await asyncio.gather(*(worker(index) for index in range(concurrency)))
        return count, last - start, latencies

    if warmup > 0:
        await phase(warmup, record=False)
    pids: dict[str, int | None] = {"load generator": None, **(watch or {})}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    machine_before = machine_cpu_seconds()
    began = time.perf_counter()
    count, elapsed, latencies = await phase(duration, record=True)
    wall = time.perf_counter() - began
    machine_after = machine_cpu_seconds()
    return {
        "events": count,
        "seconds": elapsed,
        "events_per_s": count / elapsed if elapsed > 0 else 0.0,
        "calls": len(latencies),
        "call_ms": percentiles(latencies),
        "cpu_cores": cores_used(cpu_before, {name: cpu_seconds(pid) for name, pid in pids.items()}, wall),
        # Of the machine's os.cpu_count() cores: how many were busy, and how many the hypervisor took.
        "machine_cores": cores_used(machine_before, machine_after, wall),
    }


def percentiles(values: list[float], points: tuple[int, ...] = (50, 95, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles plus max; ``None`` everywhere for an empty sample."""
    if not values:
        return {**{f"p{p}": None for p in points}, "max": None}
    ordered = sorted(values)
    result: dict[str, float | None] = {}
    for p in points:
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        result[f"p{p}"] = ordered[rank - 1]
    result["max"] = ordered[-1]
    return result


@dataclass
class Figure:
    """One row of the results table: a measured figure beside its baseline, its peer and its target.

    The baseline is the bare minimum of the same work (PostgreSQL alone, an empty call); the peer, where SPEC.md
    names one, is the system a team would pick instead (NATS), measured in the same run on the same box.
    ``peer_name`` without a ``peer_value`` is a peer that could not be measured (the notes say why)."""

    scenario: str
    name: str
    unit: str
    value: float | None
    baseline_name: str
    baseline_value: float | None
    # "higher" when bigger is better (throughput), "lower" for latencies and counts.
    better: str
    target: str
    met: bool | None
    baseline_measured: bool = True
    ratio: float | None = None
    notes: str = ""
    peer_name: str = ""
    peer_value: float | None = None
    peer_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.ratio is None and self.value is not None and self.baseline_value:
            self.ratio = self.value / self.baseline_value
        if self.peer_ratio is None and self.value is not None and self.peer_value:
            self.peer_ratio = self.value / self.peer_value

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScenarioResult:
    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    # Growth curves: {"x_label": ..., "points": [{"x": ..., series: value, ...}]}
    growth: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "figures": [figure.as_dict() for figure in self.figures],
            "growth": self.growth,
            "details": self.details,
            "seconds": round(self.seconds, 2),
            "error": self.error,
        }
