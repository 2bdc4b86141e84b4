"""Queries behind the admin's event browser and dashboard. Each one is served by an index of the
topic table (tests EXPLAIN them on a million events); none counts a whole table."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import models

from events.tables import event_model
from topics.models import Topic

PAGE_SIZE = 50


@dataclass(frozen=True)
class BrowserFilters:
    name: str = ""
    topic_id: str = ""
    user_id: str = ""
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None
    # Newest first: show events with offset <= before (None: from the newest).
    before: int | None = None


def browse_queryset(topic: Topic, filters: BrowserFilters) -> models.QuerySet[Any]:
    """Newest-first events matching ``filters``; slice it for a page (keyset pagination by offset)."""
    queryset = event_model(topic).objects.all()
    if filters.name:
        queryset = queryset.filter(name=filters.name)
    if filters.topic_id:
        queryset = queryset.filter(topic_id=filters.topic_id)
    if filters.user_id:
        queryset = queryset.filter(user_id=filters.user_id)
    if filters.occurred_from:
        queryset = queryset.filter(event_occurred_at__gte=filters.occurred_from)
    if filters.occurred_to:
        queryset = queryset.filter(event_occurred_at__lte=filters.occurred_to)
    if filters.before is not None:
        queryset = queryset.filter(offset__lte=filters.before)
    return queryset.order_by("-offset")


def browse(topic: Topic, filters: BrowserFilters, limit: int = PAGE_SIZE) -> tuple[list[Any], int | None]:
    """One page of events and the ``before`` value of the next (older) page, or None at the end."""
    rows = list(browse_queryset(topic, filters)[: limit + 1])
    older = rows[limit].offset if len(rows) > limit else None
    return rows[:limit], older


def get_event(topic: Topic, offset: int) -> Any | None:
    return event_model(topic).objects.filter(offset=offset).first()


def first_offset_stored_since(topic: Topic, moment: datetime) -> int | None:
    """The first offset stored at or after ``moment`` (the ``stored_at`` index), or None."""
    return (
        event_model(topic)
        .objects.filter(stored_at__gte=moment)
        .order_by("stored_at")
        .values_list("offset", flat=True)
        .first()
    )


def events_stored_since(topic: Topic, moment: datetime) -> int:
    """How many events the topic stored since ``moment``: offsets are gapless, so it is a subtraction."""
    first = first_offset_stored_since(topic, moment)
    return 0 if first is None else topic.last_offset - first + 1
