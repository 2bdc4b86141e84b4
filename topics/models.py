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
    # What the topic keeps (topics.retention); None: no bound.
    retention_max_age_seconds = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Delete events stored longer ago than this. Empty: keep them."
    )
    retention_max_events = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Keep at most this many of the newest events. Empty: no limit."
    )

    objects = TopicQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def table_name(self) -> str:
        return events_table_name(self.name)

    @property
    def first_offset(self) -> int:
        """The lowest offset the topic still holds (``last_offset + 1`` when it holds none): what retention left."""
        state = getattr(self, "retention_state", None)
        return max(state.first_offset if state is not None else 1, 1)


class RetentionState(models.Model):
    """Where retention has got to in a topic: every offset below ``first_offset`` is deleted.

    A row of its own, not columns of ``Topic``: the sweep updates it in every batch, and the topic's row is the
    offset counter publishing locks (a sweep never waits for a publish, nor a publish for a sweep).
    """

    topic = models.OneToOneField(Topic, on_delete=models.CASCADE, primary_key=True, related_name="retention_state")
    first_offset = models.BigIntegerField(default=1)
    deleted_total = models.BigIntegerField(default=0)
    last_sweep_at = models.DateTimeField(null=True, blank=True)
    last_sweep_deleted = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"retention of {self.topic_id}"


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


def head(topic_name: str) -> tuple[int, int] | None:
    """The topic's primary key and last offset, without a lock (None when the topic does not exist): read on every
    webhook wake-up and live-feed tick, so one statement written once rather than a queryset compiled each time."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, last_offset FROM {_topics_table()} WHERE name = %s", [topic_name])
        row = cursor.fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def lock_counter(cursor: Any, topic_name: str) -> int | None:
    """Lock the topic's row and return its last offset (None when the topic does not exist)."""
    cursor.execute(f"SELECT last_offset FROM {_topics_table()} WHERE name = %s FOR UPDATE", [topic_name])
    row = cursor.fetchone()
    return None if row is None else int(row[0])


def set_counter(cursor: Any, topic_name: str, last_offset: int) -> None:
    """Set the counter of a topic whose row this transaction has locked."""
    cursor.execute(f"UPDATE {_topics_table()} SET last_offset = %s WHERE name = %s", [last_offset, topic_name])
