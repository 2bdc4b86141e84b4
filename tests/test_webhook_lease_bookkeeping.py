"""A delivery keeps no per-stream state in its process once it returns, however it ends (issue 18, item 8).

The engine used to remember when it last renewed each stream's lease in a module-level dict. A database error
between the claim and the delivery proper left both the lease (held until it expired) and that entry behind: a
worker that hit such errors on many streams grew the dict without bound. The failure is a database error injected
through Django's ``execute_wrapper`` on the read that follows the claim, the first query a dropped connection
would fail."""

import pytest
from django.db import OperationalError, connection

from webhooks import delivery
from webhooks.models import DeliveryStream
from webhooks.services import create_destination

STREAMS = 20


class FailTheReadAfterTheClaim:
    def __init__(self) -> None:
        self.claimed = False

    def __call__(self, execute, sql, params, many, context):
        statement = sql.lstrip().upper()
        if statement.startswith("UPDATE") and "LEASE_OWNER" in statement:
            self.claimed = True
        elif self.claimed and statement.startswith("SELECT"):
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)


def test_a_database_error_right_after_the_claim_releases_the_lease_and_leaves_nothing_behind(make_topic, allow_private):
    make_topic("orders")
    streams = []
    for n in range(STREAMS):
        destination = create_destination(name=f"d{n}", url="http://127.0.0.1:9/hook", topic=f"orders:{n}")
        streams.append(DeliveryStream.objects.get(destination=destination))

    for stream in streams:
        with connection.execute_wrapper(FailTheReadAfterTheClaim()), pytest.raises(OperationalError):
            delivery.deliver_stream(stream.pk)

        stream.refresh_from_db()
        assert (stream.lease_owner, stream.lease_expires_at) == ("", None), "the lease was not released"
    ids = {stream.pk for stream in streams}
    kept = [name for name, value in vars(delivery).items() if isinstance(value, dict) and ids & set(value)]
    assert kept == [], f"per-stream state left in webhooks.delivery: {kept}"
