"""The two statements run on every fetch and ack (``consumers.leases.lease_fresh`` and ``check_and_ack``), on an
asyncio connection of ``eventrelay.db.async_pool`` rather than on a thread's Django connection: a process that
opened the pool (the gRPC server) then waits for PostgreSQL in its event loop, with no hop to a worker thread
and back (docs/consumers.md, "That fetch is one round trip"). Same SQL, same transaction, same answers as the
synchronous versions; everything else a consumer does stays synchronous."""

from typing import Any

import psycopg

from consumers.leases import (
    _LOCK_FOR_FETCH,
    EVENT_COLUMNS,
    AckIds,
    AckVerdict,
    EncodedHandouts,
    FetchOutcome,
    _ack_statement,
    _event_of,
    _lease_statement,
)
from consumers.models import Consumer
from events.encoding import encoded
from topics.tables import quoted_table

Connection = psycopg.AsyncConnection[Any]


async def lease_fresh_encoded(
    conn: Connection, consumer: Consumer, max_events: int, acks: AckIds | None = None
) -> tuple[FetchOutcome[EncodedHandouts] | None, AckVerdict | None]:
    """``consumers.leases.lease_fresh`` with ``encoded_only``, on ``conn`` (in autocommit mode)."""
    topic_id, names = consumer.ref_id or None, consumer.event_names
    verdict: AckVerdict | None = None
    for whole_range in (False, True):
        tx, lock, lease, acking = conn.cursor(), conn.cursor(), conn.cursor(), conn.cursor()
        try:
            async with conn.pipeline():
                await tx.execute("BEGIN")
                await lock.execute(_LOCK_FOR_FETCH, [consumer.pk], prepare=True)
                if acks is not None:
                    await acking.execute(
                        *_ack_statement(consumer.pk, consumer.topic.name, acks.epochs, acks.offsets), prepare=True
                    )
                await lease.execute(
                    *_lease_statement(
                        consumer,
                        topic_id,
                        names,
                        max_events,
                        acks or AckIds([], []),
                        encoded_only=True,
                        whole_range=whole_range,
                    ),
                    prepare=True,
                )
                await tx.execute("COMMIT")
        except BaseException:
            # A statement failed: PostgreSQL skipped the rest, the COMMIT too, and the transaction is open.
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                await conn.rollback()
            raise
        locked = await lock.fetchone()
        if acks is not None:
            verdict = await _settle_ack(acking, consumer, acks)
            acks = None  # applied: a second try below leases only
        rows = await lease.fetchall()
        if locked is None or not rows or rows[0][0]:
            return None, verdict  # gone, something due, or the acks were refused
        epoch, next_offset, head = locked
        if rows[0][1] is not None:
            return FetchOutcome(await _encoded_handouts(lease, consumer.topic.name, rows), epoch, None, True), verdict
        if whole_range or names or topic_id or not next_offset + max_events <= head:
            return None, verdict
    return None, verdict


async def check_and_ack(conn: Connection, consumer: Consumer, acks: AckIds) -> AckVerdict | None:
    """``consumers.leases.check_and_ack`` on ``conn`` (in autocommit mode)."""
    cursor = conn.cursor()
    await cursor.execute(*_ack_statement(consumer.pk, consumer.topic.name, acks.epochs, acks.offsets), prepare=True)
    return await _settle_ack(cursor, consumer, acks)


async def _settle_ack(cursor: psycopg.AsyncCursor[Any], consumer: Consumer, acks: AckIds) -> AckVerdict | None:
    row = await cursor.fetchone()
    if row is None:
        return None
    if row[2] and row[3]:  # (the second look of consumers.leases.check_and_ack)
        await cursor.execute(*_ack_statement(consumer.pk, consumer.topic.name, acks.epochs, acks.offsets), prepare=True)
        row = await cursor.fetchone() or row
    return AckVerdict(int(row[0]), int(row[1]), bool(row[2]))


async def _encoded_handouts(
    cursor: psycopg.AsyncCursor[Any], topic_name: str, rows: list[tuple[Any, ...]]
) -> EncodedHandouts:
    """Rows of (due, offset, wire), all first deliveries: events stored without their encoding are read whole
    and encoded."""
    offsets = [offset for _, offset, _ in rows]
    wires = [wire for _, _, wire in rows]
    if None in wires:
        await cursor.execute(
            f'SELECT {EVENT_COLUMNS}, wire FROM {quoted_table(topic_name)} WHERE "offset" = ANY(%s)',
            [[offset for offset, wire in zip(offsets, wires, strict=True) if wire is None]],
        )
        encodings = {row[0]: encoded(_event_of(topic_name, row)) for row in await cursor.fetchall()}
        wires = [encodings[offset] if wire is None else wire for offset, wire in zip(offsets, wires, strict=True)]
    return EncodedHandouts([1] * len(offsets), offsets, wires)
