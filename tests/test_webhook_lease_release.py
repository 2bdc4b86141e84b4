"""A database error mid-delivery does not hold a webhook stream's lease for the whole lease (issue 17 H).

The worker used to release the lease in the connection that had just failed, so the release failed too, and the
stream waited for the lease to expire: the request timeout plus ER_WEBHOOK_LEASE_MARGIN_S (set to ten minutes
here). Real processes on a private PostgreSQL: a web process (topics, destination and events over REST), a Celery
worker and beat; the receiver holds one request while PostgreSQL restarts under the worker.
"""

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests

from eventrelay.auth import mint_token
from harness.processes import CeleryBeat, CeleryWorker, WebServer, wait_until
from tests.faults import PrivatePostgres
from tests.grpc_client import unique_topic
from tests.webhook_processes import broker_fixture, start_fixture  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e

LONG_LEASE = {
    "ER_WEBHOOK_TIMEOUT_S": "60",
    "ER_WEBHOOK_LEASE_MARGIN_S": "600",
    "ER_WEBHOOK_SWEEP_S": "1",
    "ER_WEBHOOK_REQUEUE_S": "2",
}


class Rest:
    def __init__(self, server: WebServer) -> None:
        self.base = f"{server.base_url}/api/v1/"
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["authorization"] = f"Bearer {mint_token([], admin=True)}"

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        response = self.session.request(method, self.base + path, json=body, timeout=30)
        assert response.status_code == expect, (method, path, response.status_code, response.text)
        return response.json() if response.content else None


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(name="hooks_lease_pg")
    yield server
    server.close()


def stream_state(pg: PrivatePostgres) -> tuple[int, str]:
    with psycopg.connect(pg.admin_url(), connect_timeout=2) as conn:
        row = conn.execute("SELECT last_offset, lease_owner FROM webhooks_deliverystream").fetchone()
        return (row[0], row[1]) if row else (0, "")


def test_a_stream_is_delivered_soon_after_postgresql_restarts_under_a_request_in_flight(
    private_pg, receiver, broker, start
):
    env = {"DATABASE_URL": private_pg.url, **LONG_LEASE}
    web = start(WebServer, env=env, name="hooks_lease_web")
    start(CeleryWorker, env=env, name="hooks_lease_worker", concurrency=1)
    start(CeleryBeat, env=env, name="hooks_lease_beat")
    rest = Rest(web)
    topic = unique_topic("lease")
    rest.call("POST", "topics", {"name": topic}, expect=201)
    rest.call("POST", "webhooks", {"name": "lease", "url": receiver.url, "topic": f"{topic}:1"}, expect=201)

    in_flight, answer = threading.Event(), threading.Event()

    def hold_the_third_until_told(event: dict, tries: int) -> int:
        if event["offset"] == 3 and tries == 1:
            in_flight.set()
            answer.wait(120)
        return 200

    receiver.answer = hold_the_third_until_told
    events = [{"name": "n", "data": {"n": n}} for n in range(6)]
    published = [e["offset"] for e in rest.call("POST", f"topics/{topic}:1/events", events, expect=201)["events"]]
    assert published == [1, 2, 3, 4, 5, 6]

    assert in_flight.wait(60), "the worker never sent offset 3"
    private_pg.restart()
    answer.set()

    wait_until(lambda: stream_state(private_pg)[0] == 6, 120, "the stream to be delivered after the restart")
    received = receiver.offsets(f"{topic}:1")
    # At least once, in order: offset 3 was acknowledged while its worker's connection was gone, so it is
    # sent again; nothing is skipped and nothing comes out of order.
    assert received in ([1, 2, 3, 4, 5, 6], [1, 2, 3, 3, 4, 5, 6]), received
    wait_until(lambda: stream_state(private_pg)[1] == "", 30, "the lease to be released")
