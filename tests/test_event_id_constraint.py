"""A republished eventId is recognised by the unique constraint's name, which topics.tables chooses; tables created
before it chose one are renamed by migration topics 0003."""

from importlib import import_module

import pytest
from django.apps import apps
from django.db import connection

from events.services import publish
from topics.tables import event_id_constraint

EVENT_ID = "6f1d2d54-8f4e-4b8e-9a55-0d7e0e3c2a11"


def event_id_constraints(topic_name: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'u'",
            [connection.ops.quote_name(f"{topic_name}_events")],
        )
        return [row[0] for row in cursor.fetchall()]


def test_a_new_topic_table_has_the_constraint_name_we_chose(make_topic):
    make_topic("users")

    assert event_id_constraints("users") == [event_id_constraint("users")] == ["users_ev_event_id"]


@pytest.mark.parametrize("topic_name", ["users", "t" * 50])
def test_the_migration_renames_the_default_constraint_of_an_older_table_and_republishing_still_dedups(
    make_topic, admin, topic_name
):
    make_topic(topic_name)
    [first] = publish(admin, topic_name, [{"eventId": EVENT_ID, "name": "a", "data": 1}], "http")
    # What PostgreSQL named it before topics.tables chose a name (cut to 63 characters for long topic names).
    old_name = f"{topic_name}_events_event_id_key"[:63]
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(f"{topic_name}_events")
        cursor.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {event_id_constraint(topic_name)} TO {old_name}")

    with connection.schema_editor() as editor:
        import_module("topics.migrations.0003_event_id_constraint_names").name_constraints(apps, editor)

    assert event_id_constraints(topic_name) == [event_id_constraint(topic_name)]
    [again] = publish(admin, topic_name, [{"eventId": EVENT_ID, "name": "a", "data": 1}], "http")
    assert again.offset == first.offset == 1
