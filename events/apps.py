from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"

    def ready(self) -> None:
        from events import live  # noqa: F401  (connects the after-commit announcement to the live hub)
