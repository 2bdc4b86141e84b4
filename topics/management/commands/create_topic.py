from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventrelay.errors import EventRelayError
from topics.services import create_topic


class Command(BaseCommand):
    help = "Create a topic and its events table."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="topic name: 1-50 chars, ^[a-z][a-z0-9_]*$")

    def handle(self, *args: object, name: str, **options: object) -> None:
        try:
            topic = create_topic(name)
        except EventRelayError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"created topic '{topic.name}' (table {topic.table_name})")
