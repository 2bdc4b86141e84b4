"""Retention: deleting what a topic no longer keeps, in the background, without slowing publishing.

A topic keeps at most ``retention_max_events`` of its newest events and none stored more than
``retention_max_age_seconds`` ago. A sweep deletes from the lowest offset up, in transactions of at most
``ER_RETENTION_BATCH`` events each, so what a topic holds is always one contiguous run of offsets from
``first_offset`` (``RetentionState``) to ``last_offset``.

Why a sweep never slows a publish: it reads ``last_offset`` without locking the topic's row (the offset counter
a publish holds for its whole transaction) and deletes only committed offsets below it, on the primary key; its
bookkeeping is a row of its own. Two sweeps of one topic never run at once: each batch takes the topic's
``RetentionState`` row ``FOR UPDATE SKIP LOCKED``, and a sweep that finds it taken leaves the topic to the
other. A sweep killed mid-way loses only its current batch's transaction: every batch commits the deletion and
the new ``first_offset`` together. A sweep that deleted at least a batch ends with a plain ``VACUUM`` of the
table (``_vacuum``).

Everything that points at offsets (consumer positions, webhook cursors) hears ``events_expiring`` inside the
batch's transaction, while the events are still there to count, and moves past them.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from eventrelay import metrics
from topics.models import RetentionState, Topic
from topics.signals import events_expiring
from topics.tables import quoted_table

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SweepResult:
    topic: str
    deleted: int
    first_offset: int


def sweep_all() -> list[SweepResult]:
    """Sweep every topic with a retention bound (beat schedules this every ``ER_RETENTION_SWEEP_S``)."""
    names = (
        Topic.objects.exclude(retention_max_age_seconds__isnull=True, retention_max_events__isnull=True)
        .order_by("name")
        .values_list("name", flat=True)
    )
    results = []
    for name in names:
        try:
            results.append(sweep_topic(name))
        except Topic.DoesNotExist:
            continue  # deleted meanwhile
    return results


def sweep_topic(name: str, *, batch: int | None = None) -> SweepResult:
    """Delete what topic ``name`` no longer keeps, batch by batch, and record the sweep."""
    batch = batch or settings.ER_RETENTION_BATCH
    topic = Topic.objects.get(name=name)
    RetentionState.objects.get_or_create(topic=topic)
    deleted = 0
    started = timezone.now()
    while True:
        with transaction.atomic():
            step = _delete_one_batch(topic, batch, started)
        if step is None:
            break
        deleted += step
        metrics.RETENTION_DELETED.labels(name).inc(step)
    with transaction.atomic():
        state = RetentionState.objects.select_for_update().get(topic=topic)
        state.last_sweep_at = started
        state.last_sweep_deleted = deleted
        state.save(update_fields=["last_sweep_at", "last_sweep_deleted"])
    if deleted:
        logger.info(
            "retention deleted %d events of '%s'; it now starts at offset %d", deleted, name, state.first_offset
        )
    if deleted >= batch and not connection.in_atomic_block:
        _vacuum(name)
    return SweepResult(name, deleted, state.first_offset)


def _vacuum(name: str) -> None:
    """Make the deleted rows' space reusable now, so a table under retention stops growing once its backlog is
    gone. Autovacuum would, but only when its next round (a minute apart by default) reaches the table; a plain
    VACUUM takes no lock that publishing waits for."""
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM (ANALYZE) {quoted_table(name)}")


def _delete_one_batch(topic: Topic, batch: int, started: datetime) -> int | None:
    """Delete the next batch below the topic's horizon; the number deleted, or None when there is nothing (more)
    to delete or another sweep holds the topic."""
    state = RetentionState.objects.select_for_update(skip_locked=True).filter(topic=topic).first()
    if state is None:
        return None
    # The settings and the counter as committed now, read without the counter's lock.
    current = Topic.objects.filter(pk=topic.pk).values(
        "last_offset", "retention_max_age_seconds", "retention_max_events"
    )
    row = current.first()
    if row is None:
        return None
    first = state.first_offset
    up_to = min(_horizon(topic.name, first, batch, started=started, **row), first + batch)
    if up_to <= first:
        return None
    events_expiring.send(sender=Topic, name=topic.name, first=first, up_to=up_to)
    with connection.cursor() as cursor:
        cursor.execute(f'DELETE FROM {quoted_table(topic.name)} WHERE "offset" >= %s AND "offset" < %s', [first, up_to])
        deleted = cursor.rowcount
    state.first_offset = up_to
    state.deleted_total += deleted
    state.save(update_fields=["first_offset", "deleted_total"])
    return deleted


def _horizon(
    topic_name: str,
    first: int,
    batch: int,
    *,
    started: datetime,
    last_offset: int,
    retention_max_age_seconds: int | None,
    retention_max_events: int | None,
) -> int:
    """The lowest offset the topic keeps, as far as this batch can see: everything below it goes."""
    horizon = first
    if retention_max_events:
        horizon = max(horizon, last_offset - retention_max_events + 1)
    if retention_max_age_seconds:
        cutoff = started - timedelta(seconds=retention_max_age_seconds)
        horizon = max(horizon, _first_kept_by_age(topic_name, first, batch, cutoff, last_offset))
    return min(horizon, last_offset + 1)


def _first_kept_by_age(topic_name: str, first: int, batch: int, cutoff: datetime, last_offset: int) -> int:
    """Within the next ``batch`` offsets from ``first``, the first event stored at or after ``cutoff`` (stored
    times follow offsets closely but not exactly, so the run kept stays contiguous: an event is deleted by age
    only with every event before it)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT min("offset") FILTER (WHERE stored_at >= %s), max("offset") FROM (SELECT "offset", stored_at '
            f'FROM {quoted_table(topic_name)} WHERE "offset" >= %s AND "offset" <= %s ORDER BY "offset" LIMIT %s) page',
            [cutoff, first, last_offset, batch],
        )
        kept, page_end = cursor.fetchone()
    if kept is not None:
        return int(kept)
    return first if page_end is None else int(page_end) + 1
