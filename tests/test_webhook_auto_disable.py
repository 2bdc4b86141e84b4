"""Auto-disable (docs/webhooks.md): a destination whose every attempt has failed for ER_WEBHOOK_DISABLE_AFTER_S is
disabled with the reason and the time, shown in the API and the admin; re-enabled, it resumes where it stopped."""

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from eventrelay.auth import mint_token
from events.services import publish
from webhooks import delivery
from webhooks.models import DeliveryStream, Destination
from webhooks.services import create_destination, resume

pytestmark = pytest.mark.django_db(transaction=True)


def test_failing_for_longer_than_the_setting_disables_and_resuming_delivers_from_where_it_stopped(
    client: Any, make_topic: Any, receiver: Any, allow_private: None, admin: Any, settings: Any, monkeypatch: Any
) -> None:
    settings.ER_WEBHOOK_DISABLE_AFTER_S = 60
    monkeypatch.setattr(delivery, "backoff_seconds", lambda *args: 0)
    make_topic("orders")
    destination = create_destination(name="crm", url=receiver.url, topic="orders:1", max_attempts=100)
    publish(admin, "orders:1", [{"name": "paid", "data": {"n": n}} for n in range(3)], "http")
    stream = DeliveryStream.objects.get(destination=destination)
    receiver.answer = lambda event, tries: 503

    assert delivery.deliver_stream(stream.pk) == "retrying"
    destination.refresh_from_db()
    assert destination.active and destination.failing_since is not None
    auth = {"HTTP_AUTHORIZATION": f"Bearer {mint_token([], admin=True)}"}
    assert client.get(f"/api/v1/webhooks/{destination.pk}", **auth).json()["failingSince"] is not None
    # Failing, but not yet for a minute: still active.
    DeliveryStream.objects.filter(pk=stream.pk).update(next_attempt_at=timezone.now())
    assert delivery.deliver_stream(stream.pk) == "retrying"
    assert Destination.objects.get(pk=destination.pk).active

    Destination.objects.filter(pk=destination.pk).update(failing_since=timezone.now() - timedelta(seconds=61))
    DeliveryStream.objects.filter(pk=stream.pk).update(next_attempt_at=timezone.now())
    assert delivery.deliver_stream(stream.pk) == "disabled"
    destination.refresh_from_db()
    assert not destination.active and destination.disabled_at is not None
    assert "every attempt failed since" in destination.disabled_reason and "HTTP 503" in destination.disabled_reason
    shown = client.get(f"/api/v1/webhooks/{destination.pk}", **auth).json()
    assert shown["active"] is False and "HTTP 503" in shown["disabledReason"] and shown["disabledAt"]
    # Disabled: nothing more is sent.
    sent = len(receiver.requests)
    DeliveryStream.objects.filter(pk=stream.pk).update(next_attempt_at=timezone.now())
    delivery.deliver_stream(stream.pk)
    assert len(receiver.requests) == sent

    receiver.answer = lambda event, tries: 200
    resume(destination)
    assert delivery.deliver_stream(stream.pk) == "drained"
    assert receiver.offsets("orders:1", answered_ok=True) == [1, 2, 3]
    destination.refresh_from_db()
    assert destination.active and destination.failing_since is None and destination.disabled_reason == ""


def test_one_success_ends_the_failing_spell(
    make_topic: Any, receiver: Any, allow_private: None, admin: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(delivery, "backoff_seconds", lambda *args: 0)
    make_topic("orders")
    destination = create_destination(name="crm", url=receiver.url, topic="orders:1")
    publish(admin, "orders:1", [{"name": "paid", "data": 1}], "http")
    stream = DeliveryStream.objects.get(destination=destination)
    receiver.answer = lambda event, tries: 200 if tries > 1 else 500
    assert delivery.deliver_stream(stream.pk) == "retrying"
    assert Destination.objects.get(pk=destination.pk).failing_since is not None
    DeliveryStream.objects.filter(pk=stream.pk).update(next_attempt_at=timezone.now())
    assert delivery.deliver_stream(stream.pk) == "drained"
    assert Destination.objects.get(pk=destination.pk).failing_since is None
