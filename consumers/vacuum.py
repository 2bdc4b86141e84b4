"""Keeping the tables of events in flight small: every acknowledged event deletes its ``PendingEvent`` row (or,
handed out in a batch, its batch's ``LeasedBatch`` row), and a deleted row's space (and its index entries) is
reusable only after a ``VACUUM``. Autovacuum does that where
it is on; where it is off (as on the development machine, docs/retention.md), the table and its indexes would
grow with every event ever consumed, and each fetch's probes of the pending rows would walk the dead index
entries. Beat runs :func:`vacuum_if_churned` every ``ER_CONSUMER_VACUUM_S``.

A plain ``VACUUM`` takes no lock that a fetch, an ack or a publish waits for."""

import logging

from django.conf import settings
from django.db import connection

from consumers.models import LeasedBatch, PendingEvent

logger = logging.getLogger(__name__)

PENDING = PendingEvent._meta.db_table
BATCHES = LeasedBatch._meta.db_table


def dead_rows() -> int:
    """PostgreSQL's count of the two tables' dead rows (its statistics: up to a second behind)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE relid IN (%s::regclass, %s::regclass)",
            [PENDING, BATCHES],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def vacuum_if_churned() -> bool:
    """``VACUUM`` the pending table when at least ``ER_CONSUMER_VACUUM_DEAD_ROWS`` rows died since the last one;
    whether it did. Must run outside a transaction (``VACUUM`` cannot run inside one)."""
    dead = dead_rows()
    if dead < settings.ER_CONSUMER_VACUUM_DEAD_ROWS:
        return False
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM (ANALYZE) {PENDING}, {BATCHES}")
    logger.info("vacuumed the consumers' tables of events in flight (%d dead rows)", dead)
    return True
