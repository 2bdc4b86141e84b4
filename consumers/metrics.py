"""Durable consumers' figures for Prometheus (``eventrelay.metrics``), read from the database at scrape time."""

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from consumers import selectors
from eventrelay.metrics import PREFIX


class ConsumerLags(Collector):
    """``eventrelay_consumer_lag_events{topic,consumer}``: the dashboard's lag (``consumers.selectors``), for every
    consumer in two queries (how many, then all of them), whatever the number of topics: pending + queued + offsets not yet examined. Exact for a
    consumer of a whole topic without an event-name filter; for the others an upper bound (their API ``lag`` counts
    the matching events in the topic's table, which a scrape does not). ``consumer`` is ``<reference>/<name>``
    (``users:123/billing``): names are unique per reference, not per topic."""

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "consumer_lag_events",
            "Events the durable consumer has not had acknowledged yet (pending, queued, not yet handed out).",
            labels=["topic", "consumer"],
        )
        for lag in selectors.largest_lags(selectors.consumer_count()):
            family.add_metric([lag.topic.partition(":")[0], f"{lag.topic}/{lag.name}"], lag.lag)
        yield family
