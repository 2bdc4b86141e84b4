"""One error shape for the REST API: ``{"error": {"code", "message", "field"}}`` (docs/rest.md)."""

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from eventrelay.errors import (
    DEPENDENCY_ERRORS,
    OUTAGE_RETRY_AFTER_SECONDS,
    EventRelayError,
    RateLimited,
    Unavailable,
    dependency_outage,
)

logger = logging.getLogger(__name__)

STATUS_BY_CODE = {
    "invalid": status.HTTP_400_BAD_REQUEST,
    "unauthenticated": status.HTTP_401_UNAUTHORIZED,
    "forbidden": status.HTTP_403_FORBIDDEN,
    "not_found": status.HTTP_404_NOT_FOUND,
    "conflict": status.HTTP_409_CONFLICT,
    "too_large": status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    "rate_limited": status.HTTP_429_TOO_MANY_REQUESTS,
    "unavailable": status.HTTP_503_SERVICE_UNAVAILABLE,
    "error": status.HTTP_500_INTERNAL_SERVER_ERROR,
}


def error_response(code: str, message: str, field: str | None = None, http_status: int | None = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    return Response({"error": body}, status=http_status or STATUS_BY_CODE.get(code, 400))


def handle_exception(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's exception handler, speaking our error shape for every error a client can cause."""
    if isinstance(exc, RateLimited):
        response = error_response(exc.code, exc.message)
        response["Retry-After"] = str(exc.retry_after_seconds)
        return response
    if isinstance(exc, DEPENDENCY_ERRORS):
        logger.warning("answered 503: %s: %s", type(exc).__name__, exc)
        exc = dependency_outage(exc)
    if isinstance(exc, Unavailable):
        response = error_response(exc.code, exc.message)
        response["Retry-After"] = str(OUTAGE_RETRY_AFTER_SECONDS)
        return response
    if isinstance(exc, EventRelayError):
        return error_response(exc.code, exc.message, exc.field)
    if isinstance(exc, RequestDataTooBig):
        return error_response("too_large", "request body is too large")
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        message = str(exc.detail)
        if isinstance(exc, exceptions.NotAuthenticated):
            message = "missing token: send 'authorization: Bearer <jwt>'"
        response = error_response("unauthenticated", message)
        response["WWW-Authenticate"] = 'Bearer realm="eventrelay"'
        return response
    if isinstance(exc, exceptions.PermissionDenied):
        return error_response("forbidden", str(exc.detail))
    if isinstance(exc, Http404 | exceptions.NotFound):
        return error_response("not_found", str(exc) or "not found")
    if isinstance(exc, exceptions.ParseError):
        return error_response("invalid", f"request body is not valid JSON: {exc.detail}")
    if isinstance(exc, exceptions.ValidationError):
        field, message = _first_error(exc.detail)
        return error_response("invalid", f"{field}: {message}" if field else message, field)
    if isinstance(exc, exceptions.APIException):
        response = exception_handler(exc, context)
        if response is not None:
            code = "invalid" if response.status_code < 500 else "error"
            return error_response(code, str(exc.detail), http_status=response.status_code)
    return None


def _first_error(detail: Any, prefix: str = "") -> tuple[str, str]:
    if isinstance(detail, dict):
        key, value = next(iter(detail.items()))
        name = key if key != "non_field_errors" else ""
        return _first_error(value, f"{prefix}.{name}" if prefix and name else prefix or name)
    if isinstance(detail, list) and detail:
        return _first_error(detail[0], prefix)
    return prefix, str(detail)
