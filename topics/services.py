"""Topic lifecycle: create (row + table), delete (row + table), list.

Each change runs in one transaction, so a topic row never exists without its table or the other
way round. Topic names reach SQL only after :func:`eventrelay.refs.validate_topic_name`, and only
through ``schema_editor`` (which quotes them).
"""

from django.db import IntegrityError, connection, transaction
from django.db.utils import ProgrammingError

from eventrelay.auth import Principal, can_see_topic, require_admin
from eventrelay.errors import AlreadyExists, NotFound
from eventrelay.refs import validate_topic_name
from topics.models import Topic
from topics.signals import topic_deleted
from topics.tables import event_model, forget_event_model


def create_topic(name: str) -> Topic:
    """Create topic ``name`` and its events table in one transaction.

    Raises ``InvalidInput`` for a bad name (nothing is created) and ``AlreadyExists`` when the
    topic, or a table of the same name, already exists.
    """
    validate_topic_name(name, field="name")
    try:
        with transaction.atomic():
            topic = Topic.objects.create(name=name)
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


def get_topic(name: str) -> Topic:
    validate_topic_name(name)
    topic = Topic.objects.named(name).first()
    if topic is None:
        raise NotFound(f"topic '{name}' does not exist", field="topic")
    return topic


def list_topics() -> list[Topic]:
    return list(Topic.objects.all())


# --- The same operations with authorization, for transports ----------------------------------------


def create_topic_as(principal: Principal, name: str) -> Topic:
    require_admin(principal)
    return create_topic(name)


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
