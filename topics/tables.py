"""The per-topic event model: one Django model class per topic table, built on demand and cached.

The classes live in a private app registry, so they never reach migrations or the global
``django.apps`` registry: the tables are created and dropped by ``topics.services`` through
``schema_editor``, in the same transaction as the ``Topic`` row.

The cache is keyed by the ``Topic`` row's primary key as well as its name. A dropped and re-created
topic gets a new key, and every caller reaches this module through a ``Topic`` it has just read, so
a cached class can never stand in for a topic that no longer exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.apps.registry import Apps
from django.db import models
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

    attrs = {
        "__module__": __name__,
        "Meta": Meta,
        # Offsets are assigned by events.services.publish under the topic row lock: gapless, in
        # commit order. The offset is the primary key, so pull-by-offset is a primary key range scan.
        "offset": models.BigIntegerField(primary_key=True),
        "event_id": models.UUIDField(unique=True),
        "name": models.CharField(max_length=255),
        # The id part of "name:id"; "" for events published to the bare topic name.
        "topic_id": models.CharField(max_length=ID_MAX_LENGTH, blank=True, default=""),
        "source": models.CharField(max_length=16, choices=[(s, s) for s in SOURCES]),
        "user_id": models.CharField(max_length=255, null=True, blank=True),
        "event_occurred_at": models.DateTimeField(),
        "context": JSONTextField(default=dict),
        "data": JSONTextField(),
        # The event's gRPC encoding, stored with it so a pull is served without per-event work
        # (events.wire). NULL only for rows stored before the column existed.
        "wire": models.BinaryField(null=True),
        # Set by PostgreSQL on insert: raw bulk inserts need not send it.
        "stored_at": models.DateTimeField(db_default=Now()),
    }
    class_name = f"Event_{topic_name}_{key_suffix}"
    return type(class_name, (models.Model,), attrs)
