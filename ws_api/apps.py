from django.apps import AppConfig


class WsApiConfig(AppConfig):
    """The WebSocket API (docs/websocket.md): a transport over the ``events`` services."""

    name = "ws_api"
    verbose_name = "WebSocket API"
