from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class ConsoleConfig(AppConfig):
    """The admin console: a transport like the APIs, for people. Its pages call the apps' services and selectors."""

    name = "console"
    verbose_name = "EventRelay console"


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """``django.contrib.admin`` with EventRelay's site (dashboard, token page) as the default site."""

    default = False  # listed explicitly in INSTALLED_APPS
    default_site = "console.site.EventRelayAdminSite"
