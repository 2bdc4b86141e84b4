"""The webhook admin: destinations (with their delivery streams), delivery attempts, undeliverable events.

A thin admin: what the pages show comes from ``webhooks.selectors`` and the models' QuerySet methods, and every
change goes through ``webhooks.services``, so the admin refuses exactly what the API refuses, with the same
message, and creates destinations the same way (secret generated, cursor at the topic's head unless a replay
offset is given). Slow work (a test event's HTTP request) is queued for a worker, never done in the request.
Delivery attempts and undeliverable events are records of what happened: they can be viewed (and undeliverable
events redelivered) but never edited.
"""

from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import MinValueValidator
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator, capfirst
from django.utils.timesince import timesince, timeuntil

from eventrelay.errors import EventRelayError
from eventrelay.refs import ID_MAX_LENGTH, NAME_MAX_LENGTH, TopicRef
from topics.models import Topic
from topics.services import get_topic
from webhooks import selectors, services
from webhooks.models import DeliveryAttempt, DeliveryStream, Destination, DestinationQuerySet, UndeliverableEvent

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldOpts, _FieldsetSpec

# A whole-topic destination has a stream per topic id (possibly thousands); its page shows these many.
STREAMS_SHOWN = 100
# One click queues a test event per selected destination: a test is for checking a receiver or a few, and a
# selection of every destination by mistake should not send one to each.
TEST_EVENT_MAX_DESTINATIONS = 10
RETRY_POLICY_FIELDS = ("max_attempts", "timeout_seconds", "backoff_base_ms", "backoff_cap_ms", "max_per_second")


def _changelist_url(model: type[Model], **filters: object) -> str:
    query = f"?{urlencode(filters)}" if filters else ""
    return reverse(f"admin:webhooks_{model._meta.model_name}_changelist") + query


def _destination_link(destination: Destination) -> str:
    return format_html(
        '<a href="{}">{}</a>', reverse("admin:webhooks_destination_change", args=[destination.pk]), destination.name
    )


def _moment(value: Any) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")


def _clipped(text: str, *, narrow: bool = False) -> str:
    """Long text for a list column: cut to the column's width with an ellipsis (CSS), the whole of it in the
    tooltip, so the figures beside it stay on the page at 1280 px."""
    if not text:
        return "-"
    css_class = "er-clip narrow" if narrow else "er-clip"
    return format_html(
        '<span class="{}" title="{}">{}</span>', css_class, Truncator(text).chars(2000), Truncator(text).chars(200)
    )


# --- Filters --------------------------------------------------------------------------------------


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            ("active", "active"),
            ("paused", "paused"),
            ("disabled", "disabled by the receiver (410)"),
            ("failing", "failing (retrying, or disabled by the receiver)"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        destinations = cast(DestinationQuerySet, queryset)  # the destination list's own queryset
        if self.value() == "active":
            return destinations.active()
        if self.value() == "paused":
            return destinations.paused()
        if self.value() == "disabled":
            return destinations.disabled_by_receiver()
        if self.value() == "failing":
            return destinations.filter(pk__in=selectors.failing_destinations().values("pk"))
        return queryset


class TopicFilter(admin.SimpleListFilter):
    title = "topic"
    parameter_name = "topic"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(name, name) for name in selectors.topic_names_with_destinations()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(topic_name=self.value()) if self.value() else queryset


class DestinationFilter(admin.SimpleListFilter):
    """For the attempt and undeliverable lists, whose rows reach their destination through the stream."""

    title = "destination"
    parameter_name = "destination"
    path = "stream__destination_id"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(str(pk), name) for pk, name in selectors.destination_choices()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(**{self.path: self.value()}) if self.value() else queryset


class StreamDestinationFilter(DestinationFilter):
    path = "destination_id"


class RetryingFilter(admin.SimpleListFilter):
    title = "head event"
    parameter_name = "retrying"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "failing, being retried")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(attempts__gt=0) if self.value() == "yes" else queryset


class AttemptTimeFilter(admin.DateFieldListFilter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.title = "time"


class RedeliveredFilter(admin.SimpleListFilter):
    title = "redelivered"
    parameter_name = "redelivered"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("no", "not yet"), ("yes", "yes")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("yes", "no"):
            return queryset.filter(redelivered_at__isnull=self.value() == "no")
        return queryset


# --- Destination form -----------------------------------------------------------------------------


class EventNamesField(forms.Field):
    """The destination's event-name filter as text, one name per line (names may contain commas)."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 40})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, list):
            return value
        names = [line.strip() for line in (value or "").splitlines() if line.strip()]
        too_long = [name for name in names if len(name) > 255]
        if too_long:
            raise ValidationError(f"event names are at most 255 characters; {too_long[0][:40]!r}… is longer")
        return names


class DestinationForm(forms.ModelForm):
    """Validated by the services' own checks, so a refusal reads the same here as from the REST API."""

    url = forms.CharField(
        label="URL",
        max_length=2000,
        widget=forms.TextInput(attrs={"size": 80}),
        help_text="http or https. Hosts resolving to private or loopback addresses are refused unless "
        "ER_WEBHOOK_ALLOW_PRIVATE is on.",
    )
    topic = forms.CharField(
        max_length=NAME_MAX_LENGTH + 1 + ID_MAX_LENGTH,
        help_text="'users' (every topic id, each delivered in order on its own) or 'users:123' (one id). "
        "Cannot be changed later: a new topic is a new destination.",
    )
    event_names = EventNamesField(required=False, help_text="Only these event names, one per line; empty for all.")
    start_offset = forms.IntegerField(
        min_value=0,
        required=False,
        label="Start after offset",
        help_text="Empty: deliver events published from now on. An earlier offset replays the events after it.",
    )

    class Meta:
        model = Destination
        fields = ("name", "url", "topic", "event_names", "active", "start_offset", *RETRY_POLICY_FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.topic_row: Topic | None = None
        for name in RETRY_POLICY_FIELDS:
            # The model allows 0; the services do not ("a whole number >= 1").
            self.fields[name].validators.append(MinValueValidator(1))
            self.fields[name].widget.attrs["min"] = 1
        if self.instance.pk:
            for name, value in (("topic", self.instance.topic), ("start_offset", self.instance.start_offset)):
                self.fields[name].disabled = True
                self.fields[name].required = False
                self.fields[name].initial = value
            self.fields["start_offset"].help_text = "Events after this offset were to be delivered."
            # The password in the URL is write-only: shown masked; submitting the mask keeps it.
            self.initial["url"] = services.shown_url(self.instance.url)

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        try:
            if self.instance.pk:
                url = services.restore_password(url, self.instance.url)
            return services.check_destination_url(url)
        except EventRelayError as error:
            raise ValidationError(error.message) from None

    def clean_topic(self) -> str:
        if self.instance.pk:
            return self.instance.topic
        try:
            ref = TopicRef.parse(self.cleaned_data["topic"])
            self.topic_row = get_topic(ref.name)
        except EventRelayError as error:
            raise ValidationError(error.message) from None
        return str(ref)

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        start_offset = cleaned.get("start_offset")
        if not self.instance.pk and self.topic_row is not None and start_offset is not None:
            if start_offset > self.topic_row.last_offset:
                self.add_error(
                    "start_offset",
                    f"must be between 0 and {self.topic_row.last_offset}, the last offset of topic "
                    f"'{self.topic_row.name}'",
                )
        return cleaned

    def create_kwargs(self) -> dict[str, Any]:
        """The cleaned values as ``services.create_destination`` takes them."""
        names = ("name", "url", "topic", "event_names", "active", "start_offset", *RETRY_POLICY_FIELDS)
        return {name: self.cleaned_data.get(name) for name in names}


# --- Delivery streams (inline on the destination page) --------------------------------------------


class ReadOnly:
    """For records of what happened: they can be viewed, never added, edited or deleted in the admin."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class StreamColumns:
    """Columns shared by the streams inline (destination page) and the streams list."""

    @admin.display(description="topic")
    def stream_topic(self, stream: DeliveryStream) -> str:
        return stream.topic

    @admin.display(description="next attempt", ordering="next_attempt_at")
    def next_attempt(self, stream: DeliveryStream) -> str:
        if stream.next_attempt_at > timezone.now():
            return f"in {timeuntil(stream.next_attempt_at)} ({_moment(stream.next_attempt_at)})"
        return "due"

    @admin.display(description="lease")
    def lease(self, stream: DeliveryStream) -> str:
        now = timezone.now()
        if stream.lease_expires_at and stream.lease_expires_at > now:
            return f"held by worker {stream.lease_owner[:8]} until {_moment(stream.lease_expires_at)}"
        if stream.lease_owner:
            return f"expired {timesince(stream.lease_expires_at or now)} ago (the sweep takes it over)"
        if stream.enqueued_at:
            return f"queued {timesince(stream.enqueued_at)} ago"
        return "free"

    @admin.display(description="delivered", ordering="delivered_count")
    def delivered(self, stream: DeliveryStream) -> int:
        return stream.delivered_count

    @admin.display(description="expired", ordering="expired_count")
    def expired(self, stream: DeliveryStream) -> int:
        """Events retention deleted before they were delivered."""
        return stream.expired_count


class DeliveryStreamInline(ReadOnly, StreamColumns, admin.TabularInline):
    model = DeliveryStream
    fk_name = "destination"
    extra = 0
    can_delete = False
    fields = (
        "stream_topic",
        "last_offset",
        "backlog",
        "attempts",
        "next_attempt",
        "lease",
        "last_error",
        "delivered",
        "expired",
    )
    readonly_fields = fields
    verbose_name_plural = "delivery streams"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shown: tuple[Destination, selectors.ShownStreams] | None = None
        self._backlogs: dict[int, int] | None = None

    def shown_streams(self, destination: Destination) -> QuerySet[DeliveryStream]:
        """The streams the page lists: failing ones first, then the furthest behind."""
        shown = selectors.shown_streams(destination, limit=STREAMS_SHOWN)
        if shown.total > len(shown.ids):
            self.verbose_name_plural = (
                f"delivery streams ({len(shown.ids)} of {shown.total}: failing and furthest behind first)"
            )
        self._shown = (destination, shown)
        return DeliveryStream.objects.filter(pk__in=shown.ids).most_urgent_first()

    @admin.display(description="events after the cursor")
    def backlog(self, stream: DeliveryStream) -> str:
        if self._backlogs is None and self._shown is not None:
            destination, shown = self._shown
            self._backlogs = selectors.stream_backlogs(destination, shown.cursors)
        if self._backlogs is None:
            return "topic deleted"
        count = self._backlogs.get(stream.pk)
        if count is None:
            return "-"
        limit = selectors.BACKLOG_COUNT_LIMIT
        return f"more than {limit:,}" if count > limit else f"{count:,}"


# --- Destinations ---------------------------------------------------------------------------------


@admin.register(Destination)
class DestinationAdmin(admin.ModelAdmin):
    form = DestinationForm
    inlines = [DeliveryStreamInline]
    list_display = (
        "name",
        "topic_ref",
        "shown_url",
        "state",
        "disabled_reason_shown",
        "stream_count",
        "backlog",
        "undeliverable",
    )
    list_filter = (StateFilter, TopicFilter)
    search_fields = ("name", "url", "topic_name", "topic_id")
    actions = [
        "pause_destinations",
        "resume_destinations",
        "rotate_secrets",
        "send_test_event",
        "redeliver_last_day",
        "redeliver_last_week",
    ]
    readonly_fields = (
        "disabled_reason",
        "disabled_at",
        "failing_since",
        "delivery_summary",
        "signing_secret",
        "created_at",
        "updated_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Destination]:
        """One query for the whole list (and the change page): counts, topic head and backlog bound."""
        return super().get_queryset(request).with_delivery_stats()  # type: ignore[attr-defined]

    def get_fieldsets(self, request: HttpRequest, obj: Destination | None = None) -> "_FieldsetSpec":
        retry_options: _FieldOpts = {"fields": RETRY_POLICY_FIELDS, "classes": ("collapse",)}
        retry = ("Retry policy", retry_options)
        if obj is None:
            return [(None, {"fields": ("name", "url", "topic", "event_names", "active", "start_offset")}), retry]
        return [
            (
                None,
                {
                    "fields": (
                        *("name", "url", "topic", "event_names", "active"),
                        *("disabled_reason", "disabled_at", "failing_since"),
                    )
                },
            ),
            (
                "Delivery",
                {"fields": ("delivery_summary", "start_offset", "signing_secret", "created_at", "updated_at")},
            ),
            retry,
        ]

    def get_inline_instances(self, request: HttpRequest, obj: Destination | None = None) -> list[Any]:
        return super().get_inline_instances(request, obj) if obj is not None else []

    def get_formset_kwargs(self, request: HttpRequest, obj: Destination, inline: Any, prefix: str) -> dict[str, Any]:
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if isinstance(inline, DeliveryStreamInline):
            kwargs["queryset"] = inline.shown_streams(obj)
        return kwargs

    # Saving goes through the services: creation generates the secret and places the cursor.

    def save_form(self, request: HttpRequest, form: DestinationForm, change: bool) -> Destination:
        if change:
            return super().save_form(request, form, change)
        destination = services.create_destination(**form.create_kwargs())
        messages.success(
            request,
            format_html(
                "Signing secret of “{}”: <code>{}</code> Copy it now: it is not shown again. "
                "Receivers verify each delivery's <code>webhook-signature</code> with it.",
                destination.name,
                destination.secret,
            ),
        )
        return destination

    def save_model(self, request: HttpRequest, obj: Destination, form: DestinationForm, change: bool) -> None:
        if change:
            changes = {name: form.cleaned_data[name] for name in form.changed_data if name in services.EDITABLE_FIELDS}
            services.update_destination(obj, changes)
        # When adding, save_form has created it through the service already.

    def save_related(self, request: HttpRequest, form: DestinationForm, formsets: list[Any], change: bool) -> None:
        # When adding, the service saved the destination (there are no many-to-many fields, no inlines).
        if change:
            super().save_related(request, form, formsets, change)

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[str], dict[str, int], set[str], list[str]]:
        """Deleting a destination deletes its streams and delivery records with it. The stock version
        would list every one of them (millions of attempts for a busy destination) and ask for delete
        permission on those read-only records, which nobody has: count them instead."""
        destinations = list(objs)
        perms_needed = {
            str(Destination._meta.verbose_name)
            for destination in destinations
            if not self.has_delete_permission(request, destination)
        }
        counts = selectors.records_deleted_with([destination.pk for destination in destinations])
        model_count = {str(model._meta.verbose_name_plural): count for model, count in counts.items() if count}
        listed: list[str] = [
            format_html("{}: {}", capfirst(Destination._meta.verbose_name), _destination_link(d)) for d in destinations
        ]
        return listed, model_count, perms_needed, []

    # List columns.

    @admin.display(description="topic", ordering="topic_name")
    def topic_ref(self, destination: Destination) -> str:
        return destination.topic

    @admin.display(description="URL", ordering="url")
    def shown_url(self, destination: Destination) -> str:
        return _clipped(services.shown_url(destination.url))

    @admin.display(description="disabled reason", ordering="disabled_reason")
    def disabled_reason_shown(self, destination: Destination) -> str:
        return _clipped(destination.disabled_reason, narrow=True)

    @admin.display(description="state", ordering="active")
    def state(self, destination: Destination) -> str:
        if destination.active:
            # Every attempt since then failed: shown as failing, not as a healthy "active".
            if destination.failing_since is not None:
                return f"failing since {_moment(destination.failing_since)}"
            return "active"
        return "disabled" if destination.disabled_reason else "paused"

    @admin.display(description="streams", ordering="stream_count")
    def stream_count(self, destination: Destination) -> int:
        return destination.stream_count  # type: ignore[attr-defined]

    @admin.display(description="backlog", ordering="backlog_bound")
    def backlog(self, destination: Destination) -> str:
        if destination.head_offset is None:  # type: ignore[attr-defined]
            return "topic deleted"
        bound = destination.backlog_bound  # type: ignore[attr-defined]
        # An upper bound: other topic ids' events (and events the name filter skips) are inside the range.
        return f"up to {bound:,}" if bound else "0"

    @admin.display(description="undeliverable", ordering="undeliverable_count")
    def undeliverable(self, destination: Destination) -> str:
        count = destination.undeliverable_count  # type: ignore[attr-defined]
        if not count:
            return "0"
        url = _changelist_url(UndeliverableEvent, destination=destination.pk, redelivered="no")
        return format_html('<a href="{}">{}</a>', url, count)

    # Change page fields.

    @admin.display(description="secret")
    def signing_secret(self, destination: Destination) -> str:
        return "set, hidden (shown once when created or rotated; use “Rotate secret” for a new one)"

    @admin.display(description="status")
    def delivery_summary(self, destination: Destination) -> str:
        head = getattr(destination, "head_offset", None)
        undeliverable = _changelist_url(UndeliverableEvent, destination=destination.pk, redelivered="no")
        lines = [
            format_html("topic head: offset {}", head) if head is not None else "the topic no longer exists",
            format_html("delivery streams: {}", getattr(destination, "stream_count", 0)),
            format_html(
                'undeliverable, waiting for redelivery: <a href="{}">{}</a>',
                undeliverable,
                getattr(destination, "undeliverable_count", 0),
            ),
            format_html(
                '<a href="{}">delivery attempts</a>', _changelist_url(DeliveryAttempt, destination=destination.pk)
            ),
        ]
        if not destination.topic_id and head is not None and head > destination.scanned_offset:
            lines.append(
                format_html(
                    "not yet assigned to a stream: up to {} events after offset {}",
                    head - destination.scanned_offset,
                    destination.scanned_offset,
                )
            )
        for test in selectors.test_event_results(destination):
            lines.append(format_html("{} ({})", test.result, _moment(test.at)))
        return format_html_join("", "<div>{}</div>", ((line,) for line in lines))

    # Actions: stock admin actions (POST, CSRF-checked), also offered as buttons on the change page.

    @admin.action(description="Pause selected destinations", permissions=["change"])
    def pause_destinations(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        paused = []
        for destination in queryset:
            services.pause(destination)
            self.log_change(request, destination, "Paused.")
            paused.append(destination.name)
        self.message_user(request, f"Paused {len(paused)} destination(s): {', '.join(paused)}.", messages.SUCCESS)

    @admin.action(description="Resume selected destinations", permissions=["change"])
    def resume_destinations(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        resumed = []
        for destination in queryset:
            services.resume(destination)
            self.log_change(request, destination, "Resumed.")
            resumed.append(destination.name)
        self.message_user(
            request,
            f"Resumed {len(resumed)} destination(s): {', '.join(resumed)}. Their backlog is delivered from now.",
            messages.SUCCESS,
        )

    def _redeliver_since(self, request: HttpRequest, queryset: QuerySet[Destination], hours: int) -> None:
        since = timezone.now() - timedelta(hours=hours)
        for destination in queryset:
            queued = services.redeliver_since(destination, since)
            self.log_change(request, destination, f"Redelivering {queued} undeliverable event(s) since {since}.")
            self.message_user(
                request,
                f"“{destination.name}”: {queued} undeliverable event(s) recorded since {_moment(since)} queued for "
                "redelivery, in order per stream.",
                messages.SUCCESS if queued else messages.WARNING,
            )

    @admin.action(description="Redeliver undeliverable events of the last 24 hours", permissions=["change"])
    def redeliver_last_day(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        self._redeliver_since(request, queryset, 24)

    @admin.action(description="Redeliver undeliverable events of the last 7 days", permissions=["change"])
    def redeliver_last_week(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        self._redeliver_since(request, queryset, 24 * 7)

    @admin.action(description="Rotate signing secret of selected destinations", permissions=["change"])
    def rotate_secrets(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        for destination in queryset:
            secret = services.rotate_secret(destination)
            self.log_change(request, destination, "Rotated the signing secret.")
            self.message_user(
                request,
                format_html(
                    "New signing secret of “{}”: <code>{}</code> Copy it now: it is not shown again. "
                    "Deliveries are signed with it from now on, and with the old one beside it for "
                    "ER_WEBHOOK_SECRET_OVERLAP_S, so the receiver can switch over.",
                    destination.name,
                    secret,
                ),
                messages.SUCCESS,
            )

    @admin.action(description="Send a test event to selected destinations", permissions=["change"])
    def send_test_event(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        destinations = list(queryset[: TEST_EVENT_MAX_DESTINATIONS + 1])
        if len(destinations) > TEST_EVENT_MAX_DESTINATIONS:
            self.message_user(
                request, f"Select at most {TEST_EVENT_MAX_DESTINATIONS} destinations for a test event.", messages.ERROR
            )
            return
        for destination in destinations:
            # The admin serves logged-in staff only: there is always a user to record the result for.
            event_id = services.send_test_event(destination, requested_by=cast(int, request.user.pk))
            self.message_user(
                request,
                f"Test event {event_id} to “{destination.name}” queued. A worker sends it; its result shows "
                "under “status” on the destination's page and in its history.",
                messages.SUCCESS,
            )

    # One destination's actions from its change page (POST only; admin_view checks login and CSRF).

    def get_urls(self) -> list[Any]:
        run = path(
            "<path:object_id>/run/<str:action>/",
            self.admin_site.admin_view(self.run_action_view),
            name="webhooks_destination_run",
        )
        return [run, *super().get_urls()]

    def run_action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        destination = self.get_object(request, object_id)
        if destination is None:
            raise Http404("no such destination")
        actions = self.get_actions(request)
        chosen = actions.get(action) if action in self.actions else None
        if chosen is None:
            raise PermissionDenied
        function = chosen[0]
        function(self, request, Destination.objects.filter(pk=destination.pk))
        return HttpResponseRedirect(reverse("admin:webhooks_destination_change", args=[destination.pk]))

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Destination | None = None,
    ) -> HttpResponse:
        if obj is not None:
            available = self.get_actions(request)
            toggle = "resume_destinations" if not obj.active else "pause_destinations"
            context["destination_actions"] = [
                (name, label)
                for name, label in (
                    (toggle, "Resume" if not obj.active else "Pause"),
                    ("send_test_event", "Send test event"),
                    ("rotate_secrets", "Rotate secret"),
                )
                if name in available
            ]
        return super().render_change_form(request, context, add, change, form_url, obj)


# --- Streams, attempts, undeliverable events (read-only) ------------------------------------------


class DeliveryRecordAdmin(ReadOnly, admin.ModelAdmin):
    """Attempts and undeliverable events: rows that reach their destination through their stream."""

    list_select_related = ("stream__destination",)

    @admin.display(description="destination", ordering="stream__destination__name")
    def destination(self, record: DeliveryAttempt | UndeliverableEvent) -> str:
        return _destination_link(record.stream.destination)

    @admin.display(description="topic")
    def topic(self, record: DeliveryAttempt | UndeliverableEvent) -> str:
        return record.stream.topic


@admin.register(DeliveryStream)
class DeliveryStreamAdmin(ReadOnly, StreamColumns, admin.ModelAdmin):
    """Every stream of every destination: where delivery stands and which streams are stuck."""

    list_display = (
        "destination_link",
        "stream_topic",
        "last_offset",
        "backlog",
        "attempts",
        "next_attempt",
        "lease",
        "last_error_excerpt",
        "delivered",
        "expired",
    )
    list_filter = (StreamDestinationFilter, RetryingFilter)
    list_select_related = ("destination",)
    search_fields = ("topic_id",)
    fields = (
        "destination_link",
        "stream_topic",
        "last_offset",
        "backlog",
        "attempts",
        "next_attempt",
        "lease",
        "last_error",
        "delivered",
        "expired",
        "updated_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeliveryStream]:
        return super().get_queryset(request).with_topic_head()  # type: ignore[attr-defined]

    @admin.display(description="destination", ordering="destination__name")
    def destination_link(self, stream: DeliveryStream) -> str:
        return _destination_link(stream.destination)

    @admin.display(description="backlog")
    def backlog(self, stream: DeliveryStream) -> str:
        # The topic's head minus the cursor: an upper bound, since the range holds other ids' events too.
        # The destination's page counts each stream's events exactly.
        if stream.head_offset is None:  # type: ignore[attr-defined]
            return "topic deleted"
        bound = max(stream.head_offset - stream.last_offset, 0)  # type: ignore[attr-defined]
        return f"up to {bound:,}" if bound else "0"

    @admin.display(description="last error")
    def last_error_excerpt(self, stream: DeliveryStream) -> str:
        return _clipped(stream.last_error)


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(DeliveryRecordAdmin):
    list_display = (
        "at",
        "destination",
        "topic",
        "offset",
        "attempt",
        "status",
        "response_status",
        "duration",
        "error_excerpt",
    )
    list_filter = (DestinationFilter, "status", ("at", AttemptTimeFilter))
    # The table grows with every attempt: a filtered page skips the second, unfiltered COUNT(*).
    show_full_result_count = False
    fields = (
        "destination",
        "topic",
        "event_id",
        "offset",
        "attempt",
        "status",
        "response_status",
        "duration",
        "error",
        "response_body",
        "at",
    )
    readonly_fields = fields

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, attempt: DeliveryAttempt) -> str:
        return f"{attempt.duration_ms} ms" if attempt.duration_ms is not None else "-"

    @admin.display(description="error")
    def error_excerpt(self, attempt: DeliveryAttempt) -> str:
        return _clipped(attempt.error)


@admin.register(UndeliverableEvent)
class UndeliverableEventAdmin(DeliveryRecordAdmin):
    list_display = ("destination", "topic", "offset", "attempts", "last_error_excerpt", "created_at", "redelivered_at")
    # The time filter also takes the dashboard's links to the events recorded undeliverable in a minute.
    list_filter = (DestinationFilter, RedeliveredFilter, ("created_at", AttemptTimeFilter))
    actions = ["redeliver"]
    fields = ("destination", "topic", "event_id", "offset", "attempts", "last_error", "created_at", "redelivered_at")
    readonly_fields = fields

    def has_redeliver_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("webhooks.change_undeliverableevent")

    @admin.display(description="last error")
    def last_error_excerpt(self, undeliverable: UndeliverableEvent) -> str:
        return _clipped(undeliverable.last_error)

    @admin.action(description="Redeliver selected events", permissions=["redeliver"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[UndeliverableEvent]) -> None:
        count = 0
        for undeliverable in queryset:
            services.redeliver(undeliverable)
            count += 1
        self.message_user(
            request,
            f"Queued {count} event(s) for redelivery. Each is sent once more, outside its stream's order; "
            "the attempt appears under delivery attempts, and a success sets “redelivered at”.",
            messages.SUCCESS,
        )
