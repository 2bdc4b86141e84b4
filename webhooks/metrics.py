"""Webhook delivery's figures for Prometheus (``eventrelay.metrics``), read from the database at scrape time."""

from collections.abc import Iterable

from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from eventrelay.metrics import PREFIX
from topics import tables
from webhooks.models import DeliveryStream, Destination


class DestinationBacklogs(Collector):
    """Per destination (labelled by id, never by URL: it may carry credentials), in three queries whatever the
    number of topics and destinations:

    - ``eventrelay_webhook_backlog_events``: the admin's backlog bound (``with_delivery_stats``): the offsets between
      the destination's least advanced stream and its topic's head. 0 when caught up; while behind, an upper bound
      (events of other topic ids or names lie in the same range);
    - ``eventrelay_webhook_oldest_pending_seconds``: how long ago the oldest event waiting in any of its streams was
      stored (0: none waits): the streams behind their topic's head, then one index probe per such stream in one
      statement (``topics.tables.first_stored_after``).

    A destination whose topic was deleted has no series."""

    def collect(self) -> Iterable[Metric]:
        now = timezone.now()
        backlog = GaugeMetricFamily(
            PREFIX + "webhook_backlog_events",
            "Offsets between the destination's least advanced stream and its topic's head (0: caught up).",
            labels=["destination"],
        )
        oldest = GaugeMetricFamily(
            PREFIX + "webhook_oldest_pending_seconds",
            "Age of the oldest event waiting to be delivered to the destination (0: none).",
            labels=["destination"],
        )
        stats = Destination.objects.with_delivery_stats().order_by("pk")
        # (django-stubs does not see the annotations)
        rows = stats.values_list("pk", "head_offset", "backlog_bound")  # type: ignore[misc]
        destinations = [(pk, bound) for pk, head, bound in rows if head is not None]
        streams = list(
            DeliveryStream.objects.behind().values_list(
                "destination_id", "destination__topic_name", "topic_id", "last_offset"
            )
        )
        stored = tables.first_stored_after([(topic_name, topic_id, last) for _, topic_name, topic_id, last in streams])
        oldest_of: dict[int, float] = {}
        for (destination_id, *_), stored_at in zip(streams, stored, strict=True):
            if stored_at is not None:
                age = max((now - stored_at).total_seconds(), 0.0)
                oldest_of[destination_id] = max(age, oldest_of.get(destination_id, 0.0))
        for pk, bound in destinations:
            backlog.add_metric([str(pk)], bound or 0)
            oldest.add_metric([str(pk)], oldest_of.get(pk, 0.0))
        yield backlog
        yield oldest
