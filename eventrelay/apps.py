from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class EventRelayConfig(AppConfig):
    name = "eventrelay"
    verbose_name = "EventRelay"

    def ready(self) -> None:
        from eventrelay import checks  # noqa: F401  (registers the start-up checks)


class EventRelayAdminConfig(admin_apps.AdminConfig):
    """``django.contrib.admin`` with EventRelay's site (dashboard, token page) as the default site."""

    default = False  # listed explicitly in INSTALLED_APPS
    default_site = "eventrelay.admin_site.EventRelayAdminSite"
