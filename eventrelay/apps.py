from django.apps import AppConfig


class EventRelayConfig(AppConfig):
    name = "eventrelay"
    verbose_name = "EventRelay"

    def ready(self) -> None:
        from eventrelay import checks  # noqa: F401  (registers the start-up checks)
