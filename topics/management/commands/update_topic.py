from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventrelay.errors import EventRelayError
from topics.management.commands.create_topic import describe_retention
from topics.management.retention_options import add_retention_arguments, retention_from
from topics.services import update_topic


class Command(BaseCommand):
    help = "Change what a topic keeps (--max-age 7d, --max-events 1000000; 0: no bound). The next sweep applies it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="the topic")
        add_retention_arguments(parser)

    def handle(self, *args: object, name: str, **options: Any) -> None:
        try:
            changes = retention_from(options)
            if not changes:
                raise CommandError("nothing to change: give --max-age and/or --max-events")
            topic = update_topic(name, changes)
        except (EventRelayError, ValueError) as exc:
            raise CommandError(getattr(exc, "message", str(exc))) from None
        self.stdout.write(f"topic '{topic.name}'{describe_retention(topic)}")
