"""Durable consumers in the admin: each consumer's position (floor, lag, pending, redeliveries, dead letters), its
dead letters with a redrive per letter or for all, and a seek that says what it drops before it does it.

Consumers are created and used through the APIs; here they are looked at and repaired. Every figure comes from
``consumers.services.describe`` and every change goes through ``consumers.services``, so the console refuses what
the API refuses, with the same message.
"""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from consumers.models import Consumer
from consumers.services import (
    MAX_OFFSET,
    ConsumerInfo,
    dead_letters_of,
    describe,
    redrive_dead_letters,
    seek_consumer,
)
from eventrelay.errors import InvalidInput, NotFound

# The change page lists this many dead letters at a time, with a link to the next ones.
DEAD_LETTERS_SHOWN = 100


def position(consumer: Consumer) -> ConsumerInfo:
    """``describe`` once per row and request: every column and field of the row reads the same snapshot."""
    info = consumer.__dict__.get("_console_position")
    if info is None:
        info = consumer.__dict__["_console_position"] = describe(consumer)
    return info


def _change_url(consumer: Consumer) -> str:
    return reverse("admin:consumers_consumer_change", args=[consumer.pk])


class SeekForm(forms.Form):
    offset = forms.IntegerField(
        min_value=-1,
        max_value=MAX_OFFSET,
        help_text="The first offset to deliver again; -1: after the topic's last event (skip everything stored).",
    )
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)


@admin.register(Consumer)
class ConsumerAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "topic_ref",
        "ack_floor",
        "lag",
        "pending",
        "redeliveries",
        "dead_letter_count",
        "expired_count",
        "ordered",
    )
    list_filter = (("topic", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("topic",)
    # Each row costs a ``describe``: a page never shows more than this many.
    list_per_page = 100
    list_max_show_all = 100
    search_fields = ("name", "topic__name", "ref_id")
    ordering = ("topic__name", "ref_id", "name")
    actions = ["redrive_all_dead_letters"]
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name",
                    "topic_ref",
                    "start_offset",
                    "ack_wait_seconds",
                    "max_deliveries",
                    "max_in_flight",
                    "event_names",
                    "ordered",
                    "created_at",
                )
            },
        ),
        (
            "Position",
            {
                "fields": (
                    "ack_floor",
                    "next_offset_shown",
                    "lag",
                    "pending",
                    "leased",
                    "redeliveries",
                    "queued",
                    "dead_letter_count",
                    "expired_count",
                )
            },
        ),
    )
    readonly_fields = (
        "topic_ref",
        "ack_floor",
        "next_offset_shown",
        "lag",
        "pending",
        "leased",
        "redeliveries",
        "queued",
        "dead_letter_count",
        "expired_count",
    )

    # Created through the API (a worker names its consumer); changed only by the redrive and seek below.

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Consumer | None = None) -> bool:
        return False

    def has_redrive_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("consumers.change_consumer")

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[str], dict[str, int], set[str], list[str]]:
        """The stock version lists every pending event and dead letter deleted with a consumer (thousands for a
        busy one); count them instead."""
        consumers = list(objs)
        perms_needed = {"consumer" for consumer in consumers if not self.has_delete_permission(request, consumer)}
        infos = [position(consumer) for consumer in consumers]
        counts = {
            "events in flight": sum(info.pending + info.queued for info in infos),
            "dead letters": sum(info.dead_letters for info in infos),
        }
        listed: list[str] = [format_html('Consumer: <a href="{}">{}</a>', _change_url(c), c) for c in consumers]
        return listed, {name: count for name, count in counts.items() if count}, perms_needed, []

    # Columns and fields.

    @admin.display(description="topic", ordering="topic__name")
    def topic_ref(self, consumer: Consumer) -> str:
        return consumer.ref_text

    @admin.display(description="ack floor")
    def ack_floor(self, consumer: Consumer) -> int:
        return position(consumer).ack_floor

    @admin.display(description="next offset to examine")
    def next_offset_shown(self, consumer: Consumer) -> int:
        return position(consumer).next_offset

    @admin.display(description="lag")
    def lag(self, consumer: Consumer) -> int:
        return position(consumer).lag

    @admin.display(description="pending")
    def pending(self, consumer: Consumer) -> int:
        return position(consumer).pending

    @admin.display(description="leased now")
    def leased(self, consumer: Consumer) -> int:
        return position(consumer).leased

    @admin.display(description="redeliveries")
    def redeliveries(self, consumer: Consumer) -> int:
        return position(consumer).redelivering

    @admin.display(description="queued behind their topic id")
    def queued(self, consumer: Consumer) -> int:
        return position(consumer).queued

    @admin.display(description="dead letters")
    def dead_letter_count(self, consumer: Consumer) -> str:
        count = position(consumer).dead_letters
        if not count:
            return "0"
        return format_html('<a href="{}#dead-letters">{}</a>', _change_url(consumer), count)

    @admin.display(description="expired")
    def expired_count(self, consumer: Consumer) -> int:
        """Matching events retention deleted before they were acknowledged."""
        return position(consumer).expired

    # The change page: settings and position (read-only), the dead letters, and the buttons.

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        consumer = self.get_object(request, object_id)
        context = {**(extra_context or {})}
        if consumer is not None:
            after = _whole_number(request.GET.get("after")) or 0
            letters = dead_letters_of(consumer, after=after, limit=DEAD_LETTERS_SHOWN)
            context.update(
                {
                    "dead_letters": letters,
                    "dead_letter_total": position(consumer).dead_letters,
                    "dead_letters_after": after,
                    "more_dead_letters_after": letters[-1].offset if len(letters) == DEAD_LETTERS_SHOWN else None,
                    "can_redrive": self.has_redrive_permission(request),
                }
            )
        return super().change_view(request, object_id, form_url, context)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<path:object_id>/redrive/",
                self.admin_site.admin_view(self.redrive_view),
                name="consumers_consumer_redrive",
            ),
            path("<path:object_id>/seek/", self.admin_site.admin_view(self.seek_view), name="consumers_consumer_seek"),
            *super().get_urls(),
        ]

    def _consumer_or_404(self, request: HttpRequest, object_id: str) -> Consumer:
        consumer = self.get_object(request, object_id)
        if consumer is None:
            raise Http404("no such consumer")
        if not self.has_redrive_permission(request):
            raise PermissionDenied
        return consumer

    def redrive_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST ``offset`` (one or more) to redrive those dead letters, or ``all`` for every one."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        consumer = self._consumer_or_404(request, object_id)
        offsets: list[int] | None = None
        if not request.POST.get("all"):
            parsed = [_whole_number(value) for value in request.POST.getlist("offset")]
            if not parsed or any(offset is None for offset in parsed):
                self.message_user(request, "Choose the dead letters to redrive.", messages.ERROR)
                return HttpResponseRedirect(_change_url(consumer))
            offsets = [offset for offset in parsed if offset is not None]
        try:
            redriven = redrive_dead_letters(consumer, offsets)
        except InvalidInput as error:
            self.message_user(request, error.message, messages.ERROR)
        else:
            self._report_redrive(request, consumer, redriven)
        return HttpResponseRedirect(_change_url(consumer))

    def _report_redrive(self, request: HttpRequest, consumer: Consumer, redriven: list[int]) -> None:
        if not redriven:
            self.message_user(request, f"“{consumer}” has no dead letters to redrive.", messages.WARNING)
            return
        shown = ", ".join(str(offset) for offset in redriven[:10]) + (", …" if len(redriven) > 10 else "")
        self.log_change(request, consumer, f"Redrove {len(redriven)} dead letter(s).")
        self.message_user(
            request,
            f"Redrove {len(redriven)} dead letter(s) of “{consumer}” (offsets {shown}): they are handed out again "
            "by the next fetch, their delivery count starting over.",
            messages.SUCCESS,
        )

    def seek_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the offset form. POST: the confirmation page. POST with ``confirm``: the seek."""
        consumer = self._consumer_or_404(request, object_id)
        form = SeekForm(request.POST if request.method == "POST" else None)
        if form.is_valid() and form.cleaned_data["confirm"]:
            offset = form.cleaned_data["offset"]
            try:
                info = seek_consumer(consumer, offset)
            except InvalidInput as error:
                form.add_error("offset", error.message)
            except NotFound as error:
                self.message_user(request, error.message, messages.ERROR)
                return HttpResponseRedirect(reverse("admin:consumers_consumer_changelist"))
            else:
                self.log_change(request, consumer, f"Sought to offset {info.next_offset}.")
                self.message_user(
                    request,
                    f"“{consumer}” starts over from offset {info.next_offset}: leases and pending redeliveries were "
                    "dropped, and ackIds handed out before no longer act.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(_change_url(consumer))
        confirming = form.is_valid()
        requested = form.cleaned_data["offset"] if confirming else None
        head = consumer.topic.last_offset
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": consumer,
            "title": f"Seek {consumer}",
            "form": form,
            "info": position(consumer),
            "confirming": confirming,
            "requested": requested,
            # As ``seek_consumer`` resolves it: -1 is after the last event, and offsets start at 1.
            "target": None if requested is None else (head + 1 if requested == -1 else max(requested, 1)),
            "head": head,
        }
        return TemplateResponse(request, "admin/consumers/consumer/seek.html", context)

    # The list's action.

    @admin.action(description="Redrive all dead letters of selected consumers", permissions=["redrive"])
    def redrive_all_dead_letters(self, request: HttpRequest, queryset: QuerySet[Consumer]) -> None:
        for consumer in queryset.select_related("topic"):
            self._report_redrive(request, consumer, redrive_dead_letters(consumer, None))


def _whole_number(text: str | None) -> int | None:
    """An offset from a form or query string, None when it is not one."""
    if text is None or not text.isdigit() or int(text) > MAX_OFFSET:
        return None
    return int(text)
