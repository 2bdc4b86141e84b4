"""The rules the services enforce, written for the OpenAPI description (drf-spectacular), so that a client generated
from it validates what the server does: a request the description calls valid is not refused with a 400.

Each rule here mirrors a check elsewhere, named beside it; tests/test_rest_schema.py holds them together (the
patterns against ``eventrelay.refs``, and Schemathesis' positive-data check against the whole API).
"""

from typing import Any

from django.conf import settings

from eventrelay.refs import ID_MAX_LENGTH, NAME_MAX_LENGTH

# eventrelay.refs: a name is 1-50 of a-z, 0-9 and _, starting with a letter; a reference is a name or
# ``name:id`` with an id of 1-255 letters, digits and ``_ . @ -``.
TOPIC_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
TOPIC_REF_PATTERN = rf"^[a-z][a-z0-9_]{{0,{NAME_MAX_LENGTH - 1}}}(?::[A-Za-z0-9_.@-]{{1,{ID_MAX_LENGTH}}})?$"
TOPIC_REF_MAX_LENGTH = NAME_MAX_LENGTH + 1 + ID_MAX_LENGTH

TOPIC_NAME = {
    "type": "string",
    "pattern": TOPIC_NAME_PATTERN,
    "minLength": 1,
    "maxLength": NAME_MAX_LENGTH,
    "description": f"A topic name: 1-{NAME_MAX_LENGTH} characters, a-z, 0-9 and _, starting with a letter.",
}
TOPIC_REF = {
    "type": "string",
    "pattern": TOPIC_REF_PATTERN,
    "minLength": 1,
    "maxLength": TOPIC_REF_MAX_LENGTH,
    "description": (
        f"A topic name, or name:id to scope it to one id (the id: 1-{ID_MAX_LENGTH} letters, digits and _ . @ -)."
    ),
}
# consumers.services: a consumer name, an ackId (``<consumer>-<epoch>-<offset>-<delivery>``), offsets (bigint).
CONSUMER_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
CONSUMER_NAME = {
    "type": "string",
    "pattern": CONSUMER_NAME_PATTERN,
    "minLength": 1,
    "maxLength": 64,
    "description": "A consumer name: 1-64 characters, a-z, 0-9, _ and -, starting with a letter.",
}
ACK_ID_PATTERN = r"^[0-9]{1,18}-[0-9]{1,9}-[0-9]{1,18}-[0-9]{1,4}$"
ACK_ID = {"type": "string", "pattern": ACK_ID_PATTERN, "description": "Opaque: as a fetch handed it out."}
OFFSET = {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**63 - 1}
OFFSET_OR_END = {"type": "integer", "format": "int64", "minimum": -1, "maximum": 2**63 - 1}

# Path converters ``<int:...>`` (api/urls.py) take digits only; ids are PostgreSQL bigint.
DESTINATION_ID = {"type": "integer", "format": "int64", "minimum": 1, "maximum": 2**63 - 1}

# Text the services store: no NUL (PostgreSQL text cannot hold it). DRF's CharField and the webhook services
# also strip whitespace and refuse what is left empty: at least one character that is not whitespace.
NO_NUL_PATTERN = r"^[^\u0000]*$"
NOT_BLANK_PATTERN = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"

# events.validation: RFC 3339 date-time (``Z`` or an offset, seconds 00-59, any fraction), stored in UTC: a
# numeric offset may carry a moment past the years 1-9999, so years 0001 and 9999 take only ``Z`` here.
_TIME = r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
_MIDDLE_YEAR = r"(?:000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
_DATE = r"-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
OCCURRED_AT_PATTERN = (
    rf"^(?:[0-9]{{4}}{_DATE}{_TIME}Z|{_MIDDLE_YEAR}{_DATE}{_TIME}[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)


def request_bodies_allow_no_other_fields(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular post-processing hook: every request body object says ``additionalProperties: false``.

    Unknown fields are not part of the API: events refuse them (events.validation), and a client should not
    send what the server may refuse or ignore.
    """
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object" and "properties" in component:
            component.setdefault("additionalProperties", False)
    return result


def publish_body_rules(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular post-processing hook: a publish body is required (an empty one is an event without a
    name) and a list holds 1 to ``ER_MAX_BATCH_EVENTS`` events (events.validation), which drf-spectacular
    cannot read off a polymorphic serializer."""
    publish_ref = "#/components/schemas/PublishRequest"
    publish = result.get("components", {}).get("schemas", {}).get("PublishRequest", {})
    for option in publish.get("oneOf", ()):
        if option.get("type") == "array":
            option.update(minItems=1, maxItems=settings.ER_MAX_BATCH_EVENTS)
    for item in result.get("paths", {}).values():
        for operation in item.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if (
                body
                and body.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref") == publish_ref
            ):
                body["required"] = True
    return result
