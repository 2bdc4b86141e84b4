"""A webhook receiver that verifies EventRelay's Standard Webhooks signature, with the stdlib only.

    ER_WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py 8000

Answer 2xx only after the event is safely handled: EventRelay retries anything else, in order.
The same event may arrive more than once (at-least-once): deduplicate on the webhook-id header.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ["ER_WEBHOOK_SECRET"]
TOLERANCE_SECONDS = 300


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False  # too old (or from the future): a replay
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest())
    return any(
        hmac.compare_digest(f"v1,{expected.decode()}", signature)
        for signature in headers["webhook-signature"].split(" ")
    )


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        headers = {name.lower(): value for name, value in self.headers.items()}
        if not verify(SECRET, headers, body):
            self.send_response(401)
            self.end_headers()
            return
        event = json.loads(body)
        print("verified", event["topic"], event["offset"], event["name"], flush=True)
        self.send_response(204)
        self.end_headers()


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
