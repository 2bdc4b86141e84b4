from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventrelay.errors import EventRelayError
from topics.services import delete_topic


class Command(BaseCommand):
    help = "Delete a topic and drop its events table, with every event in it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    def handle(self, *args: object, name: str, yes: bool, **options: object) -> None:
        if not yes:
            answer = input(f"Delete topic '{name}' and drop every event stored in it? Type the name to confirm: ")
            if answer.strip() != name:
                raise CommandError("not confirmed; nothing deleted")
        try:
            delete_topic(name)
        except EventRelayError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"deleted topic '{name}'")
