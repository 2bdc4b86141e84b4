"""ASGI entry point served by daphne: HTTP (admin, health) and the WebSocket API at /ws/events."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventrelay.settings")

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (needs Django set up first)

from eventrelay.checks import raise_on_configuration_errors  # noqa: E402
from ws_api.routing import websocket_urlpatterns  # noqa: E402

raise_on_configuration_errors()

# No origin check on WebSockets: they authenticate with a bearer token, never with cookies, so a
# page on another origin cannot borrow a visitor's credentials.
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
