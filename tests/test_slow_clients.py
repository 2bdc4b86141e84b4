"""Slow and half-open connections are closed by the server: the web process's deadlines for a
request's headers (a WebSocket handshake included) and body, and the gRPC server's handshake timeout.

The timeouts are set small by the environment; each test waits for the server to close the
connection (EOF) with a deadline far above them, and below the idle timeouts that would otherwise
close the connection anyway.
"""

import socket
import time
from collections.abc import Iterator

import pytest

from eventrelay.auth import mint_token
from harness.processes import GrpcServer, WebServer
from tests.ws_client import ws_connect

pytestmark = pytest.mark.e2e

# Far above the configured 1 s, far below the idle timeouts (10 minutes here).
EOF_DEADLINE_S = 30
SLOW = {
    "ER_HTTP_HEADER_TIMEOUT_S": "1",
    "ER_HTTP_BODY_TIMEOUT_S": "1",
    "ER_HTTP_IDLE_TIMEOUT_S": "600",
    "ER_GRPC_HANDSHAKE_TIMEOUT_S": "1",
}


# Per test, on committed data (transactional_db): the processes read the test database.
@pytest.fixture
def web(transactional_db: None) -> Iterator[WebServer]:
    server = WebServer(env=SLOW, name="outage-slow-clients-web")
    yield server
    server.stop()


@pytest.fixture
def grpc_server(transactional_db: None) -> Iterator[GrpcServer]:
    server = GrpcServer(env=SLOW, name="outage-slow-clients-grpc")
    yield server
    server.stop()


def connect(port: int, first_bytes: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=EOF_DEADLINE_S)
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def closed_by_server(sock: socket.socket, drip: bytes = b"") -> bool:
    """Whether the server closes ``sock`` (EOF or reset) before EOF_DEADLINE_S; with ``drip``, the
    client sends one more of its bytes every half second meanwhile (a slowloris)."""
    deadline = time.monotonic() + EOF_DEADLINE_S
    remaining = iter(drip)
    with sock:
        while time.monotonic() < deadline:
            sock.settimeout(0.5 if drip else max(0.1, deadline - time.monotonic()))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                byte = next(remaining, None)
                if byte is not None:
                    try:
                        sock.sendall(bytes([byte]))
                    except (BrokenPipeError, ConnectionResetError):
                        return True
                continue
            except ConnectionResetError:
                return True
            if data == b"":
                return True
            # A response (e.g. "408") may come first; the close follows.
    return False


def test_a_client_that_sends_half_its_headers_is_disconnected(web: WebServer) -> None:
    sock = connect(web.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: ")
    assert closed_by_server(sock)


def test_a_client_that_drips_its_headers_is_disconnected(web: WebServer) -> None:
    sock = connect(web.port, b"GET /healthz HTTP/1.1\r\n")
    assert closed_by_server(sock, drip=b"X-Slow: " + b"a" * 200)


def test_a_partial_websocket_handshake_is_disconnected(web: WebServer) -> None:
    handshake = (
        b"GET /ws/events HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
    )
    assert closed_by_server(connect(web.port, handshake))


def test_a_client_that_sends_half_its_body_is_disconnected(web: WebServer) -> None:
    body = b'{"name": "never_finished"}'
    request = (
        b"POST /api/v1/topics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {mint_token([], admin=True)}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[: len(body) // 2]
    )
    assert closed_by_server(connect(web.port, request))


async def test_an_open_websocket_outlives_the_request_deadlines(web: WebServer) -> None:
    async with ws_connect(web.ws_url, mint_token([], admin=True)) as ws:
        # Another connection's header deadline passing shows that this one's would have too.
        assert closed_by_server(connect(web.port, b"GET /healthz HTTP/1.1\r\n"))
        reply = await ws.request({"type": "subscribe", "topic": "no_such_topic_here", "ref": "alive"})
        assert (reply["type"], reply["code"], reply["ref"]) == ("error", "not_found", "alive")


def test_a_grpc_connection_that_never_sends_the_http2_preface_is_closed(grpc_server: GrpcServer) -> None:
    assert closed_by_server(connect(grpc_server.port, b""))
