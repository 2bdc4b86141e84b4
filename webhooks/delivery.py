"""The delivery engine: one worker at a time works one stream, in offset order, at least once.

A worker claims a stream with a conditional UPDATE (the lease; a row count of 0 means "another
process got there first"), then POSTs the events after the stream's cursor one by one. Each
acknowledged event advances the cursor and records its attempt in one statement, so a crash re-sends
at most the event that was in flight (its attempt is recorded when the resent one is answered). A failure records the attempt, sets the next attempt time from the backoff, releases
the lease and stops: later events of that stream wait, other streams keep flowing. Every state change
is conditional on still holding the lease, so a worker whose lease expired cannot move a cursor that
another worker now owns.
"""

import functools
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import certifi
import requests
import urllib3
from django.conf import settings
from django.db import DatabaseError, IntegrityError, ProgrammingError, connection, models, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from urllib3 import exceptions as http_errors

from eventrelay import metrics, ratelimit
from eventrelay.db import prepared_cursor, release_connection
from eventrelay.errors import NotFound
from events.canonical import StoredEvent, canonical_json
from events.services import read_stream_events
from events.storage import row_to_event
from topics import tables
from topics.models import Topic
from topics.models import head as topics_head
from webhooks import scheduling, signing, ssrf
from webhooks.models import DeliveryAttempt, DeliveryStream, Destination, UndeliverableEvent

logger = logging.getLogger(__name__)

USER_AGENT = "EventRelay/0.1"
READ_BATCH = 100
# Retries sooner than this are queued as delayed Celery messages; later ones are left to the sweep.
COUNTDOWN_LIMIT_S = 10
# How long this process trusts what Redis last said about a destination's 429 hold before asking again (a hold this
# process sets is known at once): another process's hold holds back this one's streams this much later at most.
HOLD_RECHECK_S = 0.5
# What requests sends unless told otherwise, kept so a receiver sees the same request as before the engine sent
# through urllib3 directly (the encodings are the ones urllib3 can decode).
DEFAULT_HEADERS = {
    "Accept": "*/*",
    "Accept-Encoding": urllib3.util.make_headers(accept_encoding=True)["accept-encoding"],
    "Connection": "keep-alive",
}

_pools: urllib3.PoolManager | None = None
_pools_lock = threading.Lock()


def http_pools() -> urllib3.PoolManager:
    """One pool manager per worker process, shared by its delivery threads: keeps connections to receivers alive
    between events, up to one per delivery in flight for each origin. Certificates are checked against certifi's
    bundle, the one requests uses."""
    global _pools
    with _pools_lock:
        if _pools is None:
            _pools = urllib3.PoolManager(
                num_pools=100,
                maxsize=max(settings.ER_WEBHOOK_CONCURRENCY, 10),
                retries=False,
                cert_reqs="CERT_REQUIRED",
                ca_certs=certifi.where(),
            )
        return _pools


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


@dataclass(frozen=True)
class RequestLine:
    """How a destination URL is sent: the URL as requests prepares it (the one whose host ``ssrf.connect_target``
    checks), the request target (path and query, never the fragment) and the basic credentials of its user
    information, as requests would send them."""

    url: str
    target: str
    authorization: str | None


@functools.lru_cache(maxsize=4096)
def request_line(url: str) -> RequestLine:
    """``url`` prepared as requests prepares it (remembered per URL: it depends on the text alone). Call only after
    ``ssrf.check_url`` accepted it."""
    prepared = requests.Request("POST", url).prepare()
    authorization = prepared.headers.get("Authorization")
    return RequestLine(
        prepared.url or url, prepared.path_url, authorization if isinstance(authorization, str) else None
    )


def post_event(destination: Destination, event: StoredEvent) -> Outcome:
    """POST one event, signed. Any 2xx acknowledges; 410 means gone; anything else is a failure.

    Sent with urllib3 directly, as requests would send it (the same prepared URL, headers and basic credentials),
    without what requests adds per request on top of it; redirects are never followed and nothing is retried."""
    started = time.monotonic()
    try:
        ssrf.check_url(destination.url, allow_private=settings.ER_WEBHOOK_ALLOW_PRIVATE)
    except ValueError as exc:
        return Outcome(ok=False, error=f"refused: {exc}")
    timeout = destination.effective_timeout_seconds
    try:
        line = request_line(destination.url)
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
        headers = {**DEFAULT_HEADERS, **headers}
        if line.authorization:
            headers["Authorization"] = line.authorization
        response = (
            http_pools()
            .connection_from_url(line.url)
            .urlopen(
                "POST",
                line.target,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                preload_content=False,
            )
        )
    except (http_errors.HTTPError, OSError) as exc:
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
        # Back to the pool for the next request when the whole body was read; closed when it was cut short.
        response.release_conn()
    status = response.status
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


def request_error_in_words(error: BaseException, url: str, timeout: float) -> str:
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
            or next((arg for arg in cause.args if isinstance(arg, BaseException)), None)
        )
    text = " ".join(str(c) for c in causes)
    # (urllib3's NewConnectionError is a ConnectTimeoutError too, for history's sake: it is a failed connection.)
    if isinstance(error, http_errors.ConnectTimeoutError) and not isinstance(error, http_errors.NewConnectionError):
        return f"connecting to {where} timed out after {timeout:g} s"
    if isinstance(error, (http_errors.ReadTimeoutError, TimeoutError)):
        return f"timed out after {timeout:g} s waiting for {where} to answer"
    if any(isinstance(c, ConnectionRefusedError) for c in causes) or "Connection refused" in text:
        return f"connection refused by {where}"
    if any(isinstance(c, ConnectionResetError) for c in causes) or "Connection reset" in text:
        return f"connection reset by {where}"
    if isinstance(error, http_errors.SSLError):
        return f"TLS handshake with {where} failed"
    if (
        isinstance(error, http_errors.NameResolutionError)
        or "Name or service not known" in text
        or "nodename nor servname" in text
        or "getaddrinfo" in text
    ):
        return f"cannot resolve {parts.hostname}"
    if isinstance(error, (http_errors.NewConnectionError, http_errors.ProtocolError, OSError)):
        return f"connection to {where} failed: {str(error)[:300]}"
    return f"request to {where} failed: {str(error)[:300]}"


def _read_capped(response: urllib3.BaseHTTPResponse) -> str:
    """At most ER_WEBHOOK_RESPONSE_BODY_BYTES of the body, decoded. A body not read to its end (longer, or broken
    off) leaves its connection closed, so the next request never reads the rest of it as its answer."""
    limit = settings.ER_WEBHOOK_RESPONSE_BODY_BYTES
    chunks, size = [], 0
    finished = False
    try:
        for chunk in response.stream(1024, decode_content=True):
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
        else:
            finished = True
    except (http_errors.HTTPError, OSError):
        pass
    if not finished:
        response.close()
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


def _quoted(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _field(model: type[models.Model], name: str) -> "models.Field[Any, Any]":
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field


def _column(model: type[models.Model], name: str) -> str:
    return connection.ops.quote_name(_field(model, name).column)


@functools.cache
def _columns(model: type[models.Model], alias: str) -> str:
    return ", ".join(f"{alias}.{connection.ops.quote_name(field.column)}" for field in model._meta.concrete_fields)


M = TypeVar("M", bound=models.Model)
Converter = Callable[[Any, Any, Any], Any]


@functools.cache
def _converters(model: type[models.Model]) -> list[tuple[Any, list[Converter]]]:
    """Per concrete field of ``model``, the expression and the converters the ORM applies to its column's value."""
    table = model._meta.db_table
    per_field = []
    for field in model._meta.concrete_fields:
        column = field.get_col(table)
        per_field.append((column, [*connection.ops.get_db_converters(column), *column.get_db_converters(connection)]))
    return per_field


def _instance(model: type[M], values: Sequence[Any]) -> M:
    """A model instance from the values of :func:`_columns`, converted as the ORM converts them."""
    converted = []
    for value, (column, converters) in zip(values, _converters(model), strict=True):
        for converter in converters:
            value = converter(value, column, connection)
        converted.append(value)
    return model.from_db(connection.alias, [field.attname for field in model._meta.concrete_fields], converted)


def claim(stream_id: int, owner: str, lease_seconds: float | None) -> bool:
    """Take the stream's lease if it is free (or expired), its destination is active and the stream is due. The
    lease lasts ``lease_seconds``, or with None the destination's request timeout plus ER_WEBHOOK_LEASE_MARGIN_S
    (:func:`lease_seconds_for`), read in the same statement."""
    now = timezone.now()
    streams, destinations = _quoted(DeliveryStream), _quoted(Destination)
    # Every condition on the lease is on the stream row itself, so PostgreSQL re-checks it on the row version a
    # concurrent claim has just committed, and two workers can never both get the lease. (An UPDATE through a
    # join, as Django writes one, is "id IN (subquery)", whose lease condition is not re-checked: two claims
    # could both succeed and both send.)
    # The claim also turns synchronous_commit off for its connection's session (with the worker's pool, every
    # pooled connection once it has claimed a stream), where the delivery's bookkeeping is recorded: attempt rows
    # and cursors need not wait for their WAL flush, since a database crash can only lose the last moments of them,
    # which means re-sending (at least once), never skipping. Events themselves are always committed synchronously
    # by publish (another process).
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {streams} SET lease_owner = %s, enqueued_at = NULL, lease_expires_at = %s + make_interval("
            f"  secs => COALESCE(%s::float8, (SELECT COALESCE(NULLIF(d.timeout_seconds, 0), %s) + %s"
            f"    FROM {destinations} d WHERE d.id = {streams}.destination_id)))"
            f" WHERE id = %s AND (lease_expires_at IS NULL OR lease_expires_at < %s) AND next_attempt_at <= %s"
            f"  AND destination_id IN (SELECT id FROM {destinations} WHERE active)"
            f" RETURNING set_config('synchronous_commit', 'off', false)",
            [
                *(owner, now, lease_seconds, settings.ER_WEBHOOK_TIMEOUT_S, settings.ER_WEBHOOK_LEASE_MARGIN_S),
                *(stream_id, now, now),
            ],
        )
        return cursor.rowcount == 1


@dataclass
class Claimed:
    """A stream this process holds the lease of, its destination, and its topic's row as read with them (its
    primary key and last offset; None once the topic is deleted)."""

    stream: DeliveryStream
    destination: Destination
    topic_pk: int | None
    head: int | None


@functools.cache
def _claimed_sql() -> str:
    pk, name, last_offset = (_column(Topic, field) for field in ("id", "name", "last_offset"))
    return (
        f"SELECT {_columns(DeliveryStream, 's')}, {_columns(Destination, 'd')}, t.{pk}, t.{last_offset}"
        f" FROM {_quoted(DeliveryStream)} s JOIN {_quoted(Destination)} d ON d.id = s.destination_id"
        f" LEFT JOIN {_quoted(Topic)} t ON t.{name} = d.topic_name"
        f" WHERE s.id = %s AND s.lease_owner = %s"
    )


def _claimed(stream_id: int, owner: str) -> Claimed | None:
    """The stream this process holds the lease of, with its destination and topic row, in one statement (None:
    gone, or no longer ours)."""
    with connection.cursor() as cursor:
        cursor.execute(_claimed_sql(), [stream_id, owner])
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(DeliveryStream._meta.concrete_fields)
    stream, destination = _instance(DeliveryStream, row[:split]), _instance(Destination, row[split:-2])
    stream.destination = destination
    return Claimed(stream, destination, *row[-2:])


def _mine(stream_id: int, owner: str) -> QuerySet[DeliveryStream]:
    return DeliveryStream.objects.filter(pk=stream_id, lease_owner=owner)


def release(stream_id: int, owner: str, **changes: object) -> bool:
    """Give the lease up, with ``changes`` to the stream's fields in the same statement; False if it was not ours."""
    fields = [_field(DeliveryStream, name) for name in changes]
    assignments = "".join(f", {connection.ops.quote_name(field.column)} = %s" for field in fields)
    values = [field.get_db_prep_save(value, connection) for field, value in zip(fields, changes.values(), strict=True)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_quoted(DeliveryStream)} SET lease_owner = '', lease_expires_at = NULL{assignments}"
            f" WHERE id = %s AND lease_owner = %s",
            [*values, stream_id, owner],
        )
        return cursor.rowcount == 1


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
    if not claim(stream_id, owner, None):  # (None: the lease its destination's timeout asks for)
        return "not claimed" if DeliveryStream.objects.filter(pk=stream_id).exists() else "gone"
    renewed_at = time.monotonic()
    try:
        # Read the stream once it is ours (never before the claim): a row read earlier may predate another
        # worker's deliveries (it delivered and released in between), and sending from that cursor would re-send
        # them and move the cursor back.
        claimed = _claimed(stream_id, owner)
        if claimed is None:
            return "gone"  # deleted with its topic right after the claim
        return _work(claimed, Lease(owner, lease_seconds_for(claimed.destination), renewed_at))
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
        # sooner, even when what failed was the database connection itself (the read above too).
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


def _events_after(destination: Destination, stream: DeliveryStream, after: int, limit: int) -> list[StoredEvent]:
    """The stream's next events (what ``read_stream_events`` reads, without its check that the topic exists: the
    caller has just read the topic's row)."""
    sql, params = tables.page_query(destination.topic_name, stream.topic_id, after=after, limit=limit)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    except ProgrammingError:
        # The topic's table was dropped after its row was read.
        raise NotFound("topic no longer exists") from None
    return [row_to_event(destination.topic_name, row) for row in rows]


def _work(claimed: Claimed, lease: Lease) -> str:
    stream, destination = claimed.stream, claimed.destination
    names = set(destination.event_names or ())
    topic_pk = claimed.topic_pk
    # The topic's row, first as read with the stream, then read again before each further batch.
    row: tuple[int, int] | None = None
    if claimed.topic_pk is not None and claimed.head is not None:
        row = (claimed.topic_pk, claimed.head)
    while True:
        if row is None:
            raise NotFound("topic no longer exists")
        if row[0] != topic_pk:
            # Deleted and created again while this stream was being worked: the deletion ended this stream (and
            # started the destination over), so these offsets are another topic's.
            return "lease lost"
        head = row[1]
        events = _events_after(destination, stream, stream.last_offset, READ_BATCH)
        for event in events:
            if names and event.name not in names:
                if not _advance(stream, lease.owner, event.offset):
                    return "lease lost"
                continue
            result = _attempt(stream, destination, lease, event)
            if result != "delivered":
                return result
        if len(events) < READ_BATCH:
            # That was every event of this topic id up to the head read before them (a publish commits its events
            # with the head), so none is left up to it: move the cursor there, so "behind" (cursor < topic head)
            # stays a precise signal for the sweep, without reading the stream again to find it empty.
            released_at = max(stream.last_offset, head)
            # The release also clears the stream's "queued" mark: a task queued while this one held the lease
            # found it taken and ended without clearing it, and a mark left behind would make every later
            # wake-up skip the stream as already queued (until the sweep, minutes later). What was published
            # before the release is re-checked just below; what comes after finds the stream free and unmarked.
            if release(stream.pk, lease.owner, last_offset=released_at, enqueued_at=None):
                _requeue_if_more(stream, destination, released_at)
            return "drained"
        row = topics_head(destination.topic_name)


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
    if outcome.ok:
        metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
        if destination.failing_since is not None:
            Destination.objects.filter(pk=destination.pk).update(failing_since=None)
            destination.failing_since = None
        return "delivered" if _record_delivery(stream, owner, event, outcome) else "lease lost"
    attempts = stream.attempts + 1
    DeliveryAttempt.objects.create(
        stream=stream,
        event_id=event.event_id,
        offset=event.offset,
        attempt=attempts,
        status=DeliveryAttempt.Status.FAILED,
        response_status=outcome.status,
        response_body=outcome.body,
        error=outcome.error,
        duration_ms=outcome.duration_ms,
    )
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
        _holds.hold(f"webhook:{destination.pk}", delay)
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


@functools.cache
def _record_delivery_sql() -> str:
    # Every parameter cast: a prepared statement is planned for the types psycopg sends (an int's by its size).
    return (
        f"WITH moved AS ("
        f"  UPDATE {_quoted(DeliveryStream)} SET last_offset = %s::bigint, attempts = 0, last_error = '',"
        f"    delivered_count = delivered_count + 1"
        f"  WHERE id = %s::bigint AND lease_owner = %s::text RETURNING id"
        f"), recorded AS ("
        f'  INSERT INTO {_quoted(DeliveryAttempt)} (stream_id, event_id, "offset", attempt, status, response_status,'
        f"    response_body, error, duration_ms, at)"
        f"  VALUES (%s::bigint, %s::uuid, %s::bigint, %s::integer, %s::text, %s::integer, %s::text, %s::text,"
        f"    %s::integer, %s::timestamptz) RETURNING id"
        f") SELECT count(*) FROM moved"
    )


def _record_delivery(stream: DeliveryStream, owner: str, event: StoredEvent, outcome: Outcome) -> bool:
    """Record the acknowledged attempt at ``event`` and move the cursor past it in ONE statement: one round trip
    and one commit, where the ORM needed five statements (docs/benchmarks.md has the cost). The
    attempt is recorded even when the lease turned out to be lost (the receiver did get the event);
    only the lease holder's cursor moves. Returns whether it moved.

    Prepared (``eventrelay.db.prepared_cursor``): it runs once per delivered event, and parsing and planning it
    each time cost PostgreSQL, and binding its parameters into the text cost the worker, more than running it."""
    with prepared_cursor() as cursor:
        cursor.execute(
            _record_delivery_sql(),
            [
                *(event.offset, stream.pk, owner),
                *(stream.pk, event.event_id, event.offset, stream.attempts + 1, DeliveryAttempt.Status.SUCCEEDED),
                *(outcome.status, outcome.body, outcome.error, outcome.duration_ms, timezone.now()),
            ],
            prepare=True,
        )
        row = cursor.fetchone()
    moved = row is not None and row[0] == 1
    if moved:
        stream.last_offset = event.offset
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


def _requeue_if_more(stream: DeliveryStream, destination: Destination, released_at: int) -> None:
    """Close the race with a wake-up that found the lease taken just before it was released: read (after the
    release committed) whether an event came after the cursor it was released with."""
    try:
        more = _events_after(destination, stream, released_at, 1)
    except NotFound:
        return
    if more:
        enqueue([stream.pk])


# --- Waking and sweeping ----------------------------------------------------------------------------


def discover_streams(destination: Destination, up_to: int | None = None) -> None:
    """Create streams for topic ids that appeared since the last scan (whole-topic destinations), up to offset
    ``up_to`` (default: the topic's last offset)."""
    if destination.topic_id:
        return
    head = up_to
    if head is None:
        row = topics_head(destination.topic_name)
        head = None if row is None else row[1]
    if head is None or head <= destination.scanned_offset:
        return
    with transaction.atomic():
        # The destination's row stays locked until the streams are in: wake-ups that arrive together (a worker
        # starting on a backlog of them) wait here and then find the offsets scanned, instead of each scanning the
        # same offsets and inserting the same streams.
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT scanned_offset FROM {_quoted(Destination)} WHERE id = %s FOR UPDATE", [destination.pk]
            )
            row = cursor.fetchone()
        scanned = head if row is None else row[0]
        if scanned < head:
            topic_ids = tables.topic_ids_between(destination.topic_name, after=scanned, up_to=head)
            DeliveryStream.objects.bulk_create(
                [
                    DeliveryStream(destination=destination, topic_id=tid, last_offset=destination.start_offset)
                    for tid in topic_ids
                ],
                ignore_conflicts=True,
            )
            Destination.objects.filter(pk=destination.pk).update(scanned_offset=head)
    destination.scanned_offset = max(scanned, head)


def enqueue(stream_ids: list[int]) -> None:
    """Queue a delivery task per stream, marked as queued so the sweep leaves them alone for a while."""
    if not stream_ids:
        return
    DeliveryStream.objects.filter(pk__in=stream_ids).update(enqueued_at=timezone.now())
    for stream_id in stream_ids:
        scheduling.queue_delivery(stream_id)


def wake_topic(topic_name: str, topic_ids: list[str] | None = None) -> int:
    """After a publish: make sure every matching destination has its streams, and queue the due ones
    that are not already queued. With ``topic_ids`` (what the publish touched), only those streams.

    Runs once per publish (a wake-up each), so in a few fixed statements written as SQL: the topic's head, the
    active destinations, and per destination the streams marked queued in the statement that picks them (a wake-up
    running beside this one cannot pick them too)."""
    row = topics_head(topic_name)
    if row is None:
        return 0
    head = row[1]
    queued = 0
    for destination in _active_destinations(topic_name):
        discover_streams(destination, up_to=head)
        ids = _mark_queued(destination, head, topic_ids)
        for stream_id in ids:
            scheduling.queue_delivery(stream_id)
        queued += len(ids)
    return queued


def _active_destinations(topic_name: str) -> list[Destination]:
    """``Destination.objects.for_topic(topic_name).active()``, in SQL written once."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_columns(Destination, 'd')} FROM {_quoted(Destination)} d"
            f" WHERE d.topic_name = %s AND d.active ORDER BY d.id",
            [topic_name],
        )
        return [_instance(Destination, row) for row in cursor.fetchall()]


def _mark_queued(destination: Destination, head: int, topic_ids: list[str] | None) -> list[int]:
    """Mark queued, and return, the destination's streams that are due, behind ``head`` and not queued yet (of
    ``topic_ids`` only, when given): ``destination.streams.due().behind().filter(enqueued_at__isnull=True)``."""
    now = timezone.now()
    only = "" if topic_ids is None else " AND topic_id = ANY(%s)"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_quoted(DeliveryStream)} SET enqueued_at = %s"
            f" WHERE destination_id = %s AND enqueued_at IS NULL AND next_attempt_at <= %s"
            f" AND (lease_expires_at IS NULL OR lease_expires_at < %s) AND last_offset < %s{only}"
            f" RETURNING id",
            [now, destination.pk, now, now, head, *([list(topic_ids)] if topic_ids is not None else [])],
        )
        return [row[0] for row in cursor.fetchall()]


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


class _Holds:
    """What this process knows of each destination's 429 hold (``ratelimit.hold``, in Redis, shared by every
    process): until when it lasts, and when Redis was last asked. Redis is asked again once the answer is
    HOLD_RECHECK_S old, so a delivery does not cost a Redis round trip when no receiver asked anyone to wait; a
    hold this process sets is recorded here at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, float]] = {}  # key -> (asked at, held until), time.monotonic()

    def held_for(self, key: str, *, fresh: bool = False) -> float:
        now = time.monotonic()
        with self._lock:
            asked_at, held_until = self._known.get(key, (-HOLD_RECHECK_S, 0.0))
        if fresh or now - asked_at >= HOLD_RECHECK_S:
            answer = now + ratelimit.held_for(key)
            with self._lock:
                # A hold this process set while Redis was being asked is kept: the answer may predate it.
                held_until = max(answer, self._known.get(key, (now, 0.0))[1])
                self._known[key] = (now, held_until)
        return max(held_until - now, 0.0)

    def hold(self, key: str, seconds: float) -> None:
        ratelimit.hold(key, seconds)
        now = time.monotonic()
        with self._lock:
            self._known[key] = (now, now + seconds)


_holds = _Holds()


def _wait_for_turn(destination: Destination) -> float:
    """Wait until a request to ``destination`` may go: past what is left of a 429's hold, and within its
    ``max_per_second`` (every stream and worker of it share that budget, in Redis). Returns 0 once it may go, or
    the hold left when that is longer than a delivery thread should sleep (the stream is then retried later)."""
    key = f"webhook:{destination.pk}"
    waited = False
    while True:
        # After a wait, Redis is asked again: the hold may have been extended meanwhile.
        held = _holds.held_for(key, fresh=waited)
        if held > COUNTDOWN_LIMIT_S:
            return held
        if held > 0:
            time.sleep(held)
            waited = True
            continue
        if not destination.max_per_second:
            return 0.0
        wait = ratelimit.reserve(key, destination.max_per_second)
        if wait == 0:
            return 0.0
        time.sleep(wait)
        waited = True


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
