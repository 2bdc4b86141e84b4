"""The web process's PostgreSQL connections stay bounded however many REST requests it serves.

Under ASGI every synchronous request runs on a thread of its own; a connection kept open for reuse
by that thread outlives the request, and piles up until the server refuses everyone. The web process
runs here on a private PostgreSQL with few connection slots, so a leak ends in ``too many clients``
rather than in slowing down everybody else's tests.
"""

import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import requests

from eventrelay.auth import mint_token
from harness.processes import WebServer
from tests.faults import PrivatePostgres

pytestmark = pytest.mark.e2e

APPLICATION_NAME = "outage-connection-use-web"
MAX_CONNECTIONS = 40
CLIENTS = 16
REQUESTS_PER_CLIENT = 60
# Far below max_connections (40), far above what a web process needs for 16 concurrent requests.
CONNECTION_BOUND = 24


def web_connections(postgres: PrivatePostgres) -> int:
    """The web process's connections now; every slot when the server refuses even this check."""
    try:
        return postgres.connections(APPLICATION_NAME)
    except psycopg.OperationalError:  # "too many clients": the leak this test is about
        return MAX_CONNECTIONS


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(name="outage-connection-use", max_connections=MAX_CONNECTIONS)
    yield server
    server.close()


@pytest.fixture(scope="module")
def web(postgres: PrivatePostgres) -> Iterator[WebServer]:
    server = WebServer(
        env={"DATABASE_URL": postgres.url, "ER_DB_APPLICATION_NAME": APPLICATION_NAME}, name="outage-connection-use"
    )
    yield server
    server.stop()


def test_the_web_process_keeps_few_database_connections_under_many_rest_requests(
    postgres: PrivatePostgres, web: WebServer
) -> None:
    token = mint_token([], admin=True)
    topic = f"conn_{uuid.uuid4().hex[:8]}"
    headers = {"authorization": f"Bearer {token}"}
    created = requests.post(f"{web.base_url}/api/v1/topics", json={"name": topic}, headers=headers, timeout=30)
    assert created.status_code == 201, created.text
    before = postgres.connections(APPLICATION_NAME)

    failures: list[str] = []
    peak = [before]
    done = threading.Event()

    def client(number: int) -> None:
        with requests.Session() as session:
            session.trust_env = False
            session.headers.update(headers)
            for i in range(REQUESTS_PER_CLIENT):
                kind = i % 3
                if kind == 0:
                    response = session.get(f"{web.base_url}/api/v1/topics/{topic}/events?offset=0", timeout=60)
                    expected = 200
                elif kind == 1:
                    response = session.get(f"{web.base_url}/api/v1/topics", timeout=60)
                    expected = 200
                else:
                    response = session.post(
                        f"{web.base_url}/api/v1/topics/{topic}/events",
                        json=[{"name": "counted", "data": {"client": number, "i": i}}],
                        timeout=60,
                    )
                    expected = 201
                if response.status_code != expected:
                    failures.append(f"{response.status_code} {response.text[:200]}")

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], web_connections(postgres))
            done.wait(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    clients = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    started = time.monotonic()
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    elapsed = time.monotonic() - started
    done.set()
    watcher.join()
    after = web_connections(postgres)
    print(
        f"web process connections: before {before}, peak {peak[0]}, after {after}; "
        f"{CLIENTS * REQUESTS_PER_CLIENT / elapsed:.0f} requests/s"
    )

    assert failures[:3] == []
    assert peak[0] <= CONNECTION_BOUND
    assert after <= CONNECTION_BOUND
    pulled = requests.get(f"{web.base_url}/api/v1/topics/{topic}/events?offset=1&limit=1000", headers=headers)
    assert pulled.status_code == 200
    published = CLIENTS * len(range(2, REQUESTS_PER_CLIENT, 3))
    assert len(pulled.json()["events"]) == published
