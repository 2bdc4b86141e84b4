"""EventRelay's admin site: the stock admin, plus a dashboard on the index (``console.dashboard``) and a token page."""

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from console import dashboard
from eventrelay.auth import mint_token
from eventrelay.errors import InvalidInput


class MintTokenForm(forms.Form):
    topics = forms.CharField(
        required=False,
        help_text="Comma-separated grants: 'users' (every id) or 'users:123' (one id).",
        widget=forms.TextInput(attrs={"size": 60, "placeholder": "users:123,visits:123"}),
    )
    admin = forms.BooleanField(required=False, help_text="Topic management and every topic.")
    ttl_seconds = forms.IntegerField(
        min_value=0, initial=3600, label="Lifetime (seconds)", help_text="3600: an hour; 0: never expires."
    )
    subject = forms.CharField(required=False, help_text="Who the token is for (rate limits and logs use it).")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        grants = [item.strip() for item in (cleaned.get("topics") or "").split(",") if item.strip()]
        if not grants and not cleaned.get("admin"):
            raise forms.ValidationError("Grant at least one topic, or make it an admin token.")
        cleaned["grants"] = grants
        return cleaned


class EventRelayAdminSite(admin.AdminSite):
    site_header = "EventRelay"
    site_title = "EventRelay admin"
    index_title = "Dashboard"
    # The operators' pages are wide tables: at 1280 px the navigation column would take the room of three of
    # their columns. The breadcrumbs and the dashboard's list of pages lead everywhere it did.
    enable_nav_sidebar = False

    def get_urls(self) -> list[Any]:
        return [path("mint-token/", self.admin_view(self.mint_token_view), name="mint_token"), *super().get_urls()]

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        return super().index(request, {**(extra_context or {}), "dashboard": dashboard.overview()})

    def mint_token_view(self, request: HttpRequest) -> HttpResponse:
        """Mint a token and show it once. Only superusers: a token can grant every topic."""
        if not request.user.is_superuser:
            raise PermissionDenied
        token = None
        form = MintTokenForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                token = mint_token(
                    form.cleaned_data["grants"],
                    admin=form.cleaned_data["admin"],
                    ttl_seconds=form.cleaned_data["ttl_seconds"] or None,
                    subject=form.cleaned_data["subject"] or None,
                )
            except InvalidInput as error:
                form.add_error("topics", error.message)
        context = {**self.each_context(request), "title": "Mint an API token", "form": form, "token": token}
        return TemplateResponse(request, "admin/eventrelay/mint_token.html", context)
