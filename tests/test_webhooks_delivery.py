"""Webhook delivery end to end: real Celery workers, the real Redis broker, a local HTTP receiver."""

import time

import pytest

from events.services import publish
from harness.processes import CeleryWorker, wait_until
from tests.grpc_client import unique_topic
from tests.helpers import verify_standard_webhook
from topics.services import create_topic
from webhooks.models import DeliveryAttempt, DeliveryStream
from webhooks.services import create_destination

pytestmark = pytest.mark.e2e

FAST_RETRIES = {
    "ER_WEBHOOK_BACKOFF_BASE_MS": "50",
    "ER_WEBHOOK_BACKOFF_CAP_MS": "400",
    "ER_WEBHOOK_LEASE_MARGIN_S": "3",
}


@pytest.fixture(scope="module")
def workers(django_db_setup):
    started = [CeleryWorker(env=FAST_RETRIES, name=f"delivery_worker_{n}") for n in range(2)]
    yield started
    for worker in started:
        worker.stop()


def test_500_events_arrive_in_offset_order_with_valid_signatures(
    transactional_db, workers, receiver, allow_private, admin
):
    topic = unique_topic("orders")
    create_topic(topic)
    destination = create_destination(name="orders", url=receiver.url, topic=f"{topic}:1")

    stored = []
    for batch in range(10):
        stored += publish(
            admin, f"{topic}:1", [{"name": "order_placed", "data": {"b": batch, "i": i}} for i in range(50)], "grpc"
        )

    wait_until(lambda: len(receiver.offsets(f"{topic}:1")) >= 500, 120, "500 deliveries")
    received = receiver.of(f"{topic}:1")
    assert [r.offset for r in received] == [event.offset for event in stored]
    for request, event in zip(received, stored, strict=True):
        assert verify_standard_webhook(destination.secret, request.headers, request.body)
        assert request.headers["webhook-id"] == str(event.event_id)
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 600
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"].startswith("EventRelay/")
        assert request.event["eventId"] == str(event.event_id) and request.event["topic"] == f"{topic}:1"
    stream = DeliveryStream.objects.get(destination=destination)
    wait_until(lambda: DeliveryStream.objects.get(pk=stream.pk).delivered_count == 500, 30, "the cursor")
    assert DeliveryStream.objects.get(pk=stream.pk).last_offset == stored[-1].offset
    assert DeliveryAttempt.objects.filter(stream=stream, status="succeeded").count() == 500


def test_a_failing_event_holds_back_its_stream_but_not_the_others(
    transactional_db, workers, receiver, allow_private, admin
):
    topic = unique_topic("orders")
    create_topic(topic)
    answers = {1: 500, 2: "timeout", 3: "reset", 4: 503, 5: "reset"}

    def answer(event, tries):
        if event["topic"] == f"{topic}:1" and event["data"]["n"] == 10:
            return answers.get(tries, 200)
        return 200

    receiver.answer = answer
    receiver.timeout_sleep = 2.5
    create_destination(name="orders", url=receiver.url, topic=topic, timeout_seconds=1)

    for n in range(1, 501):
        publish(admin, f"{topic}:1", [{"name": "o", "data": {"n": n}}], "grpc")
        if n % 50 == 0:
            publish(admin, f"{topic}:2", [{"name": "o", "data": {"n": n // 50}}], "grpc")

    wait_until(
        lambda: len(set(receiver.offsets(f"{topic}:1"))) >= 500 and len(receiver.offsets(f"{topic}:2")) >= 10,
        180,
        "all deliveries",
    )
    one = receiver.of(f"{topic}:1")
    numbers = [r.event["data"]["n"] for r in one]
    assert numbers == [*range(1, 10), *[10] * 6, *range(11, 501)], numbers[:20]
    two = receiver.of(f"{topic}:2")
    assert [r.event["data"]["n"] for r in two] == list(range(1, 11))
    # orders:2 kept flowing while orders:1 retried #10: its first event arrived before orders:1 #11.
    eleven = next(r for r in one if r.event["data"]["n"] == 11)
    assert two[0].at < eleven.at
