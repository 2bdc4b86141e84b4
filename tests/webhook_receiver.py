"""A local HTTP receiver for webhook tests whose answers the test can switch per event."""

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    topic: str
    offset: int
    event: dict[str, Any]
    headers: dict[str, str]
    body: bytes
    answered: str
    at: float = field(default_factory=time.monotonic)


# What to answer: an int status, ("status", retry_after_seconds), "timeout" (sleep past the
# sender's timeout), or "reset" (drop the connection without answering).
Answer = int | tuple[int, float] | str


class Receiver:
    def __init__(self, timeout_sleep: float = 3.0, latency: float = 0.0) -> None:
        self.lock = threading.Lock()
        # Seconds every answer takes (a slow receiver), and how many requests are being answered right now.
        self.latency = latency
        self.in_flight = 0
        self.most_in_flight = 0
        self.requests: list[Received] = []
        self.answer: Callable[[dict[str, Any], int], Answer] = lambda event, tries: 200
        self.timeout_sleep = timeout_sleep
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without this, Nagle's algorithm and the
            # client's delayed ACK add ~40 ms to every answer.
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                event = json.loads(body)
                with receiver.lock:
                    tries = sum(
                        1 for r in receiver.requests if r.topic == event["topic"] and r.offset == event["offset"]
                    )
                    answer = receiver.answer(event, tries + 1)
                    receiver.requests.append(
                        Received(event["topic"], event["offset"], event, dict(self.headers), body, repr(answer))
                    )
                if receiver.latency:
                    with receiver.lock:
                        receiver.in_flight += 1
                        receiver.most_in_flight = max(receiver.most_in_flight, receiver.in_flight)
                    time.sleep(receiver.latency)
                    with receiver.lock:
                        receiver.in_flight -= 1
                if answer == "timeout":
                    time.sleep(receiver.timeout_sleep)
                    return self._close()
                if answer == "reset":
                    return self._reset()
                status, retry_after = answer if isinstance(answer, tuple) else (answer, None)
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("retry-after", str(retry_after))
                if status in (301, 302, 307, 308):
                    self.send_header("location", "http://127.0.0.1:9/elsewhere")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def _close(self) -> None:
                self.close_connection = True

            def _reset(self) -> None:
                # SO_LINGER 0: close with a TCP reset, as a crashed or refusing server would.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def offsets(self, topic: str, answered_ok: bool = False) -> list[int]:
        with self.lock:
            return [r.offset for r in self.requests if r.topic == topic and (not answered_ok or r.answered == "200")]

    def of(self, topic: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.topic == topic]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
