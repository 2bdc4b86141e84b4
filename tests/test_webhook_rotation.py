"""Secret rotation with an overlap (docs/webhooks.md): for ER_WEBHOOK_SECRET_OVERLAP_S after a rotation each request
carries the new and the old signature, and the official Standard Webhooks library verifies it with either secret;
after the overlap only the new one signs."""

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from eventrelay.auth import mint_token
from events.services import publish
from webhooks import delivery
from webhooks.models import DeliveryStream, Destination
from webhooks.services import create_destination

pytestmark = pytest.mark.django_db(transaction=True)


def rotate(client: Any, destination: Destination) -> dict[str, Any]:
    response = client.post(
        f"/api/v1/webhooks/{destination.pk}/rotate-secret",
        HTTP_AUTHORIZATION=f"Bearer {mint_token([], admin=True)}",
    )
    assert response.status_code == 200, response.content
    return response.json()


def deliver_one(admin: Any, destination: Destination, n: int) -> Any:
    publish(admin, "orders:1", [{"name": "paid", "data": {"n": n}}], "http")
    stream = DeliveryStream.objects.get(destination=destination)
    assert delivery.deliver_stream(stream.pk) == "drained"


def test_during_the_overlap_both_secrets_verify_and_after_it_only_the_new_one(
    client: Any, make_topic: Any, receiver: Any, allow_private: None, admin: Any
) -> None:
    make_topic("orders")
    destination = create_destination(name="crm", url=receiver.url, topic="orders:1")
    old_secret = destination.secret

    rotated = rotate(client, destination)
    new_secret = rotated["secret"]
    assert new_secret != old_secret and new_secret.startswith("whsec_")
    assert (
        "secret"
        not in client.get(
            f"/api/v1/webhooks/{destination.pk}", HTTP_AUTHORIZATION=f"Bearer {mint_token([], admin=True)}"
        ).json()
    )
    deliver_one(admin, destination, 1)

    request = receiver.of("orders:1")[-1]
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new_secret, old_secret):
        assert Webhook(secret).verify(request.body, headers)["offset"] == json.loads(request.body)["offset"]

    Destination.objects.filter(pk=destination.pk).update(previous_secret_until=timezone.now() - timedelta(seconds=1))
    deliver_one(admin, destination, 2)

    request = receiver.of("orders:1")[-1]
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert len(headers["webhook-signature"].split(" ")) == 1
    Webhook(new_secret).verify(request.body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old_secret).verify(request.body, headers)
