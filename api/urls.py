from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from api import views

urlpatterns = [
    path("topics", views.TopicsView.as_view(), name="api-topics"),
    path("topics/<str:name>", views.TopicView.as_view(), name="api-topic"),
    path("topics/<str:ref>/events", views.EventsView.as_view(), name="api-events"),
    path("webhooks", views.WebhooksView.as_view(), name="api-webhooks"),
    path("webhooks/<int:destination_id>", views.WebhookView.as_view(), name="api-webhook"),
    path("webhooks/<int:destination_id>/pause", views.WebhookPauseView.as_view(), name="api-webhook-pause"),
    path("webhooks/<int:destination_id>/resume", views.WebhookResumeView.as_view(), name="api-webhook-resume"),
    path("webhooks/<int:destination_id>/attempts", views.WebhookAttemptsView.as_view(), name="api-webhook-attempts"),
    path("schema", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
