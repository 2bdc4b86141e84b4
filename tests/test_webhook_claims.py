"""The delivery lease: two workers claiming one stream at the same moment never both get it."""

import threading

from django.db import connection, transaction

from topics.services import create_topic
from webhooks.delivery import claim
from webhooks.models import DeliveryStream
from webhooks.services import create_destination


def test_a_claim_waiting_on_a_concurrent_claim_sees_the_lease_taken(transactional_db, allow_private):
    create_topic("claims")
    destination = create_destination(name="claims", url="http://127.0.0.1:9/hook", topic="claims")
    stream = DeliveryStream.objects.create(destination=destination, topic_id="1")
    first_claimed = threading.Event()
    results: dict[str, bool] = {}

    def first_worker() -> None:
        # Claims inside a transaction and holds it open, so the second claim has to wait for this
        # row and then decide on the committed version of it.
        try:
            with transaction.atomic():
                results["first"] = claim(stream.pk, "first", 30)
                first_claimed.set()
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_sleep(0.5)")
        finally:
            first_claimed.set()
            connection.close()

    def second_worker() -> None:
        try:
            first_claimed.wait(10)
            results["second"] = claim(stream.pk, "second", 30)
        finally:
            connection.close()

    threads = [threading.Thread(target=first_worker), threading.Thread(target=second_worker)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert results == {"first": True, "second": False}
    stream.refresh_from_db()
    assert stream.lease_owner == "first"
