"""Reads of webhook delivery state for the pages that show it (the console): what a destination's page lists,
how far behind its streams are, what deleting it would take along, what its test events answered.

Writes are in ``webhooks.services``; these only read.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from django.contrib.admin.models import LogEntry
from django.db.models import Count, F, Model, Q
from django.db.models.functions import TruncMinute

from topics import tables
from topics.models import Topic
from webhooks.models import DeliveryAttempt, DeliveryStream, Destination, DestinationQuerySet, UndeliverableEvent
from webhooks.services import TEST_EVENT_RESULT_PREFIX

# Exact per-stream backlogs are counted on the (topic_id, offset) index up to this many events.
BACKLOG_COUNT_LIMIT = 10_000
# A whole-topic destination has a stream per topic id (possibly thousands); its page shows these many.
STREAMS_SHOWN = 100
# The latest test events a destination's page shows.
TEST_EVENTS_SHOWN = 3


def topic_names_with_destinations() -> list[str]:
    return list(Destination.objects.order_by("topic_name").values_list("topic_name", flat=True).distinct())


def destination_choices() -> list[tuple[int, str]]:
    return list(Destination.objects.values_list("pk", "name"))


class StreamCursor(NamedTuple):
    stream_id: int
    topic_id: str
    last_offset: int


@dataclass(frozen=True)
class ShownStreams:
    """The streams a destination's page lists (most urgent first) out of ``total``."""

    cursors: list[StreamCursor]
    total: int

    @property
    def ids(self) -> list[int]:
        return [cursor.stream_id for cursor in self.cursors]


def shown_streams(destination: Destination, limit: int = STREAMS_SHOWN) -> ShownStreams:
    streams = destination.streams.most_urgent_first()
    cursors = [StreamCursor(*row) for row in streams.values_list("pk", "topic_id", "last_offset")[:limit]]
    total = len(cursors) if len(cursors) < limit else streams.count()
    return ShownStreams(cursors=cursors, total=total)


def stream_backlogs(destination: Destination, cursors: list[StreamCursor]) -> dict[int, int] | None:
    """Events after each stream's cursor, counted exactly up to ``BACKLOG_COUNT_LIMIT + 1`` (more reads as
    "more than the limit"), by stream id. ``None`` when the topic no longer exists."""
    if not Topic.objects.named(destination.topic_name).exists():
        return None
    counts = tables.count_events_after(
        destination.topic_name,
        [(cursor.topic_id, cursor.last_offset) for cursor in cursors],
        cap=BACKLOG_COUNT_LIMIT + 1,
    )
    return {cursor.stream_id: count for cursor, count in zip(cursors, counts, strict=True)}


def records_deleted_with(destination_ids: list[int]) -> dict[type[Model], int]:
    """What deleting these destinations deletes with them, counted (the rows of each kind)."""
    return {
        Destination: len(destination_ids),
        DeliveryStream: DeliveryStream.objects.filter(destination__in=destination_ids).count(),
        DeliveryAttempt: DeliveryAttempt.objects.filter(stream__destination__in=destination_ids).count(),
        UndeliverableEvent: UndeliverableEvent.objects.filter(stream__destination__in=destination_ids).count(),
    }


@dataclass(frozen=True)
class TestEventResult:
    at: datetime
    result: str


def test_event_results(destination: Destination, limit: int = TEST_EVENTS_SHOWN) -> list[TestEventResult]:
    """The latest results of test events sent to the destination (``services.deliver_test_event``), newest first."""
    entries = LogEntry.objects.filter(
        content_type__app_label=Destination._meta.app_label,
        content_type__model=Destination._meta.model_name,
        object_id=str(destination.pk),
        change_message__startswith=TEST_EVENT_RESULT_PREFIX,
    ).order_by("-action_time", "-pk")[:limit]
    return [TestEventResult(at=entry.action_time, result=entry.change_message) for entry in entries]


# --- The admin dashboard: outcomes over the last hour, backlogs ----------------------------------------------


class MinuteOutcome(NamedTuple):
    minute: datetime
    outcome: str  # "delivered", "failed" or "undeliverable"
    events: int


# Attempt statuses as the dashboard names outcomes (a pending attempt has no outcome yet).
OUTCOME_OF_STATUS = {DeliveryAttempt.Status.SUCCEEDED: "delivered", DeliveryAttempt.Status.FAILED: "failed"}


def outcomes_per_minute(since: datetime) -> list[MinuteOutcome]:
    """Delivery outcomes since ``since`` by minute: attempts that succeeded or failed (the ``at`` index), and
    events recorded undeliverable. Two grouped queries, however many attempts."""
    attempts = (
        DeliveryAttempt.objects.filter(at__gte=since, status__in=list(OUTCOME_OF_STATUS))
        .annotate(minute=TruncMinute("at"))
        .order_by()
        .values_list("minute", "status")
        .annotate(n=Count("pk"))
    )
    undeliverable = (
        UndeliverableEvent.objects.filter(created_at__gte=since)
        .annotate(minute=TruncMinute("created_at"))
        .order_by()
        .values_list("minute")
        .annotate(n=Count("pk"))
    )
    outcomes = [
        MinuteOutcome(minute, OUTCOME_OF_STATUS[DeliveryAttempt.Status(status)], n) for minute, status, n in attempts
    ]
    return outcomes + [MinuteOutcome(minute, "undeliverable", n) for minute, n in undeliverable]


def outcomes_per_destination(since: datetime, destination_ids: list[int]) -> dict[int, dict[str, int]]:
    """For each of ``destination_ids``, how many attempts since ``since`` delivered and failed: one query."""
    rows = (
        DeliveryAttempt.objects.filter(
            at__gte=since, status__in=list(OUTCOME_OF_STATUS), stream__destination__in=destination_ids
        )
        .order_by()
        .values_list("stream__destination", "status")
        .annotate(n=Count("pk"))
    )
    found: dict[int, dict[str, int]] = {pk: {"delivered": 0, "failed": 0} for pk in destination_ids}
    for destination_id, status, n in rows:
        found[destination_id][OUTCOME_OF_STATUS[DeliveryAttempt.Status(status)]] = n
    return found


def destinations_by_backlog(limit: int) -> list[Destination]:
    """The ``limit`` destinations with the largest backlog bound (``with_delivery_stats``), then by name: one
    query. Destinations whose topic is gone come last."""
    return list(
        Destination.objects.with_delivery_stats().order_by(F("backlog_bound").desc(nulls_last=True), "name", "pk")[
            :limit
        ]
    )


def failing_destinations() -> DestinationQuerySet:
    """Destinations disabled by their receiver, and active ones with a stream retrying a failed event."""
    retrying = Destination.objects.active().filter(streams__attempts__gt=0).values("pk")
    disabled = Destination.objects.disabled_by_receiver().values("pk")
    return Destination.objects.filter(Q(pk__in=retrying) | Q(pk__in=disabled))


def undeliverable_waiting_count() -> int:
    """Undeliverable events not yet redelivered."""
    return UndeliverableEvent.objects.filter(redelivered_at__isnull=True).count()


def destination_count() -> int:
    return Destination.objects.count()
