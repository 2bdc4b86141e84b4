"""The worker's connection pool checks a pooled connection by its socket (eventrelay.pooled_postgresql): no round
trip for a healthy one, a terminated backend refused, and a pool whose idle connections were all ended hands out
live ones; after a long outage it connects again soon. Real PostgreSQL connections (the outage on a private
server)."""

import os
import resource
import subprocess
import sys
import time

import psycopg
import pytest
from django.db import connection
from psycopg_pool import ConnectionPool, PoolTimeout

from eventrelay.pooled_postgresql.base import DatabaseWrapper, check_pooled_connection
from tests.faults import PrivatePostgres


@pytest.fixture
def conninfo(db) -> str:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


def last_query_of(pid: int, conninfo: str) -> str:
    with psycopg.connect(conninfo, autocommit=True) as observer:
        row = observer.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    assert row is not None
    return str(row[0])


def terminate(pid: int, conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as killer:
        killer.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])


def assert_refused_once_terminated(conn: psycopg.Connection, conninfo: str) -> None:
    terminate(conn.info.backend_pid, conninfo)
    deadline = time.monotonic() + 10
    with pytest.raises(psycopg.OperationalError):
        while time.monotonic() < deadline:  # the server's message reaches the socket moments later
            check_pooled_connection(conn)
            time.sleep(0.01)


def test_a_healthy_connection_passes_without_a_round_trip(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT 'the last query'")
        check_pooled_connection(conn)
        check_pooled_connection(conn)
        # psycopg_pool's own check would have sent an empty query, which pg_stat_activity would show.
        assert last_query_of(conn.info.backend_pid, conninfo) == "SELECT 'the last query'"
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_connection_on_a_descriptor_past_1024_is_checked(conninfo: str) -> None:
    """A worker with many receivers' sockets open holds descriptors past select()'s limit (FD_SETSIZE, 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        if hard != resource.RLIM_INFINITY and hard < 2048:
            pytest.skip(f"this process may open only {hard} files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            assert conn.pgconn.socket > 1024
            check_pooled_connection(conn)
            assert_refused_once_terminated(conn, conninfo)
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_connection_whose_backend_was_terminated_is_refused(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert_refused_once_terminated(conn, conninfo)


def test_a_closed_connection_is_refused(conninfo: str) -> None:
    conn = psycopg.connect(conninfo, autocommit=True)
    conn.close()
    with pytest.raises(psycopg.OperationalError):
        check_pooled_connection(conn)


def test_a_pool_whose_idle_connections_were_all_ended_hands_out_live_ones(conninfo: str) -> None:
    with ConnectionPool(conninfo, min_size=3, max_size=3, check=check_pooled_connection, open=True) as pool:
        pool.wait(10)
        held = [pool.getconn() for _ in range(3)]
        pids = [conn.info.backend_pid for conn in held]
        for conn in held:
            pool.putconn(conn)
        for pid in pids:
            terminate(pid, conninfo)
        time.sleep(0.2)
        for _ in range(3):
            with pool.connection(timeout=10) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
                assert conn.info.backend_pid not in pids


def test_a_pool_connects_again_soon_after_a_long_postgres_outage() -> None:
    """psycopg_pool retries a failed connection after 1, 3, 7, 15, 31 s...: a thread that asks for a connection
    shortly after a 17 s outage would wait until the try at 31 s. The backend's pool starts over in short rounds."""
    server = PrivatePostgres(name="pool_outage_pg")
    try:
        settings_dict = {
            **connection.settings_dict,
            **{"HOST": "127.0.0.1", "PORT": server.port, "NAME": server.database, "USER": "postgres"},
            **{"PASSWORD": "", "CONN_MAX_AGE": 0, "CONN_HEALTH_CHECKS": True},
            "OPTIONS": {**connection.settings_dict["OPTIONS"], "pool": {"min_size": 1, "max_size": 3}},
        }
        wrapper = DatabaseWrapper(settings_dict, alias="pool_outage")
        pool = wrapper.pool
        assert pool is not None
        pool.open(wait=True, timeout=30)
        try:
            server.stop()
            with pytest.raises(PoolTimeout):
                pool.getconn(timeout=17)
            server.start()
            with pool.connection(timeout=8) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            wrapper.close_pool()
    finally:
        server.close()


def test_a_process_with_a_pool_uses_this_check() -> None:
    """What a worker started as the Procfile starts it gets (ER_DB_POOL set): this backend, its pool, this check."""
    probe = (
        'import django; django.setup(); from django.db import connections; connection = connections["default"]; '
        "print(type(connection).__module__, connection.pool._check.__name__)"
    )
    env = {**os.environ, "ER_DB_POOL": "3", "DJANGO_SETTINGS_MODULE": "eventrelay.settings"}
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["eventrelay.pooled_postgresql.base", "check_pooled_connection"]
