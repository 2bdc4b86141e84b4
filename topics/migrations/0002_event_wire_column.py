"""Adds the ``wire`` column (the stored encoding, events.encoding) to the events tables of topics that already exist.

Topics created from now on get it from ``topics.tables``; the column stays NULL for rows stored
before, which ``events.storage.read_encoded_page`` encodes when it reads them.
"""

from django.db import migrations


def _events_tables(apps, schema_editor):
    quote = schema_editor.connection.ops.quote_name
    for name in apps.get_model("topics", "Topic").objects.values_list("name", flat=True):
        yield quote(f"{name}_events")


def add_wire_column(apps, schema_editor):
    for table in _events_tables(apps, schema_editor):
        schema_editor.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS wire bytea NULL")


def drop_wire_column(apps, schema_editor):
    for table in _events_tables(apps, schema_editor):
        schema_editor.execute(f"ALTER TABLE {table} DROP COLUMN IF EXISTS wire")


class Migration(migrations.Migration):
    dependencies = [("topics", "0001_initial")]

    operations = [migrations.RunPython(add_wire_column, drop_wire_column)]
