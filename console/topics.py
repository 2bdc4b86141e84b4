"""Topics in the admin: create (creates the table), delete (drops it, after a confirmation that says
so), event counts and rate, and the per-topic event browser (a custom view: events are not a
registered model)."""

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from consumers.services import consumers_of_topic
from eventrelay.errors import EventRelayError
from eventrelay.refs import validate_topic_id, validate_topic_name
from events.browser import BrowserFilters, browse, count_matching, events_stored_since, get_event, shown_json
from events.canonical import format_timestamp
from topics.models import Topic
from topics.services import RETENTION_FIELDS as RETENTION_SETTINGS
from topics.services import create_topic, delete_topic, update_topic
from topics.tables import table_size_bytes

RETENTION_FIELDS = ("retention_max_age_seconds", "retention_max_events")
# The event list shows the start of each payload (the column cuts it with an ellipsis); its tooltip shows more.
PREVIEW_CHARS = 200
TITLE_CHARS = 2000


class TopicAddForm(forms.ModelForm):
    class Meta:
        model = Topic
        fields = ["name", *RETENTION_FIELDS]
        help_texts = {"name": "1-50 characters: a lowercase letter, then lowercase letters, digits or _."}

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        try:
            return validate_topic_name(name, field="name")
        except EventRelayError as error:
            raise forms.ValidationError(error.message) from None


# A filtered page says how many events match, counted on the filter's index up to this many.
MATCHING_COUNT_LIMIT = 10_000


def _moment_field(label: str) -> forms.DateTimeField:
    """A time filter in ISO 8601 with its zone (``Z``, ``+02:00``), as every API writes times; a time typed
    without one is in the server's zone, which the help text names. Not the browser's ``datetime-local``
    picker: it has no zone at all."""
    zone = timezone.get_default_timezone_name()
    return forms.DateTimeField(
        required=False,
        label=f"{label} ({zone})",
        help_text=f"e.g. 2026-01-05T09:30:00Z or …+02:00; no zone: {zone}",
        widget=forms.TextInput(attrs={"placeholder": "2026-01-05T09:30:00Z", "spellcheck": "false"}),
    )


class BrowserFilterForm(forms.Form):
    name = forms.CharField(required=False, label="Event name")
    topic_id = forms.CharField(required=False, label="Topic id")
    user_id = forms.CharField(required=False, label="User id")
    occurred_from = _moment_field("Occurred from")
    occurred_to = _moment_field("Occurred to")
    before = forms.IntegerField(required=False, min_value=1, label="Offset at most")

    def clean_topic_id(self) -> str:
        value = self.cleaned_data["topic_id"]
        if value:
            try:
                validate_topic_id(value, field="topic_id")
            except EventRelayError as error:
                raise forms.ValidationError(error.message) from None
        return value


# What ModelAdmin.get_fields may return (django-stubs' type): field names, or groups of them.
_FieldsSpec = tuple[str | tuple[str, ...], ...]


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "events",
        "first_offset_shown",
        "last_offset",
        "retention",
        "size_on_disk",
        "events_per_minute",
        "created_at",
        "browse_link",
    )
    list_select_related = ("retention_state",)
    search_fields = ("name",)
    readonly_fields = (
        "name",
        "first_offset_shown",
        "last_offset",
        "events",
        "size_on_disk",
        "last_sweep",
        "created_at",
        "browse_link",
        "consumers_link",
    )

    def get_form(
        self, request: HttpRequest, obj: Topic | None = None, change: bool = False, **kwargs: Any
    ) -> "type[forms.ModelForm[Any]]":
        if obj is None:
            kwargs["form"] = TopicAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Topic | None = None) -> tuple[str, ...]:
        return self.readonly_fields if obj is not None else ()

    def get_fields(self, request: HttpRequest, obj: Topic | None = None) -> _FieldsSpec:
        if obj is None:
            return ("name", *RETENTION_FIELDS)
        return (*self.readonly_fields, *RETENTION_FIELDS)

    @admin.display(description="Events")
    def events(self, topic: Topic) -> int:
        # Offsets are gapless, and retention deletes from the lowest up: what is kept is one run of offsets.
        return topic.last_offset - topic.first_offset + 1

    @admin.display(description="First offset")
    def first_offset_shown(self, topic: Topic) -> int:
        return topic.first_offset

    @admin.display(description="Keeps")
    def retention(self, topic: Topic) -> str:
        parts = []
        if topic.retention_max_age_seconds:
            parts.append(f"{topic.retention_max_age_seconds} s")
        if topic.retention_max_events:
            parts.append(f"{topic.retention_max_events:,} events")
        return " / ".join(parts) or "everything"

    @admin.display(description="Size on disk")
    def size_on_disk(self, topic: Topic) -> str:
        return filesizeformat(table_size_bytes(topic.name)) if topic.pk is not None else "-"

    @admin.display(description="Last sweep")
    def last_sweep(self, topic: Topic) -> str:
        state = getattr(topic, "retention_state", None)
        if state is None or state.last_sweep_at is None:
            return "never"
        return (
            f"{format_timestamp(state.last_sweep_at)}: deleted {state.last_sweep_deleted:,} "
            f"({state.deleted_total:,} in all)"
        )

    @admin.display(description="Events / minute")
    def events_per_minute(self, topic: Topic) -> int:
        return events_stored_since(topic, timezone.now() - timedelta(minutes=1))

    @admin.display(description="Browse")
    def browse_link(self, topic: Topic) -> str:
        if topic.pk is None:
            return "-"
        return format_html('<a href="{}">Browse events</a>', reverse("admin:topics_topic_events", args=[topic.pk]))

    @admin.display(description="Consumers")
    def consumers_link(self, topic: Topic) -> str:
        if topic.pk is None:
            return "-"
        url = reverse("admin:consumers_consumer_changelist") + f"?topic__id__exact={topic.pk}"
        return format_html('<a href="{}">Consumers ({})</a>', url, topic.consumers.count())

    # --- lifecycle through the services: the table is created and dropped with the row --------------

    def save_model(self, request: HttpRequest, obj: Topic, form: forms.ModelForm, change: bool) -> None:
        retention = {
            camel: form.cleaned_data.get(field)
            for camel, field in RETENTION_SETTINGS.items()
            if field in form.cleaned_data
        }
        if change:
            update_topic(obj.name, retention)  # only what it keeps is editable
            return
        created = create_topic(obj.name, retention)
        obj.pk, obj.created_at, obj.last_offset = created.pk, created.created_at, created.last_offset

    def delete_model(self, request: HttpRequest, obj: Topic) -> None:
        delete_topic(obj.name)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Topic]) -> None:
        for topic in queryset:
            delete_topic(topic.name)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        topic = self.get_object(request, object_id)
        context = {**(extra_context or {})}
        if topic is not None:
            context.update(
                {
                    "events_table": topic.table_name,
                    "event_count": topic.last_offset,
                    # Deleted with the topic (CASCADE): the confirmation names them.
                    "consumer_names": [
                        info.name if info.topic == topic.name else f"{info.name} ({info.topic})"
                        for info in consumers_of_topic(topic.name)
                    ],
                }
            )
        return super().delete_view(request, object_id, context)

    # --- the event browser --------------------------------------------------------------------------

    def get_urls(self) -> list[Any]:
        return [
            path("<int:topic_pk>/events/", self.admin_site.admin_view(self.events_view), name="topics_topic_events"),
            path(
                "<int:topic_pk>/events/<int:offset>/",
                self.admin_site.admin_view(self.event_view),
                name="topics_topic_event",
            ),
            *super().get_urls(),
        ]

    def _topic_or_404(self, request: HttpRequest, topic_pk: int) -> Topic:
        topic = Topic.objects.filter(pk=topic_pk).first()
        if topic is None or not self.has_view_permission(request, topic):
            raise Http404("no such topic")
        return topic

    def events_view(self, request: HttpRequest, topic_pk: int) -> HttpResponse:
        """Newest first, filtered, paginated by offset (never a COUNT over the table)."""
        topic = self._topic_or_404(request, topic_pk)
        form = BrowserFilterForm(request.GET or None)
        filters = BrowserFilters()
        if form.is_valid():
            data = form.cleaned_data
            filters = BrowserFilters(
                name=data["name"],
                topic_id=data["topic_id"],
                user_id=data["user_id"],
                occurred_from=data["occurred_from"],
                occurred_to=data["occurred_to"],
                before=data["before"],
            )
        elif form.is_bound:
            messages.error(request, "Fix the filters below; showing the newest events.")
        rows, older = browse(topic, filters)
        # Only the filters that narrow the rows (not the page's offset) make it a count of matching events.
        narrowed = filters != BrowserFilters(before=filters.before)
        matching = count_matching(topic, filters, MATCHING_COUNT_LIMIT + 1) if narrowed else None
        older_query = None
        if older is not None:
            query = request.GET.copy()
            query["before"] = str(older)
            older_query = query.urlencode()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Events of {topic.name}",
            "topic": topic,
            "form": form,
            "rows": [_row(topic, row) for row in rows],
            "older_query": older_query,
            "filtered": any(value for value in (request.GET or {}).values()),
            "stored": topic.last_offset - topic.first_offset + 1,
            "matching": matching,
            "matching_limit": MATCHING_COUNT_LIMIT,
        }
        return TemplateResponse(request, "admin/topics/topic/events.html", context)

    def event_view(self, request: HttpRequest, topic_pk: int, offset: int) -> HttpResponse:
        topic = self._topic_or_404(request, topic_pk)
        row = get_event(topic, offset)
        if row is None:
            raise Http404("no such event")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{topic.name} #{offset}",
            "topic": topic,
            "event": _row(topic, row, formatted=True),
        }
        return TemplateResponse(request, "admin/topics/topic/event.html", context)


def _row(topic: Topic, row: Any, formatted: bool = False) -> dict[str, Any]:
    """An event for the templates, its payloads from their stored text (``events.browser``): the list
    shows a preview of the text, the event page the payloads formatted, or as stored with a note."""
    shown: dict[str, Any] = {}
    if formatted:
        shown["data"], shown["data_note"] = shown_json(row.data_text)
        shown["context"], shown["context_note"] = shown_json(row.context_text)
    return {
        "offset": row.offset,
        "event_id": row.event_id,
        "name": row.name,
        "topic": f"{topic.name}:{row.topic_id}" if row.topic_id else topic.name,
        "source": row.source,
        "user_id": row.user_id,
        "occurred_at": format_timestamp(row.event_occurred_at),
        "stored_at": format_timestamp(row.stored_at),
        "data_preview": row.data_text if len(row.data_text) <= PREVIEW_CHARS else row.data_text[:PREVIEW_CHARS] + "…",
        "data_title": row.data_text[:TITLE_CHARS],
        **shown,
    }
