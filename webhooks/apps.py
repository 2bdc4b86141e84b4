from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"

    def ready(self) -> None:
        from eventrelay.metrics import register_database_collector
        from webhooks import receivers  # noqa: F401  (wakes delivery after each publish commits)
        from webhooks.metrics import DestinationBacklogs

        register_database_collector(DestinationBacklogs())  # (exported by the web process's /metrics)
