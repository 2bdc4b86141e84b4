"""The topics' figures for Prometheus (``eventrelay.metrics``): each topic's last offset, read at scrape time."""

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from eventrelay.metrics import PREFIX
from topics.models import Topic


class TopicOffsets(Collector):
    """``eventrelay_topic_last_offset{topic}``: one query for every topic (the topics table itself)."""

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "topic_last_offset", "The offset of the newest event stored in the topic.", labels=["topic"]
        )
        for name, last_offset in Topic.objects.order_by("name").values_list("name", "last_offset"):
            family.add_metric([name], last_offset)
        yield family
