from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from topics import retention
from topics.models import Topic


class Command(BaseCommand):
    help = "Delete now what topics no longer keep (beat does it every ER_RETENTION_SWEEP_S)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("names", nargs="*", help="only these topics (default: every topic with a bound)")
        parser.add_argument("--batch", type=int, help="events per transaction (default ER_RETENTION_BATCH)")

    def handle(self, *args: object, names: list[str], batch: int | None, **options: Any) -> None:
        try:
            results = [retention.sweep_topic(name, batch=batch) for name in names] if names else retention.sweep_all()
        except Topic.DoesNotExist:
            raise CommandError("no such topic") from None
        for result in results:
            self.stdout.write(f"{result.topic}: deleted {result.deleted}, first offset now {result.first_offset}")
