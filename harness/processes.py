"""Starting, waiting for and stopping real processes on loopback ports (the tests' servers and the bench's stack)."""

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
# Every process a test run starts uses this Celery queue and this Redis prefix, so no other run (another pytest-xdist
# worker, CI, a developer's own processes) takes its tasks or hears its live notifications: tests reuse topic names.
TEST_QUEUE = f"er_test_{os.getpid()}"
TEST_REDIS_PREFIX = TEST_QUEUE
# Settings every server process of a test run shares (webhooks go to a receiver on 127.0.0.1).
# Rate limits are off unless a test turns them on (tests/test_rate_limits.py): hundreds of calls from
# one IP and token would otherwise trip them.
NO_RATE_LIMITS = {f"ER_RATE_LIMIT_{name}_PER_S": "0" for name in ("PUBLISH", "REQUESTS", "AUTH_FAILURES", "CONNECTS")}
COMMON_ENV = {
    "ER_CELERY_QUEUE": TEST_QUEUE,
    "ER_REDIS_PREFIX": TEST_REDIS_PREFIX,
    "ER_WEBHOOK_ALLOW_PRIVATE": "1",
    "ER_LIVE_TICK_MS": "200",
    # No metrics port unless a test asks for one on a free port: several runs (and a developer's own processes)
    # share the machine, and the default ports are fixed.
    **{f"ER_{kind}_METRICS_PORT": "0" for kind in ("GRPC", "WORKER", "BEAT")},
    **NO_RATE_LIMITS,
}

# Output of every process a test starts, kept after the run for debugging (ignored by git); one directory per
# pytest-xdist worker, whose tests start processes of the same names.
LOG_DIR = REPO / ".test-logs" / os.environ.get("PYTEST_XDIST_WORKER", "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], env: dict[str, str] | None = None, log_name: str = "process") -> subprocess.Popen:
    """Start ``command`` in its own process group (so stop() also ends its children)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / f"{log_name}.log", "w")
    return subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def log_of(log_name: str) -> str:
    path = LOG_DIR / f"{log_name}.log"
    return path.read_text() if path.exists() else ""


def test_database_url() -> str:
    """DATABASE_URL of the database this test session uses (pytest-django's test database)."""
    from django.db import connection

    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class GrpcServer:
    """A real ``manage.py grpcserver`` process on a free loopback port."""

    def __init__(self, env: dict[str, str] | None = None, name: str = "grpcserver") -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.name = name
        self.process = start(
            [str(VENV_BIN / "python"), "manage.py", "grpcserver", "--port", str(self.port)],
            env={"DATABASE_URL": test_database_url(), **COMMON_ENV, **(env or {})},
            log_name=name,
        )
        self.wait_serving()

    def wait_serving(self, timeout: float = 60) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        def serving() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{log_of(self.name)}")
            with grpc.insecure_channel(self.address) as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.RpcError:
                    return False
                return reply.status == health_pb2.HealthCheckResponse.SERVING

        wait_until(serving, timeout, f"{self.name} to serve on {self.address}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop(self.process, sig)

    def log(self) -> str:
        return log_of(self.name)


class WebServer:
    """The Procfile's ``web`` process (daphne through eventrelay.webserver) on a free loopback port."""

    def __init__(self, env: dict[str, str] | None = None, name: str = "web") -> None:
        self.port = free_port()
        self.name = name
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws/events"
        self.process = start(
            [
                str(VENV_BIN / "python"),
                *("-m", "eventrelay.webserver", "-b", "127.0.0.1", "-p", str(self.port)),
                "eventrelay.asgi:application",
            ],
            env={"DATABASE_URL": test_database_url(), **COMMON_ENV, **(env or {})},
            log_name=name,
        )

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{log_of(self.name)}")
            return requests.get(f"{self.base_url}/healthz", timeout=1).status_code == 200

        wait_until(ready, 60, f"{self.name} to answer /healthz")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop(self.process, sig)

    def log(self) -> str:
        return log_of(self.name)


class CeleryWorker:
    """A real ``celery -A eventrelay worker`` process on the test database and a test queue, started as the
    Procfile starts it."""

    def __init__(self, env: dict[str, str] | None = None, name: str = "worker", concurrency: int = 200) -> None:
        self.name = name
        # As the Procfile starts it: a thread pool of delivery threads sharing a bounded pool of connections.
        self.process = start(
            [
                str(VENV_BIN / "celery"),
                *("-A", "eventrelay", "worker", "--loglevel", "INFO", "--queues", TEST_QUEUE, "--pool", "threads"),
                *("--concurrency", str(concurrency), "--hostname", f"{name}-{os.getpid()}@%h", "--without-mingle"),
                "--without-gossip",
            ],
            env={"DATABASE_URL": test_database_url(), **COMMON_ENV, "ER_DB_POOL": "10", **(env or {})},
            log_name=name,
        )
        wait_until(lambda: "ready." in log_of(name) or self._exited(), 60, f"{name} to be ready")

    def _exited(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{log_of(self.name)}")
        return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop(self.process, sig)


class CeleryBeat:
    def __init__(self, env: dict[str, str] | None = None, name: str = "beat") -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.process = start(
            [
                str(VENV_BIN / "celery"),
                *("-A", "eventrelay", "beat", "--loglevel", "INFO"),
                *("--schedule", str(LOG_DIR / f"celerybeat-{os.getpid()}-{name}")),
            ],
            env={"DATABASE_URL": test_database_url(), **COMMON_ENV, **(env or {})},
            log_name=name,
        )

    def stop(self) -> None:
        stop(self.process)
