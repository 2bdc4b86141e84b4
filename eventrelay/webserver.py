"""The web process: daphne with its own command line, plus a per-connection "transport backlog" probe.

Run it exactly like daphne (every daphne option works, the parsing is daphne's own)::

    python -m eventrelay.webserver -b 127.0.0.1 -p 9000 eventrelay.asgi:application

Why this module exists
----------------------
An ASGI ``send()`` of a ``websocket.send`` message never blocks under daphne: daphne hands the frame
to autobahn, autobahn calls ``transport.write()``, and Twisted's ``FileDescriptor`` appends it to the
connection's user-space write buffer without any limit. When a client stops reading, the kernel's
socket buffers fill, Twisted stops being able to write, and every further frame piles up in the
server's memory. Nothing tells the application: ASGI has no flow control for WebSockets.

To bound each connection's memory and detect a slow reader, the application must be able to ask
"how many bytes have I sent to this connection that are still waiting in the server?". This module
answers that question by putting a probe into every WebSocket scope::

    probe = scope["extensions"]["eventrelay.transport_backlog"]
    probe()          # -> int: bytes written by the application (WebSocket frames, framing
                     #    included) that are still queued in user space, not yet handed to the kernel
    probe.is_open    # -> bool: the TCP connection is still up and not being closed

Semantics
~~~~~~~~~
* ``probe()`` counts the bytes queued in user space for this connection: autobahn's own send
  queue (only used for "sync"/"chopsize" writes, normally empty), TLS's pre-handshake buffer when
  served over ``-e ssl:...`` (after the handshake TLS writes ciphertext straight into the TCP
  transport, which is what gets counted), and the TCP transport's write buffer (``dataBuffer``
  from ``offset`` on, plus the not-yet-coalesced ``_tempDataBuffer``). It does **not** count what
  the kernel already accepted (the socket send buffer, bounded by the kernel and the
  ``net.ipv4.tcp_wmem`` limits): that memory is not ours and is bounded anyway. So the value stays
  at 0 while the client keeps up, and grows only once the kernel buffers are full, i.e. exactly
  when the client (or the network) is slower than the application.
* Once the connection is closed or lost, ``probe()`` returns 0 and ``probe.is_open`` is False.
  (Whatever was still queued is dropped with the connection.)
* The value is exact at the time of the call: it reads the buffers, it does not estimate.

Thread safety
~~~~~~~~~~~~~
daphne runs Twisted on the asyncio reactor (``daphne.server`` installs ``AsyncioSelectorReactor``)
and schedules every application instance with ``asyncio.ensure_future`` on that same loop, so an
async consumer's code runs on the reactor thread, the only thread that touches the transport.
Calling the probe there is a few attribute reads: no locking needed, nothing blocks. The probe
records the thread it was created on (``create_application`` runs on the reactor thread); if it
is called from any other thread (a sync consumer's handler runs in a worker thread via
``sync_to_async``), it does not read the buffers from that thread (they are mutated by the reactor
without locks) but hops onto the reactor thread with Twisted's ``blockingCallFromThread`` and
waits for the answer.

Why a ``Server`` subclass (and not something else)
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
* daphne builds the WebSocket scope inside ``WebSocketProtocol.onConnect`` and hands it to
  ``Server.create_application(protocol, scope)``. Overriding ``create_application`` is the one
  place that sees both the scope and the protocol (hence its transport) without copying any of
  daphne's code.
* ``daphne.cli.CommandLineInterface`` has a ``server_class`` class attribute made for exactly this
  swap, so the entry point below reuses daphne's argument parsing, logging setup, endpoint
  building and access log entirely: ``--help``, ``-b``/``-p``, ``-u``, ``--fd``, ``-e ssl:...``,
  ``--proxy-headers``, ``--ping-interval``, ``--websocket-max-message-size``... all work as with
  the ``daphne`` command.
* A Twisted push producer registered on the transport (``transport.registerProducer``) would be the
  public-API alternative, but it only gives an on/off signal (paused above ``bufferSize``, 64 KiB
  by default; resumed only once the buffer is completely empty), and after daphne's HTTP-to-WebSocket
  upgrade the transport already has the old ``HTTPChannel`` registered as its producer, so we
  would have to unregister daphne's producer first. Counting bytes gives the application a number
  it can compare with its own limit, and touches nothing.

Caveats
~~~~~~~
* ``dataBuffer`` and ``offset`` are class attributes documented in Twisted's
  ``abstract.FileDescriptor`` source; ``_tempDataBuffer``/``_tempDataLen`` are private. They have
  been there, unchanged, for well over a decade (checked against Twisted 26.10 installed here),
  and are the ones Twisted's own ``_isSendBufferFull``/``doWrite`` use. If a future Twisted changes them, the probe falls back to
  ``get_write_buffer_size()`` (asyncio transports) and otherwise logs an error once and returns 0:
  the server keeps working, without slow-reader detection. A test should pin this.
* Servers started another way (``daphne`` itself, ``daphne.testing.DaphneProcess``, Channels'
  ``ChannelsLiveServerTestCase``, ``manage.py runserver``) do not add the probe: code using it must
  treat a missing key as "cannot tell".
* The extension's value is a callable, not the dict the ASGI spec suggests for ``extensions``
  entries; the ``eventrelay.`` prefix keeps it out of anyone else's way.
* Behind a reverse proxy the "client" is the proxy: the proxy's own buffering sits between the
  server and the real client.
"""

# daphne.server must be imported before anything imports twisted.internet.reactor: it installs the
# asyncio reactor daphne runs on.
import daphne.server  # isort:skip

import functools
import logging
import os
import sys
import threading
import weakref
from http import HTTPStatus
from typing import Any

from daphne.cli import CommandLineInterface as DaphneCommandLineInterface
from twisted.internet import reactor, tcp
from twisted.internet.threads import blockingCallFromThread
from twisted.web import http as twisted_http

from eventrelay.db import close_connections_after_each_request
from eventrelay.gc_tuning import tune_gc_for_serving

logger = logging.getLogger(__name__)

#: The key of the probe in a WebSocket scope's ``extensions``.
TRANSPORT_BACKLOG = "eventrelay.transport_backlog"

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


def _send_frames_at_once(protocol: Any) -> None:
    transport = getattr(protocol, "transport", None)
    # Plain TCP only (TLS wraps the TCP transport and writes through it already).
    if isinstance(transport, tcp.Connection) and hasattr(transport, "_tempDataLen"):
        transport.write = functools.partial(write_now, transport)


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
            self._timer = reactor.callLater(seconds, self._expire, seconds, part)

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


class Server(daphne.server.Server):
    """daphne's server, adding the ``eventrelay.transport_backlog`` probe to WebSocket scopes and
    sending their frames without a reactor round trip (:func:`write_now`), with deadlines for slow
    clients (:class:`RequestDeadlines`)."""

    def run(self) -> None:
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
                "extensions": {**(scope.get("extensions") or {}), TRANSPORT_BACKLOG: TransportBacklog(protocol)},
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
