"""Private PostgreSQL and Redis instances for fault tests.

A fault test restarts PostgreSQL, stops Redis or exhausts connections. It must never do that to the
machine's shared servers (other work uses them at the same moment), so it starts its own: a
PostgreSQL cluster ``initdb``-ed into a temporary folder on a free loopback port, with the project's
schema migrated into it, and a ``redis-server`` on a free port. The processes under test are pointed
at them through the environment (``DATABASE_URL``, ``REDIS_URL``, ``CELERY_BROKER_URL``).

PostgreSQL refuses to run as root, so when the tests run as root (CI does) the cluster belongs to the
``postgres`` user and its commands run as that user.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import redis

from harness.processes import LOG_DIR, REPO, VENV_BIN, free_port, wait_until

PG_BIN = Path(os.environ.get("ER_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_postgres_user() -> list[str]:
    """The command prefix that runs a PostgreSQL tool as a non-root user (nothing when not root)."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


class PrivatePostgres:
    """A PostgreSQL server of the test's own, with EventRelay's schema migrated into ``database``.

    ``stop()`` and ``start()`` simulate an outage (the data directory is kept); ``close()`` removes it.
    """

    def __init__(self, name: str = "private_pg", database: str = "eventrelay", max_connections: int = 100) -> None:
        self.name = name
        self.port = free_port()
        self.database = database
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/{database}"
        self._dir = Path(tempfile.mkdtemp(prefix=f"er-{name}-"))
        self.data_dir = self._dir / "data"
        self._log = LOG_DIR / f"{name}-postgres.log"
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            postgres = pwd.getpwnam("postgres")
            os.chown(self._dir, postgres.pw_uid, postgres.pw_gid)
            self._log.touch()
            os.chown(self._log, postgres.pw_uid, postgres.pw_gid)
        self._run(
            str(PG_BIN / "initdb"),
            *("-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--no-locale"),
        )
        self._options = (
            f"-p {self.port} -k {self._dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
            f" -c full_page_writes=off -c max_connections={max_connections}"
        )
        self.start()
        with psycopg.connect(self.admin_url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{database}"')
        subprocess.run(
            [str(VENV_BIN / "python"), "manage.py", "migrate", "--no-input", "-v", "0"],
            cwd=REPO,
            env={**os.environ, "DATABASE_URL": self.url},
            check=True,
            capture_output=True,
        )

    def admin_url(self, database: str | None = None) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database or self.database}"

    def _run(self, *command: str) -> None:
        subprocess.run([*_as_postgres_user(), *command], check=True, capture_output=True)

    def start(self) -> None:
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self._log), "-o", self._options, "-w", "start"
        )
        wait_until(self.is_up, 30, f"{self.name} to accept connections")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: connections are terminated; ``immediate``: like a crash)."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_up(self) -> bool:
        try:
            with psycopg.connect(self.admin_url("postgres"), connect_timeout=2) as connection:
                connection.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def connections(self, application_name: str | None = None) -> int:
        """Client connections to the EventRelay database now (optionally of one application_name)."""
        with psycopg.connect(self.admin_url("postgres")) as connection:
            sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
            params: list[str] = [self.database]
            if application_name is not None:
                sql += " AND application_name = %s"
                params.append(application_name)
            row = connection.execute(sql, params).fetchone()
            return int(row[0]) if row else 0

    def close(self) -> None:
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)


class PrivateRedis:
    """A ``redis-server`` of the test's own on a free port; ``stop()``/``start()`` for an outage."""

    def __init__(self, name: str = "private_redis") -> None:
        self.name = name
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._process = subprocess.Popen(
            command, stdout=open(LOG_DIR / f"{self.name}.log", "a"), stderr=subprocess.STDOUT
        )
        wait_until(self.is_up, 30, f"{self.name} to answer PING")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        self._process = None

    def is_up(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def close(self) -> None:
        self.stop()
