from django.apps import AppConfig


class ConsumersConfig(AppConfig):
    name = "consumers"

    def ready(self) -> None:
        from consumers import retention  # noqa: F401  (moves consumers past what retention deletes)
