"""Wakes webhook delivery after a publish commits (``events_committed`` is sent after commit), ends a deleted
topic's deliveries (``topic_deleted``, inside the delete's transaction), and moves streams past what retention
deletes (``events_expiring``, inside the sweep's transaction)."""

import logging

from django.db import connection
from django.dispatch import receiver

from events.signals import events_committed
from topics import tables
from topics.signals import events_expiring, topic_deleted
from webhooks import delivery, wakeups
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


@receiver(events_expiring, dispatch_uid="webhooks.move_streams_past_expired_events")
def move_streams_past_expired_events(sender: object, name: str, first: int, up_to: int, **kwargs: object) -> None:
    """Streams whose cursor is below ``up_to`` skip to it, counting in ``expired_count`` the events of theirs
    (their topic id, the destination's name filter) that were not delivered; a deleted head event's failed
    attempts go with it. Whole-topic destinations first get the streams of topic ids not discovered yet, so that those are
    counted too. Paused destinations are moved as well: they resume at what is kept."""
    last_deleted = up_to - 1
    destinations = Destination.objects.for_topic(name)
    for destination in destinations.filter(topic_id="", scanned_offset__lt=last_deleted):
        delivery.discover_streams(destination, up_to=last_deleted)
    streams = connection.ops.quote_name(DeliveryStream._meta.db_table)
    destinations_table = connection.ops.quote_name(Destination._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {streams} s SET expired_count = s.expired_count + behind.lost, last_offset = %s, "
            # Its head event (the first of its events after the cursor) is among the deleted ones when any is.
            "attempts = CASE WHEN behind.lost > 0 THEN 0 ELSE s.attempts END, "
            "last_error = CASE WHEN behind.lost > 0 THEN '' ELSE s.last_error END, "
            "next_attempt_at = CASE WHEN behind.lost > 0 THEN LEAST(s.next_attempt_at, now()) "
            "ELSE s.next_attempt_at END "
            "FROM (SELECT s.id, (SELECT count(*) FROM "
            f'{tables.quoted_table(name)} e WHERE e.topic_id = s.topic_id AND e."offset" > s.last_offset '
            "AND e.\"offset\" < %s AND (d.event_names = '[]'::jsonb OR e.name IN "
            "(SELECT jsonb_array_elements_text(d.event_names)))) AS lost "
            f"FROM {streams} s JOIN {destinations_table} d ON d.id = s.destination_id "
            "WHERE d.topic_name = %s AND s.last_offset < %s) behind WHERE s.id = behind.id",
            [last_deleted, up_to, name, last_deleted],
        )
