"""``Events.PublishStream`` (docs/grpc.md#publishstream): pipelined publishing on one bidirectional stream.

Each request is a ``PublishEvents`` batch with the same checks, through the same service (``events.services``),
except that the caller does not wait for one batch's commit before sending the next. Two tasks share a call:

- the reader (a task of its own) takes a slot, reads a request, authorizes it and charges its rate limit, and
  queues it for its topic's next transaction (``events.group_commit``: the requests of every stream and call to a
  topic share transactions); a refused request is queued as its error. It reads nothing while
  ``ER_GRPC_PUBLISH_STREAM_MAX_IN_FLIGHT`` requests are unacknowledged, so a stream holds at most that many and
  HTTP/2 flow control makes the client wait.
- the call's own task writes one ack per request, in the order the requests were read, each once its
  transaction has committed (or its error), and gives the slot back.

The stream ends with OK once the client has closed its side and every request is acknowledged. It ends with a
status only for what is not one request's fault: the database unavailable (``UNAVAILABLE``, after the acks of
the requests before the one whose transaction failed), the server shutting down (``UNAVAILABLE``, after the acks
of every request read until then), or a bug (``UNKNOWN``). A request without an ack may or may not be stored:
resent with its eventIds, it is stored once (idempotency).
"""

import asyncio
import logging
from collections import deque
from typing import Any

import grpc
from django.conf import settings

from eventrelay.auth import Principal
from eventrelay.errors import DEPENDENCY_ERRORS, EventRelayError, RateLimited, Unavailable
from eventrelay.loops import PerLoop
from eventrelay.v1 import eventrelay_pb2 as pb
from events.canonical import StoredEvent
from events.services import apublish_queued
from grpc_api.convert import validate_message
from grpc_api.handlers import STATUS_BY_ERROR_CODE, abort_internal, abort_unavailable, abort_with, client_ip

logger = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext
# What the reader hands the writer for each request: its request_id, and the future of its stored events or
# the error that refused it before it was queued.
Queued = tuple[int, "asyncio.Future[list[StoredEvent]] | EventRelayError"]


class _ReaderDone:
    """Why the reader stopped reading: the client closed its side (``error`` None), or ``error``."""

    __slots__ = ("error",)

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error


SHUTTING_DOWN = Unavailable(
    "the server is shutting down; send the requests that have no ack again, on a new stream (to another server)"
)


class _OpenStreams:
    """The streams of an event loop, told to stop reading when the server shuts down (grpc_api.server.serve);
    ``closing`` from then on, so a stream that opens while the server stops reads nothing either."""

    def __init__(self) -> None:
        self.streams: set[PublishStream] = set()
        self.closing = False


open_streams: PerLoop[_OpenStreams] = PerLoop(_OpenStreams)


async def end_every_stream(within_seconds: float) -> int:
    """Shutdown: every stream of this loop reads no further request, acknowledges the ones it has read and ends
    with ``UNAVAILABLE``. Returns once every one has ended (or ``within_seconds`` later), with how many were open."""
    registry = open_streams.get()
    registry.closing = True
    were_open = list(registry.streams)
    for stream in were_open:
        stream.stop_reading()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_seconds
    while registry.streams and loop.time() < deadline:
        await asyncio.sleep(0.01)
    return len(were_open)


class PublishStream:
    """One ``PublishStream`` call, its token already checked (``principal``)."""

    def __init__(self, principal: Principal, context: Context) -> None:
        self.principal = principal
        self.context = context
        self.slots = asyncio.Semaphore(max(1, settings.ER_GRPC_PUBLISH_STREAM_MAX_IN_FLIGHT))
        # Requests read and not yet acknowledged, in order, then how the reading ended.
        self.queued: deque[Queued | _ReaderDone] = deque()
        self.wake_writer: asyncio.Event = asyncio.Event()
        self.stopping = False
        self.reader: asyncio.Task[None] | None = None

    def stop_reading(self) -> None:
        self.stopping = True
        if self.reader is not None:
            self.reader.cancel()  # (cancelled only while it waits: for a slot, a request or a rate limit)

    async def serve(self) -> None:
        registry = open_streams.get()
        if registry.closing:
            await self._end_with(SHUTTING_DOWN)
            return
        streams = registry.streams
        streams.add(self)
        self.reader = asyncio.get_running_loop().create_task(self._read())
        try:
            try:
                ending = await self._acknowledge()
            finally:
                self.reader.cancel()
                self._drop_unacknowledged()
            if ending is not None:
                await self._end_with(ending)
        finally:
            # Only now, its status given: the server's shutdown waits for this (end_every_stream).
            streams.discard(self)

    def _hand_over(self, item: "Queued | _ReaderDone") -> None:
        self.queued.append(item)
        self.wake_writer.set()

    async def _read(self) -> None:
        context, principal, slots = self.context, self.principal, self.slots
        try:
            while True:
                await slots.acquire()
                request = await context.read()
                if request is grpc.aio.EOF:
                    self._hand_over(_ReaderDone())
                    return
                try:
                    outcome: Any = await apublish_queued(
                        principal, request.topic, request.events, "grpc", validate_message
                    )
                except Unavailable:  # a dependency down (the rate limiter's Redis, failing closed): the stream ends
                    raise
                except EventRelayError as error:  # refused before it was queued: this request alone
                    outcome = error
                # Nothing awaited between queueing the batch and handing it over: a cancellation cannot part them.
                self._hand_over((request.request_id, outcome))
        except asyncio.CancelledError:
            if self.stopping:
                self._hand_over(_ReaderDone(SHUTTING_DOWN))
            raise
        except Exception as error:  # noqa: BLE001  # the writer ends the stream with it, after the acks before
            self._hand_over(_ReaderDone(error))

    async def _acknowledge(self) -> Exception | None:
        """Write the acks in order until the reading has ended and every request read is acknowledged: None
        (the client closed its side), or what the stream must end with."""
        queued, wake_writer, slots, write = self.queued, self.wake_writer, self.slots, self.context.write
        while True:
            if not queued:
                wake_writer.clear()
                await wake_writer.wait()
                continue
            item = queued[0]
            if isinstance(item, _ReaderDone):
                return item.error
            request_id, outcome = item
            if isinstance(outcome, EventRelayError):
                ack = self._refusal(request_id, outcome)
            else:
                try:
                    stored = await outcome
                except Unavailable as error:
                    return error
                except EventRelayError as error:
                    ack = self._refusal(request_id, error)
                except Exception as error:  # noqa: BLE001  # the database down, or a bug: the stream ends
                    return error
                else:
                    ack = pb.PublishStreamAck(request_id=request_id, offsets=[event.offset for event in stored])
            queued.popleft()
            await write(ack)
            slots.release()

    def _refusal(self, request_id: int, error: EventRelayError) -> pb.PublishStreamAck:
        code = STATUS_BY_ERROR_CODE.get(error.code, grpc.StatusCode.UNKNOWN)
        logger.info(
            "refused PublishStream request %s from %s: %s %s", request_id, client_ip(self.context), code.name, error
        )
        return pb.PublishStreamAck(
            request_id=request_id,
            error=pb.PublishStreamError(
                code=code.value[0],
                message=error.message,
                field=error.field or "",
                retry_after_ms=error.retry_after_ms if isinstance(error, RateLimited) else 0,
            ),
        )

    def _drop_unacknowledged(self) -> None:
        """The stream is ending: the answers it will not send are dropped (their batches are stored all the same,
        which is what a client resending them with their eventIds relies on)."""
        for item in self.queued:
            if isinstance(item, tuple) and isinstance(item[1], asyncio.Future):
                stored = item[1]
                if not stored.done():
                    stored.cancel()
                elif not stored.cancelled():
                    stored.exception()  # retrieved, so asyncio does not log it as never retrieved
        self.queued.clear()

    async def _end_with(self, error: Exception) -> None:
        context = self.context
        if isinstance(error, EventRelayError):
            await abort_with(context, error)
        elif isinstance(error, DEPENDENCY_ERRORS):
            await abort_unavailable(context, error)
        else:
            try:
                raise error
            except Exception:  # noqa: BLE001  # a bug of ours: abort_internal logs it with its traceback
                await abort_internal(context, "PublishStream")
