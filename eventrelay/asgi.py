"""ASGI entry point served by daphne: HTTP (admin, REST, health) and, later, WebSocket."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventrelay.settings")

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402  (needs Django set up first)

from eventrelay.checks import raise_on_configuration_errors  # noqa: E402

raise_on_configuration_errors()

application = ProtocolTypeRouter({"http": django_asgi_app})
