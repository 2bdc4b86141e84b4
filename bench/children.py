"""Load generators run in processes of their own (spawned, not forked: grpcio and forking do not mix).

A child is a module-level function ``target(pipe, *args)``. It prepares (connects, subscribes), says
``ready``, waits for ``go``, does its bounded work and returns a picklable result. The parent drives
several children in step: all ready, then all go, then collect every result, each with a deadline.
A child that overruns its deadline is killed: nothing here runs unbounded.
"""

import multiprocessing
import multiprocessing.connection
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench.common import progress

_context = multiprocessing.get_context("spawn")


def _main(target: Callable[..., Any], pipe: multiprocessing.connection.Connection, args: tuple[Any, ...]) -> None:
    from bench.stack import raise_fd_limit

    raise_fd_limit()
    try:
        result = target(pipe, *args)
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the scenario
        pipe.send(("error", traceback.format_exc()))
    else:
        pipe.send(("result", result))
    finally:
        pipe.close()


class Child:
    def __init__(self, target: Callable[..., Any], *args: Any, label: str = "") -> None:
        self.name = target.__name__
        self.label = label or self.name
        self.pipe, child_end = _context.Pipe()
        self.process = _context.Process(target=_main, args=(target, child_end, args), daemon=True)
        self.process.start()
        child_end.close()

    def receive(self, expect: str, timeout: float) -> Any:
        if not self.pipe.poll(timeout):
            self.kill()
            raise TimeoutError(f"load generator {self.name} sent no '{expect}' within {timeout:.0f}s")
        try:
            kind, value = self.pipe.recv()
        except EOFError:
            raise RuntimeError(f"load generator {self.name} died (exit code {self.process.exitcode})") from None
        if kind == "error":
            raise RuntimeError(f"load generator {self.name} failed:\n{value}")
        if kind != expect:
            raise RuntimeError(f"load generator {self.name} sent '{kind}', expected '{expect}'")
        return value

    def send(self, kind: str, value: Any = None) -> None:
        self.pipe.send((kind, value))

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)

    def join(self, timeout: float = 10) -> None:
        self.process.join(timeout)
        if self.process.is_alive():
            self.kill()


def run_in_step(children: list[Child], ready_timeout: float, result_timeout: float, go: Any = None) -> list[Any]:
    """Wait until every child is ready, start them together, and return their results in order."""
    try:
        for child in children:
            child.receive("ready", ready_timeout)
        for child in children:
            child.send("go", go)
        progress("measuring " + ", ".join(child.label for child in children))
        deadline = time.monotonic() + result_timeout
        results = [child.receive("result", max(1.0, deadline - time.monotonic())) for child in children]
        return results
    finally:
        for child in children:
            child.join()


# --- the child's side ---------------------------------------------------------------------------------


def ready_then_wait(pipe: multiprocessing.connection.Connection, info: Any = None, timeout: float = 600) -> Any:
    """Say ready, then block until the parent says go; return what came with it."""
    pipe.send(("ready", info))
    if not pipe.poll(timeout):
        raise TimeoutError("no 'go' from the parent")
    kind, value = pipe.recv()
    if kind != "go":
        raise RuntimeError(f"expected 'go', got {kind!r}")
    return value
