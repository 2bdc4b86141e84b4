from django.core.management.base import BaseCommand

from topics.services import list_topics


class Command(BaseCommand):
    help = "List topics with their last offset."

    def handle(self, *args: object, **options: object) -> None:
        for topic in list_topics():
            self.stdout.write(
                f"{topic.name}\tlast_offset={topic.last_offset}\tcreated_at={topic.created_at.isoformat()}"
            )
