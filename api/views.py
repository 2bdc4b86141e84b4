"""The REST API of docs/rest.md. Each view: parse, authorize, one service call, serialize."""

from typing import Any

from django.db import transaction
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api import schema
from api import serializers as s
from eventrelay import ratelimit
from eventrelay.auth import Principal, require_admin
from eventrelay.errors import InvalidInput, NotFound
from events.canonical import StoredEvent, canonical_json_list
from events.services import publish, pull
from topics.services import create_topic_as, delete_topic_as, get_topic_as, list_topics_as, update_topic_as
from webhooks import services as webhooks
from webhooks.models import DeliveryAttempt, Destination

ERRORS = {code: s.ErrorSerializer for code in (400, 401, 403, 404, 409, 413, 429, 500)}
# Path parameters with the rules the services check (api.schema).
TOPIC_NAME = OpenApiParameter("name", schema.TOPIC_NAME, OpenApiParameter.PATH)
TOPIC_REF = OpenApiParameter("ref", schema.TOPIC_REF, OpenApiParameter.PATH)
DESTINATION_ID = OpenApiParameter("destination_id", schema.DESTINATION_ID, OpenApiParameter.PATH)
NON_NEGATIVE_INTEGER = {"type": "integer", "format": "int64", "minimum": 0}


class EventRelayView(APIView):
    permission_classes = [IsAuthenticated]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authenticates: request.user is a PrincipalUser
        ratelimit.check("request", self.principal.rate_limit_key)

    @property
    def principal(self) -> Principal:
        return self.request.user.principal


def body_object(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise InvalidInput("request body must be a JSON object")
    return request.data


def int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, got {raw!r}", field=name) from None
    if value < 0:
        raise InvalidInput(f"{name} must be >= 0", field=name)
    return value


class TopicsView(EventRelayView):
    @extend_schema(responses={200: s.TopicListSerializer, **ERRORS}, summary="List topics", operation_id="topics_list")
    def get(self, request: Request) -> Response:
        topics = list_topics_as(self.principal)
        return Response({"topics": s.TopicSerializer(topics, many=True).data})

    @extend_schema(
        request=s.CreateTopicSerializer, responses={201: s.TopicSerializer, **ERRORS}, summary="Create a topic (admin)"
    )
    def post(self, request: Request) -> Response:
        require_admin(self.principal)
        settings = dict(body_object(request))
        name = settings.pop("name", None)
        if not isinstance(name, str):
            raise InvalidInput("name is required", field="name")
        return Response(s.topic_payload(create_topic_as(self.principal, name, settings)), status=201)


class TopicView(EventRelayView):
    @extend_schema(parameters=[TOPIC_NAME], responses={200: s.TopicSerializer, **ERRORS}, summary="Get a topic")
    def get(self, request: Request, name: str) -> Response:
        return Response(s.topic_payload(get_topic_as(self.principal, name)))

    @extend_schema(
        parameters=[TOPIC_NAME],
        request=s.UpdateTopicSerializer,
        responses={200: s.TopicSerializer, **ERRORS},
        summary="Change a topic's retention (admin)",
    )
    def patch(self, request: Request, name: str) -> Response:
        return Response(s.topic_payload(update_topic_as(self.principal, name, body_object(request))))

    @extend_schema(
        parameters=[TOPIC_NAME], responses={204: None, **ERRORS}, summary="Delete a topic and its events (admin)"
    )
    def delete(self, request: Request, name: str) -> Response:
        delete_topic_as(self.principal, name)
        return Response(status=204)


def _events_response(events: list[StoredEvent], status: int, next_offset: int | None = None) -> HttpResponse:
    """``{"events": [...], "nextOffset": n}`` with each event's canonical JSON text, its stored
    payloads spliced in verbatim (``events.canonical``): never parsed, so numbers come back as the
    producer wrote them and any stored event is served. (The schema is ``s.EventSerializer``'s.)"""
    tail = "" if next_offset is None else f',"nextOffset":{next_offset}'
    return HttpResponse(
        f'{{"events":{canonical_json_list(events)}{tail}}}', status=status, content_type="application/json"
    )


class EventsView(EventRelayView):
    @extend_schema(
        parameters=[TOPIC_REF],
        request=s.PublishRequestSerializer,
        responses={201: s.PublishResponseSerializer, **ERRORS},
        summary="Publish one event or a list (source http)",
    )
    def post(self, request: Request, ref: str) -> HttpResponse:
        events = request.data if isinstance(request.data, list) else [request.data]
        return _events_response(publish(self.principal, ref, events, "http"), status=201)

    @extend_schema(
        parameters=[
            TOPIC_REF,
            OpenApiParameter(
                "offset", NON_NEGATIVE_INTEGER, description="First offset to return (default 1; 0 reads as 1)"
            ),
            OpenApiParameter(
                "limit",
                NON_NEGATIVE_INTEGER,
                description="At most this many (0 or absent: 100; more than 1,000 reads as 1,000)",
            ),
        ],
        responses={200: s.PullResponseSerializer, **ERRORS},
        summary="Pull events by offset",
    )
    def get(self, request: Request, ref: str) -> HttpResponse:
        result = pull(self.principal, ref, int_param(request, "offset", 1), int_param(request, "limit", 0))
        return _events_response(result.events, status=200, next_offset=result.next_offset)


# --- Webhooks (admin) -----------------------------------------------------------------------------------


class WebhookAdminView(EventRelayView):
    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        require_admin(self.principal)

    def destination(self, destination_id: int) -> Destination:
        destination = Destination.objects.filter(pk=destination_id).first()
        if destination is None:
            raise NotFound(f"webhook {destination_id} does not exist")
        return destination


def _validated(serializer_class: type[serializers.Serializer], data: Any, partial: bool = False) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object")
    serializer = serializer_class(data=data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class WebhooksView(WebhookAdminView):
    @extend_schema(
        responses={200: s.DestinationListSerializer, **ERRORS},
        summary="List webhook destinations (admin)",
        operation_id="webhooks_list",
    )
    def get(self, request: Request) -> Response:
        return Response({"webhooks": s.DestinationSerializer(Destination.objects.all(), many=True).data})

    @extend_schema(
        request=s.DestinationCreateSerializer,
        responses={201: s.DestinationCreatedSerializer, **ERRORS},
        summary="Create a webhook destination (admin)",
    )
    def post(self, request: Request) -> Response:
        data = _validated(s.DestinationCreateSerializer, request.data)
        with s.destination_errors_in_api_names():
            destination = webhooks.create_destination(
                name=data["name"],
                url=data["url"],
                topic=data["topic"],
                event_names=data.get("event_names"),
                active=data.get("active", True),
                max_attempts=data.get("max_attempts"),
                timeout_seconds=data.get("timeout_seconds"),
                start_offset=data.get("start_offset"),
                max_per_second=data.get("max_per_second"),
            )
        return Response(s.DestinationSerializer(destination, context={"with_secret": True}).data, status=201)


class WebhookView(WebhookAdminView):
    @extend_schema(
        parameters=[DESTINATION_ID],
        responses={200: s.DestinationSerializer, **ERRORS},
        summary="Get a webhook destination (admin)",
    )
    def get(self, request: Request, destination_id: int) -> Response:
        return Response(s.DestinationSerializer(self.destination(destination_id)).data)

    @extend_schema(
        parameters=[DESTINATION_ID],
        request=s.DestinationChangeSerializer,
        responses={200: s.DestinationSerializer, **ERRORS},
        summary="Change a webhook destination (admin)",
    )
    def patch(self, request: Request, destination_id: int) -> Response:
        destination = self.destination(destination_id)
        data = _validated(s.DestinationSerializer, request.data, partial=True)
        if "topic" in data and data.pop("topic") != destination.topic:
            raise InvalidInput("topic cannot be changed: create a new destination", field="topic")
        with transaction.atomic(), s.destination_errors_in_api_names():
            webhooks.update_destination(destination, data)
        return Response(s.DestinationSerializer(destination).data)

    @extend_schema(
        parameters=[DESTINATION_ID], responses={204: None, **ERRORS}, summary="Delete a webhook destination (admin)"
    )
    def delete(self, request: Request, destination_id: int) -> Response:
        self.destination(destination_id).delete()
        return Response(status=204)


class WebhookPauseView(WebhookAdminView):
    @extend_schema(
        parameters=[DESTINATION_ID],
        request=None,
        responses={200: s.DestinationSerializer, **ERRORS},
        summary="Pause deliveries (admin)",
    )
    def post(self, request: Request, destination_id: int) -> Response:
        destination = self.destination(destination_id)
        webhooks.pause(destination)
        return Response(s.DestinationSerializer(destination).data)


class WebhookResumeView(WebhookAdminView):
    @extend_schema(
        parameters=[DESTINATION_ID],
        request=None,
        responses={200: s.DestinationSerializer, **ERRORS},
        summary="Resume deliveries (admin)",
    )
    def post(self, request: Request, destination_id: int) -> Response:
        destination = self.destination(destination_id)
        with transaction.atomic():
            webhooks.resume(destination)
        destination.refresh_from_db()
        return Response(s.DestinationSerializer(destination).data)


class WebhookRotateSecretView(WebhookAdminView):
    @extend_schema(
        parameters=[DESTINATION_ID],
        request=None,
        responses={200: s.DestinationCreatedSerializer, **ERRORS},
        summary="Rotate the signing secret (admin): the new one is shown once; the old one keeps signing for "
        "ER_WEBHOOK_SECRET_OVERLAP_S",
    )
    def post(self, request: Request, destination_id: int) -> Response:
        destination = self.destination(destination_id)
        webhooks.rotate_secret(destination)
        return Response(s.DestinationSerializer(destination, context={"with_secret": True}).data)


class WebhookRedeliverView(WebhookAdminView):
    @extend_schema(
        parameters=[DESTINATION_ID],
        request=s.RedeliverSerializer,
        responses={200: s.RedeliverResponseSerializer, **ERRORS},
        summary="Redeliver the undeliverable events recorded since a time (admin), in order per stream",
    )
    def post(self, request: Request, destination_id: int) -> Response:
        destination = self.destination(destination_id)
        since = _validated(s.RedeliverSerializer, request.data)["since"]
        return Response({"queued": webhooks.redeliver_since(destination, since)})


class WebhookAttemptsView(WebhookAdminView):
    @extend_schema(
        parameters=[
            DESTINATION_ID,
            OpenApiParameter(
                "limit",
                NON_NEGATIVE_INTEGER,
                description="At most this many, newest first (0 or absent: 100; more than 1,000 reads as 1,000)",
            ),
        ],
        responses={200: s.AttemptListSerializer, **ERRORS},
        summary="Delivery attempts of a destination (admin)",
    )
    def get(self, request: Request, destination_id: int) -> Response:
        destination = self.destination(destination_id)
        limit = min(int_param(request, "limit", 100) or 100, 1000)
        attempts = DeliveryAttempt.objects.filter(stream__destination=destination).select_related("stream__destination")
        return Response({"attempts": s.AttemptSerializer(attempts[:limit], many=True).data})
