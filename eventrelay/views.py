"""The live viewer page, process health endpoints for load balancers and ``make run``, and ``/metrics``."""

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from eventrelay import metrics as prometheus


@require_safe
def viewer(request: HttpRequest) -> HttpResponse:
    """The live viewer (``/``): a static page whose script talks to ``/ws/events`` itself.

    No login: the token pasted into the page is the credential, and the browser sends it only in the
    WebSocket URL, so this view never sees one.
    """
    return render(request, "eventrelay/viewer.html")


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving HTTP. Touches nothing else."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to serve traffic: PostgreSQL and Redis both answer. 503 names what is down."""
    problems: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001  (any failure means "not ready"; the message says which)
        problems["postgresql"] = str(exc).strip() or exc.__class__.__name__
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001
        problems["redis"] = str(exc).strip() or exc.__class__.__name__
    if problems:
        return JsonResponse({"status": "unavailable", "problems": problems}, status=503)
    return JsonResponse({"status": "ok", "postgresql": "ok", "redis": "ok"})


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics of this process, and the figures read from the database (``eventrelay.metrics``). Open
    from loopback; from anywhere else it takes an admin token or ``ER_METRICS_TOKEN``."""
    refused = prometheus.access_refused(request.META.get("REMOTE_ADDR", ""), request.headers.get("Authorization"))
    if refused is not None:
        status, reason = refused
        response = HttpResponse(f"{reason}\n", status=status, content_type="text/plain; charset=utf-8")
        if status == 401:
            response["WWW-Authenticate"] = "Bearer"
        return response
    body, content_type = prometheus.render(request.headers.get("Accept"), with_database=True)
    return HttpResponse(body, content_type=content_type)
