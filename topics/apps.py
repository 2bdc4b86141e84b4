from django.apps import AppConfig


class TopicsConfig(AppConfig):
    name = "topics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from eventrelay.metrics import register_database_collector
        from topics.metrics import TopicOffsets

        register_database_collector(TopicOffsets())  # (exported by the web process's /metrics)
