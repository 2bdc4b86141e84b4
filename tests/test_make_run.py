"""`make run` on this machine: creates the database, migrates, starts the Procfile, serves /readyz."""

import os

import psycopg
import pytest
import requests

from harness.processes import REPO, free_port, log_of, start, stop, wait_until

pytestmark = pytest.mark.e2e


def test_make_run_brings_the_web_process_up_and_ready():
    database = f"eventrelay_make_run_{os.getpid()}"
    port = free_port()
    env = {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
        "ER_HTTP_PORT": str(port),
        "ER_GRPC_PORT": str(free_port()),
        "ER_GRPC_METRICS_PORT": str(free_port()),
        "ER_WORKER_METRICS_PORT": str(free_port()),
        "ER_BEAT_METRICS_PORT": str(free_port()),
    }
    process = start(["make", "--no-print-directory", "run"], env=env, log_name="make_run")
    try:
        wait_until(
            lambda: requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200,
            timeout=180,
            what=f"/readyz on port {port}; make run printed:\n{log_of('make_run')}",
        )
        output = log_of("make_run")
        assert f"http://127.0.0.1:{port}/admin/" in output
        assert "mint_token" in output
        # Every URL a newcomer needs, and how to let webhooks reach a receiver on this machine.
        assert f"live viewer      http://127.0.0.1:{port}/" in output
        assert f"http://127.0.0.1:{port}/api/v1/docs" in output
        assert f"127.0.0.1:{env['ER_GRPC_PORT']}" in output
        assert f"http://127.0.0.1:{port}/metrics" in output
        assert "ER_WEBHOOK_ALLOW_PRIVATE=1" in output
        assert "Created admin account" in output  # a new database gets an admin, and the login is printed
    finally:
        stop(process)
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    assert (REPO / ".env").exists()
