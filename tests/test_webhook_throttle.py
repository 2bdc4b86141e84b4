"""A destination's throttle (docs/webhooks.md): at most ``maxPerSecond`` requests a second to it, its streams and
workers together (the budget is in Redis), and a 429 from it holds back every stream of it, not just the one that
got it. The assertions are upper bounds on what was sent: a slower machine only sends less."""

import threading
from typing import Any

import pytest

from events.services import publish
from webhooks import delivery
from webhooks.models import DeliveryStream
from webhooks.services import create_destination

pytestmark = pytest.mark.django_db(transaction=True)


def test_no_more_than_max_per_second_requests_reach_a_destination_from_all_its_streams(
    make_topic: Any, receiver: Any, allow_private: None, admin: Any
) -> None:
    make_topic("orders")
    destination = create_destination(name="crm", url=receiver.url, topic="orders", max_per_second=5)
    for topic_id in ("a", "b", "c"):
        publish(admin, f"orders:{topic_id}", [{"name": "paid", "data": n} for n in range(4)], "http")
    delivery.wake_topic("orders", None)
    streams = list(DeliveryStream.objects.filter(destination=destination).values_list("pk", flat=True))

    def deliver(stream_id: int) -> None:
        try:
            delivery.deliver_stream(stream_id)
        finally:
            from django.db import connection

            connection.close()

    threads = [threading.Thread(target=deliver, args=(stream_id,)) for stream_id in streams]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    times = sorted(request.at for request in receiver.requests)
    assert len(times) == 12
    # Any one second holds at most 5 requests, plus the one the burst allows at its start.
    assert max(sum(1 for t in times if start <= t < start + 1) for start in times) <= 6
    for topic_id in ("a", "b", "c"):
        assert receiver.offsets(f"orders:{topic_id}") == sorted(receiver.offsets(f"orders:{topic_id}"))


def test_a_429_holds_back_the_destinations_other_streams_too(
    make_topic: Any, receiver: Any, allow_private: None, admin: Any
) -> None:
    make_topic("orders")
    destination = create_destination(name="crm", url=receiver.url, topic="orders")
    publish(admin, "orders:a", [{"name": "paid", "data": 1}], "http")
    publish(admin, "orders:b", [{"name": "paid", "data": 2}], "http")
    delivery.wake_topic("orders", None)
    receiver.answer = lambda event, tries: (429, 2) if event["topic"] == "orders:a" else 200
    first = DeliveryStream.objects.get(destination=destination, topic_id="a")
    second = DeliveryStream.objects.get(destination=destination, topic_id="b")

    assert delivery.deliver_stream(first.pk) == "retrying"
    assert delivery.deliver_stream(second.pk) == "drained"

    [refused] = receiver.of("orders:a")
    [sent] = receiver.of("orders:b")
    assert sent.at - refused.at >= 1.5  # it waited for the hold of orders:a's 429 (Retry-After: 2)
