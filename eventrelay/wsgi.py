"""WSGI entry point (not used by the Procfile; daphne serves ASGI). Kept for tools that expect it."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventrelay.settings")

application = get_wsgi_application()

from eventrelay.checks import raise_on_configuration_errors  # noqa: E402

raise_on_configuration_errors()
