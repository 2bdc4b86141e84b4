"""State kept per event loop: each asyncio loop (a gRPC server, a web process, a test) gets its own.

Async clients, queues and hubs hold futures and connections that belong to the loop that made them, so
they cannot be shared between loops. :class:`PerLoop` keys them by the loop object itself, never by
``id(loop)`` (a new loop can reuse a dead one's id and inherit its half-finished state), and drops the
values of loops that have closed whenever it makes a new one, so the registry cannot grow without end.
"""

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """One ``factory()`` value per running event loop, made on first use."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._values: dict[asyncio.AbstractEventLoop, T] = {}

    def get(self) -> T:
        """The running loop's value (call it from a coroutine)."""
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None:
            for closed in [other for other in self._values if other.is_closed()]:
                del self._values[closed]
            value = self._values[loop] = self._factory()
        return value

    def __len__(self) -> int:
        return len(self._values)
