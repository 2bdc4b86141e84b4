"""Webhook delivery state. Everything that matters lives here, in PostgreSQL, never only in Celery.

- ``Destination``: where to POST, which topic (``name`` or ``name:id``), filters, secret, retry policy.
- ``DeliveryStream``: one per destination x full topic (``orders:1``, ``orders:2``): the cursor of
  what was delivered, the head event's attempt count, when to try next, and the lease of the one
  worker allowed to deliver it. Order is kept per stream; parallelism comes from many streams.
- ``DeliveryAttempt``: one row per HTTP try, written before the request and completed after it.
- ``UndeliverableEvent``: a head event that exhausted its attempts; kept, visible, redeliverable.
"""

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import BigIntegerField, Case, Count, F, Min, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import Coalesce, Greatest, Least
from django.utils import timezone

from eventrelay.refs import ID_MAX_LENGTH, NAME_MAX_LENGTH
from topics.models import Topic


def _topic_head(topic_name_path: str) -> Subquery:
    """The last offset of the topic named at ``topic_name_path`` (NULL once the topic is deleted)."""
    return Subquery(Topic.objects.filter(name=OuterRef(topic_name_path)).values("last_offset")[:1])


class DestinationQuerySet(models.QuerySet["Destination"]):
    def for_topic(self, topic_name: str) -> "DestinationQuerySet":
        return self.filter(topic_name=topic_name)

    def active(self) -> "DestinationQuerySet":
        return self.filter(active=True)

    def paused(self) -> "DestinationQuerySet":
        return self.filter(active=False, disabled_reason="")

    def disabled_by_receiver(self) -> "DestinationQuerySet":
        return self.filter(active=False).exclude(disabled_reason="")

    def with_delivery_stats(self) -> "DestinationQuerySet":
        """Each destination with ``stream_count``, ``undeliverable_count`` (not yet redelivered), ``head_offset``
        (its topic's last offset, None once the topic is deleted) and ``backlog_bound`` (at most this many events
        wait), in one query: correlated subqueries, no join fan-out, no per-row queries."""
        min_cursor = Subquery(
            DeliveryStream.objects.filter(destination=OuterRef("pk"))
            .order_by()
            .values("destination")
            .annotate(m=Min("last_offset"))
            .values("m")
        )
        # Every pending event lies between the lowest cursor and the head. A whole-topic destination
        # also has events of topic ids not scanned yet (after scanned_offset) waiting for a stream.
        low = Case(
            When(topic_id="", then=Least(Coalesce(F("min_cursor"), F("scanned_offset")), F("scanned_offset"))),
            default=Coalesce(F("min_cursor"), F("start_offset")),
        )
        return self.annotate(
            stream_count=_count_per_destination(DeliveryStream.objects.all(), "destination"),
            undeliverable_count=_count_per_destination(
                UndeliverableEvent.objects.filter(redelivered_at__isnull=True), "stream__destination"
            ),
            min_cursor=min_cursor,
            head_offset=_topic_head("topic_name"),
        ).annotate(backlog_bound=Greatest(F("head_offset") - low, Value(0), output_field=BigIntegerField()))


def _count_per_destination(queryset: models.QuerySet, destination_path: str) -> Coalesce:
    per_destination = queryset.filter(**{destination_path: OuterRef("pk")}).order_by().values(destination_path)
    return Coalesce(Subquery(per_destination.annotate(n=Count("pk")).values("n")), 0)


class Destination(models.Model):
    name = models.CharField(max_length=100)
    url = models.URLField(max_length=2000)
    # The topic reference, split: topic_name is the table, topic_id ("" = every id) the scope.
    topic_name = models.CharField(max_length=NAME_MAX_LENGTH, db_index=True)
    topic_id = models.CharField(max_length=ID_MAX_LENGTH, blank=True, default="")
    event_names = models.JSONField(default=list, blank=True, help_text="Only these event names; empty for all.")
    active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True, default="")
    disabled_at = models.DateTimeField(null=True, blank=True)
    # Since when every attempt has failed (None: the last attempt succeeded); past ER_WEBHOOK_DISABLE_AFTER_S the
    # destination is disabled.
    failing_since = models.DateTimeField(null=True, blank=True)
    secret = models.CharField(max_length=100)
    # The secret before the last rotation, which still signs every request until ``previous_secret_until``.
    previous_secret = models.CharField(max_length=100, blank=True, default="")
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    max_attempts = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: ER_WEBHOOK_MAX_ATTEMPTS.")
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: ER_WEBHOOK_TIMEOUT_S.")
    backoff_base_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: ER_WEBHOOK_BACKOFF_BASE_MS.")
    backoff_cap_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: ER_WEBHOOK_BACKOFF_CAP_MS.")
    max_per_second = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="At most this many requests per second to it, all streams together. Empty: no limit.",
    )
    # Events with offsets above this are delivered: the topic's last offset when the destination was
    # created (or an earlier offset chosen by the admin, to replay).
    start_offset = models.BigIntegerField(default=0)
    # Offsets up to here have been scanned for topic ids that need a stream (whole-topic destinations).
    scanned_offset = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DestinationQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        # Not the URL: it may carry credentials, and __str__ ends up in admin history and messages.
        return f"{self.name} ({self.topic})"

    @property
    def topic(self) -> str:
        return f"{self.topic_name}:{self.topic_id}" if self.topic_id else self.topic_name

    def signing_previous_secret(self, now: "datetime | None" = None) -> str:
        """The previous secret while its overlap lasts, else ""."""
        if self.previous_secret and self.previous_secret_until and self.previous_secret_until > (now or timezone.now()):
            return self.previous_secret
        return ""

    @property
    def expired(self) -> int:
        """Events retention deleted before they were delivered, over all its streams."""
        return int(self.streams.aggregate(total=models.Sum("expired_count"))["total"] or 0)

    @property
    def effective_max_attempts(self) -> int:
        return self.max_attempts or settings.ER_WEBHOOK_MAX_ATTEMPTS

    @property
    def effective_timeout_seconds(self) -> float:
        return self.timeout_seconds or settings.ER_WEBHOOK_TIMEOUT_S

    @property
    def effective_backoff_base_ms(self) -> int:
        return self.backoff_base_ms or settings.ER_WEBHOOK_BACKOFF_BASE_MS

    @property
    def effective_backoff_cap_ms(self) -> int:
        return self.backoff_cap_ms or settings.ER_WEBHOOK_BACKOFF_CAP_MS


class DeliveryStreamQuerySet(models.QuerySet["DeliveryStream"]):
    def unleased(self, now: object = None) -> "DeliveryStreamQuerySet":
        now = now or timezone.now()
        return self.filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))

    def due(self, now: object = None) -> "DeliveryStreamQuerySet":
        """Streams a worker may claim now: active destination, not leased, not waiting for a retry."""
        now = now or timezone.now()
        return self.unleased(now).filter(destination__active=True, next_attempt_at__lte=now)

    def behind(self) -> "DeliveryStreamQuerySet":
        """Streams whose cursor is below their topic's last offset (they may have work)."""
        last_offsets = Topic.objects.filter(name=models.OuterRef("destination__topic_name")).values("last_offset")
        return self.annotate(topic_last_offset=models.Subquery(last_offsets)).filter(
            last_offset__lt=F("topic_last_offset")
        )

    def with_topic_head(self) -> "DeliveryStreamQuerySet":
        """Each stream with ``head_offset``: its topic's last offset (None once the topic is deleted)."""
        return self.annotate(head_offset=_topic_head("destination__topic_name"))

    def most_urgent_first(self) -> "DeliveryStreamQuerySet":
        """Failing streams first, then the furthest behind."""
        return self.order_by("-attempts", "last_offset", "topic_id")


class DeliveryStream(models.Model):
    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, related_name="streams")
    topic_id = models.CharField(max_length=ID_MAX_LENGTH, blank=True, default="")
    # Every event of this stream with an offset up to here is delivered (or recorded undeliverable).
    last_offset = models.BigIntegerField(default=0)
    # Failed attempts of the head event (the first one after last_offset).
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_owner = models.CharField(max_length=64, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # When a delivery task was last queued for it and not yet claimed (None once claimed): lets the
    # sweep tell a lost Celery message from one that is merely waiting in the queue.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    delivered_count = models.BigIntegerField(default=0)
    # Events of this stream retention deleted before they were delivered (webhooks.receivers).
    expired_count = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DeliveryStreamQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["destination", "topic_id"], name="one_stream_per_topic_id")]
        indexes = [models.Index(fields=["next_attempt_at"], name="stream_next_attempt")]

    def __str__(self) -> str:
        return f"{self.destination.name} / {self.topic}"

    @property
    def topic(self) -> str:
        name = self.destination.topic_name
        return f"{name}:{self.topic_id}" if self.topic_id else name


class DeliveryAttempt(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    stream = models.ForeignKey(DeliveryStream, on_delete=models.CASCADE, related_name="delivery_attempts")
    event_id = models.UUIDField()
    offset = models.BigIntegerField()
    attempt = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["stream", "offset"], name="attempt_stream_offset")]

    def __str__(self) -> str:
        return f"offset {self.offset} attempt {self.attempt}: {self.status}"


class UndeliverableEvent(models.Model):
    stream = models.ForeignKey(DeliveryStream, on_delete=models.CASCADE, related_name="undeliverable")
    event_id = models.UUIDField()
    offset = models.BigIntegerField()
    attempts = models.PositiveIntegerField()
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    redelivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["stream", "offset"], name="one_undeliverable_per_offset")]

    def __str__(self) -> str:
        return f"{self.stream} offset {self.offset}"
