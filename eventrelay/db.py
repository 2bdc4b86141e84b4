"""Database connections: running Django ORM work from asyncio code (the gRPC server, WebSocket
consumers, the live hub), and the web process's per-request connections."""

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, ParamSpec, TypeVar

import psycopg
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished
from django.db import close_old_connections, connection, connections
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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


_async_pool: AsyncConnectionPool | None = None
ASYNC_POOL_WAIT_S = 3.0


@asynccontextmanager
async def serving_async_pool(max_size: int) -> AsyncIterator[None]:
    """While the block runs, :func:`async_pool` is a pool of up to ``max_size`` asyncio connections to the
    database Django uses, with Django's connection parameters, in autocommit mode. The gRPC server opens it for
    the whole of its serving, so the few statements every consumer fetch and ack runs (``consumers.aleases``)
    wait in its event loop rather than on a worker thread. Run work on it with :func:`on_async_pool`."""
    global _async_pool
    params = {key: value for key, value in connection.get_connection_params().items() if key != "cursor_factory"}
    pool: AsyncConnectionPool = AsyncConnectionPool(
        kwargs={**params, "autocommit": True},
        min_size=1,
        max_size=max_size,
        open=False,
        name="er-async",
        # While PostgreSQL is down the pool keeps trying to connect; a call waits this long for a connection and
        # then fails as an outage (UNAVAILABLE), as the synchronous path fails at once.
        timeout=ASYNC_POOL_WAIT_S,
        # The pool retries a failed connection with a doubling delay, for reconnect_timeout (five minutes by
        # default): after a long outage its next try can be minutes away, and every call until then would time
        # out although PostgreSQL is back. Given up this soon, the next call that finds the pool empty makes it
        # connect at once.
        reconnect_timeout=ASYNC_POOL_WAIT_S,
    )
    await pool.open(wait=False)
    _async_pool = pool
    try:
        yield
    finally:
        _async_pool = None
        await pool.close()


def async_pool() -> AsyncConnectionPool | None:
    """The pool :func:`serving_async_pool` opened in this process, if any."""
    return _async_pool


async def on_async_pool(pool: AsyncConnectionPool, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[R]]) -> R:
    """``work`` on a connection of ``pool``. A connection that turns out broken (PostgreSQL restarted while it sat
    in the pool, which does not check connections as it hands them out: that would cost a round trip each
    time) makes the pool check all of its idle ones, and ``work`` runs once more on a good one.

    Any connection-level error (``OperationalError``) but the pool's own timeout is retried once: right after a
    restart the first error read is often the server's shutdown notice, before the connection counts as
    broken. A transaction that failed did nothing; a connection that broke after the commit can only have
    leased events the caller never saw, which come back when their lease ends."""
    async with pool.connection() as conn:
        try:
            return await work(conn)
        except PoolTimeout:
            raise
        except psycopg.OperationalError:
            pass
    await pool.check()
    async with pool.connection() as conn:
        return await work(conn)


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
