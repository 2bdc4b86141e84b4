from django.apps import AppConfig


class ConsumersConfig(AppConfig):
    name = "consumers"

    def ready(self) -> None:
        from consumers import retention  # noqa: F401  (moves consumers past what retention deletes)
        from consumers.metrics import ConsumerLags
        from eventrelay.metrics import register_database_collector

        register_database_collector(ConsumerLags())  # (exported by the web process's /metrics)
