"""The WebSocket API (``/ws/events``): JSON text frames, as docs/websocket.md describes.

The consumer is a transport: it parses frames, authorizes through ``eventrelay.auth``, calls the
``events`` services and the live hub, and serializes their answers. Each subscription runs in its own
task. Under ``eventrelay.webserver`` (the Procfile's ``web``) the live hub writes a subscription's event
frames itself, straight to the connection, as it dispatches each notification (:class:`FrameSink`): a
frame is encoded once per process for every subscription to the same reference, and no task runs per
frame. Elsewhere the task forwards the events one by one through ASGI's ``send``.
"""

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn, Protocol
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from eventrelay import logs, metrics, ratelimit
from eventrelay.auth import Principal, authenticate, token_from_authorization
from eventrelay.errors import (
    DEPENDENCY_ERRORS,
    EventRelayError,
    InvalidInput,
    RateLimited,
    SlowConsumer,
    Unauthenticated,
    Unavailable,
    dependency_outage,
)
from eventrelay.refs import TopicRef
from events.canonical import StoredEvent, canonical_json, canonical_json_list
from events.exact_json import loads_exact
from events.live import LiveEvents
from events.services import Subscription, apublish, subscribe

logger = logging.getLogger(__name__)

# docs/websocket.md's error codes. Service errors without a WebSocket code of their own (a size limit,
# an eventId conflict) are "invalid": the frame asked for something that cannot be done.
WS_ERROR_CODES = {"forbidden", "invalid", "not_found", "rate_limited", "slow_consumer", "unavailable"}

# Close codes (autobahn accepts only 1000 and 3000-4999 from an application).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_TOO_SLOW = 4008  # never reads what it asked for: the connection is dropped
CLOSE_SERVICE_RESTART = 4012  # like 1012: reconnect and resubscribe by offset
REPLY_BACKLOG_FACTOR = 4
# What ends one subscription, with an error frame, but not its connection.
ENDS_A_SUBSCRIPTION: tuple[type[Exception], ...] = (EventRelayError, *DEPENDENCY_ERRORS)
# Frames a subscription sends in a row before it lets the event loop run other tasks.
FRAMES_PER_YIELD = 32

# This transport's children of the live metrics (eventrelay.metrics), bound once.
SUBSCRIBERS = metrics.LIVE_SUBSCRIBERS.labels("websocket")
SLOW_CONSUMERS = metrics.SLOW_CONSUMERS.labels("websocket")
observe_delivery = metrics.LIVE_DELIVERY.labels("websocket").observe

#: The key of eventrelay.webserver's FrameWriter in a WebSocket scope's ``extensions``.
FRAME_WRITER = "eventrelay.frame_writer"


class FrameWriter(Protocol):
    """What ``scope["extensions"]["eventrelay.frame_writer"]`` offers (eventrelay.webserver.FrameWriter)."""

    @property
    def usable(self) -> bool: ...

    def encode(self, text: str) -> bytes: ...

    def write(self, frames: bytes) -> bool: ...

    def backlog(self) -> int: ...


def event_frame_text(topic_json: str, event: StoredEvent) -> str:
    """The ``event`` frame of docs/websocket.md; ``topic_json`` is the subscription's reference as JSON text."""
    return f'{{"type":"event","topic":{topic_json},"event":{canonical_json(event)}}}'


class EncodedFrames:
    """Each live event's frame, encoded once per subscribed reference for every subscription in the process.

    The feed hands the same event objects to every subscription, so an event is recognized by identity (the
    entry holds it, so its id cannot be reused while the entry lives); events replayed from storage are new
    objects each time, encoded once and forgotten when the table is cleared.
    """

    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._frames: dict[tuple[str, int], tuple[StoredEvent, bytes]] = {}

    def get(self, topic_json: str, event: StoredEvent, encode: Callable[[str], bytes]) -> bytes:
        key = (topic_json, id(event))
        entry = self._frames.get(key)
        if entry is not None and entry[0] is event:
            return entry[1]
        frame = encode(event_frame_text(topic_json, event))
        if len(self._frames) >= self.MAX_ENTRIES:
            self._frames.clear()
        self._frames[key] = (event, frame)
        return frame


encoded_frames = EncodedFrames()


class Sent:
    """The offset of the last event frame sent on a subscription (for its error frame's ``lastOffset``)."""

    __slots__ = ("last_sent",)

    def __init__(self) -> None:
        self.last_sent: int | None = None


class FrameSink:
    """A subscription's :data:`events.live.LiveSink`: writes its events' frames to the connection as the live hub
    dispatches them (stored ones a page at a time, live ones a notification at a time).

    The slow-reader bound is the one the task-per-frame path applies: an event is sent only if the connection has
    at most ``ER_WS_MAX_BUFFER_BYTES`` unsent when it is due; else the subscription ends with ``slow_consumer``
    and ``last_sent`` is the offset of the last event sent. Several events are written in one go as long as what
    is unsent plus what they add stays within the bound; past it they are written, the backlog measured again,
    and only that measurement can end the subscription.
    """

    __slots__ = ("key", "last_sent", "limit", "stopped", "topic_json", "writer")

    def __init__(self, key: str, writer: FrameWriter, limit: int) -> None:
        self.key = key
        self.topic_json = json.dumps(key)
        self.writer = writer
        self.limit = limit
        self.last_sent: int | None = None
        # Set by the consumer when the subscription is replaced, unsubscribed or its connection closes, before
        # its task is cancelled: from then on nothing more is sent for it.
        self.stopped = False

    def __call__(self, events: Sequence[StoredEvent]) -> None:
        if self.stopped:
            return
        writer, limit = self.writer, self.limit
        backlog = writer.backlog()
        if len(events) == 1:  # what almost every notification brings: the same as below, in fewer steps
            if backlog > limit:
                raise self._slow()
            event = events[0]
            writer.write(encoded_frames.get(self.topic_json, event, writer.encode))
            if event.committed_at is not None:
                observe_delivery(max(time.time() - event.committed_at, 0.0))
            self.last_sent = event.offset
            return
        frames: list[bytes] = []
        start = 0  # events[start:] are those whose frames are in ``frames``
        for index, event in enumerate(events):
            if backlog > limit:
                if frames:
                    self._write(frames, events, start)
                    frames, start = [], index
                    backlog = writer.backlog()
                if backlog > limit:
                    raise self._slow()
            frame = encoded_frames.get(self.topic_json, event, writer.encode)
            frames.append(frame)
            backlog += len(frame)
        self._write(frames, events, start)

    def _write(self, frames: list[bytes], events: Sequence[StoredEvent], start: int) -> None:
        """Write ``frames``, those of ``events[start:start + len(frames)]``, in one go."""
        self.writer.write(frames[0] if len(frames) == 1 else b"".join(frames))
        now = time.time()
        for index in range(start, start + len(frames)):
            committed_at = events[index].committed_at
            if committed_at is not None:  # else read back from storage: not a live delivery
                observe_delivery(max(now - committed_at, 0.0))
        self.last_sent = events[start + len(frames) - 1].offset

    def _slow(self) -> SlowConsumer:
        return SlowConsumer(
            f"the connection has more than {self.limit} bytes waiting to be read; resubscribe to '{self.key}' "
            "with fromOffset = the last offset received + 1"
        )


def error_frame(error: EventRelayError, **extra: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "error",
        "code": error.code if error.code in WS_ERROR_CODES else "invalid",
        "message": error.message,
    }
    if error.field:
        frame["field"] = error.field
    frame.update({key: value for key, value in extra.items() if value is not None})
    return frame


@functools.cache
def warn_slow_consumer_protection_off() -> None:
    """Say once per process (not per connection) that this server cannot tell a slow reader."""
    logger.warning(
        "WebSocket slow-consumer protection is off in this process: its server puts no "
        "'eventrelay.transport_backlog' probe in the scope, so a client that stops reading goes undetected and "
        "what is sent to it piles up in memory. Serve the web process with `python -m eventrelay.webserver` "
        "(the Procfile's web command), not plain daphne or runserver."
    )


def token_from_scope(scope: dict[str, Any]) -> str:
    """``?token=<jwt>`` or an ``authorization: Bearer <jwt>`` header."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("token"):
        return query["token"][0]
    headers = dict(scope.get("headers") or [])
    header = headers.get(b"authorization")
    return token_from_authorization(header.decode("latin-1") if header else None)


class EventsConsumer(AsyncWebsocketConsumer):
    # Events reach this consumer through the live hub (one Redis subscription per process per
    # topic), not through a channel of its own: no per-connection Redis subscription.
    channel_layer_alias = "eventrelay-no-per-connection-channel"

    principal: Principal
    subscriptions: dict[str, asyncio.Task[None]]
    # The sinks of the subscriptions whose frames the live hub writes (FrameSink), by the same keys.
    sinks: dict[str, FrameSink]

    async def connect(self) -> None:
        ip = (self.scope.get("client") or ["unknown"])[0]
        # The connection's id (the handshake's X-Request-Id when sane) holds for everything it logs: channels runs
        # each connection in an asyncio task of its own, and its subscriptions' tasks copy its context. (daphne
        # sends no headers of the application's with the handshake's answer, so it is not echoed.)
        connection_id = logs.accepted_request_id(dict(self.scope.get("headers") or []).get(b"x-request-id"))
        logs.request_id.set(connection_id)
        try:
            await ratelimit.acheck("connect", ip)  # handshake floods, per client IP
            try:
                self.principal = authenticate(token_from_scope(self.scope))
            except Unauthenticated:
                await ratelimit.acheck("auth_failure", ip)  # brute-force protection
                raise
        except (Unauthenticated, RateLimited) as error:
            logger.info("refused a WebSocket handshake from %s: %s", ip, error.message)
            await self.close(code=CLOSE_UNAUTHENTICATED)  # before accept: daphne answers the handshake with 403
            return
        self.subscriptions = {}
        self.sinks = {}
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for key in list(getattr(self, "subscriptions", {})):
            self._end_subscription(key)

    def _end_subscription(self, key: str) -> asyncio.Task[None] | None:
        """Stop the subscription held under ``key`` at once (its sink first: the hub may dispatch before its task
        is cancelled) and return its task, or None if there is none."""
        sink = self.sinks.pop(key, None)
        if sink is not None:
            sink.stopped = True
        task = self.subscriptions.pop(key, None)
        if task is not None:
            task.cancel()
        return task

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        ref = None
        try:
            frame = self._parse(text_data, bytes_data)
            ref = frame.get("ref") if isinstance(frame.get("ref"), str) else None
            await ratelimit.acheck("request", self.principal.rate_limit_key)
            handler = {
                "subscribe": self._subscribe,
                "unsubscribe": self._unsubscribe,
                "publish": self._publish,
            }.get(str(frame.get("type")))
            if handler is None:
                raise InvalidInput(
                    f"unknown frame type {frame.get('type')!r}: expected subscribe, unsubscribe or publish",
                    field="type",
                )
            await handler(frame)
        except RateLimited as error:
            logger.info("WebSocket frame refused: %s: %s", error.code, error.message)
            await self._send_json(error_frame(error, ref=ref, retryAfterMs=error.retry_after_ms))
        except EventRelayError as error:
            # The client's mistake (an invalid frame, a topic it may not read...): one line, no traceback.
            logger.info("WebSocket frame refused: %s: %s", error.code, error.message)
            await self._send_json(error_frame(error, ref=ref))
        except DEPENDENCY_ERRORS as error:
            # This frame failed, not the connection: its other subscriptions go on.
            logger.warning("WebSocket frame answered unavailable: %s: %s", type(error).__name__, error)
            await self._send_json(error_frame(dependency_outage(error), ref=ref))

    def _parse(self, text_data: str | None, bytes_data: bytes | None) -> dict[str, Any]:
        if text_data is None:
            raise InvalidInput("binary frames are not supported: send JSON text frames")
        limit = settings.ER_WS_MAX_FRAME_BYTES
        if len(text_data) > limit:
            raise InvalidInput(f"frame is {len(text_data)} characters long; at most {limit} are allowed")
        try:
            # Numbers a float would change are kept as written; validation stores them verbatim.
            frame = loads_exact(text_data)
        except ValueError as exc:
            raise InvalidInput(f"frame is not valid JSON ({exc})") from None
        except RecursionError:
            raise InvalidInput("frame is nested too deeply") from None
        if not isinstance(frame, dict):
            raise InvalidInput("frame must be a JSON object with a 'type'", field="type")
        if "type" not in frame:
            raise InvalidInput("frame has no 'type': expected subscribe, unsubscribe or publish", field="type")
        return frame

    # --- frames ------------------------------------------------------------------------------------

    async def _subscribe(self, frame: dict[str, Any]) -> None:
        subscription = await subscribe(self.principal, frame.get("topic"), frame.get("fromOffset"))
        key = str(subscription.ref)
        limit = settings.ER_WS_MAX_SUBSCRIPTIONS
        if key not in self.subscriptions and len(self.subscriptions) >= limit:
            raise InvalidInput(
                f"this connection already holds {limit} subscriptions, the most allowed (ER_WS_MAX_SUBSCRIPTIONS);"
                " unsubscribe from one first",
                field="topic",
            )
        # Subscribing again (say, after slow_consumer) replaces the subscription.
        self._end_subscription(key)
        await self._send_json({"type": "subscribed", "topic": key, "offset": subscription.head})
        self.subscriptions[key] = asyncio.create_task(self._forward(subscription))

    async def _unsubscribe(self, frame: dict[str, Any]) -> None:
        ref = TopicRef.parse(frame.get("topic"))
        if self._end_subscription(str(ref)) is None:
            raise InvalidInput(f"not subscribed to '{ref}'", field="topic")
        await self._send_json({"type": "unsubscribed", "topic": str(ref)})

    async def _publish(self, frame: dict[str, Any]) -> None:
        stored = await apublish(self.principal, frame.get("topic"), frame.get("events"), "websocket")
        # The events' stored JSON text is spliced in, never parsed (events.canonical).
        ref_json = f',"ref":{json.dumps(frame["ref"], ensure_ascii=False)}' if isinstance(frame.get("ref"), str) else ""
        await self._send_json(f'{{"type":"published"{ref_json},"events":{canonical_json_list(stored)}}}')

    # --- live events -------------------------------------------------------------------------------

    async def _forward(self, subscription: Subscription) -> None:
        """Send the subscription's events in order until it ends; tell the client why it ended."""
        key = str(subscription.ref)
        sent: FrameSink | Sent = Sent()
        SUBSCRIBERS.inc()
        try:
            async with subscription.events() as events:
                writer = self._frame_writer()
                if writer is not None and isinstance(events, LiveEvents):
                    sink = sent = self.sinks[key] = FrameSink(key, writer, settings.ER_WS_MAX_BUFFER_BYTES)
                    await events.deliver(sink)
                else:
                    await self._send_one_by_one(key, events, sent)
        except Unavailable:  # the server is shutting down
            await self.close(code=CLOSE_SERVICE_RESTART)
        except ENDS_A_SUBSCRIPTION as error:
            if self.subscriptions.get(key) is asyncio.current_task():
                del self.subscriptions[key]
                self.sinks.pop(key, None)
            if isinstance(error, SlowConsumer):
                SLOW_CONSUMERS.inc()
            if not isinstance(error, EventRelayError):
                # This subscription ended, not the connection: the client resubscribes by offset.
                logger.warning("subscription to '%s' ended unavailable: %s: %s", key, type(error).__name__, error)
                error = dependency_outage(error)
            await self._send_json(error_frame(error, topic=key, lastOffset=sent.last_sent))
        except Exception:
            logger.exception("subscription to '%s' failed", key)
            if self.subscriptions.get(key) is asyncio.current_task():
                del self.subscriptions[key]
                self.sinks.pop(key, None)
            await self._send_json(
                {"type": "error", "code": "invalid", "topic": key, "message": "internal error; resubscribe by offset"}
            )
        finally:
            SUBSCRIBERS.dec()

    async def _send_one_by_one(
        self, key: str, events: AsyncIterator[StoredEvent], sent: "FrameSink | Sent"
    ) -> NoReturn:
        """The path without a frame writer (plain daphne, test servers): each event through ASGI's ``send``."""
        topic_json = json.dumps(key)
        unyielded = 0
        async for event in events:
            if self._transport_backlog() > settings.ER_WS_MAX_BUFFER_BYTES:
                raise SlowConsumer(
                    f"the connection has more than {settings.ER_WS_MAX_BUFFER_BYTES} bytes waiting to be "
                    f"read; resubscribe to '{key}' with fromOffset = the last offset received + 1"
                )
            # The event's JSON is built once per process, not once per subscriber.
            await self.send(text_data=event_frame_text(topic_json, event))
            metrics.observe_live_delivery(observe_delivery, event.committed_at)
            sent.last_sent = event.offset
            # ASGI sends never block, and a replay from far back never waits for its next
            # event: yield now and then so other connections get their turn.
            unyielded += 1
            if unyielded >= FRAMES_PER_YIELD:
                unyielded = 0
                await asyncio.sleep(0)
        raise AssertionError("a subscription's events never end")

    def _frame_writer(self) -> FrameWriter | None:
        """eventrelay.webserver's writer of pre-encoded frames, when this connection can take them."""
        writer: FrameWriter | None = self.scope.get("extensions", {}).get(FRAME_WRITER)
        return writer if writer is not None and writer.usable else None

    def _transport_backlog(self) -> int:
        """Bytes sent to this connection still waiting in the server (0 if the server cannot tell).

        ``eventrelay.webserver`` (the Procfile's ``web``) puts the probe in the scope; plain daphne
        does not, and then slow readers go undetected.
        """
        probe = self.scope.get("extensions", {}).get("eventrelay.transport_backlog")
        if probe is None:
            warn_slow_consumer_protection_off()
            return 0
        return probe()

    async def _send_json(self, frame: dict[str, Any] | str) -> None:
        """Send ``frame``, or text that is a JSON frame already."""
        if self._transport_backlog() > REPLY_BACKLOG_FACTOR * settings.ER_WS_MAX_BUFFER_BYTES:
            # A client that keeps publishing but never reads its replies: subscriptions are bounded
            # above, and this bounds everything else.
            await self.close(code=CLOSE_TOO_SLOW)
            return
        await self.send(text_data=frame if isinstance(frame, str) else json.dumps(frame, ensure_ascii=False))
