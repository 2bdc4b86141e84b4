"""Keeping the table of events in flight small: every acknowledged event deletes its ``PendingEvent`` row, and a
deleted row's space (and its four index entries) is reusable only after a ``VACUUM``. Autovacuum does that where
it is on; where it is off (as on the development machine, docs/retention.md), the table and its indexes would
grow with every event ever consumed, and each fetch's probes of the pending rows would walk the dead index
entries. Beat runs :func:`vacuum_if_churned` every ``ER_CONSUMER_VACUUM_S``.

A plain ``VACUUM`` takes no lock that a fetch, an ack or a publish waits for."""

import logging

from django.conf import settings
from django.db import connection

from consumers.models import PendingEvent

logger = logging.getLogger(__name__)

PENDING = PendingEvent._meta.db_table


def dead_rows() -> int:
    """PostgreSQL's count of the pending table's dead rows (its statistics: up to a second behind)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = %s::regclass", [PENDING])
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def vacuum_if_churned() -> bool:
    """``VACUUM`` the pending table when at least ``ER_CONSUMER_VACUUM_DEAD_ROWS`` rows died since the last one;
    whether it did. Must run outside a transaction (``VACUUM`` cannot run inside one)."""
    dead = dead_rows()
    if dead < settings.ER_CONSUMER_VACUUM_DEAD_ROWS:
        return False
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM (ANALYZE) {PENDING}")
    logger.info("vacuumed the consumers' pending table (%d dead rows)", dead)
    return True
