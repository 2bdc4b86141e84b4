"""Reads of many consumers at once, for the pages that list them (the admin dashboard). One consumer's exact
position is ``consumers.services.describe``; these only read, and never count a topic's table."""

from dataclasses import dataclass

from django.db.models import BigIntegerField, Count, F, Func, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce, Greatest

from consumers.models import Consumer, DeadLetter, LeasedBatch, PendingEvent


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    pk: int
    name: str
    topic: str  # the reference: "users" or "users:123"
    # Pending + queued + events after the next offset to examine. Exact for a consumer of a whole topic without
    # an event-name filter; for the others an upper bound (events of other ids or names lie in the same range).
    lag: int
    exact: bool
    pending: int
    dead_letters: int


def _per_consumer(queryset: object) -> Coalesce:
    rows = queryset.filter(consumer=OuterRef("pk")).order_by().values("consumer")  # type: ignore[attr-defined]
    return Coalesce(Subquery(rows.annotate(n=Count("offset")).values("n")), 0)


def _leased_in_batches() -> Coalesce:
    batches = LeasedBatch.objects.filter(consumer=OuterRef("pk")).order_by().values("consumer")
    events = Sum(Func(F("offsets"), function="cardinality", output_field=BigIntegerField()))
    return Coalesce(Subquery(batches.annotate(n=events).values("n")), 0)


def largest_lags(limit: int) -> list[ConsumerLag]:
    """The ``limit`` consumers furthest behind, in one query (correlated counts of their pending events and dead
    letters, and the topic's head minus the next offset), largest lag first."""
    consumers = (
        Consumer.objects.select_related("topic")
        .annotate(
            pending_count=_per_consumer(PendingEvent.objects.exclude(state=PendingEvent.QUEUED)) + _leased_in_batches(),
            queued_count=_per_consumer(PendingEvent.objects.filter(state=PendingEvent.QUEUED)),
            dead_count=_per_consumer(DeadLetter.objects.all()),
        )
        .annotate(
            lag_bound=F("pending_count")
            + F("queued_count")
            + Greatest(F("topic__last_offset") - F("next_offset") + 1, Value(0), output_field=BigIntegerField())
        )
        .order_by("-lag_bound", "topic__name", "ref_id", "name")[:limit]
    )
    return [
        ConsumerLag(
            pk=consumer.pk,
            name=consumer.name,
            topic=consumer.ref_text,
            lag=consumer.lag_bound,  # type: ignore[attr-defined]
            exact=not consumer.ref_id and not consumer.event_names,
            pending=consumer.pending_count,  # type: ignore[attr-defined]
            dead_letters=consumer.dead_count,  # type: ignore[attr-defined]
        )
        for consumer in consumers
    ]


def consumer_count() -> int:
    return Consumer.objects.count()
