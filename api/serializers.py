"""Response shapes (and their OpenAPI schema). Input is validated by the services, which name the
offending field in the same way on every API; these serializers describe it for the schema."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from api import schema
from api.errors import STATUS_BY_CODE
from consumers import services as consumer_services
from eventrelay.errors import EventRelayError
from events.canonical import StoredEvent, to_canonical
from topics.models import Topic
from webhooks.models import DeliveryAttempt, Destination
from webhooks.services import MAX_ATTEMPTS_LIMIT, TIMEOUT_SECONDS_LIMIT, shown_url


# Fields whose OpenAPI schema states the rules the services check (api.schema); the services' own
# messages explain a refusal, so these add no validation of their own.
@extend_schema_field(schema.TOPIC_NAME)
class TopicNameField(serializers.CharField):
    pass


@extend_schema_field(schema.TOPIC_REF)
class TopicRefField(serializers.CharField):
    pass


@extend_schema_field({"type": "string", "pattern": schema.NOT_BLANK_PATTERN})
class NotBlankTextField(serializers.CharField):
    """Text DRF strips of surrounding whitespace and refuses empty (or holding NUL)."""


@extend_schema_field({"type": "string", "pattern": schema.NO_NUL_PATTERN})
class StoredTextField(serializers.CharField):
    """Text the events services store as sent: anything but NUL."""


@extend_schema_field(
    {"type": "string", "format": "date-time", "pattern": schema.OCCURRED_AT_PATTERN, "example": "2020-01-01T00:00:00Z"}
)
class OccurredAtField(serializers.CharField):
    pass


# http or https; its host must also resolve (to a public address unless ER_WEBHOOK_ALLOW_PRIVATE), which
# no pattern can say (webhooks.ssrf).
@extend_schema_field({"type": "string", "format": "uri", "pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://\S+$"})
class WebhookURLField(serializers.URLField):
    pass


# Field names are the API's camelCase (docs/api.md), mapped to model fields with `source`.
def _retention_field(**kwargs: Any) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=0, max_value=2**63 - 1, allow_null=True, **kwargs)


class TopicSerializer(serializers.Serializer):
    name = TopicNameField()
    firstOffset = serializers.IntegerField(
        source="first_offset", help_text="The lowest offset retained (lastOffset + 1 when none is)."
    )
    lastOffset = serializers.IntegerField(source="last_offset")
    retentionMaxAgeSeconds = _retention_field(
        source="retention_max_age_seconds", help_text="Events stored longer ago are deleted; null: kept."
    )
    retentionMaxEvents = _retention_field(source="retention_max_events", help_text="Newest events kept; null: all.")
    createdAt = serializers.DateTimeField(source="created_at")


class RetentionSerializer(serializers.Serializer):
    retentionMaxAgeSeconds = _retention_field(
        required=False, help_text="Delete events stored longer ago than this (0 or null: keep them)."
    )
    retentionMaxEvents = _retention_field(
        required=False, help_text="Keep at most this many of the newest events (0 or null: no limit)."
    )


class CreateTopicSerializer(RetentionSerializer):
    name = TopicNameField()


class UpdateTopicSerializer(RetentionSerializer):
    pass


class TopicListSerializer(serializers.Serializer):
    topics = TopicSerializer(many=True)


class NewEventSerializer(serializers.Serializer):
    eventId = serializers.UUIDField(
        required=False, allow_null=True, help_text="Generated when absent; idempotency key."
    )
    name = StoredTextField(max_length=255, trim_whitespace=False)
    userId = StoredTextField(required=False, allow_null=True, max_length=255, trim_whitespace=False)
    eventOccurredAt = OccurredAtField(
        required=False,
        allow_null=True,
        help_text="RFC 3339 with Z or an offset, in the years 1-9999 once in UTC; now when absent. Kept to the "
        "millisecond.",
    )
    context = serializers.DictField(required=False, allow_null=True, help_text="A JSON object; {} when absent.")
    data = serializers.JSONField(help_text="Any JSON value (null too).")


# One event or a list of them (the list's length: api.schema.publish_body_rules).
PublishRequestSerializer = PolymorphicProxySerializer(
    component_name="Publish",
    serializers=[NewEventSerializer, NewEventSerializer(many=True)],
    resource_type_field_name=None,
    many=False,
)


class EventSerializer(serializers.Serializer):
    eventId = serializers.UUIDField()
    name = serializers.CharField()
    topic = serializers.CharField()
    source = serializers.ChoiceField(choices=["grpc", "websocket", "http"])
    userId = serializers.CharField(allow_null=True)
    eventOccurredAt = serializers.CharField()
    context = serializers.DictField()
    data = serializers.JSONField()
    offset = serializers.IntegerField()

    def to_representation(self, instance: StoredEvent) -> dict[str, Any]:
        return to_canonical(instance)


class PublishResponseSerializer(serializers.Serializer):
    events = EventSerializer(many=True)


class PullResponseSerializer(serializers.Serializer):
    events = EventSerializer(many=True)
    nextOffset = serializers.IntegerField()


class DestinationSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = NotBlankTextField(max_length=100)
    url = WebhookURLField(
        max_length=2000,
        help_text="A password in it is shown as ***; sending the shown URL back keeps the stored password.",
    )
    topic = TopicRefField()
    eventNames = serializers.ListField(child=NotBlankTextField(), source="event_names", required=False)
    active = serializers.BooleanField(required=False, default=True)
    disabledReason = serializers.CharField(source="disabled_reason", read_only=True)
    disabledAt = serializers.DateTimeField(source="disabled_at", read_only=True, allow_null=True)
    failingSince = serializers.DateTimeField(
        source="failing_since", read_only=True, allow_null=True, help_text="Since when every attempt has failed."
    )
    maxAttempts = serializers.IntegerField(
        source="max_attempts", required=False, allow_null=True, min_value=1, max_value=MAX_ATTEMPTS_LIMIT
    )
    timeoutSeconds = serializers.IntegerField(
        source="timeout_seconds", required=False, allow_null=True, min_value=1, max_value=TIMEOUT_SECONDS_LIMIT
    )
    maxPerSecond = serializers.IntegerField(
        source="max_per_second",
        required=False,
        allow_null=True,
        min_value=1,
        max_value=1_000_000,
        help_text="At most this many requests per second to it (all its streams); null: no limit.",
    )
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    expired = serializers.IntegerField(
        read_only=True, help_text="Events retention deleted before they were delivered (all its streams)."
    )

    def to_representation(self, instance: Destination) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["url"] = shown_url(instance.url)
        if self.context.get("with_secret"):
            data["secret"] = instance.secret
        return data


class DestinationCreateSerializer(DestinationSerializer):
    startOffset = serializers.IntegerField(
        source="start_offset",
        required=False,
        min_value=0,
        help_text="Replay from after this offset (at most the topic's last offset).",
    )


class DestinationCreatedSerializer(DestinationSerializer):
    secret = serializers.CharField(read_only=True, help_text="The signing secret: shown by this answer only.")


class DestinationChangeSerializer(DestinationSerializer):
    """The PATCH body: every field but the topic (a new topic is a new destination)."""

    topic = None


class DestinationListSerializer(serializers.Serializer):
    webhooks = DestinationSerializer(many=True)


# The webhooks services name fields as the models do (``max_attempts``); the API names them as the serializers
# above do (``maxAttempts``). This is the one place a refusal's field is translated.
DESTINATION_FIELD_NAMES = {
    field.source: name for name, field in DestinationCreateSerializer().fields.items() if field.source != name
}


@contextmanager
def destination_errors_in_api_names() -> Iterator[None]:
    """Re-raise a webhooks service's refusal with the API's name for its field, in ``field`` and where the
    message begins with it (``start_offset must be ...`` reads ``startOffset must be ...``)."""
    try:
        yield
    except EventRelayError as error:
        api_name = DESTINATION_FIELD_NAMES.get(error.field or "")
        if api_name is not None:
            if error.message.startswith(f"{error.field} "):
                error.message = api_name + error.message[len(error.field or "") :]
                error.args = (error.message,)
            error.field = api_name
        raise


class AttemptSerializer(serializers.Serializer):
    eventId = serializers.UUIDField(source="event_id")
    topic = serializers.CharField(source="stream.topic")
    offset = serializers.IntegerField()
    attempt = serializers.IntegerField()
    status = serializers.ChoiceField(choices=DeliveryAttempt.Status.choices)
    responseStatus = serializers.IntegerField(source="response_status", allow_null=True)
    durationMs = serializers.IntegerField(source="duration_ms", allow_null=True)
    error = serializers.CharField()
    at = serializers.DateTimeField()


class RedeliverSerializer(serializers.Serializer):
    since = serializers.DateTimeField(help_text="Undeliverable events recorded at or after this moment (ISO 8601).")


class RedeliverResponseSerializer(serializers.Serializer):
    queued = serializers.IntegerField(help_text="How many undeliverable events were queued for redelivery.")


class AttemptListSerializer(serializers.Serializer):
    attempts = AttemptSerializer(many=True)


# --- Consumers (docs/consumers.md). Ranges from consumers.services, which enforces them. -----------------

_CONSUMER_RANGES = {field: (lowest, highest) for field, _, _, lowest, highest in consumer_services.RANGES}


def _ranged(field: str, **kwargs: Any) -> serializers.IntegerField:
    lowest, highest = _CONSUMER_RANGES[field]
    return serializers.IntegerField(min_value=lowest, max_value=highest, **kwargs)


@extend_schema_field(schema.CONSUMER_NAME)
class ConsumerNameField(serializers.CharField):
    pass


@extend_schema_field(schema.ACK_ID)
class AckIdField(serializers.CharField):
    pass


@extend_schema_field(schema.OFFSET_OR_END)
class OffsetOrEndField(serializers.IntegerField):
    pass


@extend_schema_field(schema.OFFSET)
class OffsetField(serializers.IntegerField):
    pass


class ConsumerSerializer(serializers.Serializer):
    name = ConsumerNameField()
    topic = TopicRefField()
    startOffset = OffsetField(source="start_offset")
    ackWaitSeconds = serializers.IntegerField(source="ack_wait_seconds")
    maxDeliveries = serializers.IntegerField(source="max_deliveries")
    maxInFlight = serializers.IntegerField(source="max_in_flight")
    eventNames = serializers.ListField(child=serializers.CharField(), source="event_names")
    ordered = serializers.BooleanField()
    ackFloor = serializers.IntegerField(source="ack_floor", help_text="Every matching event up to here is done.")
    pending = serializers.IntegerField(help_text="Leased, or waiting for redelivery.")
    lag = serializers.IntegerField(help_text="Matching events after the floor not yet acked.")
    deadLetters = serializers.IntegerField(source="dead_letters")
    expired = serializers.IntegerField(help_text="Matching events retention deleted before they were acknowledged.")
    createdAt = serializers.DateTimeField(source="created_at")


class ConsumerListSerializer(serializers.Serializer):
    consumers = ConsumerSerializer(many=True)


class CreateConsumerSerializer(serializers.Serializer):
    name = ConsumerNameField()
    startOffset = OffsetOrEndField(
        required=False, help_text="The first offset to deliver (default 1); -1: only events published from now on."
    )
    ackWaitSeconds = _ranged("ackWaitSeconds", required=False, help_text="How long a lease lasts (default 30).")
    maxDeliveries = _ranged(
        "maxDeliveries", required=False, help_text="Deliveries before the event is dead-lettered (default 20)."
    )
    maxInFlight = _ranged("maxInFlight", required=False, help_text="Events out and not acked at once (default 1000).")
    eventNames = serializers.ListField(
        child=StoredTextField(min_length=1, max_length=255, trim_whitespace=False),
        required=False,
        max_length=consumer_services.MAX_EVENT_NAMES,
        help_text="Deliver only these names; the others count as done.",
    )
    ordered = serializers.BooleanField(
        required=False, help_text="At most one event per topic id out at a time, in offset order."
    )


class FetchSerializer(serializers.Serializer):
    maxEvents = _ranged("maxEvents", required=False, help_text="At most this many (default 100).")
    waitMs = _ranged("waitMs", required=False, help_text="With nothing available, wait this long (default 0).")
    ackIds = serializers.ListField(
        child=AckIdField(),
        required=False,
        help_text="Acknowledged before the fetch, as an ack would (the previous batch's): one call instead of two. "
        "One unknown ackId refuses the call, and nothing is acknowledged or leased.",
    )


class DeliverySerializer(serializers.Serializer):
    ackId = AckIdField()
    deliveryCount = serializers.IntegerField(min_value=1)
    event = EventSerializer()


class FetchResponseSerializer(serializers.Serializer):
    deliveries = DeliverySerializer(many=True)
    staleAckIds = serializers.ListField(
        child=AckIdField(), help_text="Of the request's ackIds, those that acted on nothing (as an ack answers)."
    )


def _ack_ids() -> serializers.ListField:
    return serializers.ListField(child=AckIdField(), max_length=settings.ER_CONSUMER_MAX_ACK_IDS)


class AckSerializer(serializers.Serializer):
    ackIds = _ack_ids()


class NackSerializer(serializers.Serializer):
    ackIds = _ack_ids()
    delayMs = _ranged("delayMs", required=False, help_text="Available again after this long (default 0).")
    reason = StoredTextField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=consumer_services.MAX_REASON_LENGTH,
        help_text="Why it failed: kept with the dead letter if this was the last delivery.",
    )


class AckResponseSerializer(serializers.Serializer):
    staleAckIds = serializers.ListField(
        child=AckIdField(), help_text="Those that acted on nothing: their delivery is no longer out."
    )


class SeekSerializer(serializers.Serializer):
    offset = OffsetOrEndField(help_text="Start over from here; -1: after the topic's last event.")


class DeadLetterSerializer(serializers.Serializer):
    offset = serializers.IntegerField()
    eventId = serializers.UUIDField(source="event_id")
    topic = TopicRefField()
    deliveries = serializers.IntegerField()
    lastError = serializers.CharField(source="last_error")
    deadAt = serializers.DateTimeField(source="dead_at")


class DeadLetterListSerializer(serializers.Serializer):
    deadLetters = DeadLetterSerializer(many=True)


class RedriveSerializer(serializers.Serializer):
    offsets = serializers.ListField(
        child=OffsetField(),
        required=False,
        max_length=settings.ER_CONSUMER_MAX_ACK_IDS,
        help_text="Absent: every dead letter.",
    )


class RedriveResponseSerializer(serializers.Serializer):
    offsets = serializers.ListField(child=serializers.IntegerField(), help_text="The offsets redriven.")


class ErrorDetailSerializer(serializers.Serializer):
    # Every code api.errors answers with, and "error" for a bug of ours (a 500, eventrelay.error_pages).
    code = serializers.ChoiceField(choices=list(STATUS_BY_CODE))
    message = serializers.CharField()
    field = serializers.CharField(required=False)


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


def topic_payload(topic: Topic) -> dict[str, Any]:
    return TopicSerializer(topic).data
