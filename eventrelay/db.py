"""Database connections: running Django ORM work from asyncio code (the gRPC server, WebSocket
consumers, the live hub), and the web process's per-request connections."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import psycopg
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished
from django.db import close_old_connections, connection, connections

P = ParamSpec("P")
R = TypeVar("R")


async def run_sync(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run ``function`` in a worker thread with a healthy database connection.

    ``thread_sensitive=False`` lets calls run in parallel on the executor's threads (each keeps its
    own connection), instead of queueing every database call of the process behind one thread.
    Idle subscribers hold no connection: only these short calls do.
    """

    def call() -> R:
        # What Django does at the start of each HTTP request: drop broken or expired connections.
        close_old_connections()
        return function(*args, **kwargs)

    return await sync_to_async(call, thread_sensitive=False)()


@contextmanager
def prepared_cursor() -> Iterator[psycopg.Cursor[Any]]:
    """A cursor of this thread's database connection (in its transaction, if one is open) that binds parameters
    on the server, so that ``execute(sql, params, prepare=True)`` has PostgreSQL parse and plan the statement
    once per connection instead of at every call. Django's cursors bind on the client, which cannot prepare:
    for the few statements run on every fetch and ack, the parsing and planning cost PostgreSQL more than
    running them. Errors come out as Django's database errors, as from Django's own cursors.

    Server-side binding sends each parameter with its type: what the statement does with it must be valid
    for the types psycopg picks (an ``int`` is a smallint, integer or bigint by its size)."""
    connection.validate_no_broken_transaction()
    with connection.wrap_database_errors:
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            yield cursor


def _close_request_connections(sender: Any, **kwargs: Any) -> None:
    connections.close_all()


def close_connections_after_each_request() -> None:
    """Close an HTTP request's database connections when it ends (the web process calls this).

    Under ASGI Django runs each synchronous request on a thread of its own, which ends with the
    request: a connection kept for reuse (``CONN_MAX_AGE``) is never reused, and stays open until
    the garbage collector happens to free its thread's state, so a busy web process piles up
    connections until PostgreSQL refuses everyone. ``request_finished`` runs on the request's own
    thread, where its connection lives. The executor threads of :func:`run_sync` (WebSocket
    consumers, the live hub) are long-lived and few: they keep their persistent connections.
    """
    request_finished.connect(_close_request_connections, sender=ASGIHandler, dispatch_uid="er_close_request_db")


def release_connection() -> None:
    """Give this thread's database connection back to the process's pool (``ER_DB_POOL``) before a long wait that
    needs none; the next query takes one again. Without a pool, or inside a transaction, nothing changes."""
    if getattr(connection, "pool", None) is not None and not connection.in_atomic_block:
        connection.close()
