from django.db import models

from eventrelay.refs import NAME_MAX_LENGTH
from topics.tables import events_table_name


class TopicQuerySet(models.QuerySet["Topic"]):
    def named(self, name: str) -> "TopicQuerySet":
        return self.filter(name=name)


class Topic(models.Model):
    """A topic: one row here, one ``<name>_events`` table for its events.

    ``last_offset`` is the topic's offset counter. Publishing locks this row for the whole insert
    transaction, which is what makes offsets gapless and committed in order (see
    ``events.services.publish``).
    """

    name = models.CharField(max_length=NAME_MAX_LENGTH, unique=True)
    last_offset = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TopicQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def table_name(self) -> str:
        return events_table_name(self.name)
