"""Names the unique constraint on ``event_id`` of every existing topic table ``<topic>_ev_event_id``.

Tables created before had PostgreSQL's default name (``<table>_event_id_key``, cut to 63 characters for
long topic names); publish recognises an eventId conflict by the name topics.tables chooses, so every
table must carry it.
"""

from django.db import migrations

_FIND = """
SELECT c.conname FROM pg_constraint c
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
WHERE c.conrelid = %s::regclass AND c.contype = 'u' AND a.attname = 'event_id' AND array_length(c.conkey, 1) = 1
"""


def _rename(apps, schema_editor, new_name_of):
    quote = schema_editor.connection.ops.quote_name
    with schema_editor.connection.cursor() as cursor:
        for name in apps.get_model("topics", "Topic").objects.values_list("name", flat=True):
            table = quote(f"{name}_events")
            cursor.execute(_FIND, [table])
            row = cursor.fetchone()
            target = new_name_of(name)
            if row is not None and row[0] != target:
                cursor.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {quote(row[0])} TO {quote(target)}")


def name_constraints(apps, schema_editor):
    _rename(apps, schema_editor, lambda name: f"{name}_ev_event_id")


def restore_default_names(apps, schema_editor):
    _rename(apps, schema_editor, lambda name: f"{name}_events_event_id_key"[:63])


class Migration(migrations.Migration):
    dependencies = [("topics", "0002_event_wire_column")]

    operations = [migrations.RunPython(name_constraints, restore_default_names)]
