# The index Django made for PendingEvent.consumer duplicates the primary key's first column, and every fetch
# inserts a row per event handed out. Django 5.2 sees no index to drop for a field of a composite primary key
# (its AlterField is a no-op there), so the database side is written out.

import django.db.models.deletion
from django.db import migrations, models

INDEX = "consumers_pendingevent_consumer_id_7a05de9e"


class Migration(migrations.Migration):
    dependencies = [
        ("consumers", "0002_expired"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="pendingevent",
                    name="consumer",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="pending",
                        to="consumers.consumer",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {INDEX}",
                    reverse_sql=f"CREATE INDEX {INDEX} ON consumers_pendingevent (consumer_id)",
                ),
            ],
        ),
    ]
