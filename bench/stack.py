"""The system under test: a dedicated database and the real processes of the Procfile, on 127.0.0.1.

Like the end-to-end tests (harness/processes.py), every process is started from the venv on a free
loopback port, in its own process group, with its output in a log file. The settings differ from
the tests' in the ways a benchmark needs: a database of its own (recreated per run, so every run
starts from the same empty state), a Celery queue of its own, rate limits off, private webhook
destinations allowed, and a JWT secret generated for the run. Everything else keeps its production
default (ER_LIVE_TICK_MS included), and DEBUG is off whatever a development .env says.
"""

import os
import resource
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests

# The helpers the end-to-end tests use too: free loopback ports, waiting with a deadline, stopping a process group.
from harness.processes import NO_RATE_LIMITS, free_port, stop, wait_until

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
VENV_BIN = Path(PYTHON).parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/eventrelay_bench"


def raise_fd_limit() -> None:
    """Thousands of WebSocket connections need thousands of file descriptors on both ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def database_url_named(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


class Process:
    """One real process of the stack, in its own process group, logging to ``logs/<name>.log``."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=raise_fd_limit,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        stop(self.process)
        self.log.close()


class Stack:
    """Database + web (daphne) + grpc + 2 Celery workers + beat, started and stopped together."""

    def __init__(self, database_url: str, log_dir: Path, workers: int = 2) -> None:
        self.database_url = database_url
        self.log_dir = log_dir
        self.workers = workers
        self.queue = f"er_bench_{os.getpid()}"
        self.jwt_secret = secrets.token_urlsafe(48)
        self.processes: list[Process] = []
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.base_url = f"http://127.0.0.1:{self.http_port}"
        self.ws_url = f"ws://127.0.0.1:{self.http_port}/ws/events"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "eventrelay.settings",
            "DATABASE_URL": database_url,
            "ER_JWT_SECRET": self.jwt_secret,
            "ER_CELERY_QUEUE": self.queue,
            "ER_REDIS_PREFIX": self.queue,
            "ER_WEBHOOK_ALLOW_PRIVATE": "1",
            "ER_BIND_HOST": "127.0.0.1",
            "ER_LOG_LEVEL": "WARNING",
            # The bench scrapes no metrics (the counting itself still runs), and its two workers would want one port.
            "ER_GRPC_METRICS_PORT": "0",
            "ER_WORKER_METRICS_PORT": "0",
            "ER_BEAT_METRICS_PORT": "0",
            # Production behaviour: a development .env may turn DEBUG on, which keeps every SQL
            # query in memory and wraps every cursor.
            "DJANGO_DEBUG": "0",
            # The retention scenario runs its own sweeper, on a schedule it measures; beat's would interleave.
            "ER_RETENTION_SWEEP_S": "86400",
            **NO_RATE_LIMITS,
        }
        self.admin_token = ""

    # --- database -----------------------------------------------------------------------------------

    def recreate_database(self) -> None:
        """Drop the bench database and create it again with ``ensure_database`` + ``migrate``."""
        name = urlsplit(self.database_url).path.lstrip("/")
        if not name.startswith("eventrelay_bench"):
            raise RuntimeError(f"refusing to drop {name!r}: the bench database's name must start with eventrelay_bench")
        with psycopg.connect(database_url_named(self.database_url, "postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.manage("ensure_database")
        self.manage("migrate", "--no-input")

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout.strip()

    def connect_db(self, **kwargs: Any) -> psycopg.Connection:
        return psycopg.connect(self.database_url, **kwargs)

    # --- processes ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.admin_token = self.manage("mint_token", "--admin", "--ttl", "14400", "--sub", "bench")
        self.processes.append(
            Process("grpc", [PYTHON, "manage.py", "grpcserver", "--port", str(self.grpc_port)], self.env, self.log_dir)
        )
        self.processes.append(
            Process(
                "web",
                [
                    PYTHON,
                    "-m",
                    "eventrelay.webserver",
                    *("-b", "127.0.0.1", "-p", str(self.http_port)),
                    "eventrelay.asgi:application",
                ],
                self.env,
                self.log_dir,
            )
        )
        for n in range(self.workers):
            self.processes.append(self._worker(n + 1))
        self.processes.append(
            Process(
                "beat",
                [
                    *(str(VENV_BIN / "celery"), "-A", "eventrelay", "beat", "--loglevel", "INFO"),
                    *("--schedule", str(self.log_dir / "celerybeat-schedule")),
                ],
                self.env,
                self.log_dir,
            )
        )
        self._wait_ready()

    def _worker(self, n: int) -> Process:
        """Worker ``n`` as the Procfile starts it: delivery threads on a bounded pool of connections. Its database
        connections carry the application name ``bench-worker<n>`` (what ``pg_stat_activity`` is sampled by)."""
        return Process(
            f"worker{n}",
            [
                *(str(VENV_BIN / "celery"), "-A", "eventrelay", "worker", "--loglevel", "INFO"),
                *("--queues", self.queue, "--pool", "threads", "--concurrency", "200"),
                *("--hostname", f"bench{n}-{os.getpid()}@%h", "--without-mingle", "--without-gossip"),
            ],
            {**self.env, "ER_DB_POOL": "10", "ER_DB_APPLICATION_NAME": f"bench-worker{n}"},
            self.log_dir,
        )

    def stop_worker(self, n: int) -> None:
        """Stop worker ``n`` (a scenario measuring one worker); :meth:`start_worker` brings it back."""
        worker = self.process(f"worker{n}")
        worker.stop()
        self.processes.remove(worker)

    def start_worker(self, n: int) -> None:
        self.processes.insert(-1, self._worker(n))  # (before beat, which stops first)
        self._wait_ready()

    def _wait_ready(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        def grpc_serving() -> bool:
            self.process("grpc").check_alive()
            with grpc.insecure_channel(self.grpc_address) as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.RpcError:
                    return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        def web_ready() -> bool:
            self.process("web").check_alive()
            return requests.get(f"{self.base_url}/readyz", timeout=1).status_code == 200

        def workers_ready() -> bool:
            for process in self.processes:
                if process.name.startswith("worker"):
                    process.check_alive()
                    if "ready." not in process.log_path.read_text(errors="replace"):
                        return False
            return True

        wait_until(grpc_serving, 60, "the gRPC server")
        wait_until(web_ready, 60, "the web process's /readyz")
        wait_until(workers_ready, 90, "the Celery workers")

    def process(self, name: str) -> Process:
        return next(process for process in self.processes if process.name == name)

    def pids(self) -> dict[str, int]:
        return {process.name: process.pid for process in self.processes}

    def check_alive(self) -> None:
        for process in self.processes:
            process.check_alive()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        # The run's queue lives in Redis: leave nothing behind.
        try:
            import redis

            redis.Redis.from_url(self.env.get("REDIS_URL", "redis://127.0.0.1:6379/0")).delete(self.queue)
        except Exception:  # noqa: BLE001 - cleanup only
            pass
