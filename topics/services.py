"""Topic lifecycle: create (row + table), delete (row + table), list.

Each change runs in one transaction, so a topic row never exists without its table or the other
way round. Topic names reach SQL only after :func:`eventrelay.refs.validate_topic_name`, and only
through ``schema_editor`` (which quotes them).
"""

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.utils import ProgrammingError

from eventrelay.auth import Principal, can_see_topic, require_admin
from eventrelay.errors import AlreadyExists, InvalidInput, NotFound
from eventrelay.refs import validate_topic_name
from topics.models import Topic
from topics.signals import topic_deleted
from topics.tables import event_model, forget_event_model

# The retention settings as every API names them, and the model field of each.
RETENTION_FIELDS = {"retentionMaxAgeSeconds": "retention_max_age_seconds", "retentionMaxEvents": "retention_max_events"}
MAX_RETENTION_VALUE = 2**63 - 1  # PostgreSQL's bigint


def create_topic(name: str, retention: Mapping[str, Any] | None = None) -> Topic:
    """Create topic ``name`` and its events table in one transaction. ``retention``: the settings of
    :data:`RETENTION_FIELDS` (camelCase); those absent take ``ER_RETENTION_MAX_AGE_S`` / ``ER_RETENTION_MAX_EVENTS``.

    Raises ``InvalidInput`` for a bad name or setting (nothing is created) and ``AlreadyExists`` when the
    topic, or a table of the same name, already exists.
    """
    validate_topic_name(name, field="name")
    values = {
        "retention_max_age_seconds": settings.ER_RETENTION_MAX_AGE_S or None,
        "retention_max_events": settings.ER_RETENTION_MAX_EVENTS or None,
        **retention_settings(retention or {}),
    }
    try:
        with transaction.atomic():
            topic = Topic.objects.create(name=name, **values)
            # A new topic has no retention state yet: known, so reading first_offset needs no query.
            Topic._meta.get_field("retention_state").set_cached_value(topic, None)  # type: ignore[attr-defined]
            with connection.schema_editor() as editor:
                editor.create_model(event_model(topic))
    except IntegrityError:
        raise AlreadyExists(f"topic '{name}' already exists", field="name") from None
    except ProgrammingError as exc:
        # The Topic row was rolled back with the failed CREATE TABLE: nothing is half-created.
        raise AlreadyExists(f"cannot create the table for topic '{name}': {exc}".strip(), field="name") from None
    return topic


def delete_topic(name: str) -> None:
    """Delete topic ``name``: its row and its table (with every event in it), in one transaction.

    Taking the row lock first makes a concurrent publish wait, then find no topic. ``topic_deleted`` is sent
    in the same transaction: what others keep about the topic's offsets goes with it.
    """
    validate_topic_name(name, field="name")
    with transaction.atomic():
        topic = Topic.objects.select_for_update().filter(name=name).first()
        if topic is None:
            raise NotFound(f"topic '{name}' does not exist", field="name")
        topic_deleted.send(sender=Topic, name=name, topic_pk=topic.pk)
        with connection.schema_editor() as editor:
            editor.delete_model(event_model(topic))
        forget_event_model(topic)
        topic.delete()


def update_topic(name: str, changes: Mapping[str, Any]) -> Topic:
    """Change topic ``name``'s retention settings (:data:`RETENTION_FIELDS`; null or 0: no bound). The next sweep
    applies them."""
    values = retention_settings(changes)
    topic = get_topic(name)
    if values:
        for field, value in values.items():
            setattr(topic, field, value)
        topic.save(update_fields=list(values))
    return topic


def retention_settings(options: Mapping[str, Any]) -> dict[str, int | None]:
    """The model fields of the retention settings in ``options``: each a whole number >= 0 or null (0 and null
    mean no bound); any other key is refused, naming it."""
    if not isinstance(options, Mapping):
        raise InvalidInput("topic settings must be an object", field="body")
    unknown = sorted(set(options) - set(RETENTION_FIELDS))
    if unknown:
        raise InvalidInput(f"unknown topic setting '{unknown[0]}'", field=str(unknown[0]))
    values: dict[str, int | None] = {}
    for key, field in RETENTION_FIELDS.items():
        if key not in options:
            continue
        value = options[key]
        if value is not None and (type(value) is not int or not 0 <= value <= MAX_RETENTION_VALUE):
            raise InvalidInput(f"{key} must be a whole number from 0 to {MAX_RETENTION_VALUE}, or null", field=key)
        values[field] = value or None
    return values


def get_topic(name: str) -> Topic:
    validate_topic_name(name)
    topic = Topic.objects.named(name).select_related("retention_state").first()
    if topic is None:
        raise NotFound(f"topic '{name}' does not exist", field="topic")
    return topic


def list_topics() -> list[Topic]:
    return list(Topic.objects.select_related("retention_state"))


# --- The same operations with authorization, for transports ----------------------------------------


def create_topic_as(principal: Principal, name: str, retention: Mapping[str, Any] | None = None) -> Topic:
    require_admin(principal)
    return create_topic(name, retention)


def update_topic_as(principal: Principal, name: str, changes: Mapping[str, Any]) -> Topic:
    require_admin(principal)
    return update_topic(name, changes)


def delete_topic_as(principal: Principal, name: str) -> None:
    require_admin(principal)
    delete_topic(name)


def list_topics_as(principal: Principal) -> list[Topic]:
    """The topics ``principal`` may see (``eventrelay.auth.can_see_topic``)."""
    return [topic for topic in list_topics() if can_see_topic(principal, topic.name)]


def get_topic_as(principal: Principal, name: str) -> Topic:
    """``get_topic`` for a caller: a topic it may not see does not exist for it (no probing for names)."""
    topic = get_topic(name)
    if not can_see_topic(principal, name):
        raise NotFound(f"topic '{name}' does not exist", field="topic")
    return topic
