"""Celery tasks of consumers: beat's vacuum of the table of events in flight (consumers.vacuum)."""

from celery import shared_task

from consumers import vacuum

VACUUM_PENDING = "consumers.tasks.vacuum_pending"


@shared_task(name=VACUUM_PENDING)
def vacuum_pending() -> bool:
    """Vacuum the pending table if enough of its rows died; whether it did."""
    return vacuum.vacuum_if_churned()
