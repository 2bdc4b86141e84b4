"""Celery tasks of topics: beat's retention sweep (topics.retention)."""

from celery import shared_task

from topics import retention

SWEEP_RETENTION = "topics.tasks.sweep_retention"


@shared_task(name=SWEEP_RETENTION)
def sweep_retention() -> int:
    """Sweep every topic with a retention bound; the number of events deleted."""
    return sum(result.deleted for result in retention.sweep_all())
