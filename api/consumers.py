"""The REST endpoints of durable consumers (docs/consumers.md). Each view: parse, one service call, serialize.

Fetch is the one asynchronous view: a long-poll (``waitMs``) waits in the web process's event loop, holding neither
a thread nor a database connection, as a gRPC Fetch does (``consumers.services.afetch``).
"""

import inspect
import json
from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api import schema
from api import serializers as s
from api.views import ERRORS, NON_NEGATIVE_INTEGER, TOPIC_REF, EventRelayView, body_object, int_param
from consumers import services
from consumers.services import Delivery
from eventrelay import ratelimit
from eventrelay.auth import Principal, authenticate, token_from_authorization
from eventrelay.errors import Unauthenticated
from events.canonical import canonical_json

CONSUMER = OpenApiParameter("consumer", schema.CONSUMER_NAME, OpenApiParameter.PATH)
PARAMETERS = [TOPIC_REF, CONSUMER]
ACK_ERRORS = {200: s.AckResponseSerializer, **ERRORS}


def _info(info: services.ConsumerInfo, status: int = 200) -> Response:
    return Response(s.ConsumerSerializer(info).data, status=status)


class ConsumersView(EventRelayView):
    @extend_schema(
        parameters=[TOPIC_REF],
        responses={200: s.ConsumerListSerializer, **ERRORS},
        summary="List the consumers of a topic reference",
        operation_id="consumers_list",
    )
    def get(self, request: Request, ref: str) -> Response:
        infos = services.list_consumers(self.principal, ref)
        return Response({"consumers": s.ConsumerSerializer(infos, many=True).data})

    @extend_schema(
        parameters=[TOPIC_REF],
        request=s.CreateConsumerSerializer,
        responses={201: s.ConsumerSerializer, **ERRORS},
        summary="Create a consumer",
    )
    def post(self, request: Request, ref: str) -> Response:
        options = dict(body_object(request))
        name = options.pop("name", None)
        return _info(services.create_consumer(self.principal, ref, name, options), status=201)


class ConsumerView(EventRelayView):
    @extend_schema(parameters=PARAMETERS, responses={200: s.ConsumerSerializer, **ERRORS}, summary="Get a consumer")
    def get(self, request: Request, ref: str, consumer: str) -> Response:
        return _info(services.get_consumer(self.principal, ref, consumer))

    @extend_schema(
        parameters=PARAMETERS, responses={204: None, **ERRORS}, summary="Delete a consumer (its position and leases)"
    )
    def delete(self, request: Request, ref: str, consumer: str) -> Response:
        services.delete_consumer(self.principal, ref, consumer)
        return Response(status=204)


class AckView(EventRelayView):
    @extend_schema(
        parameters=PARAMETERS, request=s.AckSerializer, responses=ACK_ERRORS, summary="Ack deliveries: they are done"
    )
    def post(self, request: Request, ref: str, consumer: str) -> Response:
        body = body_object(request)
        outcome = services.ack(self.principal, ref, consumer, body.get("ackIds"))
        return Response({"staleAckIds": outcome.stale})


class NackView(EventRelayView):
    @extend_schema(
        parameters=PARAMETERS,
        request=s.NackSerializer,
        responses=ACK_ERRORS,
        summary="Nack deliveries: redeliver them after delayMs",
    )
    def post(self, request: Request, ref: str, consumer: str) -> Response:
        body = body_object(request)
        outcome = services.nack(
            self.principal, ref, consumer, body.get("ackIds"), body.get("delayMs"), body.get("reason")
        )
        return Response({"staleAckIds": outcome.stale})


class ExtendView(EventRelayView):
    @extend_schema(
        parameters=PARAMETERS, request=s.AckSerializer, responses=ACK_ERRORS, summary="Restart the leases of deliveries"
    )
    def post(self, request: Request, ref: str, consumer: str) -> Response:
        outcome = services.extend(self.principal, ref, consumer, body_object(request).get("ackIds"))
        return Response({"staleAckIds": outcome.stale})


class SeekView(EventRelayView):
    @extend_schema(
        parameters=PARAMETERS,
        request=s.SeekSerializer,
        responses={200: s.ConsumerSerializer, **ERRORS},
        summary="Start the consumer over from an offset (a replay)",
    )
    def post(self, request: Request, ref: str, consumer: str) -> Response:
        return _info(services.seek(self.principal, ref, consumer, body_object(request).get("offset")))


class DeadLettersView(EventRelayView):
    @extend_schema(
        parameters=[
            *PARAMETERS,
            OpenApiParameter("after", NON_NEGATIVE_INTEGER, description="Only those after this offset (paging)"),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 1000},
                description="At most this many (default 100)",
            ),
        ],
        responses={200: s.DeadLetterListSerializer, **ERRORS},
        summary="A consumer's dead letters, in offset order",
    )
    def get(self, request: Request, ref: str, consumer: str) -> Response:
        letters = services.list_dead_letters(
            self.principal,
            ref,
            consumer,
            int_param(request, "after", 0),
            int_param(request, "limit", 100),
        )
        return Response({"deadLetters": s.DeadLetterSerializer(letters, many=True).data})


class RedriveView(EventRelayView):
    @extend_schema(
        parameters=PARAMETERS,
        request=s.RedriveSerializer,
        responses={200: s.RedriveResponseSerializer, **ERRORS},
        summary="Make dead letters available again (those at offsets, or all)",
    )
    def post(self, request: Request, ref: str, consumer: str) -> Response:
        body = body_object(request)
        return Response({"offsets": services.redrive(self.principal, ref, consumer, body.get("offsets"))})


def _fetch_response(deliveries: list[Delivery], stale_ack_ids: list[str]) -> HttpResponse:
    """Each event in its canonical JSON text, its stored payloads spliced in verbatim (as a pull answers)."""
    items = ",".join(
        f'{{"ackId":{json.dumps(delivery.ack_id)},"deliveryCount":{delivery.delivery_count},'
        f'"event":{canonical_json(delivery.event)}}}'
        for delivery in deliveries
    )
    return HttpResponse(
        f'{{"deliveries":[{items}],"staleAckIds":{json.dumps(stale_ack_ids)}}}', content_type="application/json"
    )


class FetchView(APIView):
    """An asynchronous DRF view: ``dispatch`` is DRF's, awaiting the handler. Authentication, the request budget
    and errors are those of :class:`EventRelayView`, through their async twins where they touch the network."""

    @extend_schema(
        parameters=PARAMETERS,
        request=s.FetchSerializer,
        responses={200: s.FetchResponseSerializer, **ERRORS},
        summary="Fetch deliveries: lease up to maxEvents events, waiting up to waitMs for some",
    )
    async def post(self, request: Request, ref: str, consumer: str) -> HttpResponse:
        principal = await _principal_of(request)
        body = body_object(request)
        deliveries, stale = await services.afetch(
            principal, ref, consumer, body.get("maxEvents"), body.get("waitMs"), body.get("ackIds")
        )
        return _fetch_response(deliveries, stale)

    async def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            # Content negotiation and the version only; authentication is the handler's, awaited.
            self.format_kwarg = self.get_format_suffix(**kwargs)
            request.accepted_renderer, request.accepted_media_type = self.perform_content_negotiation(request)
            handler = getattr(self, request.method.lower(), self.http_method_not_allowed)
            response = handler(request, *args, **kwargs)
            if inspect.isawaitable(response):  # (DRF's own OPTIONS handler is not a coroutine)
                response = await response
        except Exception as exc:  # noqa: BLE001  (as DRF's dispatch: handle_exception answers or re-raises)
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return self.response


async def _principal_of(request: Request) -> Principal:
    try:
        principal = authenticate(token_from_authorization(request.META.get("HTTP_AUTHORIZATION")))
    except Unauthenticated as error:
        if request.META.get("HTTP_AUTHORIZATION"):
            await ratelimit.acheck("auth_failure", request.META.get("REMOTE_ADDR", "unknown"))
            raise exceptions.AuthenticationFailed(error.message) from None
        raise exceptions.NotAuthenticated() from None
    await ratelimit.acheck("request", principal.rate_limit_key)
    return principal
