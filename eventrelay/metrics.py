"""Prometheus metrics (docs/operations.md): every metric object of every process, who may read them, how they
are served.

The metric objects live here, in the kernel, so every layer can count what happens where it happens (a publish in
``events.services``, an attempt in ``webhooks.delivery``) without importing a layer above it. Each process counts
only what it does itself and serves its own figures: the ``web`` process at ``/metrics`` on its HTTP port
(``eventrelay.views.metrics``), the others on a port of their own (:func:`start_server`, started by
``grpc_api.server`` and by ``eventrelay.celery``'s ``worker_init``/``beat_init``).

Figures that come from the database (webhook backlogs, consumer lag, topic offsets) are the same whichever process
reads them, so they are read at scrape time by collectors the apps register (:func:`register_database_collector`,
from their ``AppConfig.ready``), and only the ``web`` process's ``/metrics`` exports them: one series each, not one
per process.

A Celery worker started with ``--pool prefork`` runs its tasks in child processes; with
``PROMETHEUS_MULTIPROC_DIR`` set (an empty directory, before the worker starts), each child writes its figures
there and the worker's port serves their sum (prometheus_client's multiprocess mode).
"""

import hmac
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DatabaseError
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from eventrelay.auth import authenticate, token_from_authorization
from eventrelay.errors import Unauthenticated

logger = logging.getLogger(__name__)

PREFIX = "eventrelay_"

# No ``*_created`` series beside every counter and histogram: in the text format Prometheus stores each as a
# series of its own, which no rule or panel here reads.
disable_created_metrics()

# Seconds: from a millisecond (a small publish, a frame to a subscriber on the same host) to the longest a
# webhook request may take by default (ER_WEBHOOK_TIMEOUT_S) and beyond.
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# --- Counted where it happens, in the process where it happens ------------------------------------------------

EVENTS_PUBLISHED = Counter(
    PREFIX + "events_published_total",
    "Events newly stored by publishes (a repeated eventId is not counted again), by topic name and source.",
    ["topic", "source"],
)
PUBLISH_DURATION = Histogram(
    PREFIX + "publish_duration_seconds",
    "Publish calls, from the service call to its answer (validation, storage, commit), by transport.",
    ["transport"],
    buckets=FAST_BUCKETS,
)
LIVE_SUBSCRIBERS = Gauge(
    PREFIX + "live_subscribers",
    "Live subscriptions (WebSocket subscribe, gRPC StreamEvents) this process is serving now.",
    ["transport"],
    multiprocess_mode="livesum",
)
LIVE_DELIVERY = Histogram(
    PREFIX + "live_delivery_seconds",
    "From a live event's commit (its announcement, or its storing when the feed's periodic check found it) to "
    "its frame written to a subscriber, by transport. Events older than the subscription are not counted.",
    ["transport"],
    buckets=FAST_BUCKETS,
)
SLOW_CONSUMERS = Counter(
    PREFIX + "slow_consumers_total",
    "Live subscriptions ended because their reader fell too far behind (slow_consumer), by transport.",
    ["transport"],
)
WEBHOOK_DELIVERIES = Counter(
    PREFIX + "webhook_deliveries_total",
    "Webhook HTTP attempts by outcome: delivered (acknowledged), failed (to be retried, or the destination "
    "disabled), undeliverable (failed and the event set aside). One count per attempt.",
    ["outcome"],
)
WEBHOOK_DELIVERY_DURATION = Histogram(
    PREFIX + "webhook_delivery_seconds",
    "Webhook HTTP attempts, from the request to the response read (or the error).",
    buckets=HTTP_BUCKETS,
)
RATE_LIMITED = Counter(
    PREFIX + "rate_limited_total",
    "Calls refused by a rate limit, by action (publish, request, auth_failure, connect).",
    ["action"],
)
RETENTION_DELETED = Counter(
    PREFIX + "retention_deleted_events_total",
    "Events deleted by retention sweeps, by topic name.",
    ["topic"],
)

# Every outcome and transport appears from the start (at 0), so a rate() over them is defined before the first
# event of each kind.
for _outcome in ("delivered", "failed", "undeliverable"):
    WEBHOOK_DELIVERIES.labels(_outcome)
for _transport in ("grpc", "websocket"):
    LIVE_SUBSCRIBERS.labels(_transport)
    SLOW_CONSUMERS.labels(_transport)


def count_published(topic_name: str, source: str, events: int) -> None:
    """``events`` more events stored in ``topic_name`` by publishes from ``source``: one call per committed batch."""
    EVENTS_PUBLISHED.labels(topic_name, source).inc(events)


def observe_live_delivery(observe: Callable[[float], None], committed_at: float | None) -> None:
    """A live frame was written; ``observe`` is ``LIVE_DELIVERY.labels(transport).observe``, bound once by the
    transport. ``committed_at`` (wall clock: the commit happened in another process) is None for events read
    back from storage, which are not live deliveries."""
    if committed_at is not None:
        observe(max(time.time() - committed_at, 0.0))


# --- Figures the database holds, read at scrape time by the web process ----------------------------------------

_database_collectors: list[Collector] = []


def register_database_collector(collector: Collector) -> None:
    """Add a collector of figures read from the database (an app's, from its ``AppConfig.ready``). Exported only
    by the web process's ``/metrics``. Registering the same class twice (``ready`` run again) keeps the first."""
    if not any(type(existing) is type(collector) for existing in _database_collectors):
        _database_collectors.append(collector)


class _DatabaseFigures(Collector):
    """Every registered database collector. One that fails (PostgreSQL down, a topic deleted mid-scrape) is left
    out of this scrape and logged; the process's own metrics are still served."""

    def collect(self) -> Iterable[Metric]:
        for collector in _database_collectors:
            try:
                families = list(collector.collect())
            except DatabaseError as error:
                logger.warning("metrics: %s could not read the database: %s", type(collector).__name__, error)
                continue
            yield from families


class _Combined(Collector):
    def __init__(self, *parts: Collector) -> None:
        self.parts = parts

    def collect(self) -> Iterable[Metric]:
        for part in self.parts:
            yield from part.collect()


def process_registry() -> Collector:
    """What this process serves: its own metrics, or in multiprocess mode the sum of every process writing to
    ``PROMETHEUS_MULTIPROC_DIR`` (a prefork worker's children)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def render(accept: str | None, *, with_database: bool) -> tuple[bytes, str]:
    """The exposition body and its content type, in the format the scraper's ``Accept`` asks for."""
    encoder, content_type = choose_encoder(accept or "")
    source = process_registry()
    if with_database:
        source = _Combined(source, _DatabaseFigures())
    return encoder(source), content_type


# --- Who may read them ------------------------------------------------------------------------------------------


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def access_refused(remote_address: str, authorization: str | None) -> tuple[int, str] | None:
    """None when the caller may read ``/metrics``, else the HTTP status and why. Open from loopback; from anywhere
    else it takes ``Authorization: Bearer`` with ``ER_METRICS_TOKEN`` or an admin API token."""
    if is_loopback(remote_address):
        return None
    try:
        token = token_from_authorization(authorization)
    except Unauthenticated as error:
        return 401, f"/metrics needs an admin token or ER_METRICS_TOKEN from {remote_address}: {error.message}"
    expected = settings.ER_METRICS_TOKEN
    if expected and hmac.compare_digest(token.encode(), expected.encode()):
        return None
    try:
        principal = authenticate(token)
    except Unauthenticated as error:
        return 401, f"token refused: {error.message}"
    if not principal.admin:
        return 403, "/metrics needs an admin token (or ER_METRICS_TOKEN)"
    return None


# --- The metrics port of the processes without an HTTP server of their own (grpc, worker, beat) -----------------


class _Handler(BaseHTTPRequestHandler):
    server_version = "EventRelay-metrics"

    def do_GET(self) -> None:
        if urlsplit(self.path).path != "/metrics":
            self._answer(404, b"not found: metrics are at /metrics\n", "text/plain; charset=utf-8")
            return
        refused = access_refused(self.client_address[0], self.headers.get("Authorization"))
        if refused is not None:
            status, reason = refused
            self._answer(status, f"{reason}\n".encode(), "text/plain; charset=utf-8", bearer=status == 401)
            return
        body, content_type = render(self.headers.get("Accept"), with_database=False)
        self._answer(200, body, content_type)

    def _answer(self, status: int, body: bytes, content_type: str, *, bearer: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if bearer:
            self.send_header("WWW-Authenticate", "Bearer")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # One line per scrape every few seconds would drown the process's log.
        return


def start_server(port: int, host: str, process: str, setting: str) -> ThreadingHTTPServer | None:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; None when ``port`` is 0 (off).

    A port already taken (a second grpc process on the same machine, started with the same settings) is logged
    and this process runs without its metrics port: metrics are not worth refusing to serve for. ``setting`` names
    the variable that chooses the port, for that message."""
    if not port:
        return None
    try:
        server = ThreadingHTTPServer((host, port), _Handler)
    except OSError as error:
        logger.error(
            "%s: cannot serve metrics on %s:%s (%s); set %s to a free port (0: no metrics port)",
            process,
            host,
            port,
            error,
            setting,
        )
        return None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"metrics-{process}", daemon=True).start()
    logger.info("%s: metrics at http://%s:%s/metrics", process, host, server.server_address[1])
    return server
