from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"

    def ready(self) -> None:
        from events import live  # noqa: F401  (ends live feeds of a deleted topic: topic_deleted)
