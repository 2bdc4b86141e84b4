"""The benchmark harness: ``python -m bench.run --quick|--full [--only scenario,...] [--results-dir DIR]``.

It starts the real processes (a dedicated database, daphne, the gRPC server, two Celery workers and
beat, all on 127.0.0.1), runs each scenario of the performance table of docs/benchmarks.md with its baseline measured
in the same run on the same machine, prints a table (figure, baseline, ratio, target, met?), and
writes ``latest.json`` and ``latest.png`` to the results directory (``bench/results`` by default).
Load generators are processes of their own; every loop is bounded in count and time.
"""

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench import nats_peer
from bench.common import ScenarioResult, machine_cpu_seconds, metadata, progress
from bench.nats_peer import NatsPeer
from bench.stack import DEFAULT_DATABASE_URL, REPO, Stack


@dataclass(frozen=True)
class Mode:
    name: str
    warmup: float  # seconds of uncounted load before each throughput measurement
    duration: float  # seconds counted
    publish_batches: tuple[int, ...]
    publish_batch_main: int
    single_callers: tuple[int, ...]
    single_callers_main: int
    pull_rows: int
    ws_subscriber_steps: tuple[int, ...]
    ws_subscribers: int
    ws_rate: float
    grpc_streams: int
    grpc_rate: float
    fanout_duration: float
    drain: float  # seconds subscribers may wait for the last events after the last publish
    webhook_events_per_stream: int
    webhook_deadline: float
    webhook_slow_events_per_stream: int  # per stream, with a receiver that answers in 100 ms
    webhook_wide_streams: int  # streams, with a receiver that answers in 1 s
    webhook_wide_events_per_stream: int
    retention_backlog: int  # old events the retention scenario's sweep deletes while publishing goes on
    retention_keep: int  # retentionMaxEvents of that topic
    ws_idle_connections: int  # idle WebSocket connections whose memory the web process is weighed with


QUICK = Mode(
    name="quick",
    warmup=0.2,
    duration=1.0,
    publish_batches=(100, 500, 1000),
    publish_batch_main=500,
    single_callers=(32,),
    single_callers_main=32,
    pull_rows=10_000,
    ws_subscriber_steps=(10, 50, 100),
    ws_subscribers=100,
    ws_rate=10,
    grpc_streams=50,
    grpc_rate=50,
    fanout_duration=2,
    drain=5,
    webhook_events_per_stream=4,
    webhook_deadline=40,
    webhook_slow_events_per_stream=3,
    webhook_wide_streams=100,
    webhook_wide_events_per_stream=2,
    retention_backlog=20_000,
    retention_keep=2_000,
    ws_idle_connections=200,
)

FULL = Mode(
    name="full",
    warmup=2,
    duration=15,
    publish_batches=(100, 500, 1000),
    publish_batch_main=500,
    single_callers=(1, 8, 32),
    single_callers_main=32,
    pull_rows=100_000,
    ws_subscriber_steps=(100, 1000, 5000),
    ws_subscribers=1000,
    ws_rate=10,
    grpc_streams=200,
    grpc_rate=50,
    fanout_duration=30,
    drain=30,
    webhook_events_per_stream=40,
    webhook_deadline=240,
    webhook_slow_events_per_stream=20,
    webhook_wide_streams=1000,
    webhook_wide_events_per_stream=3,
    retention_backlog=1_000_000,
    retention_keep=100_000,
    ws_idle_connections=5000,
)


class Bench:
    """What a scenario gets: the running stack, the mode's sizes, an admin token and a few helpers."""

    def __init__(self, stack: Stack, mode: Mode, settle_s: float = 60.0) -> None:
        self.stack = stack
        self.mode = mode
        self.settle_s = settle_s
        self.token = stack.admin_token
        self._channel: Any = None
        # The peer's own nats-server (bench/nats_peer.py); None when nats-server is not on PATH.
        self.nats: NatsPeer | None = None

    @property
    def nats_url(self) -> str | None:
        return None if self.nats is None else self.nats.url

    def grpc_events(self) -> Any:
        import grpc

        from bench.common import GRPC_OPTIONS
        from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc

        if self._channel is None:
            self._channel = grpc.insecure_channel(self.stack.grpc_address, options=GRPC_OPTIONS)
        return pb_grpc.EventsStub(self._channel)

    def grpc_channel(self) -> Any:
        """The bench's own gRPC channel to the server (made on first use)."""
        self.grpc_events()
        return self._channel

    def new_topic(self, name: str) -> str:
        import grpc

        from eventrelay.v1 import eventrelay_pb2 as pb
        from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc

        self.grpc_events()
        try:
            pb_grpc.TopicsStub(self._channel).CreateTopic(
                pb.CreateTopicRequest(name=name), metadata=metadata(self.token), timeout=30
            )
        except grpc.RpcError as error:
            raise RuntimeError(f"creating topic {name}: {error.code().name} {error.details()}") from None
        return name

    def last_offset(self, topic: str) -> int:
        from eventrelay.v1 import eventrelay_pb2 as pb
        from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc

        self.grpc_events()
        topics = (
            pb_grpc.TopicsStub(self._channel)
            .ListTopics(pb.ListTopicsRequest(), metadata=metadata(self.token), timeout=30)
            .topics
        )
        return next(t.last_offset for t in topics if t.name == topic)

    def check_stored(self, topic: str, count: int, at_least: bool = False) -> None:
        """The product really stored what it acknowledged (warm-up calls included, hence ``at_least``)."""
        stored = self.last_offset(topic)
        if stored < count or (not at_least and stored != count):
            raise RuntimeError(f"topic {topic} has {stored} events, expected {'at least ' if at_least else ''}{count}")

    def settle_database(self) -> None:
        """Write PostgreSQL's dirty pages out now (``CHECKPOINT``), before a measurement starts.

        The publish scenarios write gigabytes of WAL; past ``max_wal_size`` PostgreSQL starts a
        checkpoint that flushes them while whatever comes next is being measured (pg_stat_bgwriter
        counted 50 such checkpoints over the day's runs). Settling first makes each measurement,
        product or baseline, pay only for its own writes. Needs a superuser; skipped with a note
        otherwise."""
        try:
            with self.stack.connect_db(autocommit=True) as conn:
                conn.execute("CHECKPOINT")
        except psycopg.Error as error:
            progress(f"CHECKPOINT refused ({error}); measurements may pay for earlier writes")
        self.wait_for_quiet()

    def wait_for_quiet(self, busy_below: float = 0.3) -> float:
        """Wait (at most ``--settle-s`` seconds) until the machine has been nearly idle for half a
        second: fewer than ``busy_below`` cores busy. A scenario that overloads a process (5,000
        WebSocket subscribers) can leave it working after its own measurement has ended, and the
        next measurement would pay for it. Returns the seconds waited."""
        started = time.monotonic()
        while True:
            before = machine_cpu_seconds()
            time.sleep(0.5)
            busy = (machine_cpu_seconds()["busy"] - before["busy"]) / 0.5
            waited = time.monotonic() - started
            if busy < busy_below or waited >= self.settle_s:
                if waited > 2:
                    progress(f"waited {waited:.0f} s for the machine to quiet down ({busy:.2f} cores busy)")
                return waited

    def baseline_table(self, name: str, topic: str) -> str:
        """An empty table identical to ``topic``'s events table (columns, defaults, indexes)."""
        table = f"baseline_{name}"
        with self.stack.connect_db(autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
            conn.execute(f'CREATE TABLE "{table}" (LIKE "{topic}_events" INCLUDING ALL)')
        return f'"{table}"'


def _scenarios() -> dict[str, Callable[[Bench], ScenarioResult]]:
    from bench.scenarios.consumers import consumers
    from bench.scenarios.fanout import grpc_fanout, ws_fanout
    from bench.scenarios.publish import publish_batch, publish_single
    from bench.scenarios.pull import pull
    from bench.scenarios.retention import retention
    from bench.scenarios.webhooks import webhooks
    from bench.scenarios.ws_servers import ws_servers

    return {
        "publish_batch": publish_batch,
        "publish_single": publish_single,
        "pull": pull,
        "consumers": consumers,
        "retention": retention,
        "ws_fanout": ws_fanout,
        "grpc_fanout": grpc_fanout,
        "webhooks": webhooks,
        "ws_servers": ws_servers,
    }


SCENARIOS = (
    "publish_batch",
    "publish_single",
    "pull",
    "consumers",
    "retention",
    "ws_fanout",
    "grpc_fanout",
    "webhooks",
)
# Run only when named in --only: comparisons that are not rows of the performance table (and need bench-only
# packages: ws_servers needs uvicorn).
OPTIONAL_SCENARIOS = ("ws_servers",)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_const", const="quick", dest="mode", help="small sizes, under 2 minutes (CI smoke test)"
    )
    size.add_argument(
        "--full", action="store_const", const="full", dest="mode", help="the documented sizes (the default)"
    )
    parser.set_defaults(mode="full")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated scenarios to run (of: {', '.join(SCENARIOS)}; and, only when named: "
        f"{', '.join(OPTIONAL_SCENARIOS)})",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=REPO / "bench" / "results", help="where latest.json and latest.png go"
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="the bench database (dropped and recreated; its name must start with eventrelay_bench)",
    )
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG")
    parser.add_argument(
        "--settle-s",
        type=float,
        default=60.0,
        help="wait at most this long before each measurement for the machine to quiet down (0: do not wait; "
        "the CI smoke test, which shares the machine with other tests and asserts no figure)",
    )
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()] or list(SCENARIOS)
    unknown = set(args.only) - set(SCENARIOS) - set(OPTIONAL_SCENARIOS)
    if unknown:
        known = ", ".join((*SCENARIOS, *OPTIONAL_SCENARIOS))
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}; known: {known}")
    return args


def main(argv: list[str] | None = None) -> int:
    from bench import report

    args = parse_args(argv)
    mode = QUICK if args.mode == "quick" else FULL
    started = time.monotonic()
    load_at_start = os.getloadavg()
    code = report.code_version()
    if load_at_start[0] > 1.0:
        print(
            f"bench: warning: load average {load_at_start[0]:.2f} before the run: something else is busy, expect noisy numbers",
            flush=True,
        )
    results_dir: Path = args.results_dir.resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    # The processes' logs: beside a custom results directory, else with the tests' logs (ignored by git).
    default_dir = results_dir == (REPO / "bench" / "results").resolve()
    stack = Stack(args.database_url, REPO / ".test-logs" / "bench" if default_dir else results_dir / "logs")
    print(f"bench: {mode.name} mode, scenarios {', '.join(args.only)}; logs in {stack.log_dir}", flush=True)
    results: list[ScenarioResult] = []
    failed = False
    peer: NatsPeer | None = None
    try:
        stack.recreate_database()
        stack.start()
        print(f"bench: processes up after {time.monotonic() - started:.1f}s: {stack.pids()}", flush=True)
        peer = nats_peer.start(stack.log_dir)
        print(f"bench: peer {peer.url} (pid {peer.pid})" if peer else f"bench: {nats_peer.ABSENT_NOTE}", flush=True)
        bench = Bench(stack, mode, settle_s=args.settle_s)
        bench.nats = peer
        scenarios = _scenarios()
        for name in args.only:
            print(f"bench: running {name} ...", flush=True)
            began = time.monotonic()
            try:
                result = scenarios[name](bench)
            except Exception as error:  # noqa: BLE001 - one failed scenario is reported, the others still run
                failed = True
                result = ScenarioResult(name, name, error=f"{error}\n{traceback.format_exc()}")
                print(f"bench: {name} FAILED: {error}", flush=True)
            result.seconds = time.monotonic() - began
            results.append(result)
            print(f"bench: {name} done in {result.seconds:.1f}s", flush=True)
            stack.check_alive()
    except Exception as error:  # noqa: BLE001 - the stack itself failed (a process died): report what we have
        failed = True
        results.append(ScenarioResult("stack", "the processes under test", error=f"{error}\n{traceback.format_exc()}"))
        print(f"bench: FAILED: {error}", flush=True)
    finally:
        if peer is not None:
            peer.stop()
        stack.stop()
    document = report.document(
        *(mode.name, asdict(mode), results, time.monotonic() - started, stack, load_at_start, code),
        nats_server=peer.version if peer else None,
    )
    print(report.table(results))
    json_path = report.write_json(document, results_dir)
    print(f"bench: wrote {json_path}")
    if not args.no_chart:
        print(f"bench: wrote {report.chart(document, results_dir)}")
    print(f"bench: {mode.name} run took {time.monotonic() - started:.1f}s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
