"""Validation of a publish batch, as a whole: nothing of a batch with an invalid event is stored.

The first problem found rejects the batch with an error that names the event's index and the
field, e.g. ``events[3].data: ...``. Limits come from settings (documented in docs/api.md; defaults: 1,000 events per
batch, 256 KiB per event, 16 MiB per request).
"""

import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from django.conf import settings
from django.utils import timezone

from eventrelay.errors import InvalidInput, TooLarge
from events.exact_json import UnstorableNumber, checked_decoder, dumps_exact, nesting_problem

PRODUCER_FIELDS = frozenset({"eventId", "name", "userId", "eventOccurredAt", "context", "data"})
SERVER_FIELDS = frozenset({"topic", "source", "offset"})
NAME_MAX_LENGTH = 255
USER_ID_MAX_LENGTH = 255


class JSONText(NamedTuple):
    """A JSON value that arrived as text (gRPC's ``data``/``context``) and was parsed to check it.

    The transport parses with :func:`parse_json_text`, which refuses what PostgreSQL's ``json``
    type would (NaN, Infinity) and what no transport stores (numbers that overflow a double, integers
    too long for Python, nesting past ``ER_MAX_JSON_DEPTH``). Validation then stores ``text`` as
    sent, which saves re-encoding every payload; only text with ``\\u`` escapes is re-encoded (its
    numbers as written), because an escape can hide a NUL or an unpaired surrogate.
    """

    text: str
    value: Any


class NewEvent(NamedTuple):
    """One validated event, ready to store. ``context_json``/``data_json`` are compact JSON text.

    (This and ``JSONText`` are named tuples rather than frozen dataclasses: immutable all the same,
    and built faster (docs/benchmarks.md), which counts at up to three of them per event of a batch.)"""

    event_id: uuid.UUID
    name: str
    user_id: str | None
    event_occurred_at: datetime
    context_json: str
    data_json: str
    event_id_text: str  # str(event_id), kept from the producer's text when that is already canonical

    @property
    def size(self) -> int:
        """Bytes of payload (UTF-8) the event counts against the size limits."""
        return _utf8_length(self.data_json) + _utf8_length(self.context_json) + _utf8_length(self.name)


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


class Limits(NamedTuple):
    """The limits each event of a batch is held to, read from settings once per batch."""

    event_bytes: int  # ER_MAX_EVENT_BYTES
    json_depth: int  # ER_MAX_JSON_DEPTH

    @classmethod
    def from_settings(cls) -> "Limits":
        return cls(settings.ER_MAX_EVENT_BYTES, settings.ER_MAX_JSON_DEPTH)


# (item of a batch, "events[i]", the time events without eventOccurredAt occurred, the batch's limits)
EventValidator = Callable[[Any, str, datetime, Limits], tuple[NewEvent, int]]


def validate_batch(raw_events: object) -> list[NewEvent]:
    """Validate a list of producer events (canonical camelCase dicts) and return them ready to store."""
    return EventsToValidate(raw_events).validated()


class EventsToValidate:
    """A batch of producer events (canonical camelCase dicts) that is validated one event at a time
    as the events are stored, then remembered.

    ``events.services`` writes each event to PostgreSQL as soon as it has passed, so PostgreSQL
    stores the first events of a batch while Python is still checking the later ones (the two run
    on different cores). The first invalid event raises its error, which aborts the transaction:
    nothing of the batch is stored, exactly as if it had been validated first. The batch's shape
    (a non-empty list within the event limit) is checked when this is built.

    ``validator`` turns one item of ``raw_events`` into a ``NewEvent`` and its size: by default
    :func:`validate_event`, for dicts; a transport with typed messages passes its own, which calls
    :func:`validate_fields` (``grpc_api.convert.validate_message``).
    """

    def __init__(self, raw_events: object, validator: EventValidator | None = None) -> None:
        if not isinstance(raw_events, Sequence) or isinstance(raw_events, str | bytes):
            raise InvalidInput("events must be a list of event objects", field="events")
        if not raw_events:
            raise InvalidInput("events is empty: send at least one event", field="events")
        max_events = settings.ER_MAX_BATCH_EVENTS
        if len(raw_events) > max_events:
            raise TooLarge(f"batch has {len(raw_events)} events; at most {max_events} are allowed", field="events")
        self._raw_events = raw_events
        # Events without eventOccurredAt occurred now (to the millisecond, like every stored time).
        self._received_at = to_milliseconds(timezone.now())
        self._validated: list[NewEvent] | None = None
        self._validate_event = validator if validator is not None else validate_event

    def __len__(self) -> int:
        return len(self._raw_events)

    def __iter__(self) -> Iterator[NewEvent]:
        return iter(self._validated) if self._validated is not None else self._validate_each()

    def validated(self) -> list[NewEvent]:
        """Every event, validated (raises the first problem)."""
        if self._validated is None:
            for _ in self._validate_each():
                pass
        assert self._validated is not None
        return self._validated

    def _validate_each(self) -> Iterator[NewEvent]:
        limits = Limits.from_settings()
        max_request_bytes = settings.ER_MAX_REQUEST_BYTES
        validated, total = [], 0
        for index, raw in enumerate(self._raw_events):
            event, size = self._validate_event(raw, f"events[{index}]", self._received_at, limits)
            validated.append(event)
            total += size
            yield event
        if total > max_request_bytes:
            raise TooLarge(
                f"batch is {total} bytes of event payload; at most {max_request_bytes} are allowed", field="events"
            )
        self._validated = validated


def validate_event(raw: object, where: str, now: datetime, limits: Limits) -> tuple[NewEvent, int]:
    """One producer event (a canonical camelCase dict) validated, with its size; errors name ``where``."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: must be a JSON object", field=where)
    for key in raw:
        if key in SERVER_FIELDS:
            raise InvalidInput(f"{where}.{key}: is set by the server and must not be sent", field=f"{where}.{key}")
        if key not in PRODUCER_FIELDS:
            allowed = ", ".join(sorted(PRODUCER_FIELDS))
            raise InvalidInput(f"{where}.{key}: unknown field (allowed: {allowed})", field=f"{where}.{key}")
    if "data" not in raw:
        _check_name(raw.get("name"), where)  # the first problem of the event is named first
        raise InvalidInput(f"{where}.data: is required", field=f"{where}.data")
    return validate_fields(
        where,
        now,
        limits,
        name=raw.get("name"),
        data=raw["data"],
        context=raw.get("context"),
        event_id=raw.get("eventId"),
        user_id=raw.get("userId"),
        occurred_at=raw.get("eventOccurredAt"),
    )


def validate_fields(
    where: str,
    now: datetime,
    limits: Limits,
    *,
    name: object,
    data: object,
    context: object,
    event_id: object,
    user_id: object,
    occurred_at: object,
) -> tuple[NewEvent, int]:
    """An event's fields, however its transport carried them, validated into a ``NewEvent`` with its
    size. ``data`` is present (a transport checks that); ``None`` or ``""`` elsewhere means "not
    given". gRPC calls this straight from its messages (``grpc_api.convert``), without building the
    dict that :func:`validate_event` checks first."""
    _check_name(name, where)
    data_json = _json_text(data, f"{where}.data", limits.json_depth)

    if context is None:
        context_json = "{}"
    elif not isinstance(context.value if isinstance(context, JSONText) else context, dict):
        raise InvalidInput(f"{where}.context: must be a JSON object", field=f"{where}.context")
    else:
        context_json = _json_text(context, f"{where}.context", limits.json_depth)

    parsed_id, event_id_text = _parse_event_id(event_id, where)
    event = NewEvent(
        event_id=parsed_id,
        name=name,  # type: ignore[arg-type]  # checked by _check_name
        user_id=_parse_user_id(user_id, where),
        event_occurred_at=_parse_occurred_at(occurred_at, where, now),
        context_json=context_json,
        data_json=data_json,
        event_id_text=event_id_text,
    )
    size = event.size
    if size > limits.event_bytes:
        raise TooLarge(
            f"{where}.data: event is {size} bytes; at most {limits.event_bytes} are allowed", field=f"{where}.data"
        )
    return event, size


def _check_name(name: object, where: str) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name: is required and must be a non-empty string", field=f"{where}.name")
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidInput(
            f"{where}.name: is {len(name)} characters long; at most {NAME_MAX_LENGTH} are allowed",
            field=f"{where}.name",
        )
    check_storable_text(name, f"{where}.name")


def parse_json_text(text: str, where: str, max_depth: int | None = None) -> JSONText:
    """Parse JSON text from a transport that carries JSON as strings; errors name ``where``.
    ``max_depth``: the batch's ``Limits.json_depth`` (``ER_MAX_JSON_DEPTH`` when not given)."""
    if text == "":
        raise InvalidInput(f"{where}: is required (JSON text)", field=where)
    if max_depth is None:
        max_depth = settings.ER_MAX_JSON_DEPTH
    # Before parsing, so text nested past the limit never reaches a parser's recursion. No more
    # brackets than the limit cannot nest past it: that count is all almost every payload costs.
    if text.count("{") + text.count("[") > max_depth:
        _check_nesting(text, where, max_depth)
    if "\\u" not in text:
        # orjson parses strict RFC 8259 several times faster than json, and refuses everything the
        # decoder below refuses (NaN, Infinity, numbers that overflow a double); what it refuses
        # (a problem, or an integer too long for a double) goes to the decoder, which names the
        # problem or keeps the integer. Its values are only inspected (the context must be an
        # object), never stored: the text is. Text with escapes is re-encoded from the value, so it
        # always takes the decoder's values, whose numbers keep their text (``exact_json``).
        try:
            return JSONText(text, orjson.loads(text))
        except orjson.JSONDecodeError:
            pass
    try:
        return JSONText(text, checked_decoder.decode(text))
    except UnstorableNumber as exc:
        raise InvalidInput(f"{where}: {exc}", field=where) from None
    except ValueError as exc:
        raise InvalidInput(f"{where}: is not valid JSON ({exc})", field=where) from None
    except RecursionError:  # (only with a limit set past Python's own)
        raise InvalidInput(f"{where}: is nested too deeply", field=where) from None


def _check_nesting(text: str, where: str, max_depth: int) -> None:
    problem = nesting_problem(text, max_depth)
    if problem is not None:
        raise InvalidInput(f"{where}: {problem}", field=where)


def _json_text(value: Any, where: str, max_depth: int) -> str:
    if isinstance(value, JSONText):
        if "\\u" not in value.text:
            return value.text
        value = value.value
    return _encode_json(value, where, max_depth)


def _encode_json(value: Any, where: str, max_depth: int) -> str:
    """A parsed payload (REST, WebSocket, Python callers) as compact JSON text, its numbers as the
    producer wrote them (``exact_json.NumberLiteral``)."""
    try:
        text = dumps_exact(value)
    except UnstorableNumber as exc:
        raise InvalidInput(f"{where}: {exc}", field=where) from None
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{where}: is not valid JSON ({exc})", field=where) from None
    except RecursionError:
        raise InvalidInput(
            f"{where}: is nested too deeply; at most {max_depth} levels are allowed", field=where
        ) from None
    _check_nesting(text, where, max_depth)
    _check_utf8(text, where)
    return text


def _check_utf8(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{where}: contains an unpaired UTF-16 surrogate (not valid Unicode)", field=where) from None


def check_storable_text(text: str, where: str) -> None:
    """PostgreSQL text cannot hold NUL, and nothing can hold an unpaired surrogate."""
    if "\x00" in text:
        raise InvalidInput(f"{where}: must not contain NUL characters", field=where)
    _check_utf8(text, where)


def _parse_event_id(raw: object, event_where: str) -> tuple[uuid.UUID, str]:
    """The eventId and its canonical text (lowercase, dashed), which the stored row and the wire
    form need: the producer's own text when it is canonical already, as most are."""
    if raw is None or raw == "":
        event_id = uuid.uuid4()
        return event_id, str(event_id)
    where = f"{event_where}.eventId"
    if not isinstance(raw, str):
        raise InvalidInput(f"{where}: must be a UUID string", field=where)
    try:
        event_id = uuid.UUID(raw)
    except ValueError:
        raise InvalidInput(f"{where}: {raw!r} is not a UUID", field=where) from None
    # uuid.UUID also takes braces, "urn:uuid:", upper case, dashes anywhere, and whatever int()
    # takes (underscores, non-ASCII digits): only text of exactly the canonical shape is kept.
    return event_id, raw if _CANONICAL_UUID.fullmatch(raw) else str(event_id)


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _parse_user_id(raw: object, event_where: str) -> str | None:
    if raw is None or raw == "":
        return None
    where = f"{event_where}.userId"
    if not isinstance(raw, str):
        raise InvalidInput(f"{where}: must be a string", field=where)
    if len(raw) > USER_ID_MAX_LENGTH:
        raise InvalidInput(
            f"{where}: is {len(raw)} characters long; at most {USER_ID_MAX_LENGTH} are allowed", field=where
        )
    check_storable_text(raw, where)
    return raw


# RFC 3339 section 5.6 ``date-time``: ``T``, ``t`` or a space between date and time, ``Z``/``z`` or
# ``±HH:MM``, any number of fraction digits; ASCII digits only (``\\d`` would take any script's).
# ISO 8601's other forms (week and ordinal dates, the basic format, no seconds) are not RFC 3339.
_RFC_3339_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?P<offset>[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?"
)


def to_milliseconds(moment: datetime) -> datetime:
    """``moment`` truncated to the millisecond: every transport then serves the same time for an
    event (the canonical JSON form carries milliseconds, gRPC's Timestamp would carry more)."""
    extra = moment.microsecond % 1000
    return moment.replace(microsecond=moment.microsecond - extra) if extra else moment


def _parse_occurred_at(raw: object, event_where: str, now: datetime) -> datetime:
    if raw is None or raw == "":
        return now
    where = f"{event_where}.eventOccurredAt"
    if isinstance(raw, datetime):
        moment = raw
        if moment.tzinfo is None:
            raise InvalidInput(f"{where}: {raw!r} has no time zone (use 'Z' or an offset)", field=where)
    elif isinstance(raw, str):
        match = _RFC_3339_DATE_TIME.fullmatch(raw)
        if match is None:
            raise InvalidInput(
                f"{where}: {raw!r} is not an RFC 3339 date-time (like 2020-01-01T00:00:00.000Z)", field=where
            )
        if match["offset"] is None:
            raise InvalidInput(f"{where}: {raw!r} has no time zone (use 'Z' or an offset)", field=where)
        try:
            moment = datetime.fromisoformat(raw.upper())  # (takes only "T" and "Z" in capitals)
        except ValueError as exc:
            raise InvalidInput(f"{where}: {raw!r} is not an RFC 3339 date-time ({exc})", field=where) from None
    else:
        raise InvalidInput(f"{where}: must be an RFC 3339 date-time string", field=where)
    if moment.tzinfo is not UTC:
        try:
            # Stored and served in UTC; a moment outside years 1-9999 in UTC cannot be represented.
            moment = moment.astimezone(UTC)
        except OverflowError:
            raise InvalidInput(f"{where}: {raw!r} is outside the years 1-9999 in UTC", field=where) from None
    return to_milliseconds(moment)
