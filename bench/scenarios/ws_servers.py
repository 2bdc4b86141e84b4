"""Scenario 7: the WebSocket fan-out of scenario 4 served by our daphne subclass and by uvicorn, in the same run.

ASGI has no back-pressure for WebSockets under daphne, which is why the web process is a daphne subclass with a
probe of each connection's unsent bytes (docs/architecture.md, "Why the web server is what it is"). uvicorn's
``send`` does wait while a connection's write buffer is full, so it would bound slow readers without the probe. This
measures whether it serves the fan-out as well: the same shape as ``ws_fanout`` (``run_fanout``: N subscribers from
offset 1 of a fresh topic, one event per gRPC publish at a fixed rate, latency from before the publish to the
client's receive, lost and reordered), against each server in turn. Rounds alternate the servers, every other round
in reverse order, so that a drift of the shared host falls on all of them: two rounds at the fan-out's main size and,
in full mode, one more at its largest, where one process cannot keep up. The servers are the stack's ``web``
(``python -m eventrelay.webserver``) and ``python -m bench.uvicorn_web`` with each WebSocket implementation in
``UVICORN_IMPLEMENTATIONS``, all on the same database, Redis and gRPC server. Beside each run: the server process's
CPU per delivered frame (connecting included).

uvicorn is a development requirement of the bench only; without it the scenario fails saying so.
"""

import copy
import importlib.util
import time
from typing import TYPE_CHECKING, Any

from bench.common import Figure, ScenarioResult, cpu_seconds, progress
from bench.scenarios.fanout import TARGET_P99_MS, run_fanout
from bench.stack import PYTHON, Process, free_port, wait_until

if TYPE_CHECKING:
    from bench.run import Bench

# uvicorn's WebSocket implementations whose send waits for the write buffer to drain.
UVICORN_IMPLEMENTATIONS = ("websockets", "websockets-sansio")
DAPHNE = "daphne (eventrelay.webserver)"


class _Served:
    """The stack as a scenario sees it, with its WebSocket URL pointing at another web server."""

    def __init__(self, stack: Any, ws_url: str, server: Process | None) -> None:
        self._stack = stack
        self.ws_url = ws_url
        self._server = server

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stack, name)

    def check_alive(self) -> None:
        self._stack.check_alive()
        if self._server is not None:
            self._server.check_alive()


def _bench_on(bench: "Bench", ws_url: str, server: Process | None, suffix: str) -> "Bench":
    """``bench`` with the WebSocket side on another server, and topic names of its own (every run needs a fresh one)."""
    served = copy.copy(bench)
    served.stack = _Served(bench.stack, ws_url, server)  # type: ignore[assignment]
    new_topic = bench.new_topic
    served.new_topic = lambda name: new_topic(f"{name}_{suffix}")  # type: ignore[method-assign]
    return served


def _start_uvicorn(bench: "Bench", implementation: str) -> tuple[Process, str]:
    port = free_port()
    name = f"web_uvicorn_{implementation.replace('-', '_')}"
    server = Process(
        name,
        [PYTHON, "-m", "bench.uvicorn_web", "--port", str(port), "--ws", implementation],
        bench.stack.env,
        bench.stack.log_dir,
    )

    def ready() -> bool:
        import requests

        server.check_alive()
        return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200

    wait_until(ready, 60, f"{name}'s /readyz")
    return server, f"ws://127.0.0.1:{port}/ws/events"


def ws_servers(bench: "Bench") -> ScenarioResult:
    if importlib.util.find_spec("uvicorn") is None:
        raise RuntimeError("uvicorn is not installed: `pip install uvicorn` (a bench-only development requirement)")
    mode = bench.mode
    # Rounds at the fan-out's main size, then (full mode) one at its largest, where one process is overloaded.
    sizes = [mode.ws_subscribers] * (1 if mode.name == "quick" else 2)
    if mode.name != "quick":
        sizes.append(mode.ws_subscriber_steps[-1])
    return compare_servers(bench, sizes)


def compare_servers(bench: "Bench", sizes: list[int]) -> ScenarioResult:
    """One round per entry of ``sizes`` (subscribers), every server in each; every other round in reverse order."""
    mode = bench.mode
    result = ScenarioResult("ws_servers", "WebSocket fan-out: daphne subclass against uvicorn")
    servers: dict[str, tuple[Process | None, str]] = {DAPHNE: (None, bench.stack.ws_url)}
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {size: {label: [] for label in servers} for size in sizes}
    try:
        for implementation in UVICORN_IMPLEMENTATIONS:
            label = f"uvicorn --ws {implementation}"
            servers[label] = _start_uvicorn(bench, implementation)
            for by_server in runs.values():
                by_server[label] = []
        for round_number, subscribers in enumerate(sizes, 1):
            order = list(enumerate(servers.items()))
            if round_number % 2 == 0:  # so that no server always runs first (after a quiet spell) or last
                order.reverse()
            for index, (label, (server, ws_url)) in order:
                pid = bench.stack.process("web").pid if server is None else server.pid
                progress(f"round {round_number}: {label}, {subscribers:,} subscribers")
                served = _bench_on(bench, ws_url, server, f"s{index}r{round_number}")
                cpu_before = cpu_seconds(pid)
                run = run_fanout(served, "ws", subscribers, mode.ws_rate, mode.fanout_duration)
                run["server_cpu_s"] = cpu_seconds(pid) - cpu_before
                run["server_cpu_us_per_delivery"] = run["server_cpu_s"] / max(1, run["delivered"]) * 1e6
                runs[subscribers][label].append(run)
                time.sleep(1)  # let the server close the run's connections
    finally:
        for server, _ in servers.values():
            if server is not None:
                server.stop()
    for subscribers, by_server in runs.items():
        for label, label_runs in by_server.items():
            result.figures.extend(_figures(label, subscribers, mode.ws_rate, label_runs))
    result.details = {"sizes": sizes, "runs": {str(size): by_server for size, by_server in runs.items()}}
    return result


def _figures(label: str, subscribers: int, rate: float, runs: list[dict[str, Any]]) -> list[Figure]:
    """Per server: the p99 of each round (the worst as the figure), lost and reordered over all rounds."""
    p99s = [run["latency_ms"]["p99"] for run in runs]
    worst = max((p for p in p99s if p is not None), default=None)
    rounds = "; ".join(
        f"round {n}: p50 {_ms(run['latency_ms']['p50'])}, p95 {_ms(run['latency_ms']['p95'])}, "
        f"p99 {_ms(run['latency_ms']['p99'])}, max {_ms(run['latency_ms']['max'])}, "
        f"publish call p50 {_ms(run['publish_call_ms']['p50'])}, "
        f"server CPU {run['server_cpu_us_per_delivery']:.0f} µs/frame, "
        f"machine busy {run['machine_cores']['busy']:.2f} cores"
        for n, run in enumerate(runs, 1)
    )
    lost = sum(run["lost"] for run in runs)
    reordered = sum(run["reordered"] for run in runs)
    owed = sum(run["expected_deliveries"] for run in runs)
    name = f"{label}, {subscribers:,} subscribers, {rate:g} events/s"
    return [
        Figure(
            "ws_servers",
            f"{name}: latency p99 (worst round)",
            "ms",
            worst,
            "",
            None,
            "lower",
            "p99 <= 100 ms",
            worst is not None and worst <= TARGET_P99_MS,
            baseline_measured=False,
            notes=rounds,
        ),
        Figure(
            "ws_servers",
            f"{name}: lost / reordered",
            "events",
            lost + reordered,
            "",
            None,
            "lower",
            "0",
            lost + reordered == 0,
            baseline_measured=False,
            notes=f"lost {lost}, reordered {reordered} of {owed:,} owed",
        ),
    ]


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"
