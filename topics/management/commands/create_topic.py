from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventrelay.errors import EventRelayError
from topics.management.retention_options import add_retention_arguments, retention_from
from topics.services import create_topic


class Command(BaseCommand):
    help = "Create a topic and its events table (with --max-age / --max-events: what it keeps)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="topic name: 1-50 chars, ^[a-z][a-z0-9_]*$")
        add_retention_arguments(parser)

    def handle(self, *args: object, name: str, **options: Any) -> None:
        try:
            topic = create_topic(name, retention_from(options))
        except (EventRelayError, ValueError) as exc:
            raise CommandError(getattr(exc, "message", str(exc))) from None
        self.stdout.write(f"created topic '{topic.name}' (table {topic.table_name}){describe_retention(topic)}")


def describe_retention(topic: Any) -> str:
    parts = []
    if topic.retention_max_age_seconds:
        parts.append(f"max age {topic.retention_max_age_seconds} s")
    if topic.retention_max_events:
        parts.append(f"max {topic.retention_max_events} events")
    return f", keeping {' and '.join(parts)}" if parts else ", keeping everything"
