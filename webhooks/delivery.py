"""The delivery engine: one worker at a time works one stream, in offset order, at least once.

A worker claims a stream with a conditional UPDATE (the lease; a row count of 0 means "another
process got there first"), then POSTs the events after the stream's cursor one by one. Each
acknowledged event advances the cursor and records its attempt in one statement, so a crash re-sends
at most the event that was in flight (its attempt is recorded when the resent one is answered). A failure records the attempt, sets the next attempt time from the backoff, releases
the lease and stops: later events of that stream wait, other streams keep flowing. Every state change
is conditional on still holding the lease, so a worker whose lease expired cannot move a cursor that
another worker now owns.
"""

import json
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests
import requests.adapters
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from eventrelay import metrics, ratelimit
from eventrelay.db import release_connection
from eventrelay.errors import NotFound
from events.canonical import StoredEvent, canonical_json
from events.services import read_stream_events
from topics import tables
from topics.models import Topic
from webhooks import scheduling, signing, ssrf
from webhooks.models import DeliveryAttempt, DeliveryStream, Destination, UndeliverableEvent

logger = logging.getLogger(__name__)

USER_AGENT = "EventRelay/0.1"
READ_BATCH = 100
# Retries sooner than this are queued as delayed Celery messages; later ones are left to the sweep.
COUNTDOWN_LIMIT_S = 10

_session: requests.Session | None = None
_session_lock = threading.Lock()


def http_session() -> requests.Session:
    """One session per worker process, shared by its delivery threads: keeps connections to receivers alive between
    events, up to one per delivery in flight for each origin."""
    global _session
    with _session_lock:
        if _session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(
                pool_connections=100, pool_maxsize=max(settings.ER_WEBHOOK_CONCURRENCY, 10)
            )
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            _session = session
        return _session


# --- HTTP -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int | None = None
    error: str = ""
    body: str = ""
    retry_after_s: float | None = None
    gone: bool = False
    duration_ms: int = 0


def post_event(destination: Destination, event: StoredEvent) -> Outcome:
    """POST one event, signed. Any 2xx acknowledges; 410 means gone; anything else is a failure."""
    started = time.monotonic()
    try:
        ssrf.check_url(destination.url, allow_private=settings.ER_WEBHOOK_ALLOW_PRIVATE)
    except ValueError as exc:
        return Outcome(ok=False, error=f"refused: {exc}")
    timeout = destination.effective_timeout_seconds
    try:
        # The stored JSON text, spliced (never parsed): an event no parser can read back is sent all the same.
        body = canonical_json(event).encode()
        headers = signing.webhook_headers(
            destination.secret,
            str(event.event_id),
            int(time.time()),
            body,
            USER_AGENT,
            previous_secret=destination.signing_previous_secret(),
        )
        response = http_session().post(
            destination.url, data=body, headers=headers, timeout=timeout, allow_redirects=False, stream=True
        )
    except requests.RequestException as exc:
        return Outcome(
            ok=False, error=request_error_in_words(exc, destination.url, timeout), duration_ms=_ms_since(started)
        )
    except Exception as exc:
        # Whatever cannot be built or sent for this one event is its failed attempt (and, past the maximum,
        # an undeliverable record): the stream moves on instead of failing the same way for ever.
        logger.exception("cannot send offset %s of %s", event.offset, event.topic)
        return Outcome(ok=False, error=f"cannot send the event: {exc!r}"[:2000], duration_ms=_ms_since(started))
    try:
        text = _read_capped(response)
    finally:
        response.close()
    status = response.status_code
    outcome = Outcome(
        ok=200 <= status < 300,
        status=status,
        body=text,
        error="" if 200 <= status < 300 else f"HTTP {status}",
        retry_after_s=_retry_after(response.headers.get("retry-after")),
        gone=status == 410,
        duration_ms=_ms_since(started),
    )
    return outcome


def request_error_in_words(error: requests.RequestException, url: str, timeout: float) -> str:
    """What went wrong with a request, as an operator would say it ("connection refused by 127.0.0.1:18999",
    "timed out after 10 s"), not a library's repr of nested exceptions."""
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    causes: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and len(causes) < 10:
        causes.append(cause)
        cause = (
            cause.__cause__
            or cause.__context__
            or (cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None)
        )
    text = " ".join(str(c) for c in causes)
    if isinstance(error, requests.ConnectTimeout):
        return f"connecting to {where} timed out after {timeout:g} s"
    if isinstance(error, requests.Timeout):
        return f"timed out after {timeout:g} s waiting for {where} to answer"
    if any(isinstance(c, ConnectionRefusedError) for c in causes) or "Connection refused" in text:
        return f"connection refused by {where}"
    if any(isinstance(c, ConnectionResetError) for c in causes) or "Connection reset" in text:
        return f"connection reset by {where}"
    if isinstance(error, requests.exceptions.SSLError):
        return f"TLS handshake with {where} failed"
    if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
        return f"cannot resolve {parts.hostname}"
    if isinstance(error, requests.ConnectionError):
        return f"connection to {where} failed: {str(error)[:300]}"
    return f"request to {where} failed: {str(error)[:300]}"


def _read_capped(response: requests.Response) -> str:
    limit = settings.ER_WEBHOOK_RESPONSE_BODY_BYTES
    chunks, size = [], 0
    try:
        for chunk in response.iter_content(chunk_size=1024):
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except requests.RequestException:
        pass
    return b"".join(chunks)[:limit].decode("utf-8", errors="replace")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(value) - timezone.now()).total_seconds())
        except (TypeError, ValueError):
            return None


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def backoff_seconds(destination: Destination, attempts: int, retry_after_s: float | None = None) -> float:
    """Exponential backoff with jitter (half fixed, half random), capped; ``Retry-After`` wins
    when the receiver sends one, within the cap."""
    cap = destination.effective_backoff_cap_ms / 1000
    if retry_after_s is not None:
        return min(retry_after_s, cap)
    delay = min(cap, destination.effective_backoff_base_ms / 1000 * 2 ** (attempts - 1))
    return delay / 2 + random.uniform(0, delay / 2)


# --- Streams ----------------------------------------------------------------------------------------


def claim(stream_id: int, owner: str, lease_seconds: float) -> bool:
    """Take the stream's lease if it is free (or expired) and the stream is due."""
    now = timezone.now()
    # Every condition is on the stream row itself, so PostgreSQL re-checks it on the row version a
    # concurrent claim has just committed, and two workers can never both get the lease. (``due()``
    # joins the destination, and Django turns an UPDATE through a join into ``id IN (subquery)``,
    # whose lease condition is not re-checked: two claims could both succeed and both send.)
    claimed = (
        DeliveryStream.objects.unleased(now)
        .filter(
            pk=stream_id,
            next_attempt_at__lte=now,
            destination_id__in=Destination.objects.filter(active=True).values("pk"),
        )
        .update(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds), enqueued_at=None)
    )
    return claimed == 1


def _mine(stream_id: int, owner: str) -> QuerySet[DeliveryStream]:
    return DeliveryStream.objects.filter(pk=stream_id, lease_owner=owner)


def release(stream_id: int, owner: str, **changes: object) -> bool:
    return _mine(stream_id, owner).update(lease_owner="", lease_expires_at=None, **changes) == 1


def lease_seconds_for(destination: Destination) -> float:
    return destination.effective_timeout_seconds + settings.ER_WEBHOOK_LEASE_MARGIN_S


@dataclass
class Lease:
    """One ``deliver_stream`` call's hold on its stream: the owner token its conditional updates name, how long
    each renewal lasts, and when this process last set it (``time.monotonic()``). It lives as long as the call,
    so a process that delivers many streams keeps nothing per stream once each call returns."""

    owner: str
    seconds: float
    renewed_at: float


def deliver_stream(stream_id: int) -> str:
    """Deliver a stream's pending events in order until it is empty or an event fails.

    Safe to run twice at once or after a crash: only the lease holder sends, and only it moves the
    cursor. Returns what happened (for logs and tests).
    """
    owner = uuid.uuid4().hex
    stream = DeliveryStream.objects.select_related("destination").filter(pk=stream_id).first()
    if stream is None:
        return "gone"
    seconds = lease_seconds_for(stream.destination)
    if not claim(stream_id, owner, seconds):
        return "not claimed"
    lease = Lease(owner=owner, seconds=seconds, renewed_at=time.monotonic())
    try:
        # Read the stream again now that it is ours: the row read above may predate another worker's
        # deliveries (it delivered and released in between), and sending from that cursor would re-send
        # them and move the cursor back.
        stream = DeliveryStream.objects.select_related("destination").filter(pk=stream_id).first()
        if stream is None:
            return "gone"  # deleted with its topic right after the claim
        with connection.cursor() as cursor:
            # Delivery bookkeeping (attempt rows, cursors) need not wait for its WAL flush: a database
            # crash can only lose the last moments of it, which means re-sending (at least once), never
            # skipping. Events themselves are always committed synchronously by publish.
            cursor.execute("SET synchronous_commit TO OFF")
        return _work(stream, stream.destination, lease)
    except NotFound:
        release(stream_id, owner, last_error="topic no longer exists")
        return "topic deleted"
    except IntegrityError:
        # An attempt or undeliverable row of a stream deleted meanwhile (its topic was deleted): the work is gone
        # with it. Anything else is a bug and is raised.
        if DeliveryStream.objects.filter(pk=stream_id).exists():
            _release_after_error(stream_id, owner)
            raise
        return "lease lost"
    except BaseException:
        # The lease would expire by itself, but only after the whole lease: release now so the sweep can retry
        # sooner, even when what failed was the database connection itself (the re-read or the SET above too).
        _release_after_error(stream_id, owner)
        raise


def _release_after_error(stream_id: int, owner: str) -> None:
    """Release the lease after ``_work`` raised. A database error mid-delivery leaves this process's connection
    dead (PostgreSQL restarted, the network dropped it): close it and try once more on a fresh one."""
    for last_try in (False, True):
        try:
            release(stream_id, owner, next_attempt_at=timezone.now() + timedelta(seconds=1))
            return
        except DatabaseError:
            if last_try:
                logger.warning("could not release the lease of stream %s; it expires by itself", stream_id)
                return
            if connection.in_atomic_block:
                return
            connection.close()


def _work(stream: DeliveryStream, destination: Destination, lease: Lease) -> str:
    names = set(destination.event_names or ())
    topic_pk = None
    while True:
        row = Topic.objects.filter(name=destination.topic_name).values_list("pk", "last_offset").first()
        if row is None:
            raise NotFound("topic no longer exists")
        if topic_pk is not None and row[0] != topic_pk:
            # Deleted and created again while this stream was being worked: the deletion ended this stream (and
            # started the destination over), so these offsets are another topic's.
            return "lease lost"
        topic_pk, head = row
        events = read_stream_events(destination.topic_name, stream.topic_id, after=stream.last_offset, limit=READ_BATCH)
        if not events:
            # Nothing of this topic id up to the head read before the query: move the cursor there,
            # so "behind" (cursor < topic head) stays a precise signal for the sweep.
            if release(stream.pk, lease.owner, last_offset=max(stream.last_offset, head)):
                _requeue_if_more(stream)
            return "drained"
        for event in events:
            if names and event.name not in names:
                if not _advance(stream, lease.owner, event.offset):
                    return "lease lost"
                continue
            result = _attempt(stream, destination, lease, event)
            if result != "delivered":
                return result


def _attempt(stream: DeliveryStream, destination: Destination, lease: Lease, event: StoredEvent) -> str:
    owner = lease.owner
    if not _keep_lease(stream, lease):
        return "lease lost"
    # No database connection is held while the receiver takes its time (or while the destination's throttle
    # makes this thread wait): with the worker's pool (ER_DB_POOL), it goes back for the other delivery threads.
    release_connection()
    held = _wait_for_turn(destination)
    if held:
        release(stream.pk, owner, next_attempt_at=timezone.now() + timedelta(seconds=held))
        return "throttled"
    outcome = post_event(destination, event)
    metrics.WEBHOOK_DELIVERY_DURATION.observe(outcome.duration_ms / 1000)
    attempt = DeliveryAttempt(
        stream=stream,
        event_id=event.event_id,
        offset=event.offset,
        attempt=stream.attempts + 1,
        status=DeliveryAttempt.Status.SUCCEEDED if outcome.ok else DeliveryAttempt.Status.FAILED,
        response_status=outcome.status,
        response_body=outcome.body,
        error=outcome.error,
        duration_ms=outcome.duration_ms,
    )
    if outcome.ok:
        metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
        if destination.failing_since is not None:
            Destination.objects.filter(pk=destination.pk).update(failing_since=None)
            destination.failing_since = None
        return "delivered" if _record_delivery(stream, owner, attempt) else "lease lost"
    attempt.save()
    attempts = stream.attempts + 1
    if _disable_if_failing_too_long(destination, outcome.error):
        metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
        release(stream.pk, owner, attempts=attempts, last_error=outcome.error)
        return "disabled"
    if outcome.gone:
        metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
        _disable_gone(destination, event.offset)
        release(stream.pk, owner, attempts=attempts, last_error=outcome.error)
        return "disabled"
    if attempts >= destination.effective_max_attempts:
        metrics.WEBHOOK_DELIVERIES.labels("undeliverable").inc()
        with transaction.atomic():
            UndeliverableEvent.objects.get_or_create(
                stream=stream,
                offset=event.offset,
                defaults={"event_id": event.event_id, "attempts": attempts, "last_error": outcome.error},
            )
            moved = _advance(stream, owner, event.offset, last_error=outcome.error)
        return "delivered" if moved else "lease lost"
    metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
    delay = backoff_seconds(destination, attempts, outcome.retry_after_s)
    if outcome.status == 429:
        # The receiver asked the destination to slow down, not this stream alone: every stream of it waits.
        ratelimit.hold(f"webhook:{destination.pk}", delay)
    release(
        stream.pk,
        owner,
        attempts=attempts,
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
        last_error=outcome.error,
    )
    if delay <= COUNTDOWN_LIMIT_S:
        DeliveryStream.objects.filter(pk=stream.pk).update(enqueued_at=timezone.now())
        scheduling.queue_delivery(stream.pk, countdown=delay)
    return "retrying"


def _record_delivery(stream: DeliveryStream, owner: str, attempt: DeliveryAttempt) -> bool:
    """Record an acknowledged attempt and move the cursor past it in ONE statement: one round trip
    and one commit, where the ORM needed five statements (docs/benchmarks.md has the cost). The
    attempt is recorded even when the lease turned out to be lost (the receiver did get the event);
    only the lease holder's cursor moves. Returns whether it moved."""
    streams = connection.ops.quote_name(DeliveryStream._meta.db_table)
    attempts = connection.ops.quote_name(DeliveryAttempt._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH moved AS ("
            f"  UPDATE {streams} SET last_offset = %s, attempts = 0, last_error = '',"
            f"    delivered_count = delivered_count + 1"
            f"  WHERE id = %s AND lease_owner = %s RETURNING id"
            f"), recorded AS ("
            f'  INSERT INTO {attempts} (stream_id, event_id, "offset", attempt, status, response_status,'
            f"    response_body, error, duration_ms, at)"
            f"  VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
            f") SELECT count(*) FROM moved",
            [
                *(attempt.offset, stream.pk, owner),
                *(stream.pk, attempt.event_id, attempt.offset, attempt.attempt, attempt.status),
                *(attempt.response_status, attempt.response_body, attempt.error, attempt.duration_ms, attempt.at),
            ],
        )
        moved = cursor.fetchone()[0] == 1
    if moved:
        stream.last_offset = attempt.offset
        stream.attempts = 0
    return moved


def _keep_lease(stream: DeliveryStream, lease: Lease) -> bool:
    """Extend the lease when half its margin is used up, so it always outlives the next request's
    timeout (renewing before every event would cost a write per event). False if it was lost."""
    now = time.monotonic()
    if now - lease.renewed_at < settings.ER_WEBHOOK_LEASE_MARGIN_S / 2:
        return True
    if not _mine(stream.pk, lease.owner).update(lease_expires_at=timezone.now() + timedelta(seconds=lease.seconds)):
        return False
    lease.renewed_at = now
    return True


def _advance(stream: DeliveryStream, owner: str, offset: int, *, last_error: str = "") -> bool:
    """Move the cursor past an event that was not delivered (filtered out, or set aside as
    undeliverable); a delivered one moves it in :func:`_record_delivery`."""
    if not _mine(stream.pk, owner).update(last_offset=offset, attempts=0, last_error=last_error):
        return False
    stream.last_offset = offset
    stream.attempts = 0
    return True


def _requeue_if_more(stream: DeliveryStream) -> None:
    """Close the race with a wake-up that found the lease taken just before it was released."""
    destination = stream.destination
    fresh = DeliveryStream.objects.get(pk=stream.pk)
    if read_stream_events(destination.topic_name, stream.topic_id, after=fresh.last_offset, limit=1):
        enqueue([fresh.pk])


# --- Waking and sweeping ----------------------------------------------------------------------------


def discover_streams(destination: Destination, up_to: int | None = None) -> None:
    """Create streams for topic ids that appeared since the last scan (whole-topic destinations), up to offset
    ``up_to`` (default: the topic's last offset)."""
    if destination.topic_id:
        return
    head = up_to
    if head is None:
        head = Topic.objects.filter(name=destination.topic_name).values_list("last_offset", flat=True).first()
    if head is None or head <= destination.scanned_offset:
        return
    topic_ids = tables.topic_ids_between(destination.topic_name, after=destination.scanned_offset, up_to=head)
    DeliveryStream.objects.bulk_create(
        [
            DeliveryStream(destination=destination, topic_id=tid, last_offset=destination.start_offset)
            for tid in topic_ids
        ],
        ignore_conflicts=True,
    )
    Destination.objects.filter(pk=destination.pk, scanned_offset__lt=head).update(scanned_offset=head)
    destination.scanned_offset = head


def enqueue(stream_ids: list[int]) -> None:
    """Queue a delivery task per stream, marked as queued so the sweep leaves them alone for a while."""
    if not stream_ids:
        return
    DeliveryStream.objects.filter(pk__in=stream_ids).update(enqueued_at=timezone.now())
    for stream_id in stream_ids:
        scheduling.queue_delivery(stream_id)


def wake_topic(topic_name: str, topic_ids: list[str] | None = None) -> int:
    """After a publish: make sure every matching destination has its streams, and queue the due ones
    that are not already queued. With ``topic_ids`` (what the publish touched), only those streams."""
    queued = 0
    for destination in Destination.objects.for_topic(topic_name).active():
        discover_streams(destination)
        streams = destination.streams.due().behind().filter(enqueued_at__isnull=True)
        if topic_ids is not None:
            streams = streams.filter(topic_id__in=topic_ids)
        ids = list(streams.values_list("pk", flat=True))
        enqueue(ids)
        queued += len(ids)
    return queued


def sweep() -> int:
    """Periodic safety net: queue streams that are due and behind, whose wake-up was lost (never
    queued, or queued longer than ER_WEBHOOK_REQUEUE_S ago) or whose worker died (lease expired)."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.ER_WEBHOOK_REQUEUE_S)
    for destination in Destination.objects.active():
        discover_streams(destination)
    ids = list(
        DeliveryStream.objects.due(now)
        .behind()
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=stale))
        .values_list("pk", flat=True)
    )
    enqueue(ids)
    return len(ids)


def redeliver_undeliverable(undeliverable_id: int) -> bool:
    """One more try of an undeliverable event (recorded as an attempt); True when acknowledged."""
    undeliverable = UndeliverableEvent.objects.select_related("stream__destination").filter(pk=undeliverable_id).first()
    if undeliverable is None:
        return False
    stream = undeliverable.stream
    destination = stream.destination
    events = read_stream_events(destination.topic_name, stream.topic_id, after=undeliverable.offset - 1, limit=1)
    if not events or events[0].offset != undeliverable.offset:
        return False
    event = events[0]
    previous = DeliveryAttempt.objects.filter(stream=stream, offset=event.offset).count()
    attempt = DeliveryAttempt.objects.create(
        stream=stream, event_id=event.event_id, offset=event.offset, attempt=previous + 1
    )
    outcome = post_event(destination, event)
    metrics.WEBHOOK_DELIVERY_DURATION.observe(outcome.duration_ms / 1000)
    # A failed redelivery leaves the event undeliverable, as it was.
    metrics.WEBHOOK_DELIVERIES.labels("delivered" if outcome.ok else "undeliverable").inc()
    attempt.status = DeliveryAttempt.Status.SUCCEEDED if outcome.ok else DeliveryAttempt.Status.FAILED
    attempt.response_status, attempt.response_body = outcome.status, outcome.body
    attempt.error, attempt.duration_ms = outcome.error, outcome.duration_ms
    attempt.save()
    if outcome.ok:
        UndeliverableEvent.objects.filter(pk=undeliverable.pk).update(redelivered_at=timezone.now())
    else:
        UndeliverableEvent.objects.filter(pk=undeliverable.pk).update(last_error=outcome.error)
    if outcome.gone:
        _disable_gone(destination, event.offset)
    return outcome.ok


def redeliver_in_order(undeliverable_ids: list[int]) -> int:
    """One more try of each of these undeliverable events of ONE stream, one after the other in the order given
    (offset order), stopping at the first that fails again so none overtakes it. How many were acknowledged."""
    acknowledged = 0
    for undeliverable_id in undeliverable_ids:
        if not redeliver_undeliverable(undeliverable_id):
            break
        acknowledged += 1
    return acknowledged


def _wait_for_turn(destination: Destination) -> float:
    """Wait until a request to ``destination`` may go: past what is left of a 429's hold, and within its
    ``max_per_second`` (every stream and worker of it share that budget, in Redis). Returns 0 once it may go, or
    the hold left when that is longer than a delivery thread should sleep (the stream is then retried later)."""
    key = f"webhook:{destination.pk}"
    while True:
        held = ratelimit.held_for(key)
        if held > COUNTDOWN_LIMIT_S:
            return held
        if held > 0:
            time.sleep(held)
            continue
        if not destination.max_per_second:
            return 0.0
        wait = ratelimit.reserve(key, destination.max_per_second)
        if wait == 0:
            return 0.0
        time.sleep(wait)


def _disable_gone(destination: Destination, offset: int) -> None:
    now = timezone.now()
    Destination.objects.filter(pk=destination.pk).update(
        active=False, disabled_at=now, disabled_reason=f"receiver answered 410 Gone for offset {offset} at {now}"
    )


def _disable_if_failing_too_long(destination: Destination, error: str) -> bool:
    """Note when a destination started failing; disable it once every attempt has failed for
    ``ER_WEBHOOK_DISABLE_AFTER_S``. Whether it is disabled now."""
    now = timezone.now()
    if destination.failing_since is None:
        Destination.objects.filter(pk=destination.pk, failing_since__isnull=True).update(failing_since=now)
        destination.failing_since = now
        return False
    if (now - destination.failing_since).total_seconds() < settings.ER_WEBHOOK_DISABLE_AFTER_S:
        return False
    reason = f"every attempt failed since {destination.failing_since:%Y-%m-%d %H:%M:%S} UTC; the last: {error}"
    disabled = Destination.objects.filter(pk=destination.pk, active=True).update(
        active=False, disabled_at=now, disabled_reason=reason[:500]
    )
    return disabled > 0


# --- Test events --------------------------------------------------------------------------------------


def synthetic_test_event(destination: Destination, event_id: uuid.UUID) -> StoredEvent:
    """A synthetic event for the destination's topic, delivered like a real one but stored nowhere."""
    return StoredEvent(
        offset=0,
        event_id=event_id,
        name="eventrelay.test",
        topic_name=destination.topic_name,
        topic_id=destination.topic_id,
        source="http",
        user_id=None,
        event_occurred_at=timezone.now(),
        context_json="{}",
        data_json=json.dumps({"test": True}),
    )


def send_test_event(destination: Destination, event_id: uuid.UUID) -> Outcome:
    """POST a synthetic event (``event_id``) to the destination, outside every stream: no cursor moves and no
    attempt is recorded."""
    return post_event(destination, synthetic_test_event(destination, event_id))
