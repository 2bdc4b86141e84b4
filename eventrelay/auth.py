"""API tokens: bearer JWT (HS256 only) → :class:`Principal`, and the one authorization rule.

Every transport (gRPC, WebSocket, REST) calls :func:`authenticate` and then :func:`can_read` /
:func:`can_write` (or the ``require_*`` forms); none of them decodes a token or compares topics
itself, so the rules cannot drift apart between APIs.
"""

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass

import jwt
from django.conf import settings

from eventrelay.errors import Forbidden, InvalidInput, Unauthenticated
from eventrelay.refs import TopicRef

ALGORITHM = "HS256"


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may touch."""

    subject: str
    grants: frozenset[TopicRef]
    admin: bool = False

    @property
    def rate_limit_key(self) -> str:
        return self.subject


def mint_token(
    topics: Iterable[str],
    *,
    ttl_seconds: int | None = 3600,
    admin: bool = False,
    subject: str | None = None,
    secret: str | None = None,
) -> str:
    """Sign a token granting ``topics`` (validated references) and optionally admin rights."""
    refs = [str(TopicRef.parse(topic)) for topic in topics]
    claims: dict[str, object] = {"topics": ",".join(refs), "iat": int(time.time())}
    if admin:
        claims["admin"] = True
    if subject:
        claims["sub"] = subject
    if ttl_seconds:
        claims["exp"] = int(time.time()) + ttl_seconds
    return jwt.encode(claims, secret or settings.ER_JWT_SECRET, algorithm=ALGORITHM)


def token_from_authorization(header: str | None) -> str:
    """Extract the token from an ``authorization: Bearer <jwt>`` header value."""
    if not header:
        raise Unauthenticated("missing token: send 'authorization: Bearer <jwt>'")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("malformed authorization header: expected 'Bearer <jwt>'")
    return token.strip()


# Verified tokens, so a client sending the same token on every call is not re-verified each time.
# Bounded, and an entry is only used until the token's own expiry.
_verified: dict[tuple[str, str], tuple[Principal, float | None]] = {}
_VERIFIED_MAX = 4096


def authenticate(token: str | None) -> Principal:
    """Verify ``token`` and return its :class:`Principal`; raise ``Unauthenticated`` otherwise.

    Successful verifications are remembered (per process, per secret) until the token expires.
    """
    key = (settings.ER_JWT_SECRET, token or "")
    cached = _verified.get(key)
    if cached is not None and (cached[1] is None or cached[1] > time.time()):
        return cached[0]
    principal, expires = _verify(token)
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    _verified[key] = (principal, expires)
    return principal


def _verify(token: str | None) -> tuple[Principal, float | None]:
    """Verify ``token`` and return its :class:`Principal`; raise ``Unauthenticated`` otherwise.

    Only HS256 is accepted (``alg: none``, HS512, RS256 … are refused), the signature must match
    ``ER_JWT_SECRET``, ``exp`` is enforced when present, and the token must carry a ``topics``
    claim unless it is an admin token.
    """
    if not token:
        raise Unauthenticated("missing token")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Unauthenticated("malformed token: not a JWT") from None
    if header.get("alg") != ALGORITHM:
        raise Unauthenticated(f"token algorithm {header.get('alg')!r} is not accepted: only {ALGORITHM} is")
    try:
        claims = jwt.decode(
            token,
            settings.ER_JWT_SECRET,
            algorithms=[ALGORITHM],
            options={"verify_aud": False, "verify_iss": False},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token has expired") from None
    except jwt.InvalidSignatureError:
        raise Unauthenticated("token signature does not match") from None
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None

    admin = claims.get("admin") is True
    grants = _parse_topics_claim(claims.get("topics"), admin=admin)
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        # Without a subject, the token itself identifies the caller (rate limits, logs).
        subject = "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    expires = claims.get("exp")
    return Principal(subject=subject, grants=grants, admin=admin), float(expires) if expires is not None else None


def _parse_topics_claim(raw: object, *, admin: bool) -> frozenset[TopicRef]:
    if raw is None:
        if admin:
            return frozenset()
        raise Unauthenticated("token has no 'topics' claim")
    if isinstance(raw, str):
        items = [item.strip() for item in raw.split(",") if item.strip()]
    elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        items = [item.strip() for item in raw]
    else:
        raise Unauthenticated("token 'topics' claim must be a comma-separated string or a list of strings")
    if not items and not admin:
        raise Unauthenticated("token 'topics' claim is empty")
    try:
        return frozenset(TopicRef.parse(item) for item in items)
    except InvalidInput as exc:
        raise Unauthenticated(f"token 'topics' claim is invalid: {exc.message}") from None


def can_read(principal: Principal, ref: TopicRef) -> bool:
    """May ``principal`` read ``ref``? ``users`` grants every id; ``users:123`` only that id."""
    return principal.admin or any(grant.covers(ref) for grant in principal.grants)


def can_write(principal: Principal, ref: TopicRef) -> bool:
    """May ``principal`` publish to ``ref``? The same rule as reading: one grant, both directions."""
    return can_read(principal, ref)


def can_see_topic(principal: Principal, name: str) -> bool:
    """May ``principal`` see that topic ``name`` exists (list it, read its description)? Admins see every
    topic; other tokens the topics a grant names, with or without an id."""
    return principal.admin or any(grant.name == name for grant in principal.grants)


def require_read(principal: Principal, ref: TopicRef) -> None:
    if not can_read(principal, ref):
        raise Forbidden(f"token does not grant topic '{ref}'")


def require_write(principal: Principal, ref: TopicRef) -> None:
    if not can_write(principal, ref):
        raise Forbidden(f"token does not grant topic '{ref}'")


def require_admin(principal: Principal) -> None:
    if not principal.admin:
        raise Forbidden("this operation needs an admin token")
