"""What retention does to consumers: a consumer whose position falls below what the topic keeps moves past the
deleted events and counts, in ``expired``, the matching ones it had not had acknowledged (never silently).

Runs inside the sweep's transaction (``topics.signals.events_expiring``), while the events are still there to be
counted. Each consumer's row is locked ``FOR UPDATE`` first, as a seek locks it: no fetch or ack of it runs
meanwhile, and one that comes after sees the moved position.
"""

import json
from typing import Any

from django.db import connection
from django.dispatch import receiver

from consumers import leases
from consumers.models import Consumer, DeadLetter, LeasedBatch, PendingEvent
from topics.models import Topic
from topics.signals import events_expiring
from topics.tables import quoted_table

PENDING = PendingEvent._meta.db_table
BATCHES = LeasedBatch._meta.db_table
DEAD = DeadLetter._meta.db_table
CONSUMERS = Consumer._meta.db_table
TOPICS = Topic._meta.db_table


@receiver(events_expiring, dispatch_uid="consumers.move_past_expired_events")
def move_past_expired_events(sender: object, name: str, first: int, up_to: int, **kwargs: object) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.id, c.next_offset, c.ref_id, c.event_names::text FROM {CONSUMERS} c "
            f"JOIN {TOPICS} t ON t.id = c.topic_id WHERE t.name = %s AND (c.next_offset < %s OR EXISTS "
            f'(SELECT 1 FROM {PENDING} p WHERE p.consumer_id = c.id AND p."offset" < %s) OR EXISTS '
            f"(SELECT 1 FROM {BATCHES} b WHERE b.consumer_id = c.id AND b.first_offset < %s)) ORDER BY c.id FOR UPDATE OF c",
            [name, up_to, up_to, up_to],
        )
        for consumer_pk, next_offset, ref_id, names_json in cursor.fetchall():
            _expire(cursor, name, consumer_pk, next_offset, ref_id, names_json, up_to)


def _expire(cursor: Any, topic: str, consumer_pk: int, next_offset: int, ref_id: str, names: str, up_to: int) -> None:
    """Count the consumer's unexamined matching events below ``up_to`` and its pending ones there (handed out or
    queued, not acknowledged), drop those and its dead letters there, and start it at ``up_to``."""
    unexamined = 0
    if next_offset < up_to:
        where, params = leases.matching(ref_id or None, json.loads(names), next_offset=next_offset, up_to=up_to - 1)
        cursor.execute(f"SELECT count(*) FROM {quoted_table(topic)} WHERE {where}", params)
        unexamined = cursor.fetchone()[0]
    leases.split_batches_below(cursor, consumer_pk, topic, up_to)
    cursor.execute(f'DELETE FROM {PENDING} WHERE consumer_id = %s AND "offset" < %s', [consumer_pk, up_to])
    pending = cursor.rowcount
    cursor.execute(f'DELETE FROM {DEAD} WHERE consumer_id = %s AND "offset" < %s', [consumer_pk, up_to])
    cursor.execute(
        f"UPDATE {CONSUMERS} SET next_offset = GREATEST(next_offset, %s), expired = expired + %s WHERE id = %s",
        [up_to, unexamined + pending, consumer_pk],
    )
