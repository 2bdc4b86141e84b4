from typing import Any

from django.db import connection, models

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


# --- The offset counter: SQL on the topic's row, for events.storage's publish transaction -------------


def _topics_table() -> str:
    return connection.ops.quote_name(Topic._meta.db_table)


def reserve_offsets(cursor: Any, topic_name: str, count: int) -> int | None:
    """Lock the topic's row and advance its counter by ``count``; return the last offset before, or None
    when the topic does not exist. The lock is held until the transaction ends."""
    cursor.execute(
        f"UPDATE {_topics_table()} SET last_offset = last_offset + %s WHERE name = %s RETURNING last_offset - %s",
        [count, topic_name, count],
    )
    row = cursor.fetchone()
    return None if row is None else int(row[0])


def lock_counter(cursor: Any, topic_name: str) -> int | None:
    """Lock the topic's row and return its last offset (None when the topic does not exist)."""
    cursor.execute(f"SELECT last_offset FROM {_topics_table()} WHERE name = %s FOR UPDATE", [topic_name])
    row = cursor.fetchone()
    return None if row is None else int(row[0])


def set_counter(cursor: Any, topic_name: str, last_offset: int) -> None:
    """Set the counter of a topic whose row this transaction has locked."""
    cursor.execute(f"UPDATE {_topics_table()} SET last_offset = %s WHERE name = %s", [last_offset, topic_name])
