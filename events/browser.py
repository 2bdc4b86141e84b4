"""Queries behind the admin's event browser and dashboard. Each one is served by an index of the
topic table (tests EXPLAIN them on a million events); none counts a whole table.

Events are read with their payloads as the stored JSON text (``data_text``, ``context_text``), never
parsed by the query: an event stored before ``ER_MAX_JSON_DEPTH`` existed may be deeper than any
parser reads back, and the browser must show it all the same (:func:`shown_json`)."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models.functions import Cast

from events.exact_json import dumps_exact, loads_exact, nesting_depth
from topics.models import Topic
from topics.tables import event_model

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
    queryset = _with_payload_text(event_model(topic)._default_manager.all())
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
    return _with_payload_text(event_model(topic)._default_manager.filter(offset=offset)).first()


def _with_payload_text(queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
    """Rows with ``data_text`` and ``context_text`` (the stored text) instead of the parsed values."""
    return queryset.defer("data", "context").annotate(
        data_text=Cast("data", models.TextField()), context_text=Cast("context", models.TextField())
    )


def shown_json(text: str) -> tuple[str, str | None]:
    """Stored JSON text formatted for reading (indented, numbers as stored), and a note when it is
    shown as stored instead: nested past ``ER_MAX_JSON_DEPTH`` (only events stored before the limit
    existed can be), or not readable by Python's parser."""
    depth = nesting_depth(text)
    if depth > settings.ER_MAX_JSON_DEPTH:
        return text, f"This payload is nested {depth} levels deep, too deeply to be shown formatted; shown as stored."
    try:
        return dumps_exact(loads_exact(text), indent=2), None
    except (ValueError, TypeError, RecursionError) as exc:
        return text, f"This payload cannot be shown formatted ({type(exc).__name__}); shown as stored."


def first_offset_stored_since(topic: Topic, moment: datetime) -> int | None:
    """The first offset stored at or after ``moment`` (the ``stored_at`` index), or None."""
    return (
        event_model(topic)
        ._default_manager.filter(stored_at__gte=moment)
        .order_by("stored_at")
        .values_list("offset", flat=True)
        .first()
    )


def events_stored_since(topic: Topic, moment: datetime) -> int:
    """How many events the topic stored since ``moment``: offsets are gapless, so it is a subtraction."""
    first = first_offset_stored_since(topic, moment)
    return 0 if first is None else topic.last_offset - first + 1


def count_matching(topic: Topic, filters: BrowserFilters, cap: int) -> int:
    """How many events match ``filters``, counted on the filters' index up to ``cap`` (``cap`` means "at least
    that many"): a filtered page says how many it is a page of without counting a long run to its end."""
    return browse_queryset(topic, filters).order_by().values_list("offset")[:cap].count()
