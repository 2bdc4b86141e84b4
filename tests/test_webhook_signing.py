"""Webhook signatures (docs/webhooks.md, Standard Webhooks): ``sign`` agrees with the published example and with
an implementation written here from the specification alone; ``verify`` accepts what we send and refuses tampered,
mis-keyed and stale requests."""

import base64
import hashlib
import hmac
import re

import pytest

from webhooks.signing import new_secret, secret_key, sign, verify, webhook_headers

# Standard Webhooks' published example.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

NOW = 1_700_000_000
BODY = b'{"topic":"users:123","name":"signed_up","offset":7}'


def reference_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The specification, written out without touching ``webhooks.signing``."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :])
    content = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def signed_headers(secret: str, body: bytes = BODY, timestamp: int = NOW) -> dict[str, str]:
    return webhook_headers(secret, "evt_1", timestamp, body, "EventRelay/test")


def test_it_reproduces_the_standard_webhooks_example() -> None:
    assert sign(SPEC_SECRET, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_the_reference_implementation_reproduces_the_example_too() -> None:
    # Guards the comparison below: if both were wrong the same way, this would catch it.
    assert reference_signature(SPEC_SECRET, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


@pytest.mark.parametrize(
    ("msg_id", "timestamp", "body"),
    [
        pytest.param("evt_1", NOW, BODY, id="json"),
        pytest.param("0190f3c2-7a1e-7cc1-9f0e-3a2b1c0d9e8f", NOW, b"{}", id="uuid-id"),
        pytest.param("evt_2", 0, b"", id="empty-body"),
        pytest.param("evt_3", NOW, '{"name":"café ☕"}'.encode(), id="utf8-body"),
        pytest.param("evt_4", NOW, b"\x00\xff binary", id="arbitrary-bytes"),
    ],
)
def test_it_agrees_with_an_independent_implementation(msg_id: str, timestamp: int, body: bytes) -> None:
    secret = new_secret()
    assert sign(secret, msg_id, timestamp, body) == reference_signature(secret, msg_id, timestamp, body)


def test_headers_carry_the_id_timestamp_signature_and_user_agent() -> None:
    headers = webhook_headers(SPEC_SECRET, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY, "EventRelay/1.2.3")

    assert headers == {
        "content-type": "application/json",
        "webhook-id": SPEC_MSG_ID,
        "webhook-timestamp": "1614265330",
        "webhook-signature": SPEC_SIGNATURE,
        "user-agent": "EventRelay/1.2.3",
    }


def test_a_new_secret_is_whsec_and_base64_of_at_least_24_random_bytes() -> None:
    secret = new_secret()

    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]+={0,2}", secret)
    key = secret_key(secret)
    assert 24 <= len(key) <= 64
    assert "whsec_" + base64.b64encode(key).decode() == secret
    assert new_secret() != secret


def test_secret_key_accepts_a_secret_without_the_prefix() -> None:
    assert secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == secret_key(SPEC_SECRET)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        pytest.param("whsec_", r"empty", id="prefix-only"),
        pytest.param("", r"empty", id="empty"),
        pytest.param("whsec_not base64!", r"not valid base64", id="not-base64"),
        pytest.param("whsec_abc", r"not valid base64", id="bad-padding"),
        pytest.param("whsec_MfKQ9r8G-_qrTwjU", r"not valid base64", id="urlsafe-alphabet"),
        pytest.param(None, r"must be a string", id="None"),
    ],
)
def test_secret_key_refuses_a_malformed_secret_saying_why(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        secret_key(secret)


def test_verify_accepts_what_we_send() -> None:
    secret = new_secret()

    verify(secret, signed_headers(secret), BODY, now=NOW)


def test_verify_reads_headers_case_insensitively() -> None:
    secret = new_secret()
    headers = {name.title(): value for name, value in signed_headers(secret).items()}

    verify(secret, headers, BODY, now=NOW)


def test_verify_accepts_any_matching_signature_among_several() -> None:
    old, new = new_secret(), new_secret()
    headers = signed_headers(new)
    other = sign(old, "evt_1", NOW, BODY)
    headers["webhook-signature"] = f"v1a,ignored {other} {headers['webhook-signature']}"

    verify(new, headers, BODY, now=NOW)
    verify(old, headers, BODY, now=NOW)


def test_verify_rejects_a_tampered_body() -> None:
    secret = new_secret()
    headers = signed_headers(secret)

    with pytest.raises(ValueError, match=r"does not match"):
        verify(secret, headers, BODY.replace(b"123", b"124"), now=NOW)


def test_verify_rejects_a_changed_id() -> None:
    secret = new_secret()
    headers = signed_headers(secret) | {"webhook-id": "evt_2"}

    with pytest.raises(ValueError, match=r"does not match"):
        verify(secret, headers, BODY, now=NOW)


def test_verify_rejects_a_signature_made_with_another_secret() -> None:
    headers = signed_headers(new_secret())

    with pytest.raises(ValueError, match=r"does not match"):
        verify(new_secret(), headers, BODY, now=NOW)


def test_verify_rejects_a_replayed_timestamp_even_when_the_signature_is_right() -> None:
    secret = new_secret()
    headers = signed_headers(secret, timestamp=NOW - 301)

    with pytest.raises(ValueError, match=r"more than 300s old"):
        verify(secret, headers, BODY, now=NOW)


def test_verify_rejects_a_timestamp_too_far_in_the_future() -> None:
    secret = new_secret()
    headers = signed_headers(secret, timestamp=NOW + 301)

    with pytest.raises(ValueError, match=r"in the future"):
        verify(secret, headers, BODY, now=NOW)


def test_verify_accepts_a_timestamp_at_the_edge_of_the_tolerance() -> None:
    secret = new_secret()

    verify(secret, signed_headers(secret, timestamp=NOW - 60), BODY, tolerance_seconds=60, now=NOW)
    verify(secret, signed_headers(secret, timestamp=NOW + 60), BODY, tolerance_seconds=60, now=NOW)


def test_verify_defaults_to_the_current_time() -> None:
    secret = new_secret()

    with pytest.raises(ValueError, match=r"old"):
        verify(secret, signed_headers(secret, timestamp=SPEC_TIMESTAMP), BODY)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"webhook-signature": None}, r"missing header\(s\): webhook-signature", id="no-signature"),
        pytest.param({"webhook-id": None}, r"missing header\(s\): webhook-id", id="no-id"),
        pytest.param({"webhook-timestamp": "soon"}, r"not unix seconds", id="timestamp-not-a-number"),
        pytest.param({"webhook-signature": "v2,abc"}, r"no v1 signature", id="only-other-versions"),
        pytest.param({"webhook-signature": "v1,"}, r"does not match", id="empty-signature"),
    ],
)
def test_verify_rejects_malformed_headers_saying_why(change: dict[str, str | None], message: str) -> None:
    secret = new_secret()
    headers = signed_headers(secret)
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value

    with pytest.raises(ValueError, match=message):
        verify(secret, headers, BODY, now=NOW)
