"""The WebSocket routes, mounted by ``eventrelay.asgi``."""

from django.urls import path

from ws_api.consumers import EventsConsumer

websocket_urlpatterns = [path("ws/events", EventsConsumer.as_asgi())]
