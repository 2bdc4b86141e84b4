"""Webhook signing as the Standard Webhooks specification (https://www.standardwebhooks.com) defines it.

A destination's secret is ``"whsec_"`` followed by the base64 of random bytes; those decoded bytes are the HMAC key.
Each delivery carries three headers::

    webhook-id:        the message id (EventRelay uses the eventId), the same on every retry
    webhook-timestamp: unix seconds when this attempt was signed
    webhook-signature: "v1," + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}"))

Signing the id and the timestamp along with the body lets a receiver deduplicate by id and refuse replays of old
requests. The signature header may hold several space-separated ``version,signature`` pairs (for instance while a
secret is being rotated); a receiver accepts the request if any ``v1`` entry matches.

``sign`` and ``webhook_headers`` are what the sender uses; ``verify`` is the receiver's side, used by our tests and
offered as a reference for anyone writing a receiver in Python.
"""

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
# The size of a SHA-256 digest; the spec asks for 24 to 64 bytes.
SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh signing secret: ``"whsec_"`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key a secret stands for: the base64-decoded part after the optional ``whsec_`` prefix.

    Raises ``ValueError`` naming what is wrong (not a string, empty, not base64) so a bad secret is refused where
    it is entered rather than producing signatures no receiver can check. The secret itself is never echoed.
    """
    if not isinstance(secret, str):
        raise ValueError(f"webhook secret must be a string, not {type(secret).__name__}")
    encoded = secret.removeprefix(SECRET_PREFIX)
    if not encoded:
        raise ValueError("webhook secret is empty; expected 'whsec_' followed by base64")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "webhook secret is not valid base64 after the 'whsec_' prefix "
            "(expected standard base64: A-Z a-z 0-9 + /, padded with '=')"
        ) from None
    if not key:
        raise ValueError("webhook secret decodes to an empty key")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one request: ``"v1," + base64(HMAC-SHA256(key, signed content))``.

    The signed content is ``f"{msg_id}.{timestamp}.".encode() + body``; ``body`` must be the exact bytes sent.
    """
    signed_content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed_content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def webhook_headers(
    secret: str, msg_id: str, timestamp: int, body: bytes, user_agent: str, previous_secret: str = ""
) -> dict[str, str]:
    """All headers of one delivery attempt, signed for ``body`` (which must be the JSON bytes sent). With a
    ``previous_secret`` (a rotation's overlap) the header carries both signatures, the new one first, as Standard
    Webhooks allows: a receiver that still has the old secret verifies the request, and so does one with the new."""
    signature = sign(secret, msg_id, timestamp, body)
    if previous_secret:
        signature = f"{signature} {sign(previous_secret, msg_id, timestamp, body)}"
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
        "user-agent": user_agent,
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_seconds: int = 300,
    now: float | None = None,
) -> None:
    """Check a received webhook; return ``None`` if it is authentic, raise ``ValueError`` saying why if not.

    ``headers`` is looked up case-insensitively. The timestamp must lie within ``tolerance_seconds`` of ``now``
    (default: the current time) in either direction, which refuses replays of old requests. The signature header
    may carry several space-separated entries; any matching ``v1`` entry is enough. Comparison is constant-time.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    missing = [name for name in ("webhook-id", "webhook-timestamp", "webhook-signature") if name not in lowered]
    if missing:
        raise ValueError(f"missing header(s): {', '.join(missing)}")
    msg_id = lowered["webhook-id"]
    raw_timestamp = lowered["webhook-timestamp"]
    if not (raw_timestamp.isascii() and raw_timestamp.isdigit()):
        raise ValueError(f"webhook-timestamp is not unix seconds: {raw_timestamp!r}")
    timestamp = int(raw_timestamp)

    current = time.time() if now is None else now
    if timestamp < current - tolerance_seconds:
        raise ValueError(f"webhook-timestamp {timestamp} is more than {tolerance_seconds}s old")
    if timestamp > current + tolerance_seconds:
        raise ValueError(f"webhook-timestamp {timestamp} is more than {tolerance_seconds}s in the future")

    expected = sign(secret, msg_id, timestamp, body).encode("ascii")
    offered = [entry.encode() for entry in lowered["webhook-signature"].split() if entry.startswith("v1,")]
    if not offered:
        raise ValueError("webhook-signature holds no v1 signature")
    # Compare against every entry without stopping early, so timing says nothing about which one matched.
    matched = False
    for candidate in offered:
        matched |= hmac.compare_digest(candidate, expected)
    if not matched:
        raise ValueError("webhook-signature does not match the body, id and timestamp for this secret")
