"""What the admin's dashboard shows: the last hour of events per topic, webhook outcomes, backlogs per
destination and consumer lag, each figure with the link to the rows behind it.

Every figure comes from the apps' selectors, in a number of queries that does not grow with the number of topics,
destinations or consumers: per-topic counts are index probes of all topic tables in one statement
(``topics.tables.first_offsets_stored_since``), the rest are grouped queries.
"""

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, TypeVar
from urllib.parse import urlencode

from django.db.models import Model
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from console.charts import Bar, Segment, bar_chart, share
from consumers import selectors as consumer_selectors
from topics.models import Topic
from topics.tables import first_offsets_stored_since
from webhooks import selectors as webhook_selectors
from webhooks.models import DeliveryAttempt, DeliveryStream, Destination, UndeliverableEvent

MINUTES = 60
# The busiest topics get a chart each; the others are summed up in one line.
TOPICS_CHARTED = 12
DESTINATIONS_SHOWN = 20
CONSUMERS_SHOWN = 20
# Topic tables probed per statement: a bound on one statement's size, not on the page's query count in practice.
TOPICS_PER_STATEMENT = 200

OUTCOMES = ("delivered", "failed", "undeliverable")
_STATUS_OF_OUTCOME = {"delivered": DeliveryAttempt.Status.SUCCEEDED, "failed": DeliveryAttempt.Status.FAILED}

T = TypeVar("T")


def changelist_url(model: type[Model], **filters: object) -> str:
    query = f"?{urlencode(filters)}" if filters else ""
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist") + query


def _at(moment: datetime) -> str:
    """A moment as the admin's date filters take it from a query string (ISO 8601, with its offset)."""
    return timezone.localtime(moment).isoformat()


def _hhmm(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M")


def minute_starts(now: datetime) -> list[datetime]:
    """The starts of the last ``MINUTES`` minutes, the current (partial) one last."""
    current = now.replace(second=0, microsecond=0)
    return [current - timedelta(minutes=MINUTES - 1 - index) for index in range(MINUTES)]


def _x_labels(starts: list[datetime]) -> dict[int, str]:
    return {index: _hhmm(starts[index]) for index in (0, 15, 30, 45, MINUTES - 1)}


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- Events per minute per topic ------------------------------------------------------------------------------


@dataclass
class TopicActivity:
    topic: Topic
    per_minute: list[int]
    # The offset of the newest event of each minute (None: the minute stored none).
    newest_of_minute: list[int | None]
    today: int
    browser_url: str
    chart: SafeString | None = None

    @property
    def last_hour(self) -> int:
        return sum(self.per_minute)

    @property
    def first_of_hour(self) -> int:
        return self.topic.last_offset - self.last_hour + 1


def topic_activity(now: datetime) -> list[TopicActivity]:
    """Per topic, the events stored in each of the last ``MINUTES`` minutes and since midnight, busiest first.

    Offsets are gapless and stored in order, so the events a minute stored are the offsets from the first one
    stored at its start to the first one stored at the next minute's: two index probes, however many events."""
    starts = minute_starts(now)
    midnight = timezone.make_aware(datetime.combine(timezone.localdate(now), time.min))
    topics = list(Topic.objects.order_by("name"))
    firsts: dict[str, list[int | None]] = {}
    for chunk in _chunks([topic.name for topic in topics], TOPICS_PER_STATEMENT):
        firsts.update(first_offsets_stored_since(list(chunk), [*starts, midnight]))
    activity = []
    for topic in topics:
        following = topic.last_offset + 1  # the offset the next event will get
        probes = firsts[topic.name]
        # A moment after which nothing was stored has, as its first offset, the next one to come.
        bounds = [following if offset is None else min(offset, following) for offset in probes[:MINUTES]]
        bounds.append(following)
        per_minute = [max(bounds[index + 1] - bounds[index], 0) for index in range(MINUTES)]
        newest = [bounds[index + 1] - 1 if per_minute[index] else None for index in range(MINUTES)]
        since_midnight = probes[MINUTES]
        activity.append(
            TopicActivity(
                topic=topic,
                per_minute=per_minute,
                newest_of_minute=newest,
                today=0 if since_midnight is None else max(following - since_midnight, 0),
                browser_url=reverse("admin:topics_topic_events", args=[topic.pk]),
            )
        )
    activity.sort(key=lambda item: (-item.last_hour, item.topic.name))
    for item in activity[:TOPICS_CHARTED]:
        item.chart = _topic_chart(item, starts)
    return activity


def _topic_chart(item: TopicActivity, starts: list[datetime]) -> SafeString:
    bars = []
    for index, count in enumerate(item.per_minute):
        newest = item.newest_of_minute[index]
        segment = Segment(
            value=count,
            css_class="bar-events",
            # The browser lists newest first from ``before``: the minute's events are its first rows.
            href=f"{item.browser_url}?before={newest}" if newest is not None else item.browser_url,
            label=f"{item.topic.name}, {_hhmm(starts[index])}: {count:,} events (offsets {newest - count + 1:,}-"
            f"{newest:,})"
            if newest is not None
            else "",
        )
        bars.append(Bar([segment]))
    return bar_chart(bars, _x_labels(starts), f"Events per minute of {item.topic.name}", f"chart-topic-{item.topic.pk}")


# --- Webhooks ------------------------------------------------------------------------------------------------


def _outcome_url(outcome: str, since: datetime, until: datetime | None = None, **filters: object) -> str:
    if outcome == "undeliverable":
        window = {"created_at__gte": _at(since), **({"created_at__lt": _at(until)} if until else {})}
        return changelist_url(UndeliverableEvent, **filters, **window)
    window = {"at__gte": _at(since), **({"at__lt": _at(until)} if until else {})}
    return changelist_url(DeliveryAttempt, **filters, status__exact=_STATUS_OF_OUTCOME[outcome], **window)


@dataclass
class WebhookOutcomes:
    totals: dict[str, int]
    total_urls: dict[str, str]
    chart: SafeString


def webhook_outcomes(now: datetime) -> WebhookOutcomes:
    starts = minute_starts(now)
    counts: dict[tuple[datetime, str], int] = defaultdict(int)
    for row in webhook_selectors.outcomes_per_minute(starts[0]):
        counts[(row.minute, row.outcome)] += row.events
    bars = []
    for start in starts:
        until = start + timedelta(minutes=1)
        segments = [
            Segment(
                value=counts[(start, outcome)],
                css_class=f"bar-{outcome}",
                href=_outcome_url(outcome, start, until),
                label=f"{_hhmm(start)}: {counts[(start, outcome)]:,} {outcome}",
            )
            for outcome in OUTCOMES
        ]
        bars.append(Bar(segments))
    totals = {outcome: sum(counts[(start, outcome)] for start in starts) for outcome in OUTCOMES}
    return WebhookOutcomes(
        totals=totals,
        total_urls={outcome: _outcome_url(outcome, starts[0]) for outcome in OUTCOMES},
        chart=bar_chart(bars, _x_labels(starts), "Webhook outcomes per minute", "chart-webhook-outcomes"),
    )


@dataclass
class DestinationRow:
    destination: Destination
    backlog: int | None  # an upper bound; None once the topic is deleted
    bar: float
    delivered: int
    failed: int
    undeliverable: int
    urls: dict[str, str] = field(default_factory=dict)


def destination_backlogs(now: datetime) -> list[DestinationRow]:
    since = minute_starts(now)[0]
    destinations = webhook_selectors.destinations_by_backlog(DESTINATIONS_SHOWN)
    outcomes = webhook_selectors.outcomes_per_destination(since, [d.pk for d in destinations])
    peak = max((d.backlog_bound or 0 for d in destinations), default=0)  # type: ignore[attr-defined]
    rows = []
    for destination in destinations:
        backlog = destination.backlog_bound if destination.head_offset is not None else None  # type: ignore[attr-defined]
        rows.append(
            DestinationRow(
                destination=destination,
                backlog=backlog,
                bar=share(backlog or 0, peak),
                delivered=outcomes[destination.pk]["delivered"],
                failed=outcomes[destination.pk]["failed"],
                undeliverable=destination.undeliverable_count,  # type: ignore[attr-defined]
                urls={
                    "destination": reverse("admin:webhooks_destination_change", args=[destination.pk]),
                    "streams": changelist_url(DeliveryStream, destination=destination.pk),
                    "delivered": _outcome_url("delivered", since, destination=destination.pk),
                    "failed": _outcome_url("failed", since, destination=destination.pk),
                    "undeliverable": changelist_url(UndeliverableEvent, destination=destination.pk, redelivered="no"),
                },
            )
        )
    return rows


# --- Consumers -----------------------------------------------------------------------------------------------


@dataclass
class ConsumerRow:
    lag: consumer_selectors.ConsumerLag
    bar: float
    url: str


def consumer_lags() -> list[ConsumerRow]:
    lags = consumer_selectors.largest_lags(CONSUMERS_SHOWN)
    peak = max((item.lag for item in lags), default=0)
    return [
        ConsumerRow(lag=item, bar=share(item.lag, peak), url=reverse("admin:consumers_consumer_change", args=[item.pk]))
        for item in lags
    ]


# --- The page ------------------------------------------------------------------------------------------------


def overview(now: datetime | None = None) -> dict[str, Any]:
    """Everything the dashboard shows, for its template."""
    now = now or timezone.now()
    activity = topic_activity(now)
    starts = minute_starts(now)
    quiet = activity[TOPICS_CHARTED:]
    failing = webhook_selectors.failing_destinations().count()
    undeliverable = webhook_selectors.undeliverable_waiting_count()
    return {
        "summary": {
            "topics": len(activity),
            "events_today": sum(item.today for item in activity),
            "events_total": sum(item.topic.last_offset for item in activity),
            "failing_destinations": failing,
            "failing_url": changelist_url(Destination, state="failing"),
            "undeliverable": undeliverable,
            "undeliverable_url": changelist_url(UndeliverableEvent, redelivered="no"),
        },
        "window": {"from": starts[0], "to": now},
        "topics_charted": [item for item in activity[:TOPICS_CHARTED]],
        "topics_quiet": len(quiet),
        "topics_quiet_events": sum(item.last_hour for item in quiet),
        "webhooks": webhook_outcomes(now),
        "destinations": destination_backlogs(now),
        "destination_total": webhook_selectors.destination_count(),
        "consumers": consumer_lags(),
        "consumer_total": consumer_selectors.consumer_count(),
    }
