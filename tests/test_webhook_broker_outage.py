"""A publish never waits on the Celery broker (issue 17 I).

A publish to a topic with an active webhook destination wakes delivery through the broker. That wake-up used to
be sent in the publisher's thread with kombu's retry policy: with Redis down every publish waited over a second,
and a broker that accepts connections but never answers held it indefinitely. Now it is handed to a background
sender, and the beat sweep delivers whatever the lost wake-ups were for.

Real processes: gRPC and web servers, a Celery worker and beat, all with a private Redis as the broker. The broker
is replaced by a socket that accepts connections and never answers, the worst case for a blocking send; every
publish over gRPC and REST still completes (each with a deadline far beyond a publish's normal time). Then the
broker comes back and the sweep delivers every event.
"""

import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from eventrelay.auth import mint_token
from harness.processes import CeleryBeat, CeleryWorker, GrpcServer, WebServer, wait_until
from tests.faults import PrivateRedis
from tests.grpc_client import Client, unique_topic
from tests.webhook_processes import FAST_RECOVERY, start_fixture  # noqa: F401 (fixtures)
from webhooks import wakeups
from webhooks.models import DeliveryStream
from webhooks.services import create_destination

pytestmark = pytest.mark.e2e

PUBLISHES = 10  # per transport
DEADLINE_S = 60  # per publish: a normal one takes milliseconds


class Unanswering:
    """Listens on a port and completes TCP handshakes (the kernel does) but never reads or answers."""

    def __init__(self, port: int) -> None:
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", port))
        self.socket.listen(1024)

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def broker() -> Iterator[PrivateRedis]:
    server = PrivateRedis(name="hooks_broker")
    yield server
    server.close()


def test_publishes_complete_while_the_broker_hangs_and_the_sweep_delivers_them_once_it_is_back(
    transactional_db, make_topic, receiver, allow_private, broker, start
):
    env = {"CELERY_BROKER_URL": broker.url, **FAST_RECOVERY}
    grpc_server = start(GrpcServer, env=env, name="hooks_outage_grpc")
    web = start(WebServer, env=env, name="hooks_outage_web")
    start(CeleryWorker, env=env, name="hooks_outage_worker")
    start(CeleryBeat, env=env, name="hooks_outage_beat")
    topic = unique_topic("outage")
    make_topic(topic)
    destination = create_destination(name="outage", url=receiver.url, topic=topic)
    token = mint_token([], admin=True)
    grpc_client = Client(grpc_server.address, token)
    rest = requests.Session()
    rest.trust_env = False
    rest.headers["authorization"] = f"Bearer {token}"

    # Delivery works through the broker to begin with.
    grpc_client.publish(topic, {"n": 0})
    wait_until(lambda: receiver.offsets(topic) == [1], 60, "the first delivery")

    broker.stop()
    hanging = Unanswering(broker.port)
    try:
        published = [1]
        for n in range(PUBLISHES):
            [event] = grpc_client.publish(topic, {"n": n})  # with a 60 s deadline
            published.append(event.offset)
            response = rest.post(
                f"{web.base_url}/api/v1/topics/{topic}/events",
                json=[{"name": "n", "data": {"n": n}}],
                timeout=DEADLINE_S,
            )
            assert response.status_code == 201, response.text
            published.append(response.json()["events"][0]["offset"])
        assert published == list(range(1, 2 * PUBLISHES + 2))
    finally:
        hanging.close()
        grpc_client.close()
        rest.close()
    broker.start()
    # The wake-ups of the outage were lost (the sender gave up on them); only the sweep can deliver now.
    assert "could not queue webhooks.tasks.wake_topic" in web.log() + grpc_server.log()

    wait_until(lambda: sorted(set(receiver.offsets(topic))) == published, 120, "the sweep to deliver every event")
    stream = DeliveryStream.objects.get(destination=destination)
    wait_until(lambda: DeliveryStream.objects.get(pk=stream.pk).last_offset == published[-1], 30, "the cursor")


# --- The sender itself ----------------------------------------------------------------------------


class StuckTask:
    """A task whose sends hang until released, as a send to an unanswering broker would."""

    name = "tests.stuck"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.sent: list[tuple] = []

    def apply_async(self, args: tuple, **options: object) -> None:
        self.started.set()
        self.release.wait(60)
        self.sent.append(args)


def test_submitting_never_waits_for_a_stuck_send_and_the_queue_is_bounded_and_coalesced(settings):
    settings.ER_WEBHOOK_WAKE_QUEUE = 5
    sender = wakeups._Sender()
    task = StuckTask()
    sender._send = lambda task_name, args: task.apply_async(args)
    assert sender.submit(("wake", "first"), task.name, ("first", ["1"]), merge=wakeups._merge_topic_ids)
    assert task.started.wait(30)  # the sender thread is now stuck in that send

    accepted = [
        sender.submit(("wake", f"t{n % 8}"), task.name, (f"t{n % 8}", [str(n)]), merge=wakeups._merge_topic_ids)
        for n in range(1000)
    ]

    # One pending wake-up per topic, at most 5 topics: the rest were dropped (the sweep will find their work).
    assert accepted.count(False) == sum(1 for n in range(1000) if n % 8 >= 5)
    task.release.set()
    assert sender.flush(30)
    assert task.sent[0] == ("first", ["1"])
    assert sorted(task.sent[1:]) == sorted(
        (f"t{t}", sorted({str(n) for n in range(1000) if n % 8 == t})) for t in range(5)
    )
