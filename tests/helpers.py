"""Helpers more than one test module uses: what is stored in PostgreSQL, what a gRPC pull finds, tokens
no honest library would sign, the Standard Webhooks check, a process's memory. Written once, here.
Fixtures that several modules share are in tests/conftest.py."""

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import connection, connections

from eventrelay.auth import mint_token
from events.storage import Batch, store_batches
from topics.tables import events_table_name

if TYPE_CHECKING:
    from tests.grpc_client import Client

T = TypeVar("T")


# --- PostgreSQL, read directly (the test process's own connection) ---------------------------------


def table_exists(table: str) -> bool:
    """Whether ``table`` (a table name, e.g. ``events_table_name(topic)``) exists in the public schema."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [f"public.{connection.ops.quote_name(table)}"])
        return cursor.fetchone()[0] is not None


def index_names(table: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", [table])
        return {row[0] for row in cursor.fetchall()}


def stored_rows(topic: str) -> list[tuple[int, str]]:
    """``(offset, name)`` of every event stored in ``topic``'s table, in offset order."""
    table = connection.ops.quote_name(events_table_name(topic))
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT "offset", name FROM {table} ORDER BY "offset"')
        return cursor.fetchall()


def stored_offsets(topic: str) -> list[int]:
    return [offset for offset, _ in stored_rows(topic)]


def store(topic_name: str, batches: list[tuple[Any, ...]]) -> list[Any]:
    """``store_batches`` of plain (ref, events, source) tuples: each batch's result."""
    return store_batches(topic_name, [Batch(*batch) for batch in batches]).results


# --- What a client of the gRPC API sees ---------------------------------------------------------------


def pulled_offsets(client: "Client", topic: str) -> list[int]:
    """Every offset a gRPC pull finds in ``topic``, page after page (usable where SQL is not: async tests)."""
    offsets: list[int] = []
    offset = 1
    while True:
        reply = client.pull(topic, offset, batch_size=1000)
        if not reply.events:
            return offsets
        offsets += [event.offset for event in reply.events]
        offset = reply.next_offset


def last_offset_of(client: "Client", topic: str) -> int:
    """The topic's last offset as ListTopics reports it."""
    [listed] = [listed for listed in client.list_topics() if listed.name == topic]
    return listed.last_offset


# --- Tokens -----------------------------------------------------------------------------------------------


def admin_token() -> str:
    return mint_token([], admin=True)


def token_granting(*refs: str) -> str:
    """A signed token for these topic refs, valid for an hour."""
    return mint_token(refs, ttl_seconds=3600)


def b64url(data: dict[str, object] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hand_made_token(header: dict[str, object], claims: dict[str, object], signature: bytes = b"") -> str:
    """A JWT assembled segment by segment, for headers no honest library would sign."""
    return f"{b64url(header)}.{b64url(claims)}.{b64url(signature) if signature else ''}"


# --- Webhooks ---------------------------------------------------------------------------------------------


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks check, written here from the spec (not the project's signing code)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(sig == f"v1,{expected}" for sig in headers["webhook-signature"].split(" "))


# --- Processes ---------------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB, as the kernel reports it."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


# --- Event loops ---------------------------------------------------------------------------------------


def in_a_fresh_loop(make_coroutine: "Callable[[], Awaitable[T]]") -> T:
    """``asyncio.run`` with the loop's threads reduced to one, whose database connection is closed
    at the end (left open, it would keep the test database from being dropped)."""

    async def main() -> T:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1))
        try:
            return await make_coroutine()
        finally:
            await loop.run_in_executor(None, connections.close_all)

    return asyncio.run(main())
