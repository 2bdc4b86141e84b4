"""The per-topic event model: one Django model class per topic table, built on demand and cached.

The classes live in a private app registry, so they never reach migrations or the global
``django.apps`` registry: the tables are created and dropped by ``topics.services`` through
``schema_editor``, in the same transaction as the ``Topic`` row.

The cache is keyed by the ``Topic`` row's primary key as well as its name. A dropped and re-created
topic gets a new key, and every caller reaches this module through a ``Topic`` it has just read, so
a cached class can never stand in for a topic that no longer exists.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from django.apps.registry import Apps
from django.db import connection, models
from django.db.models.functions import Now

from eventrelay.refs import ID_MAX_LENGTH

if TYPE_CHECKING:  # (models.py names its table through this module)
    from topics.models import Topic

_topic_apps = Apps()


def events_table_name(topic_name: str) -> str:
    """The table holding a topic's events. ``topic_name`` must already be validated."""
    return f"{topic_name}_events"


class JSONTextField(models.JSONField):
    """A PostgreSQL ``json`` column: the text is kept exactly as validated and sent back as is.

    ``json`` rather than ``jsonb`` because nothing queries inside payloads, inserting it costs less,
    and every API then returns byte-for-byte the JSON that the publish response returned.
    """

    def db_type(self, connection: object) -> str:
        return "json"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        # psycopg already decodes ``json`` columns; Django's JSONField expects text.
        return value if not isinstance(value, str) else super().from_db_value(value, expression, connection)


_models: dict[tuple[int, str], type[models.Model]] = {}

SOURCES = ("grpc", "websocket", "http")


def event_model(topic: Topic) -> type[models.Model]:
    """Return the model class for ``topic``'s events table (built once per topic row)."""
    key = (topic.pk, topic.name)
    model = _models.get(key)
    if model is None:
        model = _build_event_model(topic.name, key_suffix=str(topic.pk))
        _models[key] = model
    return model


def forget_event_model(topic: Topic) -> None:
    """Drop ``topic``'s cached class (called when its table is dropped)."""
    _models.pop((topic.pk, topic.name), None)


def _build_event_model(topic_name: str, key_suffix: str) -> type[models.Model]:
    table = events_table_name(topic_name)

    class Meta:
        app_label = "events"
        apps = _topic_apps
        db_table = table
        # managed stays True: schema_editor skips the Meta.indexes of unmanaged models. The private
        # registry already keeps these classes out of migrations.
        indexes = [
            # Pull / stream / webhook cursor for one topic id: WHERE topic_id = %s AND "offset" >= %s.
            # (Pull over the whole topic uses the primary key on "offset".)
            models.Index(fields=["topic_id", "offset"], name=f"{topic_name}_ev_tid_off"),
            # Admin event browser filters.
            models.Index(fields=["name", "offset"], name=f"{topic_name}_ev_name_off"),
            models.Index(fields=["user_id", "offset"], name=f"{topic_name}_ev_uid_off"),
            models.Index(fields=["event_occurred_at"], name=f"{topic_name}_ev_occurred"),
            # Admin dashboard: events stored since a moment (events per minute, events today).
            models.Index(fields=["stored_at"], name=f"{topic_name}_ev_stored"),
        ]
        constraints = [models.UniqueConstraint(fields=["event_id"], name=event_id_constraint(topic_name))]

    attrs = {
        "__module__": __name__,
        "Meta": Meta,
        # Offsets are assigned by events.services.publish under the topic row lock: gapless, in
        # commit order. The offset is the primary key, so pull-by-offset is a primary key range scan.
        "offset": models.BigIntegerField(primary_key=True),
        # Unique under the constraint name below (see event_id_conflict), not PostgreSQL's default.
        "event_id": models.UUIDField(),
        "name": models.CharField(max_length=255),
        # The id part of "name:id"; "" for events published to the bare topic name.
        "topic_id": models.CharField(max_length=ID_MAX_LENGTH, blank=True, default=""),
        "source": models.CharField(max_length=16, choices=[(s, s) for s in SOURCES]),
        "user_id": models.CharField(max_length=255, null=True, blank=True),
        "event_occurred_at": models.DateTimeField(),
        "context": JSONTextField(default=dict),
        "data": JSONTextField(),
        # The bytes of the stored encoding a transport registered (events.encoding), so a pull is served
        # without per-event work. NULL for rows stored without them: they are encoded when read.
        "wire": models.BinaryField(null=True),
        # Set by PostgreSQL on insert: raw bulk inserts need not send it.
        "stored_at": models.DateTimeField(db_default=Now()),
    }
    class_name = f"Event_{topic_name}_{key_suffix}"
    return type(class_name, (models.Model,), attrs)


def event_id_constraint(topic_name: str) -> str:
    """The name of the unique constraint on a topic table's ``event_id``: chosen here, so a conflict on it
    is recognised by name (:func:`event_id_conflict`) rather than by PostgreSQL's naming habits."""
    return f"{topic_name}_ev_event_id"


def event_id_conflict(error: psycopg.errors.UniqueViolation, topic_name: str) -> bool:
    """Whether ``error`` is an eventId already stored in ``topic_name``'s table."""
    return error.diag.constraint_name == event_id_constraint(topic_name)


# --- SQL against a topic's table -----------------------------------------------
#
# Topic names reach these statements only validated (eventrelay.refs) and quoted.

# The columns of a stored event, in the order every read below returns them.
EVENT_COLUMNS = '"offset", event_id, name, topic_id, source, user_id, event_occurred_at, context::text, data::text'
# The columns a publish writes, in the order of its COPY rows (stored_at is set by PostgreSQL).
INSERT_COLUMNS = '"offset", event_id, name, topic_id, source, user_id, event_occurred_at, context, data, wire'
# Every value but the offset goes as text (see events.storage).
_INSERT_TYPES = ["int8"] + ["text"] * 9


def quoted_table(topic_name: str) -> str:
    return connection.ops.quote_name(events_table_name(topic_name))


@contextmanager
def copy_rows(cursor: psycopg.Cursor[Any], topic_name: str) -> Iterator[psycopg.Copy]:
    """A COPY into the topic's table (``INSERT_COLUMNS``, text rows): the fastest way into PostgreSQL.

    Rows written to it go to the server every 32 KiB, so PostgreSQL stores the first rows of a batch
    while the later ones are still being validated here. A conflicting eventId fails the COPY on its
    unique constraint, like an INSERT would; PostgreSQL checks that context and data are JSON. Text,
    not binary: PostgreSQL writes COPY rows to the table and its indexes in groups flushed every
    1,000 lines, and binary rows have no lines, so a binary COPY is written only at its end
    (docs/benchmarks.md has the measurement)."""
    with cursor.copy(f"COPY {quoted_table(topic_name)} ({INSERT_COLUMNS}) FROM STDIN") as copy:
        copy.set_types(_INSERT_TYPES)
        yield copy


def events_with_ids(cursor: Any, topic_name: str, event_ids: list[uuid.UUID]) -> list[tuple[Any, ...]]:
    """The stored rows (``EVENT_COLUMNS``) of those of ``event_ids`` the topic already has."""
    cursor.execute(f"SELECT {EVENT_COLUMNS} FROM {quoted_table(topic_name)} WHERE event_id = ANY(%s)", [event_ids])
    return list(cursor.fetchall())


def page_query(
    topic_name: str, topic_id: str | None, *, after: int, limit: int, columns: str = EVENT_COLUMNS
) -> tuple[str, list[Any]]:
    """A page of events with offset > ``after``, ascending, at most ``limit``: a primary-key range scan
    for a whole topic (``topic_id`` None), the ``(topic_id, offset)`` index for one topic id ("" is the
    events published to the bare name). Tests EXPLAIN exactly this."""
    table = quoted_table(topic_name)
    if topic_id is None:
        return f'SELECT {columns} FROM {table} WHERE "offset" > %s ORDER BY "offset" LIMIT %s', [after, limit]
    return (
        f'SELECT {columns} FROM {table} WHERE topic_id = %s AND "offset" > %s ORDER BY "offset" LIMIT %s',
        [topic_id, after, limit],
    )


def encoded_page_query(topic_name: str, topic_id: str | None, *, after: int, limit: int) -> tuple[str, list[Any]]:
    """The page of :func:`page_query`, as one row: its events' stored encodings joined in offset order,
    its last offset, and how many of its rows have no stored encoding."""
    page, params = page_query(topic_name, topic_id, after=after, limit=limit, columns='"offset", wire')
    return (
        f'SELECT string_agg(wire, \'\'::bytea ORDER BY "offset"), max("offset"), count(*) - count(wire) '
        f"FROM ({page}) page",
        params,
    )


# --- Reads for webhook delivery and the console ----
#
# Plain values in, plain values out: the callers (webhooks, console) sit above topics and keep their own state.


def topic_ids_between(topic_name: str, *, after: int, up_to: int) -> list[str]:
    """The topic ids of the events with ``after`` < offset <= ``up_to`` (a primary-key range scan), each once."""
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT DISTINCT topic_id FROM {quoted_table(topic_name)} WHERE "offset" > %s AND "offset" <= %s',
            [after, up_to],
        )
        return [row[0] for row in cursor.fetchall()]


def count_events_after(topic_name: str, cursors: list[tuple[str, int]], *, cap: int) -> list[int]:
    """For each ``(topic_id, offset)`` cursor, how many events of that topic id lie after the offset, counted on
    the ``(topic_id, offset)`` index and at most ``cap`` (a long backlog is not counted to its end). In the order
    of ``cursors``, in one statement."""
    if not cursors:
        return []
    topic_ids, offsets = zip(*cursors, strict=True)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM ("
            f"  SELECT 1 FROM {quoted_table(topic_name)} e"
            '  WHERE e.topic_id = c.topic_id AND e."offset" > c.after LIMIT %s'
            ") pending) "
            "FROM unnest(%s::text[], %s::bigint[]) WITH ORDINALITY AS c(topic_id, after, position) "
            "ORDER BY c.position",
            [cap, list(topic_ids), list(offsets)],
        )
        return [row[0] for row in cursor.fetchall()]


def table_size_bytes(topic_name: str) -> int:
    """The events table's size on disk, indexes and TOAST included (``pg_total_relation_size``)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size(%s::regclass)", [quoted_table(topic_name)])
        return int(cursor.fetchone()[0])


def first_offsets_stored_query(topic_names: list[str], moments: list[Any]) -> tuple[str, list[Any]]:
    """One statement answering, for every topic of ``topic_names`` and every moment of ``moments``, the first
    offset stored at or after that moment: rows ``(topic position, moment position, offset or NULL)``. Each
    answer is one probe of the table's ``stored_at`` index (``ORDER BY stored_at LIMIT 1``), so the cost is the
    number of probes, not the number of events the topics stored. Tests EXPLAIN exactly this."""
    branches = []
    params: list[Any] = []
    for position, name in enumerate(topic_names):
        branches.append(
            f'SELECT %s::int, m.position, (SELECT "offset" FROM {quoted_table(name)} '
            "WHERE stored_at >= m.at ORDER BY stored_at LIMIT 1) "
            "FROM unnest(%s::timestamptz[]) WITH ORDINALITY AS m(at, position)"
        )
        params += [position, list(moments)]
    return " UNION ALL ".join(branches), params


def first_offsets_stored_since(topic_names: list[str], moments: list[Any]) -> dict[str, list[int | None]]:
    """For each topic, the first offset stored at or after each of ``moments`` (None: nothing stored since), in
    the order of ``moments``: one statement for all of them (:func:`first_offsets_stored_query`)."""
    if not topic_names or not moments:
        return {name: [None] * len(moments) for name in topic_names}
    found: dict[str, list[int | None]] = {name: [None] * len(moments) for name in topic_names}
    sql, params = first_offsets_stored_query(topic_names, moments)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for position, moment_position, offset in cursor.fetchall():
            found[topic_names[position]][moment_position - 1] = offset
    return found


def first_stored_after_query(probes: list[tuple[str, str | None, int]]) -> tuple[str, list[Any]]:
    """The statement of :func:`first_stored_after`: rows ``(probe position, stored_at or NULL)``, a ``UNION ALL``
    branch per topic (and per kind of probe), each answer one probe of the ``(topic_id, offset)`` index or of the
    primary key. Tests EXPLAIN exactly this. Empty when there are no probes."""
    groups: dict[tuple[str, bool], list[int]] = {}
    for position, (name, topic_id, _after) in enumerate(probes):
        groups.setdefault((name, topic_id is None), []).append(position)
    branches: list[str] = []
    params: list[Any] = []
    for (name, any_id), positions in groups.items():
        first = f'SELECT e.stored_at FROM {quoted_table(name)} e WHERE e."offset" > c.after'
        if any_id:
            branches.append(
                f'SELECT c.position, ({first} ORDER BY e."offset" LIMIT 1) '
                "FROM unnest(%s::int[], %s::bigint[]) AS c(position, after)"
            )
            params += [positions, [probes[p][2] for p in positions]]
        else:
            branches.append(
                f'SELECT c.position, ({first} AND e.topic_id = c.topic_id ORDER BY e."offset" LIMIT 1) '
                "FROM unnest(%s::int[], %s::text[], %s::bigint[]) AS c(position, topic_id, after)"
            )
            params += [positions, [probes[p][1] for p in positions], [probes[p][2] for p in positions]]
    return " UNION ALL ".join(branches), params


def first_stored_after(probes: list[tuple[str, str | None, int]]) -> list[datetime | None]:
    """For each ``(topic_name, topic_id, after)`` probe, when the first event after offset ``after`` (of that topic
    id; of any with None) was stored, None when there is none: in the order of ``probes``, in one statement for
    every topic (:func:`first_stored_after_query`), so its cost is the number of probes, not of topics or events."""
    found: list[datetime | None] = [None] * len(probes)
    if not probes:
        return found
    sql, params = first_stored_after_query(probes)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for position, stored_at in cursor.fetchall():
            found[position] = stored_at
    return found


def stored_times(topic_name: str, *, after: int, up_to: int) -> dict[int, float]:
    """When each event with an offset in ``(after, up_to]`` was stored (seconds since the epoch), by offset: one
    range scan of the primary key."""
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT "offset", extract(epoch FROM stored_at)::float8 FROM {quoted_table(topic_name)} '
            'WHERE "offset" > %s AND "offset" <= %s',
            [after, up_to],
        )
        return dict(cursor.fetchall())
