"""What a receiver gets from the delivery engine's HTTP client (webhooks.delivery.post_event, urllib3 used directly):
the request requests used to send (basic credentials from the URL, the path and query without the fragment), and
an answer read at most ER_WEBHOOK_RESPONSE_BODY_BYTES far, whose connection is not reused when it was cut short."""

import base64
import gzip
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from webhooks import signing
from webhooks.delivery import post_event, synthetic_test_event
from webhooks.models import Destination


class Answering:
    """A receiver that records each request's line, headers and connection, and answers with ``body``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.body = b"ok"
        self.gzip = False
        answering = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                sent = self.rfile.read(int(self.headers.get("content-length", 0)))
                answering.requests.append(
                    {
                        "path": self.path,
                        "headers": {name.lower(): value for name, value in self.headers.items()},
                        "body": sent,
                        "port": self.client_address[1],
                    }
                )
                body = gzip.compress(answering.body) if answering.gzip else answering.body
                self.send_response(200)
                if answering.gzip:
                    self.send_header("content-encoding", "gzip")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def answering() -> Iterator[Answering]:
    server = Answering()
    yield server
    server.close()


def send(url: str) -> Any:
    destination = Destination(name="d", url=url, topic_name="t", secret=signing.new_secret())
    return post_event(destination, synthetic_test_event(destination, uuid.uuid4()))


def test_the_urls_credentials_go_as_basic_auth_and_the_fragment_stays_home(answering, allow_private):
    outcome = send(f"http://crm:p%40ss%20word@127.0.0.1:{answering.port}/hook?x=1&y=%2F#part")

    assert outcome.ok, outcome.error
    [request] = answering.requests
    assert request["path"] == "/hook?x=1&y=%2F"
    headers = request["headers"]  # (names in lower case: the header names are not case-sensitive)
    assert headers["authorization"] == "Basic " + base64.b64encode(b"crm:p@ss word").decode()
    assert headers["host"] == f"127.0.0.1:{answering.port}"
    assert headers["user-agent"] == "EventRelay/0.1"
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(request["body"])
    assert headers["webhook-signature"].startswith("v1,")


def test_a_url_without_credentials_sends_no_authorization(answering, allow_private):
    assert send(f"http://127.0.0.1:{answering.port}/hook").ok
    assert "authorization" not in answering.requests[0]["headers"]


def test_a_long_answer_is_cut_at_the_limit_and_its_connection_is_not_reused(answering, allow_private, settings):
    settings.ER_WEBHOOK_RESPONSE_BODY_BYTES = 3000
    url = f"http://127.0.0.1:{answering.port}/hook"
    answering.body = b"a" * 5000 + b"the rest of the answer"

    cut = send(url)
    answering.body = b"short"
    after = send(url)
    again = send(url)

    assert cut.ok and cut.body == "a" * 3000
    assert after.ok and after.body == "short"
    assert again.ok and again.body == "short"
    ports = [request["port"] for request in answering.requests]
    # The connection whose answer was cut short is closed; the one after it is kept alive for the next request.
    assert ports[1] != ports[0] and ports[2] == ports[1]


def test_a_compressed_answer_is_recorded_decoded(answering, allow_private):
    answering.gzip = True
    answering.body = b"accepted, thanks"

    outcome = send(f"http://127.0.0.1:{answering.port}/hook")

    assert outcome.ok and outcome.body == "accepted, thanks"
    assert "gzip" in answering.requests[0]["headers"]["accept-encoding"]
