"""What every process's log lines carry and how they are written (settings.LOGGING, docs/operations.md "Logs").

A request id names the work one client request caused, in whichever process does it: the web process (the
``X-Request-Id`` header, eventrelay.request_ids), the gRPC process (``x-request-id`` metadata,
grpc_api.request_ids), a WebSocket connection (ws_api.consumers) and the Celery tasks any of them queued
(eventrelay.celery passes it in the task's headers). It lives in a context variable, so each asyncio task (one per
ASGI request, gRPC call or WebSocket connection) and each thread has its own; :class:`RequestIdFilter` stamps it on
every record the console handler writes.
"""

import logging
import logging.config
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

#: The request id of the work under way in this context ("" when none: start-up, beat's sweeps).
request_id: ContextVar[str] = ContextVar("eventrelay_request_id", default="")

# What a client may send as its own request id: what proxies and tracing tools make (UUIDs, hex, base64url,
# dotted or colon-separated ids) and nothing that could forge a log line or a header (no spaces, quotes, newlines).
_ACCEPTED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def configure(config: dict[str, Any]) -> None:
    """settings.LOGGING_CONFIG: ``config`` as ``logging.config.dictConfig`` reads it, and Python's warnings (a
    library's deprecation, Celery's start-up checks) logged through it rather than printed, unformatted, to stderr."""
    logging.config.dictConfig(config)
    logging.captureWarnings(True)


def new_request_id() -> str:
    return uuid.uuid4().hex


def accepted_request_id(given: str | bytes | None) -> str:
    """The client's own request id when it is one we can log and echo safely, else a new one."""
    if isinstance(given, bytes):
        given = given.decode("latin-1")
    if given and _ACCEPTED_REQUEST_ID.fullmatch(given):
        return given
    return new_request_id()


def current_request_id() -> str:
    return request_id.get()


@contextmanager
def request_id_bound(value: str) -> Iterator[None]:
    """Run the block with ``value`` as the current request id (for work done on another thread's behalf)."""
    token = request_id.set(value)
    try:
        yield
    finally:
        request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Stamps every record with the current request id (``record.request_id``; "" when there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = request_id.get()
        return True


class PlainFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger> [<request id>]: <message>``; the bracket only when the line belongs to a request."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", "")
        record.request_tag = f" [{rid}]" if rid else ""
        return super().format(record)


class JsonFormatter(_LibraryJsonFormatter):
    """One JSON object per line (``ER_LOG_FORMAT=json``): ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, ``request_id``, a record's extra fields (``status_code``...), and ``traceback``, one string,
    when the record has one."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}{request_id}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "exc_info": "traceback"},
            # Django's request logging passes the request object along: its repr says nothing the message does not.
            reserved_attrs=[*RESERVED_ATTRS, "request", "request_tag"],
            json_ensure_ascii=False,
            **kwargs,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
