"""Bearer JWT authentication for DRF, through the one token check every API shares."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from eventrelay import ratelimit
from eventrelay.auth import Principal, authenticate, token_from_authorization
from eventrelay.errors import Unauthenticated


class PrincipalUser:
    """What ``request.user`` is for an API call: the token's principal, always authenticated."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    def __str__(self) -> str:
        return self.principal.subject


class BearerTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[PrincipalUser, str] | None:
        header = request.META.get("HTTP_AUTHORIZATION")
        if not header:
            return None  # -> 401 "missing token" from the permission check
        try:
            token = token_from_authorization(header)
            return PrincipalUser(authenticate(token)), token
        except Unauthenticated as error:
            # Counts against the client IP's failure budget (brute-force protection).
            ratelimit.check("auth_failure", request.META.get("REMOTE_ADDR", "unknown"))
            raise exceptions.AuthenticationFailed(error.message) from None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="eventrelay"'


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
