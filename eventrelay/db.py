"""Running Django ORM work from asyncio code (the gRPC server, WebSocket consumers, the live hub)."""

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

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
