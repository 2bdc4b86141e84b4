"""Bulk redelivery (docs/webhooks.md): every undeliverable event of a destination recorded since a time is sent
again, in offset order per stream; older records and already redelivered ones are left alone. A real worker
process runs the queued tasks."""

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from eventrelay.auth import mint_token
from events.services import publish
from harness.processes import CeleryWorker, wait_until
from tests.webhook_processes import broker_fixture, start_fixture  # noqa: F401 (fixtures)
from webhooks import delivery
from webhooks.models import DeliveryStream, UndeliverableEvent
from webhooks.services import create_destination

pytestmark = pytest.mark.e2e


def test_undeliverable_events_since_a_time_are_redelivered_in_order_per_stream(
    transactional_db: None,
    client: Any,
    make_topic: Any,
    receiver: Any,
    allow_private: None,
    admin: Any,
    monkeypatch: Any,
    broker: Any,
    start: Any,
) -> None:
    monkeypatch.setattr(delivery, "backoff_seconds", lambda *args: 0)
    make_topic("orders")
    destination = create_destination(name="crm", url=receiver.url, topic="orders", max_attempts=1)
    for topic_id in ("a", "b"):
        publish(admin, f"orders:{topic_id}", [{"name": "paid", "data": n} for n in range(3)], "http")
    receiver.answer = lambda event, tries: 500
    delivery.wake_topic("orders", None)
    for stream in DeliveryStream.objects.filter(destination=destination):
        assert delivery.deliver_stream(stream.pk) == "drained"  # each event failed once, then set aside
    assert UndeliverableEvent.objects.filter(stream__destination=destination).count() == 6
    # One record is older than the moment asked for: it stays undeliverable.
    old = UndeliverableEvent.objects.get(stream__topic_id="a", offset=1)
    UndeliverableEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    since = (timezone.now() - timedelta(hours=1)).isoformat()
    receiver.answer = lambda event, tries: 200
    start(CeleryWorker, name="bulk_redelivery_worker")

    response = client.post(
        f"/api/v1/webhooks/{destination.pk}/redeliver",
        {"since": since},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {mint_token([], admin=True)}",
    )

    assert response.status_code == 200 and response.json() == {"queued": 5}, response.content
    wait_until(lambda: len(receiver.offsets("orders:a", answered_ok=True)) == 2, 60, "stream a redelivered")
    wait_until(lambda: len(receiver.offsets("orders:b", answered_ok=True)) == 3, 60, "stream b redelivered")
    assert receiver.offsets("orders:a", answered_ok=True) == [2, 3]
    assert receiver.offsets("orders:b", answered_ok=True) == [4, 5, 6]
    assert list(
        UndeliverableEvent.objects.filter(stream__destination=destination, redelivered_at__isnull=True).values_list(
            "offset", flat=True
        )
    ) == [1]
    bad = client.post(
        f"/api/v1/webhooks/{destination.pk}/redeliver",
        {"since": "yesterday"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {mint_token([], admin=True)}",
    )
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "since"
