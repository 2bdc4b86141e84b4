"""Token authentication and the topic authorization rule (docs/api.md "Authentication and authorization").

Tokens are crafted by hand with PyJWT (or raw base64url for the ones PyJWT refuses to make), so each
test says exactly what is on the wire. None of these tests touch the database.
"""

import base64
import time
from collections.abc import Callable

import jwt
import pytest
from django.conf import settings

from eventrelay.auth import (
    Principal,
    authenticate,
    can_read,
    can_write,
    mint_token,
    require_admin,
    require_read,
    require_write,
    token_from_authorization,
)
from eventrelay.errors import Forbidden, InvalidInput, Unauthenticated
from eventrelay.refs import TopicRef
from tests.helpers import b64url, hand_made_token

OTHER_SECRET = "a-different-secret-that-is-long-enough-0123456789"
WRONG_SHAPE = r"'topics' claim must be a comma-separated string or a list of strings"
BAD_REF = r"'topics' claim is invalid: topic name 'Users' is invalid"


def signed(claims: dict[str, object], *, secret: str | None = None, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret or settings.ER_JWT_SECRET, algorithm=algorithm)


# --- Tokens that are refused ----------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_it_refuses_an_unsigned_alg_none_token(alg: str) -> None:
    # Given a token that claims to need no signature, and carries none
    token = hand_made_token({"alg": alg, "typ": "JWT"}, {"topics": "users", "admin": True})

    # When / then it is refused, and the message names the algorithm
    with pytest.raises(Unauthenticated, match=rf"algorithm '{alg}' is not accepted: only HS256"):
        authenticate(token)


def test_it_refuses_an_hs512_token_even_when_signed_with_the_right_secret() -> None:
    token = signed({"topics": "users"}, algorithm="HS512")

    with pytest.raises(Unauthenticated, match=r"algorithm 'HS512' is not accepted: only HS256"):
        authenticate(token)


def test_it_refuses_an_rs256_header_whose_signature_is_an_hmac_of_the_secret() -> None:
    # Given the classic algorithm-confusion token: "RS256" in the header, but the signature is an
    # HMAC made with the shared secret (as if the secret were the RSA public key)
    header = {"alg": "RS256", "typ": "JWT"}
    claims = {"topics": "users"}
    hs256 = signed(claims)
    hmac_signature = base64.urlsafe_b64decode(hs256.split(".")[2] + "==")
    token = hand_made_token(header, claims, signature=hmac_signature)

    with pytest.raises(Unauthenticated, match=r"algorithm 'RS256' is not accepted: only HS256"):
        authenticate(token)


def test_it_refuses_a_token_signed_with_another_secret() -> None:
    token = signed({"topics": "users"}, secret=OTHER_SECRET)

    with pytest.raises(Unauthenticated, match=r"signature does not match"):
        authenticate(token)


def test_it_refuses_a_token_whose_claims_were_changed_after_signing() -> None:
    # Given a genuine token for users:123 whose payload is swapped for one granting all of users
    genuine = signed({"topics": "users:123"})
    header, _, signature = genuine.split(".")
    forged = f"{header}.{b64url({'topics': 'users'})}.{signature}"

    with pytest.raises(Unauthenticated, match=r"signature does not match"):
        authenticate(forged)


def test_it_refuses_an_expired_token() -> None:
    token = signed({"topics": "users", "exp": int(time.time()) - 60})

    with pytest.raises(Unauthenticated, match=r"token has expired"):
        authenticate(token)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param("garbage", r"malformed token: not a JWT", id="garbage"),
        pytest.param("abc.def", r"malformed token: not a JWT", id="two-segments"),
        pytest.param("", r"missing token", id="empty"),
        pytest.param(None, r"missing token", id="none"),
    ],
)
def test_it_refuses_a_malformed_or_missing_token(token: str | None, reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        authenticate(token)


def test_it_refuses_a_non_admin_token_without_a_topics_claim() -> None:
    token = signed({"sub": "someone"})

    with pytest.raises(Unauthenticated, match=r"token has no 'topics' claim"):
        authenticate(token)


def test_a_string_admin_claim_does_not_make_an_admin() -> None:
    # Only the JSON boolean true grants admin: "true" is just a string, so a topics claim is still required
    token = signed({"admin": "true"})

    with pytest.raises(Unauthenticated, match=r"token has no 'topics' claim"):
        authenticate(token)


@pytest.mark.parametrize(
    ("topics", "reason"),
    [
        pytest.param(5, WRONG_SHAPE, id="number"),
        pytest.param(["users", 5], WRONG_SHAPE, id="list-with-number"),
        pytest.param({"users": True}, WRONG_SHAPE, id="object"),
        pytest.param("", r"'topics' claim is empty", id="empty-string"),
        pytest.param([], r"'topics' claim is empty", id="empty-list"),
        pytest.param("Users", BAD_REF, id="uppercase"),
        pytest.param("users:123,Users", BAD_REF, id="one-bad-of-two"),
        pytest.param(["users", "Users"], BAD_REF, id="list-with-bad-ref"),
        pytest.param("users:", r"'topics' claim is invalid: topic id after ':' is empty", id="empty-id"),
    ],
)
def test_it_refuses_a_token_whose_topics_claim_is_not_a_list_of_valid_refs(topics: object, reason: str) -> None:
    token = signed({"topics": topics})

    with pytest.raises(Unauthenticated, match=reason):
        authenticate(token)


# --- Tokens that are accepted ---------------------------------------------------------------------


def test_it_accepts_a_comma_separated_topics_claim() -> None:
    token = signed({"topics": "users:123,visits:123,checkouts:123"})

    principal = authenticate(token)

    assert principal.grants == {TopicRef("users", "123"), TopicRef("visits", "123"), TopicRef("checkouts", "123")}
    assert principal.admin is False


def test_it_accepts_a_json_list_topics_claim() -> None:
    token = signed({"topics": ["users:123", "visits"]})

    principal = authenticate(token)

    assert principal.grants == {TopicRef("users", "123"), TopicRef("visits")}
    assert principal.admin is False


def test_it_accepts_an_admin_token_without_topics() -> None:
    token = signed({"admin": True})

    principal = authenticate(token)

    assert principal.admin is True
    assert principal.grants == frozenset()


def test_it_enforces_exp_only_when_present() -> None:
    still_valid = signed({"topics": "users", "exp": int(time.time()) + 60})
    never_expires = signed({"topics": "users"})

    assert authenticate(still_valid).grants == {TopicRef("users")}
    assert authenticate(never_expires).grants == {TopicRef("users")}


def test_the_sub_claim_names_the_principal_and_tokens_without_one_get_a_stable_subject() -> None:
    named = signed({"topics": "users", "sub": "billing-service"})
    anonymous = signed({"topics": "users"})

    assert authenticate(named).subject == "billing-service"
    assert authenticate(anonymous).subject == authenticate(anonymous).subject
    assert authenticate(anonymous).subject.startswith("token:")


# --- mint_token -----------------------------------------------------------------------------------


def test_a_minted_token_is_hs256_and_authenticates_to_the_topics_it_grants() -> None:
    token = mint_token(["users:123", "visits"], ttl_seconds=3600, subject="ops")

    principal = authenticate(token)

    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert principal == Principal(subject="ops", grants=frozenset({TopicRef("users", "123"), TopicRef("visits")}))


def test_a_minted_token_expires_after_its_ttl() -> None:
    before = int(time.time())

    token = mint_token(["users"], ttl_seconds=3600)

    claims = jwt.decode(token, settings.ER_JWT_SECRET, algorithms=["HS256"])
    assert before + 3600 <= claims["exp"] <= int(time.time()) + 3600
    assert claims["topics"] == "users"


def test_a_minted_admin_token_authenticates_as_admin() -> None:
    principal = authenticate(mint_token([], admin=True))

    assert principal.admin is True


def test_mint_token_refuses_an_invalid_topic() -> None:
    with pytest.raises(InvalidInput, match=r"topic name 'Users' is invalid"):
        mint_token(["Users"])


def test_a_token_minted_with_another_secret_is_refused() -> None:
    token = mint_token(["users"], secret=OTHER_SECRET)

    with pytest.raises(Unauthenticated, match=r"signature does not match"):
        authenticate(token)


# --- Authorization --------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", [TopicRef("users"), TopicRef("users", "456"), TopicRef("visits", "123")])
def test_a_token_for_one_topic_id_can_neither_read_nor_write_anything_else(
    principal_for: Callable[..., Principal], ref: TopicRef
) -> None:
    principal = principal_for("users:123")

    assert not can_read(principal, ref)
    assert not can_write(principal, ref)
    with pytest.raises(Forbidden, match=rf"token does not grant topic '{ref}'"):
        require_read(principal, ref)
    with pytest.raises(Forbidden, match=rf"token does not grant topic '{ref}'"):
        require_write(principal, ref)


def test_a_token_for_one_topic_id_can_read_and_write_that_id(principal_for: Callable[..., Principal]) -> None:
    principal = principal_for("users:123")
    ref = TopicRef("users", "123")

    assert can_read(principal, ref)
    assert can_write(principal, ref)
    require_read(principal, ref)
    require_write(principal, ref)


@pytest.mark.parametrize("ref", [TopicRef("users"), TopicRef("users", "123"), TopicRef("users", "456")])
def test_a_token_for_a_whole_topic_grants_the_topic_and_every_id(
    principal_for: Callable[..., Principal], ref: TopicRef
) -> None:
    principal = principal_for("users")

    assert can_read(principal, ref)
    assert can_write(principal, ref)


@pytest.mark.parametrize("ref", [TopicRef("users_archive"), TopicRef("users2", "123"), TopicRef("user")])
def test_a_token_for_a_whole_topic_grants_no_topic_that_merely_shares_its_prefix(
    principal_for: Callable[..., Principal], ref: TopicRef
) -> None:
    principal = principal_for("users")

    assert not can_read(principal, ref)
    assert not can_write(principal, ref)


@pytest.mark.parametrize("ref", [TopicRef("users"), TopicRef("users", "456"), TopicRef("anything_at_all", "x")])
def test_an_admin_reads_and_writes_every_topic(admin: Principal, ref: TopicRef) -> None:
    assert can_read(admin, ref)
    assert can_write(admin, ref)


def test_require_admin_refuses_a_non_admin_token(principal_for: Callable[..., Principal]) -> None:
    principal = principal_for("users")

    with pytest.raises(Forbidden, match=r"needs an admin token"):
        require_admin(principal)


def test_require_admin_lets_an_admin_through(admin: Principal) -> None:
    require_admin(admin)


# --- The authorization header ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        pytest.param(None, r"missing token", id="missing"),
        pytest.param("", r"missing token", id="empty"),
        pytest.param("Basic dXNlcjpwYXNz", r"expected 'Bearer <jwt>'", id="basic"),
        pytest.param("Bearer", r"expected 'Bearer <jwt>'", id="bearer-without-token"),
        pytest.param("Bearer    ", r"expected 'Bearer <jwt>'", id="bearer-with-blank-token"),
        pytest.param("abc", r"expected 'Bearer <jwt>'", id="bare-token"),
    ],
)
def test_it_refuses_an_authorization_header_without_a_bearer_token(header: str | None, reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        token_from_authorization(header)


@pytest.mark.parametrize("header", ["Bearer abc", "bearer abc", "  Bearer abc  "])
def test_it_takes_the_token_from_a_bearer_header(header: str) -> None:
    assert token_from_authorization(header) == "abc"
