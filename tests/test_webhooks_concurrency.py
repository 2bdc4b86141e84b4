"""One worker process, started as the Procfile starts it, keeps many deliveries in flight: one at a time per stream
(order), many streams at once, on a bounded pool of PostgreSQL connections (docs/webhooks.md "Concurrency").
Receivers here answer after 100 ms or 1 s; the tests assert counts, order and connections, and print the rate."""

import bisect
import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from events.services import publish
from harness import processes
from harness.processes import CeleryBeat, CeleryWorker, wait_until
from tests.grpc_client import unique_topic
from tests.webhook_processes import broker_fixture, start_fixture  # noqa: F401 (fixtures)
from tests.webhook_receiver import Receiver
from webhooks.services import create_destination

pytestmark = pytest.mark.e2e


def publish_streams(admin: Any, topic: str, streams: int, events: int) -> dict[str, list[int]]:
    """``events`` events for each of ``streams`` topic ids, one publish per topic id (one per event would spend
    most of these tests publishing; the worker delivers them one request at a time per stream all the same)."""
    published: dict[str, list[int]] = {}
    for n in range(streams):
        batch = [{"name": "tick", "data": {"n": i}} for i in range(events)]
        published[str(n)] = [event.offset for event in publish(admin, f"{topic}:{n}", batch, "grpc")]
    return published


def delivered(receiver: Receiver, topic: str, published: dict[str, list[int]]) -> bool:
    return all(set(receiver.offsets(f"{topic}:{tid}")) >= set(offsets) for tid, offsets in published.items())


def connections_of(application_name: str) -> int:
    with psycopg.connect(processes.test_database_url(), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application_name])
        return int(row.fetchone()[0])


def rate(receiver: Receiver) -> float:
    times = sorted(request.at for request in receiver.requests)
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


class CpuSampler:
    """The CPU seconds (user + system, from /proc) a process has used, sampled every 20 ms, so the CPU it spent
    between two instants (the first and the last delivery) can be read afterwards."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.samples.append((time.monotonic(), self._cpu_seconds()))
            except OSError:
                return
            self.stopped.wait(0.02)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()

    def between(self, start: float, end: float) -> float:
        times = [at for at, _ in self.samples]
        first = self.samples[max(bisect.bisect_right(times, start) - 1, 0)][1]
        last = self.samples[min(bisect.bisect_left(times, end), len(self.samples) - 1)][1]
        return last - first


@contextmanager
def cpu_of(pid: int) -> Iterator[CpuSampler]:
    sampler = CpuSampler(pid)
    try:
        yield sampler
    finally:
        sampler.stop()


def turnaround(receiver: Receiver) -> str:
    """Per stream, the time from one request reaching the receiver to the next one reaching it, less the receiver's
    latency: what each event costs the stream besides the receiver's answer (the ack's record, the next send)."""
    gaps: list[float] = []
    by_topic: dict[str, list[float]] = {}
    for request in receiver.requests:
        by_topic.setdefault(request.topic, []).append(request.at)
    for times in by_topic.values():
        times.sort()
        gaps += [later - earlier - receiver.latency for earlier, later in itertools.pairwise(times)]
    gaps.sort()
    if not gaps:
        return "no stream had two requests"
    return (
        f"between a stream's requests {1000 * gaps[len(gaps) // 2]:.1f} ms (p50), "
        f"{1000 * gaps[len(gaps) * 9 // 10]:.1f} ms (p90) besides the receiver's latency"
    )


def cpu_figures(receiver: Receiver, sampler: CpuSampler) -> str:
    """The worker's CPU per delivery and cores used between the first and the last request the receiver got."""
    times = sorted(request.at for request in receiver.requests)
    cpu = sampler.between(times[0], times[-1])
    return f"worker CPU {1000 * cpu / len(times):.2f} ms per delivery, {cpu / (times[-1] - times[0]):.2f} cores"


@pytest.fixture
def slow_receiver() -> Any:
    server = Receiver(latency=0.1)
    yield server
    server.close()


def test_one_worker_delivers_64_slow_streams_at_once_in_order(
    transactional_db, make_topic, slow_receiver, allow_private, admin, broker, start
):
    topic = unique_topic("conc")
    make_topic(topic)
    create_destination(name="slow", url=slow_receiver.url, topic=topic)
    published = publish_streams(admin, topic, 64, 20)

    worker = start(CeleryWorker, name="concurrency_worker")
    with cpu_of(worker.process.pid) as sampler:
        wait_until(lambda: delivered(slow_receiver, topic, published), 180, "1,280 deliveries")

    for topic_id, offsets in published.items():
        assert slow_receiver.offsets(f"{topic}:{topic_id}") == offsets, f"stream {topic}:{topic_id}"
    assert len(slow_receiver.requests) == 64 * 20
    print(
        f"64 streams x 20 events, receiver 100 ms, one worker: {rate(slow_receiver):.0f} deliveries/s, "
        f"{slow_receiver.most_in_flight} requests in flight at most, {cpu_figures(slow_receiver, sampler)}, "
        f"{turnaround(slow_receiver)}"
    )
    assert slow_receiver.most_in_flight > 1  # more than one stream at a time


def test_a_thousand_streams_at_one_second_share_the_workers_connection_pool(
    transactional_db, make_topic, allow_private, admin, broker, start
):
    receiver = Receiver(latency=1.0)
    try:
        topic = unique_topic("pool")
        make_topic(topic)
        create_destination(name="second", url=receiver.url, topic=topic)
        published = publish_streams(admin, topic, 1000, 3)
        application = f"hooks-pool-{os.getpid()}"
        worker = start(
            CeleryWorker, name="pool_worker", env={"ER_DB_APPLICATION_NAME": application, "ER_DB_POOL": "10"}
        )

        most = 0
        deadline = time.monotonic() + 300
        with cpu_of(worker.process.pid) as sampler:
            while time.monotonic() < deadline and not delivered(receiver, topic, published):
                most = max(most, connections_of(application))
                time.sleep(0.2)
        assert delivered(receiver, topic, published), "3,000 deliveries"
        for topic_id, offsets in published.items():
            assert receiver.offsets(f"{topic}:{topic_id}") == offsets, f"stream {topic}:{topic_id}"
        print(
            f"1,000 streams x 3 events, receiver 1 s, one worker: {rate(receiver):.0f} deliveries/s, "
            f"{receiver.most_in_flight} in flight at most, {most} PostgreSQL connections at most, "
            f"{cpu_figures(receiver, sampler)}, {turnaround(receiver)}"
        )
        assert 0 < most <= 10
        assert receiver.most_in_flight > 100
    finally:
        receiver.close()


def test_a_worker_killed_with_its_requests_in_flight_loses_nothing_and_repeats_at_most_those(
    transactional_db, make_topic, allow_private, admin, broker, start
):
    receiver = Receiver(latency=1.0)
    try:
        topic = unique_topic("killed")
        make_topic(topic)
        create_destination(name="killed", url=receiver.url, topic=topic)
        # Eight events per stream keep each stream busy for eight seconds, so all 200 are in flight at once even
        # where the worker takes seconds to start them all (five on a slow day).
        published = publish_streams(admin, topic, 200, 8)
        fast = {"ER_WEBHOOK_TIMEOUT_S": "3", "ER_WEBHOOK_LEASE_MARGIN_S": "2", "ER_WEBHOOK_SWEEP_S": "1"}
        first = start(CeleryWorker, name="killed_worker", env=fast)
        wait_until(lambda: receiver.in_flight >= 150, 60, "the worker to have its requests in flight")
        in_flight = receiver.in_flight
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(30)

        start(CeleryBeat, env=fast, name="killed_beat")
        start(CeleryWorker, name="taking_over_worker", env=fast)
        wait_until(lambda: delivered(receiver, topic, published), 180, "every event after the kill")

        repeated = len(receiver.requests) - 1600
        for topic_id, offsets in published.items():
            got = receiver.offsets(f"{topic}:{topic_id}")
            assert sorted(set(got)) == offsets and got == sorted(got), f"stream {topic}:{topic_id}: {got}"
            # One request in flight per stream: the killed worker can have left at most one of each unrecorded.
            assert len(got) - len(set(got)) <= 1, f"stream {topic}:{topic_id}: {got}"
        print(f"killed with {in_flight} requests in flight at the receiver: {repeated} deliveries repeated")
        assert repeated <= 200  # the killed worker's deliveries in flight (its threads) at most
    finally:
        receiver.close()
