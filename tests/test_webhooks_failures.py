"""Webhook delivery failures end to end (docs/webhooks.md): exhausted attempts, 410 Gone, redirects,
Retry-After, and private addresses. Real Celery workers, the real Redis broker, a local HTTP receiver."""

import socket
import threading
import uuid

import pytest

from eventrelay.errors import InvalidInput
from events.services import publish
from harness.processes import CeleryWorker, wait_until
from tests.grpc_client import unique_topic
from tests.webhook_receiver import Receiver
from webhooks.models import DeliveryAttempt, DeliveryStream, Destination, UndeliverableEvent
from webhooks.services import create_destination, redeliver, resume

pytestmark = pytest.mark.e2e

FAST_RETRIES = {
    "ER_WEBHOOK_BACKOFF_BASE_MS": "50",
    "ER_WEBHOOK_BACKOFF_CAP_MS": "400",
    "ER_WEBHOOK_LEASE_MARGIN_S": "3",
}


class WorkerPool:
    """This module's workers, which may send to loopback (COMMON_ENV). A test that needs workers
    configured otherwise stops them first: every worker of a run takes tasks from the same queue."""

    def __init__(self) -> None:
        self.running: list[CeleryWorker] = []

    def start(self) -> None:
        if not self.running:
            self.running = [CeleryWorker(env=FAST_RETRIES, name=f"failures_worker_{n}") for n in range(2)]

    def stop(self) -> None:
        for worker in self.running:
            worker.stop()
        self.running = []


@pytest.fixture(scope="module")
def worker_pool(django_db_setup):
    pool = WorkerPool()
    yield pool
    pool.stop()


@pytest.fixture
def workers(worker_pool):
    worker_pool.start()
    return worker_pool.running


@pytest.fixture
def strict_worker(worker_pool):
    """The only worker running: one that refuses private and loopback addresses."""
    worker_pool.stop()
    worker = CeleryWorker(env={**FAST_RETRIES, "ER_WEBHOOK_ALLOW_PRIVATE": "0"}, name="failures_strict_worker")
    yield worker
    worker.stop()


class Trap:
    """A port that counts every connection made to it: where a followed redirect would go."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/elsewhere"
        self.connections = 0
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.closed.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def trap():
    server = Trap()
    yield server
    server.close()


def redirect_to(receiver: Receiver, url: str) -> None:
    """Make the receiver's 3xx answers carry ``Location: url``."""

    class Redirecting(receiver.server.RequestHandlerClass):
        def send_header(self, keyword: str, value: str) -> None:
            super().send_header(keyword, url if keyword.lower() == "location" else value)

    receiver.server.RequestHandlerClass = Redirecting


def numbers(receiver: Receiver, topic: str) -> list[int]:
    """The ``n`` of each request the receiver got for ``topic``, in arrival order (retries included)."""
    return [request.event["data"]["n"] for request in receiver.of(topic)]


def publish_numbered(admin, topic: str, numbers: range) -> list:
    return publish(admin, topic, [{"name": "o", "data": {"n": n}} for n in numbers], "grpc")


def cursor_of(destination: Destination) -> int:
    return DeliveryStream.objects.get(destination=destination).last_offset


# --- Exhausted attempts ---------------------------------------------------------------------------


def test_an_event_that_exhausts_its_attempts_is_set_aside_the_stream_moves_on_and_it_can_be_redelivered(
    transactional_db, workers, receiver, allow_private, admin, make_topic
):
    # Given a destination allowing 3 attempts and a receiver that refuses event #3 with a 500
    topic = unique_topic("orders")
    make_topic(topic)
    accepting = False
    receiver.answer = lambda event, tries: 500 if event["data"]["n"] == 3 and not accepting else 200
    destination = create_destination(name="orders", url=receiver.url, topic=f"{topic}:1", max_attempts=3)

    # When six events are published
    stored = publish_numbered(admin, f"{topic}:1", range(1, 7))

    # Then #3 is tried exactly 3 times, and #4..#6 still arrive, in order
    wait_until(lambda: cursor_of(destination) == stored[-1].offset, 60, "the stream to pass event #6")
    assert numbers(receiver, f"{topic}:1") == [1, 2, 3, 3, 3, 4, 5, 6]
    # And #3 is recorded undeliverable, with its 3 failed attempts
    undeliverable = UndeliverableEvent.objects.get(stream__destination=destination)
    assert (undeliverable.offset, undeliverable.event_id) == (stored[2].offset, stored[2].event_id)
    assert undeliverable.attempts == 3
    assert undeliverable.last_error == "HTTP 500"
    assert undeliverable.redelivered_at is None
    attempts = DeliveryAttempt.objects.filter(offset=stored[2].offset, stream__destination=destination)
    assert sorted(attempts.values_list("attempt", "status", "response_status")) == [
        (1, "failed", 500),
        (2, "failed", 500),
        (3, "failed", 500),
    ]
    assert DeliveryStream.objects.get(destination=destination).delivered_count == 5

    # When the receiver accepts again and the event is redelivered
    accepting = True
    redeliver(undeliverable)

    # Then the receiver gets #3 once more and acknowledges it, and the redelivery is recorded
    wait_until(
        lambda: UndeliverableEvent.objects.get(pk=undeliverable.pk).redelivered_at is not None, 60, "the redelivery"
    )
    threes = [r for r in receiver.of(f"{topic}:1") if r.event["data"]["n"] == 3]
    assert [r.answered for r in threes] == ["500", "500", "500", "200"]
    assert threes[-1].headers["webhook-id"] == str(stored[2].event_id)
    assert attempts.filter(status="succeeded").values_list("attempt", "response_status").get() == (4, 200)


# --- 410 Gone -------------------------------------------------------------------------------------


@pytest.fixture
def witness_receiver():
    server = Receiver()
    yield server
    server.close()


def test_410_gone_disables_the_destination_until_it_is_resumed(
    transactional_db, workers, receiver, witness_receiver, allow_private, admin, make_topic
):
    # Given a receiver that answers event #2 with 410 Gone the first time
    topic = unique_topic("orders")
    make_topic(topic)
    receiver.answer = lambda event, tries: 410 if event["data"]["n"] == 2 and tries == 1 else 200
    destination = create_destination(name="orders", url=receiver.url, topic=f"{topic}:1")
    # and a witness: an active destination of the same topic, woken by the same publishes
    create_destination(name="witness", url=witness_receiver.url, topic=f"{topic}:1")

    # When three events are published
    stored = publish_numbered(admin, f"{topic}:1", range(1, 4))

    # Then the destination is disabled, saying why, after delivering #1 only
    wait_until(lambda: not Destination.objects.get(pk=destination.pk).active, 60, "the destination to be disabled")
    assert "410" in Destination.objects.get(pk=destination.pk).disabled_reason
    assert numbers(receiver, f"{topic}:1") == [1, 2]
    assert cursor_of(destination) == stored[0].offset

    # When more events are published while it is disabled
    stored += publish_numbered(admin, f"{topic}:1", range(4, 6))

    # Then nothing more is sent: the workers have handled these publishes (the witness got #5), not to it
    wait_until(lambda: numbers(witness_receiver, f"{topic}:1")[-1:] == [5], 60, "the witness's delivery of #5")
    assert numbers(receiver, f"{topic}:1") == [1, 2]
    assert cursor_of(destination) == stored[0].offset

    # When the destination is resumed
    resume(destination)

    # Then the backlog, from the refused #2 on, is delivered in order
    wait_until(lambda: cursor_of(destination) == stored[-1].offset, 60, "the backlog")
    assert numbers(receiver, f"{topic}:1") == [1, 2, 2, 3, 4, 5]
    destination.refresh_from_db()
    assert destination.active and destination.disabled_reason == ""


# --- Redirects ------------------------------------------------------------------------------------


def test_a_redirect_is_a_failed_attempt_and_is_not_followed(
    transactional_db, workers, receiver, trap, allow_private, admin, make_topic
):
    # Given a receiver that answers the first two tries of an event with 302 to another address
    topic = unique_topic("orders")
    make_topic(topic)
    redirect_to(receiver, trap.url)
    receiver.answer = lambda event, tries: 302 if tries <= 2 else 200
    destination = create_destination(name="orders", url=receiver.url, topic=f"{topic}:1")

    # When an event is published
    [event] = publish_numbered(admin, f"{topic}:1", range(1, 2))

    # Then it is tried three times at the receiver (two failures, one success) and never elsewhere
    wait_until(lambda: cursor_of(destination) == event.offset, 60, "the event to be delivered")
    assert [r.answered for r in receiver.of(f"{topic}:1")] == ["302", "302", "200"]
    assert trap.connections == 0
    attempts = DeliveryAttempt.objects.filter(stream__destination=destination, offset=event.offset)
    assert sorted(attempts.values_list("attempt", "status", "response_status", "error")) == [
        (1, "failed", 302, "HTTP 302"),
        (2, "failed", 302, "HTTP 302"),
        (3, "succeeded", 200, ""),
    ]


# --- Retry-After ----------------------------------------------------------------------------------


def gap_between_first_two_tries(receiver: Receiver, topic: str) -> float:
    first, second = receiver.of(topic)[:2]
    return second.at - first.at


def test_retry_after_sets_the_time_of_the_next_try(
    transactional_db, workers, receiver, allow_private, admin, make_topic
):
    # Given a destination whose own backoff would retry after ~50 ms, and a receiver that answers
    # the first try with 503 and Retry-After: 2
    topic = unique_topic("orders")
    make_topic(topic)
    receiver.answer = lambda event, tries: (503, 2) if tries == 1 else 200
    destination = create_destination(
        name="orders", url=receiver.url, topic=f"{topic}:1", backoff_base_ms=50, backoff_cap_ms=60_000
    )

    # When an event is published
    [event] = publish_numbered(admin, f"{topic}:1", range(1, 2))

    # Then the second try comes no sooner than the receiver asked
    wait_until(lambda: cursor_of(destination) == event.offset, 60, "the event to be delivered")
    assert [r.answered for r in receiver.of(f"{topic}:1")] == ["(503, 2)", "200"]
    assert gap_between_first_two_tries(receiver, f"{topic}:1") >= 1.9


def test_a_retry_after_beyond_the_backoff_cap_is_clamped_to_the_cap(
    transactional_db, workers, receiver, allow_private, admin, make_topic
):
    # Given a destination with a 1 s backoff cap, and a receiver that answers the first try with
    # 503 and Retry-After: 30
    topic = unique_topic("orders")
    make_topic(topic)
    receiver.answer = lambda event, tries: (503, 30) if tries == 1 else 200
    destination = create_destination(
        name="orders", url=receiver.url, topic=f"{topic}:1", backoff_base_ms=50, backoff_cap_ms=1000
    )

    # When an event is published
    [event] = publish_numbered(admin, f"{topic}:1", range(1, 2))

    # Then the second try waits for the cap (not the 50 ms backoff), and not for the 30 s asked
    wait_until(lambda: cursor_of(destination) == event.offset, 60, "the event to be delivered")
    assert [r.answered for r in receiver.of(f"{topic}:1")] == ["(503, 30)", "200"]
    assert 0.9 <= gap_between_first_two_tries(receiver, f"{topic}:1") < 20


# --- Private addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.0.0.1/",
        "http://169.254.169.254/",
        "http://[::1]/",
        "http://localhost/",
    ],
)
def test_it_refuses_to_create_a_destination_for_a_non_public_address(db, settings, make_topic, url):
    # Given private destinations are not allowed
    settings.ER_WEBHOOK_ALLOW_PRIVATE = False
    topic = unique_topic("orders")
    make_topic(topic)

    # When a destination for a non-public address is created, then it is refused, naming the URL
    with pytest.raises(InvalidInput) as refused:
        create_destination(name="internal", url=url, topic=topic)
    assert refused.value.field == "url"
    # And nothing is stored
    assert not Destination.objects.exists()


def test_a_worker_that_refuses_private_addresses_does_not_send_to_a_destination_created_while_allowed(
    transactional_db, strict_worker, receiver, allow_private, admin, make_topic
):
    # Given a loopback destination created while private addresses were allowed, and only a
    # worker that refuses them
    topic = unique_topic("orders")
    make_topic(topic)
    destination = create_destination(name="orders", url=receiver.url, topic=f"{topic}:1", max_attempts=2)

    # When an event is published
    [event] = publish_numbered(admin, f"{topic}:1", range(1, 2))

    # Then every attempt is refused before a request is made, and the event ends up undeliverable
    wait_until(
        lambda: UndeliverableEvent.objects.filter(stream__destination=destination).exists(), 60, "the event to give up"
    )
    assert receiver.requests == []
    attempts = DeliveryAttempt.objects.filter(stream__destination=destination, offset=event.offset)
    assert sorted(attempts.values_list("attempt", "status", "response_status")) == [
        (1, "failed", None),
        (2, "failed", None),
    ]
    for attempt in attempts:
        assert attempt.error.startswith("refused:") and "loopback" in attempt.error, attempt.error
    undeliverable = UndeliverableEvent.objects.get(stream__destination=destination)
    assert "loopback" in undeliverable.last_error


def test_attempt_errors_are_in_words_an_operator_reads(allow_private):
    """Not a library's repr of nested exceptions: what happened, and with whom."""
    from webhooks.delivery import post_event, synthetic_test_event

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens on it once closed
    destination = Destination(name="d", url=f"http://127.0.0.1:{port}/hook", topic_name="t", secret="whsec_" + "QQ==")
    event = synthetic_test_event(destination, uuid.uuid4())
    assert post_event(destination, event).error == f"connection refused by 127.0.0.1:{port}"

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts (the kernel does) and never answers
        destination.url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        destination.timeout_seconds = 1
        assert post_event(destination, event).error == (
            f"timed out after 1 s waiting for 127.0.0.1:{silent.getsockname()[1]} to answer"
        )
