from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from api import consumers, views

urlpatterns = [
    path("topics", views.TopicsView.as_view(), name="api-topics"),
    path("topics/<str:name>", views.TopicView.as_view(), name="api-topic"),
    path("topics/<str:ref>/events", views.EventsView.as_view(), name="api-events"),
    path("topics/<str:ref>/consumers", consumers.ConsumersView.as_view(), name="api-consumers"),
    path("topics/<str:ref>/consumers/<str:consumer>", consumers.ConsumerView.as_view(), name="api-consumer"),
    path("topics/<str:ref>/consumers/<str:consumer>/fetch", consumers.FetchView.as_view(), name="api-consumer-fetch"),
    path("topics/<str:ref>/consumers/<str:consumer>/ack", consumers.AckView.as_view(), name="api-consumer-ack"),
    path("topics/<str:ref>/consumers/<str:consumer>/nack", consumers.NackView.as_view(), name="api-consumer-nack"),
    path(
        "topics/<str:ref>/consumers/<str:consumer>/extend", consumers.ExtendView.as_view(), name="api-consumer-extend"
    ),
    path("topics/<str:ref>/consumers/<str:consumer>/seek", consumers.SeekView.as_view(), name="api-consumer-seek"),
    path(
        "topics/<str:ref>/consumers/<str:consumer>/dead-letters",
        consumers.DeadLettersView.as_view(),
        name="api-consumer-dead-letters",
    ),
    path(
        "topics/<str:ref>/consumers/<str:consumer>/dead-letters/redrive",
        consumers.RedriveView.as_view(),
        name="api-consumer-redrive",
    ),
    path("webhooks", views.WebhooksView.as_view(), name="api-webhooks"),
    path("webhooks/<int:destination_id>", views.WebhookView.as_view(), name="api-webhook"),
    path("webhooks/<int:destination_id>/pause", views.WebhookPauseView.as_view(), name="api-webhook-pause"),
    path("webhooks/<int:destination_id>/resume", views.WebhookResumeView.as_view(), name="api-webhook-resume"),
    path(
        "webhooks/<int:destination_id>/rotate-secret",
        views.WebhookRotateSecretView.as_view(),
        name="api-webhook-rotate-secret",
    ),
    path("webhooks/<int:destination_id>/redeliver", views.WebhookRedeliverView.as_view(), name="api-webhook-redeliver"),
    path("webhooks/<int:destination_id>/attempts", views.WebhookAttemptsView.as_view(), name="api-webhook-attempts"),
    path("schema", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
