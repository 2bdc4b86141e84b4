"""The stored encoding: bytes a transport computes for each event once, when it is stored, kept beside it.

A transport that serves events in a binary form of its own (gRPC) registers an encoding here at start-up
(``grpc_api.apps``). The core calls it through :class:`StoredEncoding` only, and never learns the format:
publish hands each new event to the encoding as it is written, the bytes go into the topic table's
``wire`` column, and :func:`events.services.pull_encoded` returns a page of them joined by PostgreSQL,
which is how a transport serves a pull without per-event work in Python.

The column is a cache of what the encoding would compute: NULL is always allowed (rows stored before the
column existed, or while no encoding was registered) and is encoded when read. A transport that changes
its format clears the column (one ``UPDATE ... SET wire = NULL`` per topic table) rather than rewriting it.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from events.canonical import StoredEvent

# Encodes one new event as it is stored: (offset, eventId text, name, topic reference, source, userId,
# occurred at, context JSON, data JSON). One is made per transaction, so it may share work between the
# events stored together (most share a topic, a source and an occurrence time).
RowEncoder = Callable[[int, str, str, str, str, str | None, datetime, str, str], bytes]


class StoredEncoding(Protocol):
    def row_encoder(self) -> RowEncoder:
        """A fresh encoder for the events of one transaction."""
        ...

    def encode(self, event: StoredEvent) -> bytes:
        """One stored event's bytes (for rows that have none)."""
        ...


_registered: StoredEncoding | None = None


def register(encoding: StoredEncoding) -> None:
    """Make ``encoding`` the one every publish in this process fills the column with."""
    global _registered
    _registered = encoding


def registered() -> StoredEncoding | None:
    return _registered


def encoded(event: StoredEvent) -> bytes:
    """``event``'s stored bytes, or the registered encoding's for an event stored without them."""
    if event.wire is not None:
        return event.wire
    if _registered is None:
        raise LookupError("no stored encoding is registered (INSTALLED_APPS is missing the transport that owns it)")
    return _registered.encode(event)
