from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from eventrelay import views

urlpatterns = [
    path("", views.viewer, name="viewer"),
    # Browsers ask for /favicon.ico whatever a page links; the console's icon answers (a static file).
    path("favicon.ico", RedirectView.as_view(url=static("console/favicon.ico"))),
    path("admin/", admin.site.urls),
    path("api/v1/", include("api.urls")),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics, name="metrics"),
]

# Under /api/v1/ errors Django answers itself (no route matched, an unhandled exception) speak the API's JSON
# error shape; everywhere else Django's own pages stay.
handler400 = "eventrelay.error_pages.bad_request"
handler403 = "eventrelay.error_pages.permission_denied"
handler404 = "eventrelay.error_pages.page_not_found"
handler500 = "eventrelay.error_pages.server_error"
