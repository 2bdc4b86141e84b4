from django.core.management.base import BaseCommand

from topics.services import list_topics


class Command(BaseCommand):
    help = "List topics with their first and last offset and what they keep."

    def handle(self, *args: object, **options: object) -> None:
        for topic in list_topics():
            self.stdout.write(
                f"{topic.name}\tfirst_offset={topic.first_offset}\tlast_offset={topic.last_offset}"
                f"\tmax_age_s={topic.retention_max_age_seconds or '-'}\tmax_events={topic.retention_max_events or '-'}"
                f"\tcreated_at={topic.created_at.isoformat()}"
            )
