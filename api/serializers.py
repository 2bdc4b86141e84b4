"""Response shapes (and their OpenAPI schema). Input is validated by the services, which name the
offending field in the same way on every API; these serializers describe it for the schema."""

from typing import Any

from rest_framework import serializers

from events.canonical import StoredEvent, to_canonical
from topics.models import Topic
from webhooks.models import DeliveryAttempt, Destination
from webhooks.services import MAX_ATTEMPTS_LIMIT, TIMEOUT_SECONDS_LIMIT


# Field names are the API's camelCase (SPEC.md), mapped to model fields with `source`.
class TopicSerializer(serializers.Serializer):
    name = serializers.CharField()
    lastOffset = serializers.IntegerField(source="last_offset")
    createdAt = serializers.DateTimeField(source="created_at")


class CreateTopicSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="1-50 chars, ^[a-z][a-z0-9_]*$")


class TopicListSerializer(serializers.Serializer):
    topics = TopicSerializer(many=True)


class NewEventSerializer(serializers.Serializer):
    eventId = serializers.UUIDField(required=False, help_text="Generated when absent; idempotency key.")
    name = serializers.CharField(max_length=255)
    userId = serializers.CharField(required=False, allow_null=True)
    eventOccurredAt = serializers.DateTimeField(required=False, help_text="RFC 3339; now when absent.")
    context = serializers.DictField(required=False)
    data = serializers.JSONField()


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
    name = serializers.CharField(max_length=100)
    url = serializers.URLField(max_length=2000)
    topic = serializers.CharField()
    eventNames = serializers.ListField(child=serializers.CharField(), source="event_names", required=False)
    active = serializers.BooleanField(required=False, default=True)
    disabledReason = serializers.CharField(source="disabled_reason", read_only=True)
    maxAttempts = serializers.IntegerField(
        source="max_attempts", required=False, allow_null=True, min_value=1, max_value=MAX_ATTEMPTS_LIMIT
    )
    timeoutSeconds = serializers.IntegerField(
        source="timeout_seconds", required=False, allow_null=True, min_value=1, max_value=TIMEOUT_SECONDS_LIMIT
    )
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)

    def to_representation(self, instance: Destination) -> dict[str, Any]:
        data = super().to_representation(instance)
        if self.context.get("with_secret"):
            data["secret"] = instance.secret
        return data


class DestinationCreateSerializer(DestinationSerializer):
    startOffset = serializers.IntegerField(required=False, min_value=0, help_text="Replay from after this offset.")


class DestinationListSerializer(serializers.Serializer):
    webhooks = DestinationSerializer(many=True)


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


class AttemptListSerializer(serializers.Serializer):
    attempts = AttemptSerializer(many=True)


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=["invalid", "unauthenticated", "forbidden", "not_found", "conflict", "too_large", "rate_limited"]
    )
    message = serializers.CharField()
    field = serializers.CharField(required=False)


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


def topic_payload(topic: Topic) -> dict[str, Any]:
    return TopicSerializer(topic).data
