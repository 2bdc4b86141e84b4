"""Django's error pages (``handler400``/``403``/``404``/``500`` in eventrelay/urls.py), by path.

Under ``/api/v1/`` every answer is the REST API's error shape, ``{"error": {"code", "message"}}``, also for what
never reaches a DRF view: a path no route matches (a trailing slash, a webhook id that is not a number) and a bug
that escapes every handler. A 500 says only that: what went wrong is in the log (``django.request``, with its
traceback), never in the body. Everywhere else (the viewer, the admin) Django's own pages stay.
"""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

API_PREFIX = "/api/v1"


def is_api_path(request: HttpRequest) -> bool:
    path = request.path_info
    return path == API_PREFIX or path.startswith(f"{API_PREFIX}/")


def _api_error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request):
        return _api_error("invalid", "bad request", 400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request):
        return _api_error("forbidden", "permission denied", 403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request):
        return _api_error(
            "not_found",
            f"no endpoint at {request.method} {request.path}: the API's paths are listed at /api/v1/docs",
            404,
        )
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_api_path(request):
        return _api_error("error", "internal server error", 500)
    return defaults.server_error(request)
