"""Durable consumers: a position kept on the server, and the events handed out under a lease.

- ``Consumer``: one per topic reference and name. ``next_offset`` is the first offset not yet examined: every
  event before it was either handed out (and is done, or has a ``PendingEvent``) or did not match the filter.
  ``epoch`` counts seeks, so an ackId from before a seek cannot touch what was handed out after it.
- ``PendingEvent``: an event handed out and not yet acknowledged (leased, or waiting for redelivery after a nack
  or an expired lease), or, with ``ordered``, queued behind an earlier event of its topic id. Acknowledged
  events below ``next_offset`` have no row, so the table holds what is in flight, not the log.
- ``LeasedBatch``: the events one fetch handed out fresh, leased together in one row rather than a
  ``PendingEvent`` each. Anything but the ack of the whole batch (a partial ack, a nack, an extend, the end of
  its lease, retention) first splits it into the ``PendingEvent`` rows it stands for (``consumers.leases``).
- ``DeadLetter``: an event that used up ``max_deliveries``; kept until redriven or sought past, or until
  retention deletes its event.

The consumer's floor is derived, never stored: the lowest pending offset - 1, or ``next_offset`` - 1 when
nothing is pending (docs/consumers.md). Acks therefore write nothing but the deletion of their rows.
"""

from django.contrib.postgres.fields import ArrayField
from django.db import models

from eventrelay.refs import ID_MAX_LENGTH
from topics.models import Topic

NAME_MAX_LENGTH = 64


class ConsumerQuerySet(models.QuerySet["Consumer"]):
    def of_ref(self, topic_name: str, ref_id: str) -> "ConsumerQuerySet":
        return self.filter(topic__name=topic_name, ref_id=ref_id)


class Consumer(models.Model):
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="consumers")
    # The id part of the reference: "" for the whole topic (a reference cannot name an empty id, so "" is
    # unambiguous here, although events published to the bare name have topic id "").
    ref_id = models.CharField(max_length=ID_MAX_LENGTH, blank=True, default="")
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    start_offset = models.BigIntegerField()
    ack_wait_seconds = models.IntegerField()
    max_deliveries = models.IntegerField()
    max_in_flight = models.IntegerField()
    event_names = models.JSONField(default=list, blank=True)
    ordered = models.BooleanField(default=False)
    next_offset = models.BigIntegerField()
    epoch = models.IntegerField(default=0)
    # Matching events retention deleted before this consumer had them acknowledged (consumers.retention).
    expired = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ConsumerQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["topic", "ref_id", "name"], name="consumers_consumer_ref_name"),
        ]
        ordering = ["ref_id", "name"]

    def __str__(self) -> str:
        return f"{self.ref_text}/{self.name}"

    @property
    def ref_text(self) -> str:
        return f"{self.topic.name}:{self.ref_id}" if self.ref_id else self.topic.name


class PendingEvent(models.Model):
    LEASED = "leased"
    WAITING = "waiting"
    # Never handed out: with ``ordered``, waiting behind an earlier event of its topic id.
    QUEUED = "queued"
    STATES = [(LEASED, LEASED), (WAITING, WAITING), (QUEUED, QUEUED)]

    pk = models.CompositePrimaryKey("consumer_id", "offset")
    # No index of its own: the primary key starts with it, and every fetch inserts a row per event handed out.
    consumer = models.ForeignKey(Consumer, on_delete=models.CASCADE, related_name="pending", db_index=False)
    offset = models.BigIntegerField()
    topic_id = models.CharField(max_length=ID_MAX_LENGTH, blank=True, default="")
    event_id = models.UUIDField()
    # Deliveries so far: 0 for an event queued behind its topic id (``ordered``) that was never handed out.
    delivery_count = models.IntegerField(default=0)
    state = models.CharField(max_length=8, choices=STATES)
    # Leased: when the lease ends. Waiting: when it may be handed out again.
    available_at = models.DateTimeField()
    last_error = models.TextField(blank=True, default="")

    class Meta:
        indexes = [
            # Redeliveries: WHERE consumer_id = %s AND available_at <= now().
            models.Index(fields=["consumer", "available_at"], name="consumers_pending_due"),
            # ``ordered``: is an earlier event of this topic id still pending?
            models.Index(fields=["consumer", "topic_id", "offset"], name="consumers_pending_tid"),
        ]

    def __str__(self) -> str:
        return f"{self.offset} ({self.state}, delivery {self.delivery_count})"


class LeasedBatch(models.Model):
    """Stands for one ``PendingEvent`` per element of ``offsets``: leased, first delivery, until ``available_at``,
    no error. A fetch of fresh events writes this one row and an ack of all of them deletes it, where a row per
    event would be written, indexed three times and deleted (docs/consumers.md, "How leases are stored")."""

    pk = models.CompositePrimaryKey("consumer_id", "first_offset")
    consumer = models.ForeignKey(Consumer, on_delete=models.CASCADE, related_name="leased_batches", db_index=False)
    first_offset = models.BigIntegerField()
    last_offset = models.BigIntegerField()
    offsets = ArrayField(models.BigIntegerField())  # ascending, all from first_offset to last_offset
    available_at = models.DateTimeField()  # when the lease ends

    class Meta:
        indexes = [models.Index(fields=["consumer", "available_at"], name="consumers_batch_due")]

    def __str__(self) -> str:
        return f"{self.first_offset}..{self.last_offset} ({len(self.offsets)} leased)"


class DeadLetter(models.Model):
    consumer = models.ForeignKey(Consumer, on_delete=models.CASCADE, related_name="dead_letters")
    offset = models.BigIntegerField()
    topic_id = models.CharField(max_length=ID_MAX_LENGTH, blank=True, default="")
    event_id = models.UUIDField()
    deliveries = models.IntegerField()
    last_error = models.TextField(blank=True, default="")
    dead_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["consumer", "offset"], name="consumers_dead_letter_offset")]
        ordering = ["offset"]

    def __str__(self) -> str:
        return f"{self.offset} (dead after {self.deliveries} deliveries)"
