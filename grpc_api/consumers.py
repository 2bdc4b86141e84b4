"""The gRPC ``Consumers`` service of docs/consumers.md. Each method: authenticate, one service call, serialize.

proto3 cannot tell an unset number from 0, so 0 means "the default" for ``max_events``, ``limit`` and the
optional settings are ``optional`` fields in the proto (``HasField``)."""

from collections.abc import Sequence
from typing import Any

import grpc

from consumers import services
from consumers.services import ConsumerInfo, EncodedDeliveries
from eventrelay.db import run_sync
from eventrelay.v1 import eventrelay_pb2 as pb
from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc
from grpc_api.handlers import principal_of, rpc
from grpc_api.wire import timestamp_of, varint

Context = grpc.aio.ServicerContext

_OPTIONAL_SETTINGS = {
    "start_offset": "startOffset",
    "ack_wait_seconds": "ackWaitSeconds",
    "max_deliveries": "maxDeliveries",
    "max_in_flight": "maxInFlight",
}


def consumer_message(info: ConsumerInfo) -> pb.ConsumerInfo:
    return pb.ConsumerInfo(
        name=info.name,
        topic=info.topic,
        start_offset=info.start_offset,
        ack_wait_seconds=info.ack_wait_seconds,
        max_deliveries=info.max_deliveries,
        max_in_flight=info.max_in_flight,
        event_names=info.event_names,
        ordered=info.ordered,
        ack_floor=info.ack_floor,
        pending=info.pending,
        lag=info.lag,
        dead_letters=info.dead_letters,
        expired=info.expired,
        created_at=timestamp_of(info.created_at),
    )


_DELIVERIES_KEY = b"\x0a"  # FetchResponse field 1, length-delimited
_ACK_ID_KEY = b"\x0a"  # Delivery field 1, length-delimited
_DELIVERY_COUNT_KEY = b"\x10"  # Delivery field 2, varint
_EVENT_KEY = b"\x1a"  # Delivery field 3, length-delimited


def encoded_fetch_response(deliveries: EncodedDeliveries, stale_ack_ids: Sequence[str] = ()) -> bytes:
    """The serialized ``FetchResponse``, from the stored wire forms themselves (grpc_api.wire), so no ``Event``
    and no ``Delivery`` message is assembled. A wire form is the event as an element of a response's ``events``
    field (its key, its length, the ``Event``): with ``Delivery.event``'s key in place of the first byte it is
    that field as it is. A ``Delivery`` is its three fields' encodings; the response, its deliveries'."""
    parts: list[bytes | memoryview] = []
    for ack_id, count, wire in zip(deliveries.ack_ids, deliveries.delivery_counts, deliveries.wires, strict=True):
        ack = ack_id.encode()
        head = b"".join((_ACK_ID_KEY, varint(len(ack)), ack, _DELIVERY_COUNT_KEY, varint(count), _EVENT_KEY))
        parts += (_DELIVERIES_KEY, varint(len(head) + len(wire) - 1), head, memoryview(wire)[1:])
    if stale_ack_ids:
        parts.append(pb.FetchResponse(stale_ack_ids=stale_ack_ids).SerializeToString())
    return b"".join(parts)


def _default_if_zero(value: int) -> int | None:
    return value or None


class ConsumersServicer(pb_grpc.ConsumersServicer):
    @rpc
    async def CreateConsumer(self, request: pb.CreateConsumerRequest, context: Context) -> pb.ConsumerInfo:
        options: dict[str, Any] = {
            camel: getattr(request, field) for field, camel in _OPTIONAL_SETTINGS.items() if request.HasField(field)
        }
        options["eventNames"] = list(request.event_names)
        options["ordered"] = request.ordered
        info = await run_sync(
            services.create_consumer, await principal_of(context), request.topic, request.consumer, options
        )
        return consumer_message(info)

    @rpc
    async def GetConsumer(self, request: pb.ConsumerRef, context: Context) -> pb.ConsumerInfo:
        info = await run_sync(services.get_consumer, await principal_of(context), request.topic, request.consumer)
        return consumer_message(info)

    @rpc
    async def ListConsumers(self, request: pb.ListConsumersRequest, context: Context) -> pb.ListConsumersResponse:
        infos = await run_sync(services.list_consumers, await principal_of(context), request.topic)
        return pb.ListConsumersResponse(consumers=[consumer_message(info) for info in infos])

    @rpc
    async def DeleteConsumer(self, request: pb.ConsumerRef, context: Context) -> pb.DeleteConsumerResponse:
        await run_sync(services.delete_consumer, await principal_of(context), request.topic, request.consumer)
        return pb.DeleteConsumerResponse()

    @rpc
    async def Fetch(self, request: pb.FetchRequest, context: Context) -> bytes:
        deliveries, stale = await services.afetch_encoded(
            await principal_of(context),
            request.topic,
            request.consumer,
            _default_if_zero(request.max_events),
            request.wait_ms,
            list(request.ack_ids),
        )
        return encoded_fetch_response(deliveries, stale)

    @rpc
    async def Ack(self, request: pb.AckRequest, context: Context) -> pb.AckResponse:
        outcome = await services.aack(
            await principal_of(context), request.topic, request.consumer, list(request.ack_ids)
        )
        return pb.AckResponse(stale_ack_ids=outcome.stale)

    @rpc
    async def Nack(self, request: pb.NackRequest, context: Context) -> pb.AckResponse:
        outcome = await run_sync(
            services.nack,
            await principal_of(context),
            request.topic,
            request.consumer,
            list(request.ack_ids),
            request.delay_ms,
            request.reason,
        )
        return pb.AckResponse(stale_ack_ids=outcome.stale)

    @rpc
    async def Extend(self, request: pb.AckRequest, context: Context) -> pb.AckResponse:
        outcome = await run_sync(
            services.extend, await principal_of(context), request.topic, request.consumer, list(request.ack_ids)
        )
        return pb.AckResponse(stale_ack_ids=outcome.stale)

    @rpc
    async def Seek(self, request: pb.SeekRequest, context: Context) -> pb.ConsumerInfo:
        info = await run_sync(
            services.seek, await principal_of(context), request.topic, request.consumer, request.offset
        )
        return consumer_message(info)

    @rpc
    async def ListDeadLetters(self, request: pb.ListDeadLettersRequest, context: Context) -> pb.ListDeadLettersResponse:
        letters = await run_sync(
            services.list_dead_letters,
            await principal_of(context),
            request.topic,
            request.consumer,
            request.after,
            _default_if_zero(request.limit),
        )
        return pb.ListDeadLettersResponse(
            dead_letters=[
                pb.DeadLetter(
                    offset=letter.offset,
                    event_id=letter.event_id,
                    topic=letter.topic,
                    deliveries=letter.deliveries,
                    last_error=letter.last_error,
                    dead_at=timestamp_of(letter.dead_at),
                )
                for letter in letters
            ]
        )

    @rpc
    async def Redrive(self, request: pb.RedriveRequest, context: Context) -> pb.RedriveResponse:
        offsets = None if request.all else list(request.offsets)
        redriven = await run_sync(
            services.redrive, await principal_of(context), request.topic, request.consumer, offsets
        )
        return pb.RedriveResponse(offsets=redriven)
