"""The web process: daphne with its own command line, plus a per-connection "transport backlog" probe.

Run it exactly like daphne (every daphne option works, the parsing is daphne's own)::

    python -m eventrelay.webserver -b 127.0.0.1 -p 9000 eventrelay.asgi:application

Every WebSocket scope it serves carries ``scope["extensions"]["eventrelay.transport_backlog"]``:
``probe()`` is the number of bytes sent to that connection still queued in this process (not yet
handed to the kernel; 0 once closed), ``probe.is_open`` whether the connection is still up. ASGI
gives a WebSocket application no back-pressure; the consumer (ws_api/consumers.py) compares the
probe with ``ER_WS_MAX_BUFFER_BYTES`` to end a slow reader's subscriptions. Other servers (plain
``daphne``, ``runserver``, test servers) add no probe, and the consumer logs a warning saying so.

It also carries ``scope["extensions"]["eventrelay.frame_writer"]`` (:class:`FrameWriter`): text frames
encoded once (``encode``) and written to the connection as bytes (``write``), for a fan-out that sends
the same frame to thousands of connections. ASGI's ``send`` builds each frame again for each of them,
through asgiref, daphne and autobahn (whose every write also formats a debug line it then drops).

The probe reads Twisted's and daphne's internals (:func:`missing_server_internals`); :class:`Server`
refuses to start when an upgrade has removed one. Why it is built this way, what it counts, its
thread safety and its caveats: docs/architecture.md, "Why the web server is what it is".
"""

# daphne.server must be imported before anything imports twisted.internet.reactor: it installs the
# asyncio reactor daphne runs on.
import daphne.server  # isort:skip

import functools
import inspect
import logging
import os
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from importlib import metadata
from typing import Any, TypeGuard

import daphne.http_protocol
import daphne.ws_protocol
from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.protocol import PreparedMessage
from daphne.access import AccessLogGenerator
from daphne.cli import CommandLineInterface as DaphneCommandLineInterface
from twisted.internet import abstract, reactor, tcp
from twisted.internet.threads import blockingCallFromThread
from twisted.web import http as twisted_http

from eventrelay.db import close_connections_after_each_request
from eventrelay.gc_tuning import tune_gc_for_serving

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("eventrelay.access")

#: The key of the probe in a WebSocket scope's ``extensions``.
TRANSPORT_BACKLOG = "eventrelay.transport_backlog"
#: The key of the :class:`FrameWriter` in a WebSocket scope's ``extensions``.
FRAME_WRITER = "eventrelay.frame_writer"
# The factory's options (copied onto each protocol) under which a pre-encoded frame is what autobahn would send.
_FRAME_OPTIONS = ("maskServerFrames", "autoFragmentSize")
_ABSENT = object()
_WS_OPEN = daphne.ws_protocol.WebSocketProtocol.STATE_OPEN

# Walking down wrapping transports (TLS wraps TCP) stops after this many levels.
_MAX_TRANSPORT_DEPTH = 8

_unsupported_logged = False


def _log_unsupported(transport: Any) -> None:
    global _unsupported_logged
    if not _unsupported_logged:
        _unsupported_logged = True
        logger.error("Cannot measure the write buffer of %r: WebSocket slow-reader detection is off", transport)


def transport_backlog(protocol: Any) -> int:
    """Bytes queued in user space, not yet handed to the kernel, on ``protocol``'s connection.

    Must run on the reactor thread. See the module docstring for what is counted.
    """
    total = 0
    # autobahn only queues here for sync/chopsize writes (daphne uses neither); count it anyway.
    for item in getattr(protocol, "send_queue", ()):
        total += len(item[0])
    transport = getattr(protocol, "transport", None)
    if transport is None:  # not connected (yet, or any more)
        return 0
    for _ in range(_MAX_TRANSPORT_DEPTH):
        if transport is None:  # walked past the innermost transport without finding a buffer to read
            break
        if hasattr(transport, "_tempDataLen") and hasattr(transport, "dataBuffer"):
            # twisted.internet.abstract.FileDescriptor (tcp.Server, unix.Server): what
            # doWrite() has not sent yet.
            if not transport.connected:
                return 0
            return total + len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        get_write_buffer_size = getattr(transport, "get_write_buffer_size", None)
        if callable(get_write_buffer_size):  # an asyncio transport
            return total + get_write_buffer_size()
        # twisted.protocols.tls.TLSMemoryBIOProtocol: cleartext held back until the handshake
        # completes; afterwards it writes ciphertext straight to the transport it wraps.
        for chunk in getattr(transport, "_appSendBuffer", None) or ():
            total += len(chunk)
        transport = getattr(transport, "transport", None)
    _log_unsupported(protocol.transport)
    return 0


def transport_is_open(protocol: Any) -> bool:
    """Whether ``protocol``'s WebSocket is open and its connection neither lost nor being closed."""
    if getattr(protocol, "state", None) != getattr(protocol, "STATE_OPEN", object()):
        return False
    transport = getattr(protocol, "transport", None)
    if transport is None:
        return False
    for _ in range(_MAX_TRANSPORT_DEPTH):
        if transport is None:  # walked past the innermost transport (TLS wraps TCP)
            return True
        if getattr(transport, "disconnecting", False) or getattr(transport, "disconnected", False):
            return False
        if hasattr(transport, "connected") and not transport.connected:
            return False
        transport = getattr(transport, "transport", None)
    return True


class TransportBacklog:
    """The ``scope["extensions"]["eventrelay.transport_backlog"]`` probe of one WebSocket connection.

    ``probe()`` returns the bytes queued, unsent, for the connection (0 once it is closed);
    ``probe.is_open`` tells whether it is still open. Cheap and non-blocking on the event loop
    thread; from any other thread it waits for the reactor thread to answer.
    """

    __slots__ = ("_protocol", "_thread_id")

    def __init__(self, protocol: Any) -> None:
        # A weak reference: the scope (kept by the consumer for as long as it runs) must not keep
        # a dead connection, and the megabytes possibly still in its buffer, alive.
        self._protocol = weakref.ref(protocol)
        # create_application() runs on the reactor thread.
        self._thread_id = threading.get_ident()

    def _on_reactor(self, function: Any) -> Any:
        protocol = self._protocol()
        if protocol is None:
            return None
        if threading.get_ident() == self._thread_id:
            return function(protocol)
        if not reactor.running:  # shutting down: nobody would answer, and the connection is going away
            return None
        return blockingCallFromThread(reactor, function, protocol)

    def __call__(self) -> int:
        return self._on_reactor(transport_backlog) or 0

    @property
    def is_open(self) -> bool:
        return bool(self._on_reactor(transport_is_open))

    def __repr__(self) -> str:
        return f"<TransportBacklog of {self._protocol()!r}>"


class FrameWriter:
    """The ``scope["extensions"]["eventrelay.frame_writer"]`` of one WebSocket connection.

    ``encode(text)`` is the text message's frame as it goes on the wire from this server (one frame,
    unmasked, uncompressed: autobahn's own :class:`PreparedMessage` encoding), the same bytes for every
    connection, so a caller encodes a frame once and writes it to many. ``write(frames)`` writes one or
    more encoded frames to this connection, in order with everything else sent on it, and says whether
    it could (False once the WebSocket is no longer open: what is not sent then is dropped, as autobahn
    drops frames sent while closing). ``usable`` says whether the connection takes pre-encoded frames at
    all (not when it negotiated compression, or the factory masks or fragments server frames): check it
    once the connection is accepted. ``backlog()`` is :class:`TransportBacklog`'s figure without the thread
    hop: the writer is for the reactor thread only, where daphne runs the application (``write`` refuses any
    other thread; ``backlog`` is asked before every write, so it does not check again).
    """

    __slots__ = ("_plain_tcp", "_protocol", "_thread_id")

    def __init__(self, protocol: Any) -> None:
        self._protocol = weakref.ref(protocol)  # as TransportBacklog: the scope must not keep a dead connection
        self._thread_id = threading.get_ident()
        # The transport write_now sends through: its buffer is read here directly, the generic walk (TLS...)
        # otherwise. (The fan-out asks once per frame batch of every subscriber.)
        self._plain_tcp = _is_plain_tcp(getattr(protocol, "transport", None))

    @staticmethod
    def encode(text: str) -> bytes:
        return PreparedMessage(text.encode("utf-8"), False, False, True).payloadHybi

    @property
    def usable(self) -> bool:
        # Read from the connected protocol (autobahn sets these when the connection is made); a field an
        # upgrade renamed reads as "not usable", and the application falls back to ASGI's send.
        protocol = self._protocol()
        return (
            protocol is not None
            and getattr(protocol, "_perMessageCompress", _ABSENT) is None
            and getattr(protocol, "maskServerFrames", True) is False
            and getattr(protocol, "autoFragmentSize", 1) == 0
            and isinstance(getattr(protocol, "send_queue", None), deque)
        )

    def write(self, frames: bytes) -> bool:
        if threading.get_ident() != self._thread_id:
            raise RuntimeError("a FrameWriter is used on the reactor thread only")
        protocol = self._protocol()
        if protocol is None or protocol.state != _WS_OPEN:
            return False
        if protocol.send_queue:
            # autobahn holds frames back (it does for sync or chopped writes only): queue behind them.
            protocol.sendData(frames)
        else:
            protocol.transport.write(frames)
        return True

    def backlog(self) -> int:
        protocol = self._protocol()
        if protocol is None:
            return 0
        transport = protocol.transport
        if not self._plain_tcp or protocol.send_queue or transport is None:
            return transport_backlog(protocol)
        # transport_backlog's figure for a plain TCP connection with nothing held back by autobahn.
        if not transport.connected:
            return 0
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen

    def __repr__(self) -> str:
        return f"<FrameWriter of {self._protocol()!r}>"


def write_now(transport: Any, data: bytes) -> None:
    """``FileDescriptor.write`` that sends at once when nothing is queued, as asyncio transports do.

    Twisted's ``write`` always queues and asks the reactor to watch the socket; the reactor later
    sends and stops watching. For a WebSocket fan-out that is two ``epoll_ctl`` calls, a reactor
    callback and the selector's bookkeeping for every frame to every subscriber, about half of the
    web process's time at 10,000 frames/s (docs/benchmarks.md). When the connection's buffer is empty
    the frame goes straight to the socket; whatever the kernel does not take, and every frame while
    anything is queued, takes Twisted's own path, so the order of bytes and the backlog probe
    (which counts only what is queued) are unchanged.
    """
    if (
        data
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and transport.offset == len(transport.dataBuffer)
        and not transport._tempDataLen
    ):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int) and sent > 0:  # else an error: Twisted's path meets it and closes
            if sent == len(data):
                return
            data = data[sent:]
    type(transport).write(transport, data)


def _is_plain_tcp(transport: Any) -> TypeGuard[tcp.Connection]:
    # (TLS wraps the TCP transport and writes through it already.)
    return isinstance(transport, tcp.Connection) and hasattr(transport, "_tempDataLen")


def _send_frames_at_once(protocol: Any) -> None:
    transport = getattr(protocol, "transport", None)
    if _is_plain_tcp(transport):
        transport.write = functools.partial(write_now, transport)  # type: ignore[method-assign]  # this instance only


def add_missing_reason_phrases() -> None:
    """Give Twisted a reason phrase for every status Python knows (429, 422, 451...).

    daphne sets only the status code, and Twisted's table (``twisted.web.http.RESPONSES``, read by
    ``Request.setResponseCode``) has no entry for some the API answers with: the status line read
    "429 Unknown Status". Existing phrases are kept.
    """
    for status in HTTPStatus:
        twisted_http.RESPONSES.setdefault(status.value, status.phrase.encode("ascii"))


add_missing_reason_phrases()


# How far past ER_WS_MAX_FRAME_BYTES the WebSocket transport still reads a message, so that the
# application can answer it with an `invalid` error and keep the connection; beyond this ceiling the
# message is not read at all and the connection is closed with 1009 (message too big).
WS_FRAME_CEILING_SLACK = 1024 * 1024


def ws_frame_ceiling(max_frame_bytes: int) -> int:
    """The largest WebSocket message (and frame) the transport reads: see ``WS_FRAME_CEILING_SLACK``."""
    return max_frame_bytes + WS_FRAME_CEILING_SLACK


class RequestDeadlines:
    """Closes an HTTP connection whose client takes too long to send a request's headers or body.

    Twisted's own timeout is an idle timeout (it restarts with every byte received), so a client that
    sends a byte now and then holds a connection for ever. These are deadlines: the headers must be
    complete ``header_seconds`` after the connection opened (or after the request's first line, for a
    later request on a kept-alive connection), and the body ``body_seconds`` after its headers. A
    WebSocket handshake is an HTTP request: its headers get the same deadline. 0 turns one off.

    The channel's methods are wrapped on the instance (as :func:`write_now` wraps the transport's
    ``write``): Twisted calls them as ``self.lineReceived(...)``, ``self.allHeadersReceived()``.
    Everything runs on the reactor thread.
    """

    def __init__(self, channel: Any, header_seconds: float, body_seconds: float) -> None:
        self.channel = channel
        self.header_seconds = header_seconds
        self.body_seconds = body_seconds
        self._timer: Any = None
        self._line_received = channel.lineReceived
        self._all_headers_received = channel.allHeadersReceived
        self._all_content_received = channel.allContentReceived
        self._connection_lost = channel.connectionLost
        channel.lineReceived = self.line_received
        channel.allHeadersReceived = self.all_headers_received
        channel.allContentReceived = self.all_content_received
        channel.connectionLost = self.connection_lost
        self._arm(header_seconds, "headers")

    def _arm(self, seconds: float, part: str) -> None:
        self._cancel()
        if seconds > 0:
            # (mypy reads Twisted's zope interface methods without their implicit self.)
            self._timer = reactor.callLater(seconds, self._expire, seconds, part)  # type: ignore[arg-type]

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _expire(self, seconds: float, part: str) -> None:
        self._timer = None
        transport = getattr(self.channel, "transport", None)
        peer = transport.getPeer() if transport is not None else "?"
        logger.info("closing the connection of %s: it did not send its request's %s within %ss", peer, part, seconds)
        # Twisted's own timeout path: close, and abort if the client does not let go.
        self.channel.timeoutConnection()

    def line_received(self, line: bytes) -> None:
        if self._timer is None and not self.channel._handlingRequest:
            self._arm(self.header_seconds, "headers")  # the first line of a later request
        self._line_received(line)

    def all_headers_received(self) -> None:
        self._arm(self.body_seconds, "body")
        self._all_headers_received()

    def all_content_received(self) -> None:
        self._cancel()
        self._all_content_received()

    def connection_lost(self, reason: Any) -> None:
        self._cancel()
        self._connection_lost(reason)


def _add_request_deadlines(factory: Any, header_seconds: float, body_seconds: float) -> None:
    build_protocol = factory.buildProtocol

    def build_with_deadlines(addr: Any) -> Any:
        protocol = build_protocol(addr)
        if protocol is not None:
            # An HTTP/1.1 channel, behind the wrapper that could switch it to HTTP/2 (not enabled here).
            channel = getattr(protocol, "_channel", protocol)
            if hasattr(channel, "allHeadersReceived"):
                RequestDeadlines(channel, header_seconds, body_seconds)
        return protocol

    factory.buildProtocol = build_with_deadlines


def missing_server_internals() -> list[str]:
    """What this module reads from Twisted, daphne and autobahn beyond their public API, and cannot find.

    The backlog probe, :func:`write_now` and :class:`RequestDeadlines` read these private or undocumented
    fields; an upgrade that renames one would silently switch the protection off. Each is looked up
    where the running server meets it: on a class, or on a freshly built instance for the fields
    ``__init__`` sets.
    """
    missing: list[str] = []

    def need(name: str, build: Callable[[], object], *attributes: str) -> None:
        try:
            owner = build()
        except (TypeError, AttributeError) as error:  # a changed constructor is as fatal as a missing field
            missing.append(f"{name} (cannot build one to look: {type(error).__name__}: {error})")
            return
        missing.extend(f"{name}.{attribute}" for attribute in attributes if not hasattr(owner, attribute))

    # transport_backlog, transport_is_open and write_now: the TCP transport's write buffer.
    need(
        "twisted.internet.abstract.FileDescriptor",
        lambda: abstract.FileDescriptor(reactor=reactor),
        *("dataBuffer", "offset", "_tempDataLen", "connected", "disconnecting", "_writeDisconnected", "write"),
    )
    if not issubclass(tcp.Connection, abstract.FileDescriptor):
        missing.append("twisted.internet.tcp.Connection as a subclass of abstract.FileDescriptor")
    need("twisted.internet.tcp.Connection", lambda: tcp.Connection, "writeSomeData")
    # RequestDeadlines: the HTTP/1.1 channel behind the protocol daphne's HTTP factory builds.
    need(
        "twisted.web.http.HTTPChannel",
        twisted_http.HTTPChannel,
        *("lineReceived", "allHeadersReceived", "allContentReceived", "connectionLost", "timeoutConnection"),
        "_handlingRequest",
    )
    need(
        "the protocol daphne's HTTPFactory builds", lambda: daphne.http_protocol.HTTPFactory.protocol(None), "_channel"
    )
    need("twisted.web.http", lambda: twisted_http, "RESPONSES")
    # Server: the one place that sees a WebSocket's scope and its protocol together.
    if list(inspect.signature(daphne.server.Server.create_application).parameters) != ["self", "protocol", "scope"]:
        missing.append("daphne.server.Server.create_application(self, protocol, scope)")
    need("daphne.cli.CommandLineInterface", lambda: DaphneCommandLineInterface, "server_class")
    need("daphne.ws_protocol.WebSocketProtocol", lambda: daphne.ws_protocol.WebSocketProtocol, "STATE_OPEN")
    # FrameWriter: autobahn's frame encoding and the protocol fields that decide whether it applies.
    need("autobahn's PreparedMessage", lambda: PreparedMessage(b"x", False, False, True), "payloadHybi")
    need("daphne.ws_protocol.WebSocketFactory", lambda: daphne.ws_protocol.WebSocketFactory(None), *_FRAME_OPTIONS)
    need("daphne.ws_protocol.WebSocketProtocol", lambda: daphne.ws_protocol.WebSocketProtocol, "sendData")
    missing.extend(
        f"autobahn's WebSocketProtocol.CONFIG_ATTRS['{option}']"
        for option in _FRAME_OPTIONS
        if option not in getattr(daphne.ws_protocol.WebSocketProtocol, "CONFIG_ATTRS", ())
    )
    if "failByDrop" not in inspect.signature(WebSocketServerFactory.setProtocolOptions).parameters:
        missing.append("autobahn's WebSocketServerFactory.setProtocolOptions(failByDrop=...)")
    return missing


def require_server_internals() -> None:
    """Refuse to start (exit with a message naming each) when :func:`missing_server_internals` finds any."""
    missing = missing_server_internals()
    if not missing:
        return
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("Twisted", "daphne", "autobahn"))
    lines = "\n".join(f"  - {item}" for item in missing)
    raise SystemExit(
        f"eventrelay.webserver refuses to start: the installed {versions} lack what its WebSocket "
        f"slow-consumer protection and request deadlines read:\n{lines}\n"
        "These are private fields (docs/architecture.md, 'Why the web server is what it is'): install the "
        "versions requirements.txt pins, or adapt eventrelay/webserver.py to the new ones."
    )


class AccessLog(AccessLogGenerator):
    """daphne's access log (a line per HTTP request and per WebSocket step), written through logging rather than
    to stdout, so that it takes the process's format (``ER_LOG_FORMAT``) and is only written when asked for
    (``ER_ACCESS_LOG``; settings.LOGGING)."""

    def __init__(self) -> None:
        super().__init__(stream=None)

    def __call__(self, protocol: Any, action: Any, details: Any) -> None:
        if access_logger.isEnabledFor(logging.INFO):
            super().__call__(protocol, action, details)

    def write_entry(self, host: Any, date: Any, request: Any, status: Any = None, length: Any = None, **_: Any) -> None:
        access_logger.info('%s "%s" %s %s', host, request, status or "-", length or "-")


class Server(daphne.server.Server):
    """daphne's server, adding the ``eventrelay.transport_backlog`` probe and the ``eventrelay.frame_writer``
    to WebSocket scopes and sending their frames without a reactor round trip (:func:`write_now`), with
    deadlines for slow clients (:class:`RequestDeadlines`)."""

    def run(self) -> None:
        require_server_internals()
        action_logger: Any = getattr(self, "action_logger", None)
        if getattr(action_logger, "stream", None) is sys.stdout:  # (an --access-log file is left as it is)
            self.action_logger = AccessLog()
        close_connections_after_each_request()
        # daphne makes its factories in run(), and they build their first protocol once the reactor runs.
        reactor.callWhenRunning(self.configure_factories)
        # The application is imported by now: see eventrelay.gc_tuning.
        tune_gc_for_serving(rarer_full_collections=True)
        super().run()

    def configure_factories(self) -> None:
        from django.conf import settings

        # Idle: a connection with no request in progress (kept alive, or not sending anything).
        self.http_factory.timeOut = settings.ER_HTTP_IDLE_TIMEOUT_S or None
        _add_request_deadlines(self.http_factory, settings.ER_HTTP_HEADER_TIMEOUT_S, settings.ER_HTTP_BODY_TIMEOUT_S)
        # A message over the transport's ceiling closes the connection with a close frame (1009 and a
        # reason) instead of dropping it without a word.
        self.ws_factory.setProtocolOptions(failByDrop=False)

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        if scope.get("type") == "websocket":
            _send_frames_at_once(protocol)
            scope = {
                **scope,
                "extensions": {
                    **(scope.get("extensions") or {}),
                    TRANSPORT_BACKLOG: TransportBacklog(protocol),
                    FRAME_WRITER: FrameWriter(protocol),
                },
            }
        return super().create_application(protocol, scope)


class CommandLineInterface(DaphneCommandLineInterface):
    """daphne's command line, unchanged, starting :class:`Server`."""

    description = "EventRelay web server (daphne with per-connection transport backlog probes)"
    server_class = Server


def defaults_from_settings() -> list[str]:
    """daphne options our settings decide; put first, so the same option on the command line wins."""
    from django.conf import settings

    ceiling = str(ws_frame_ceiling(settings.ER_WS_MAX_FRAME_BYTES))
    return [
        *("--websocket-max-message-size", ceiling, "--websocket-max-frame-size", ceiling),
        # From the end of the HTTP upgrade to the application's accept (autobahn's open handshake too).
        *("--websocket_connect_timeout", str(settings.ER_WS_HANDSHAKE_TIMEOUT_S)),
    ]


def main(argv: list[str] | None = None) -> None:
    """Entry point: same arguments as the ``daphne`` command."""
    # Before the application (and so the settings) is imported: pg_stat_activity names this process.
    os.environ.setdefault("ER_DB_APPLICATION_NAME", "eventrelay-web")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventrelay.settings")
    CommandLineInterface().run([*defaults_from_settings(), *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
