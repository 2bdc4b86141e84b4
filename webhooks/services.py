"""Webhook destinations: create, change, pause/resume, rotate secret, redeliver.

Transports (admin, REST) call these; they validate and raise ``eventrelay.errors`` kinds with a
message naming the field, so every front end explains a refusal the same way. Fields are named as the
models name them (snake_case, ``max_attempts``); a transport that shows other names (the REST API's
camelCase) translates them in one place of its own.
"""

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.utils import timezone
from django.utils.text import Truncator

from eventrelay.errors import InvalidInput, NotFound
from eventrelay.refs import TopicRef
from topics.models import Topic
from webhooks import delivery, scheduling, signing, ssrf, wakeups
from webhooks.delivery import Outcome
from webhooks.models import DeliveryStream, Destination, UndeliverableEvent

logger = logging.getLogger(__name__)

MASK = "***"

EDITABLE_FIELDS = (
    "name",
    "url",
    "event_names",
    "active",
    "max_attempts",
    "timeout_seconds",
    "backoff_base_ms",
    "backoff_cap_ms",
    "max_per_second",
)


def check_destination_url(url: object) -> str:
    if not isinstance(url, str) or not url:
        raise InvalidInput("url is required", field="url")
    if len(url) > 2000:
        raise InvalidInput("url is longer than 2000 characters", field="url")
    try:
        ssrf.check_url(url, allow_private=settings.ER_WEBHOOK_ALLOW_PRIVATE)
    except ValueError as exc:
        raise InvalidInput(f"url {ssrf.without_password(url)!r} is refused: {exc}", field="url") from None
    return url


def shown_url(url: str) -> str:
    """The URL as the API and the admin show it: a password in it is write-only, like the signing secret."""
    return ssrf.without_password(url)


def restore_password(submitted: object, stored: str) -> object:
    """``submitted`` with the stored password put back where it shows the mask (``***``).

    Clients only ever see the URL masked, so sending it back unchanged, or with another path or query, must keep
    the password. It is put back only for the same scheme, user, host and port: a masked password sent towards
    another host would hand the stored one to it. Anything else is taken as written (a new URL replaces it).
    """
    if not isinstance(submitted, str) or submitted == stored:
        return submitted
    try:
        new, old = urlsplit(submitted), urlsplit(stored)
        if new.password != MASK or old.password is None:
            return submitted
        same_place = (new.scheme, new.username, new.hostname, new.port) == (
            old.scheme,
            old.username,
            old.hostname,
            old.port,
        )
    except ValueError:
        return submitted
    if not same_place:
        raise InvalidInput(
            f"url {submitted!r} has the masked password {MASK!r} but another user, host or port than the stored URL:"
            " type the password again",
            field="url",
        )
    old_userinfo = old.netloc.rpartition("@")[0]
    return new._replace(netloc=f"{old_userinfo}@{new.netloc.rpartition('@')[2]}").geturl()


def _check_event_names(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise InvalidInput("event_names must be a list of event names", field="event_names")
    return value


# Upper bounds that keep every value sane (and inside its integer column).
MAX_ATTEMPTS_LIMIT = 1000
TIMEOUT_SECONDS_LIMIT = 300
BACKOFF_MS_LIMIT = 7 * 24 * 3_600_000
LIMITS = {
    "max_attempts": MAX_ATTEMPTS_LIMIT,
    "timeout_seconds": TIMEOUT_SECONDS_LIMIT,
    "backoff_base_ms": BACKOFF_MS_LIMIT,
    "backoff_cap_ms": BACKOFF_MS_LIMIT,
    "max_per_second": 1_000_000,
}


def _check_positive(field: str, value: object) -> int | None:
    if value is None:
        return None
    maximum = LIMITS[field]
    if type(value) is not int or not 1 <= value <= maximum:
        raise InvalidInput(f"{field} must be a whole number from 1 to {maximum}", field=field)
    return value


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("name is required", field="name")
    if len(name.strip()) > 100:
        raise InvalidInput("name is longer than 100 characters", field="name")
    return name.strip()


@transaction.atomic
def create_destination(
    *,
    name: str,
    url: str,
    topic: str,
    event_names: list[str] | None = None,
    active: bool = True,
    max_attempts: int | None = None,
    timeout_seconds: int | None = None,
    backoff_base_ms: int | None = None,
    backoff_cap_ms: int | None = None,
    start_offset: int | None = None,
    max_per_second: int | None = None,
) -> Destination:
    """Create a destination (and, for a ``name:id`` topic, its one stream: both or neither). It delivers events
    published after now, or after ``start_offset`` (an earlier offset, to replay) when given."""
    name = _check_name(name)
    check_destination_url(url)
    ref = TopicRef.parse(topic)
    topic_row = Topic.objects.filter(name=ref.name).first()
    if topic_row is None:
        raise NotFound(f"topic '{ref.name}' does not exist", field="topic")
    if start_offset is None:
        start_offset = topic_row.last_offset
    elif type(start_offset) is not int or not 0 <= start_offset <= topic_row.last_offset:
        raise InvalidInput(f"start_offset must be between 0 and {topic_row.last_offset}", field="start_offset")
    destination = Destination.objects.create(
        name=name,
        url=url,
        topic_name=ref.name,
        topic_id=ref.id or "",
        event_names=_check_event_names(event_names),
        active=bool(active),
        secret=signing.new_secret(),
        max_attempts=_check_positive("max_attempts", max_attempts),
        timeout_seconds=_check_positive("timeout_seconds", timeout_seconds),
        backoff_base_ms=_check_positive("backoff_base_ms", backoff_base_ms),
        backoff_cap_ms=_check_positive("backoff_cap_ms", backoff_cap_ms),
        max_per_second=_check_positive("max_per_second", max_per_second),
        start_offset=start_offset,
        scanned_offset=start_offset,
    )
    if ref.id is not None:
        DeliveryStream.objects.create(destination=destination, topic_id=ref.id, last_offset=start_offset)
    if start_offset < topic_row.last_offset:
        _wake_after_commit(ref.name)
    return destination


def _wake_after_commit(topic_name: str) -> None:
    """Wake the topic's delivery once the transaction commits, without waiting for the broker (webhooks.wakeups):
    the change is saved either way, and the beat sweep does the work if the wake-up is lost."""
    transaction.on_commit(lambda: wakeups.wake_topic_soon(topic_name))


def _queue_after_commit(task_name: str, *args: object) -> None:
    """Queue a Celery task once the transaction commits, without waiting for the broker (webhooks.wakeups)."""
    transaction.on_commit(lambda: wakeups.queue_soon(task_name, *args))


@transaction.atomic
def update_destination(destination: Destination, changes: dict[str, Any]) -> Destination:
    """Change the editable fields (not the topic: a new topic is a new destination)."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise InvalidInput(f"cannot change {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    if "name" in changes:
        changes["name"] = _check_name(changes["name"])
    if "url" in changes:
        changes["url"] = restore_password(changes["url"], destination.url)
        check_destination_url(changes["url"])
    if "event_names" in changes:
        changes["event_names"] = _check_event_names(changes["event_names"])
    for field in ("max_attempts", "timeout_seconds", "backoff_base_ms", "backoff_cap_ms"):
        if field in changes:
            _check_positive(field, changes[field])
    for field, value in changes.items():
        setattr(destination, field, value)
    if changes.get("active"):
        destination.disabled_reason = ""
        changes["disabled_reason"] = ""
    # Only the changed fields: a worker may be updating others (disabling on 410, scan offsets).
    destination.save(update_fields=[*changes, "updated_at"])
    if changes.get("active"):
        resume(destination)
    return destination


def pause(destination: Destination) -> None:
    Destination.objects.filter(pk=destination.pk).update(active=False, updated_at=timezone.now())
    destination.active = False


@transaction.atomic
def resume(destination: Destination) -> None:
    """Reactivate and deliver the backlog now (retry timers are reset)."""
    Destination.objects.filter(pk=destination.pk).update(
        active=True, disabled_reason="", disabled_at=None, failing_since=None, updated_at=timezone.now()
    )
    destination.active = True
    destination.streams.update(next_attempt_at=timezone.now())
    _wake_after_commit(destination.topic_name)


def rotate_secret(destination: Destination) -> str:
    """Give the destination a new signing secret and return it (shown once). The old one keeps signing every
    request beside it for ``ER_WEBHOOK_SECRET_OVERLAP_S``, so the receiver can switch over without losing one."""
    destination.previous_secret = destination.secret
    destination.previous_secret_until = timezone.now() + timedelta(seconds=settings.ER_WEBHOOK_SECRET_OVERLAP_S)
    destination.secret = signing.new_secret()
    destination.save(update_fields=["secret", "previous_secret", "previous_secret_until", "updated_at"])
    return destination.secret


def redeliver_since(destination: Destination, since: datetime) -> int:
    """Redeliver every undeliverable event of ``destination`` recorded since ``since`` and not redelivered yet: one
    task per stream, which sends that stream's events in offset order. How many are queued."""
    pending = UndeliverableEvent.objects.filter(
        stream__destination=destination, created_at__gte=since, redelivered_at__isnull=True
    ).order_by("stream_id", "offset")
    by_stream: dict[int, list[int]] = {}
    for stream_id, undeliverable_id in pending.values_list("stream_id", "pk"):
        by_stream.setdefault(stream_id, []).append(undeliverable_id)
    for ids in by_stream.values():
        _queue_after_commit(scheduling.REDELIVER_IN_ORDER, tuple(ids))  # (hashable: wake-ups are keyed by args)
    return sum(len(ids) for ids in by_stream.values())


def redeliver(undeliverable: UndeliverableEvent) -> None:
    """Queue one more delivery of an event that exhausted its attempts (outside its stream's order)."""
    _queue_after_commit(scheduling.REDELIVER_UNDELIVERABLE, undeliverable.pk)


# --- Test events ----------------------------------------------------------------------------------------
#
# A test event is sent by a worker, not by the request that asks for it (a slow receiver would hold the request
# for its whole timeout). Its result is recorded in the destination's history (Django's admin log, the page
# where the admin shows what was done to a destination), so whoever asked reads it there and on the
# destination's page; no delivery stream or attempt is touched.

TEST_EVENT_RESULT_PREFIX = "Test event "


def send_test_event(destination: Destination, requested_by: int) -> uuid.UUID:
    """Queue a synthetic event to the destination (sent once the transaction commits) and return its id; the
    result is recorded for the user ``requested_by`` (``webhooks.selectors.test_event_results`` reads it)."""
    event_id = uuid.uuid4()
    _queue_after_commit(scheduling.SEND_TEST_EVENT, destination.pk, str(event_id), requested_by)
    return event_id


def deliver_test_event(destination_id: int, event_id: str, requested_by: int) -> str:
    """Send a queued test event and record its result; returns the result as recorded ("" if the destination
    was deleted meanwhile: there is nothing to send to, and no page to show it on)."""
    destination = Destination.objects.filter(pk=destination_id).first()
    if destination is None:
        return ""
    outcome = delivery.send_test_event(destination, uuid.UUID(event_id))
    result = test_event_result(event_id, outcome)
    # The content type is read, not taken from ContentType's per-process cache: a long-running worker must not
    # write an id that was replaced since it cached it (a flushed and re-populated database does that).
    content_type, _ = ContentType.objects.get_or_create(
        app_label=Destination._meta.app_label, model=Destination._meta.model_name
    )
    LogEntry.objects.create(
        user_id=requested_by,
        content_type=content_type,
        object_id=str(destination.pk),
        object_repr=str(destination)[:200],
        action_flag=CHANGE,
        change_message=result,
    )
    return result


def test_event_result(event_id: str, outcome: Outcome) -> str:
    if outcome.ok:
        return f"{TEST_EVENT_RESULT_PREFIX}{event_id}: HTTP {outcome.status} in {outcome.duration_ms} ms."
    body = f" Response: {Truncator(outcome.body).chars(200)}" if outcome.body else ""
    return f"{TEST_EVENT_RESULT_PREFIX}{event_id} failed: {outcome.error}.{body}"
