"""Django's PostgreSQL backend, with the connection pool checking a pooled connection by its socket, and
connecting again soon after an outage.

Django's pool (``OPTIONS["pool"]``) runs psycopg_pool's check on every checkout when ``CONN_HEALTH_CHECKS`` is on:
an empty query, one round trip to PostgreSQL. A webhook delivery thread gives its connection back before each
request to a receiver and takes one again after it, so that round trip was paid once per delivery. A connection
whose backend is gone (PostgreSQL restarted, the backend was terminated) has something waiting on its socket: the
server's last error message, or the end of the stream. So the check here polls the socket first, without
waiting, and runs the empty query only when something is there (a connection libpq already knows is broken is
refused at once).
"""

import select
from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg import pq
from psycopg_pool import ConnectionPool


def check_pooled_connection(conn: psycopg.Connection[Any]) -> None:
    """psycopg_pool's ``check``: raise if ``conn`` cannot be used. A healthy idle connection has nothing to read;
    anything readable (an error, the socket's end, a notice) gets the full check, which reads it."""
    if conn.closed or conn.pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError("the pooled connection is closed")
    # poll(), not select(): a worker with many receivers' sockets open can hold descriptors past select()'s 1,024.
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN)
    if poller.poll(0):
        ConnectionPool.check_connection(conn)


# How long the pool retries a failed connection before it starts over (psycopg_pool's reconnect_timeout).
RECONNECT_ROUND_S = 3.0


def reconnect_again(pool: ConnectionPool) -> None:
    """psycopg_pool's ``reconnect_failed``: start connecting again at once. The pool retries a failed connection
    with a doubling delay; by default it gives up after five minutes, and after a long outage its next try can be
    minutes away while threads wait for a connection although PostgreSQL is back. In short rounds, started
    over each time (``check`` drops what is broken and grows the pool), it tries again every second or two."""
    if not pool.closed:
        pool.check()


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self) -> ConnectionPool | None:
        """Django's ``pool``, created with :func:`check_pooled_connection` as its check (Django passes its own
        ``check`` to the pool, so it cannot be set through ``OPTIONS["pool"]``)."""
        pool_options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not pool_options:
            return None
        # (django-stubs do not declare the pool's internals this reuses: the pools by alias, the configure hook.)
        pools: dict[str, ConnectionPool] = self._connection_pools  # type: ignore[attr-defined]
        if self.alias not in pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            connect_kwargs = self.get_connection_params()
            connect_kwargs["autocommit"] = True  # (as Django's: it sets the connection's mode itself later)
            pool = ConnectionPool(
                kwargs=connect_kwargs,
                open=False,
                configure=self._configure_connection,  # type: ignore[attr-defined]
                check=check_pooled_connection if self.settings_dict["CONN_HEALTH_CHECKS"] else None,
                reconnect_timeout=RECONNECT_ROUND_S,
                reconnect_failed=reconnect_again,
                **({} if pool_options is True else pool_options),
            )
            # (As Django's: threads racing here each build a pool, unopened; the first one set is used.)
            pools.setdefault(self.alias, pool)
        return pools[self.alias]
