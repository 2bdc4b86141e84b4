from django.contrib import admin
from django.urls import include, path

from eventrelay import views

urlpatterns = [
    path("", views.viewer, name="viewer"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("api.urls")),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
]
