"""Wakes webhook delivery after a publish commits (``events_committed`` is sent after commit), and ends a deleted
topic's deliveries (``topic_deleted``, inside the delete's transaction)."""

import logging

from django.db import connection
from django.dispatch import receiver

from events.signals import events_committed
from topics.signals import topic_deleted
from webhooks import wakeups
from webhooks.models import DeliveryStream, Destination

logger = logging.getLogger(__name__)

# Asked after every publish transaction, so written once in SQL: cheaper than building the ORM's ``exists()``
# query each time, and the round trip is most of what is left (docs/benchmarks.md).
_ANY_ACTIVE_DESTINATION = (
    f"SELECT EXISTS (SELECT 1 FROM {connection.ops.quote_name(Destination._meta.db_table)} "
    "WHERE topic_name = %s AND active)"
)


def any_active_destination(topic_name: str) -> bool:
    """``Destination.objects.for_topic(topic_name).active().exists()``, cheaper."""
    with connection.cursor() as cursor:
        cursor.execute(_ANY_ACTIVE_DESTINATION, [topic_name])
        return cursor.fetchone()[0]


@receiver(events_committed, dispatch_uid="webhooks.wake_after_publish")
def wake_after_publish(sender: object, topic_name: str, events: list, **kwargs: object) -> None:
    """Queue one wake-up for the topic if any active destination listens to it, without waiting for the broker
    (webhooks.wakeups). A lost message only delays delivery: the beat sweep finds streams that are behind."""
    try:
        if any_active_destination(topic_name):
            wakeups.wake_topic_soon(topic_name, sorted({event.topic_id for event in events}))
    except Exception:
        logger.warning("could not queue the webhook wake-up for '%s'; the sweep will", topic_name, exc_info=True)


@receiver(topic_deleted, dispatch_uid="webhooks.end_deliveries_of_deleted_topic")
def end_deliveries_of_deleted_topic(sender: object, name: str, **kwargs: object) -> None:
    """Delete the topic's delivery streams (their cursors, attempts and undeliverable records are offsets of the
    dropped table) and start every destination on it over from offset 0: a topic created again under the same
    name is delivered from its first event. Runs in the delete's transaction, so both happen or neither."""
    destinations = Destination.objects.for_topic(name)
    DeliveryStream.objects.filter(destination__in=destinations).delete()
    destinations.update(start_offset=0, scanned_offset=0)
    # A "name:id" destination has its one stream from creation on (whole-topic ones discover theirs).
    DeliveryStream.objects.bulk_create(
        [
            DeliveryStream(destination_id=pk, topic_id=topic_id, last_offset=0)
            for pk, topic_id in destinations.exclude(topic_id="").values_list("pk", "topic_id")
        ]
    )
