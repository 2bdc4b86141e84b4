"""The OpenAPI description of the REST API (docs/rest.md: OpenAPI at ``/api/v1/schema``) and a
Schemathesis run against it: every operation, generated inputs, an admin token. No 500 allowed; every
answer has a documented content type and matches its documented schema; and a request the schema calls
valid is not refused as malformed (the positive-data check): the description states the rules the
services check (api/schema.py), so a client generated from it validates what the server does.

The run is bounded (100 examples per operation, a fixed seed): about half a minute on this machine.

The Schemathesis run talks to the real Django WSGI application in this process (real URL routing,
middleware, DRF, services) on the test database. It runs with ``transactional_db`` so each request
commits like a real one; the topics it creates are dropped again afterwards (the flush at teardown
knows nothing of per-topic tables).
"""

import copy
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
)

from api.errors import STATUS_BY_CODE
from api.schema import OCCURRED_AT_PATTERN, TOPIC_NAME_PATTERN, TOPIC_REF_MAX_LENGTH, TOPIC_REF_PATTERN
from consumers.services import create_consumer
from eventrelay.auth import mint_token
from eventrelay.errors import InvalidInput
from eventrelay.refs import ID_MAX_LENGTH, NAME_MAX_LENGTH, TopicRef, validate_topic_name
from events.services import publish
from events.validation import validate_batch
from tests.grpc_client import unique_topic
from topics.models import Topic
from topics.services import create_topic, delete_topic
from webhooks.models import Destination
from webhooks.services import create_destination

# docs/rest.md's table: every path with its methods ({id} stands for any path parameter name).
SPEC_PATHS = {
    "/api/v1/topics": {"get", "post"},
    "/api/v1/topics/{}": {"get", "patch", "delete"},
    "/api/v1/topics/{}/events": {"get", "post"},
    "/api/v1/topics/{}/consumers": {"get", "post"},
    "/api/v1/topics/{}/consumers/{}": {"get", "delete"},
    "/api/v1/topics/{}/consumers/{}/fetch": {"post"},
    "/api/v1/topics/{}/consumers/{}/ack": {"post"},
    "/api/v1/topics/{}/consumers/{}/nack": {"post"},
    "/api/v1/topics/{}/consumers/{}/extend": {"post"},
    "/api/v1/topics/{}/consumers/{}/seek": {"post"},
    "/api/v1/topics/{}/consumers/{}/dead-letters": {"get"},
    "/api/v1/topics/{}/consumers/{}/dead-letters/redrive": {"post"},
    "/api/v1/webhooks": {"get", "post"},
    "/api/v1/webhooks/{}": {"get", "patch", "delete"},
    "/api/v1/webhooks/{}/pause": {"post"},
    "/api/v1/webhooks/{}/resume": {"post"},
    "/api/v1/webhooks/{}/rotate-secret": {"post"},
    "/api/v1/webhooks/{}/redeliver": {"post"},
    "/api/v1/webhooks/{}/attempts": {"get"},
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Every code api.errors answers with (a 503 "unavailable" among them), then "error": a bug of ours, a 500.
ERROR_CODES = list(STATUS_BY_CODE)
CLIENT_ERROR_CODES = {"invalid", "unauthenticated", "forbidden", "not_found", "conflict", "too_large", "rate_limited"}


def fetch_schema(client: Any) -> dict[str, Any]:
    response = client.get("/api/v1/schema?format=json")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def openapi(client: Any) -> dict[str, Any]:
    return fetch_schema(client)


def operations(openapi: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


# --- The schema document -------------------------------------------------------------------------


def test_the_schema_is_valid_openapi_3(openapi):
    assert openapi["openapi"].startswith("3.")
    assert openapi["info"]["title"] and openapi["info"]["version"]

    schemathesis.openapi.from_dict(openapi).validate()

    # The validator really validates: the same document with an operation missing its responses fails.
    broken = copy.deepcopy(openapi)
    del broken["paths"]["/api/v1/topics"]["get"]["responses"]
    with pytest.raises(Exception, match="responses"):
        schemathesis.openapi.from_dict(broken).validate()


def test_the_schema_is_served_as_json_when_the_client_accepts_json(client):
    response = client.get("/api/v1/schema", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["openapi"].startswith("3.")


def test_the_schema_needs_no_token(client):
    assert client.get("/api/v1/schema?format=json").status_code == 200


def test_the_schema_lists_every_path_of_the_spec_with_its_methods(openapi):
    listed = {
        re.sub(r"\{[^}]+\}", "{}", path): {method for method in item if method in HTTP_METHODS}
        for path, item in openapi["paths"].items()
    }

    assert listed == SPEC_PATHS


def test_every_operation_has_a_unique_id_and_a_summary(openapi):
    ids = [operation["operationId"] for _, _, operation in operations(openapi)]

    assert len(ids) == len(set(ids)) == sum(len(methods) for methods in SPEC_PATHS.values())
    assert all(operation.get("summary") for _, _, operation in operations(openapi))


def test_the_schema_declares_bearer_jwt_auth_on_every_operation(openapi):
    schemes = openapi["components"]["securitySchemes"]

    assert schemes == {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
    for path, method, operation in operations(openapi):
        assert operation.get("security", openapi.get("security")) == [{"bearerAuth": []}], (method, path)


def test_every_operation_documents_the_error_shape(openapi):
    error = openapi["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"code", "message"}
    assert set(error["properties"]) == {"code", "message", "field"}
    codes = openapi["components"]["schemas"][error["properties"]["code"]["$ref"].rsplit("/", 1)[-1]]["enum"]
    assert codes == ERROR_CODES
    assert CLIENT_ERROR_CODES <= set(codes) and codes[-1] == "error"

    for path, method, operation in operations(openapi):
        for status in ("400", "401", "403", "404", "500"):
            content = operation["responses"][status]["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_the_event_shapes_use_the_canonical_field_names(openapi):
    schemas = openapi["components"]["schemas"]

    assert list(schemas["Event"]["properties"]) == [
        *("eventId", "name", "topic", "source", "userId", "eventOccurredAt", "context", "data", "offset")
    ]
    assert set(schemas["PullResponse"]["properties"]) == {"events", "nextOffset"}
    assert set(schemas["PublishResponse"]["properties"]) == {"events"}
    new_event = schemas["NewEventRequest"]
    assert set(new_event["properties"]) == {"eventId", "name", "userId", "eventOccurredAt", "context", "data"}
    assert set(new_event["required"]) == {"name", "data"}


def test_the_pull_operation_documents_offset_and_limit(openapi):
    pull = openapi["paths"]["/api/v1/topics/{ref}/events"]["get"]

    parameters = {parameter["name"]: parameter for parameter in pull["parameters"] if parameter["in"] == "query"}
    assert set(parameters) == {"offset", "limit"}
    assert all(parameter["schema"]["type"] == "integer" for parameter in parameters.values())
    assert all(parameter["schema"]["minimum"] == 0 for parameter in parameters.values())


# --- The rules the services check, in the schema --------------------------------------------------


def resolved(openapi: dict[str, Any], schema_or_ref: dict[str, Any]) -> dict[str, Any]:
    ref = schema_or_ref.get("$ref")
    return openapi["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else schema_or_ref


def path_parameters(openapi: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [
        parameter["schema"]
        for _, _, operation in operations(openapi)
        for parameter in operation.get("parameters", ())
        if parameter["in"] == "path" and parameter["name"] == name
    ]


def test_topic_names_and_references_in_paths_and_bodies_carry_their_pattern_and_length(openapi):
    names = path_parameters(openapi, "name")
    refs = path_parameters(openapi, "ref")
    schemas = openapi["components"]["schemas"]

    assert len(names) == 3 and len(refs) == 13
    for name in [*names, schemas["CreateTopicRequest"]["properties"]["name"]]:
        assert (name["pattern"], name["minLength"], name["maxLength"]) == ("^[a-z][a-z0-9_]*$", 1, NAME_MAX_LENGTH)
    for ref in [*refs, schemas["DestinationCreateRequest"]["properties"]["topic"]]:
        assert ref["pattern"] == TOPIC_REF_PATTERN and ref["maxLength"] == NAME_MAX_LENGTH + 1 + ID_MAX_LENGTH


def test_webhook_ids_in_paths_are_positive_integers(openapi):
    ids = path_parameters(openapi, "destination_id")

    assert len(ids) == 8
    assert all(schema["type"] == "integer" and schema["minimum"] == 1 for schema in ids)


def test_every_request_body_refuses_fields_it_does_not_list(openapi):
    bodies = 0
    for path, method, operation in operations(openapi):
        if "requestBody" not in operation:
            continue
        body = resolved(openapi, operation["requestBody"]["content"]["application/json"]["schema"])
        for option in body.get("oneOf", [body]):
            option = resolved(openapi, option.get("items", option))
            assert option["additionalProperties"] is False, (method, path)
            bodies += 1

    # topics POST and PATCH, events (one or a list), webhooks POST, PATCH and redeliver; consumers, fetch, ack,
    # nack, extend, seek, redrive
    assert bodies == 14


def test_a_published_list_holds_one_to_the_batch_limit_and_names_its_ranges(openapi, settings):
    schemas = openapi["components"]["schemas"]
    [one, many] = schemas["PublishRequest"]["oneOf"]
    assert one == {"$ref": "#/components/schemas/NewEventRequest"}
    event = schemas["NewEventRequest"]["properties"]
    webhook = schemas["DestinationCreateRequest"]["properties"]

    assert many["type"] == "array" and (many["minItems"], many["maxItems"]) == (1, settings.ER_MAX_BATCH_EVENTS)
    assert (event["name"]["minLength"], event["name"]["maxLength"]) == (1, 255)
    assert event["userId"]["maxLength"] == 255
    assert (webhook["maxAttempts"]["minimum"], webhook["maxAttempts"]["maximum"]) == (1, 1000)
    assert (webhook["timeoutSeconds"]["minimum"], webhook["timeoutSeconds"]["maximum"]) == (1, 300)
    assert webhook["startOffset"]["minimum"] == 0
    # PATCH cannot change the topic (a new topic is a new destination): its body has none.
    assert "topic" not in schemas["PatchedDestinationChangeRequest"]["properties"]


TEXT = st.text(alphabet="az09_:.@-A Z\u00e9/", max_size=320)


@given(ref=TEXT | st.from_regex(TOPIC_REF_PATTERN, fullmatch=True))
@hypothesis_settings(max_examples=300, deadline=None)
def test_the_topic_reference_pattern_accepts_exactly_what_the_services_accept(ref):
    described = re.fullmatch(TOPIC_REF_PATTERN, ref) is not None and len(ref) <= TOPIC_REF_MAX_LENGTH
    try:
        TopicRef.parse(ref)
        accepted = True
    except InvalidInput:
        accepted = False

    assert described == accepted, ref


@given(name=TEXT | st.from_regex(TOPIC_NAME_PATTERN, fullmatch=True))
@hypothesis_settings(max_examples=300, deadline=None)
def test_the_topic_name_pattern_accepts_exactly_what_the_services_accept(name):
    described = re.fullmatch(TOPIC_NAME_PATTERN, name) is not None and 1 <= len(name) <= NAME_MAX_LENGTH
    try:
        validate_topic_name(name)
        accepted = True
    except InvalidInput:
        accepted = False

    assert described == accepted, name


# RFC 3339 date-times the way Schemathesis generates them (schemathesis/specs/openapi/formats.py), edge years too.
RFC_3339 = st.builds(
    "{}T{:02d}:{:02d}:{:02d}{}{}".format,
    st.dates().map(str),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.just("") | st.text(alphabet="0123456789", min_size=1, max_size=9).map(".".__add__),
    st.just("Z") | st.builds("{}{:02d}:{:02d}".format, st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59)),
)


@given(moment=RFC_3339)
@hypothesis_settings(max_examples=300, deadline=None)
def test_every_event_time_the_pattern_allows_is_accepted(moment):
    if re.fullmatch(OCCURRED_AT_PATTERN, moment):
        [event] = validate_batch([{"name": "n", "data": 1, "eventOccurredAt": moment}])
        assert event.event_occurred_at.tzinfo is not None


def test_the_swagger_ui_answers_and_points_at_the_schema(client):
    response = client.get("/api/v1/docs")

    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page.lower()
    assert "/api/v1/schema" in page


# --- Schemathesis: generated requests against the live application -----------------------------

ADMIN_TOKEN = mint_token([], admin=True, ttl_seconds=24 * 3600)
# The seeded topic and destination (see ``seeded``), which generated paths can name. A unique topic
# name: a table left behind by another test's flush cannot be in the way.
SEEDED_TOPIC = unique_topic("users")
SEEDED_DESTINATION_ID = 900_001
SEEDED_EVENTS = 3
SEEDED_CONSUMER = "seeded"
WEBHOOK_URLS = ["http://127.0.0.1:9/hook", "https://localhost/hooks/crm?x=1", "HTTP://[::1]:8080/", "http://10.1.2.3"]
# What a request the schema calls valid may answer (Schemathesis' positive-data check): 2xx, or a documented
# refusal that does not mean "malformed": 401/403 (auth), 404 (names something that does not exist), 409 (exists
# already). Never 400, 413 or 422.
ACCEPTED_STATUSES = ["2xx", "401", "403", "404", "409"]

schema = schemathesis.openapi.from_wsgi(
    "/api/v1/schema?format=json",
    get_wsgi_application(),
    config=schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Bearer {ADMIN_TOKEN}"},
            # A fixed seed: every run sends the same requests, so a failure reproduces.
            "seed": 1,
            "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED_STATUSES}},
            # Half the generated path parameters name a resource that exists, so bodies and query
            # strings are fuzzed against a real topic and a real destination too, not only 404s.
            "dictionaries": {
                "topic_names": {"values": [SEEDED_TOPIC]},
                "topic_refs": {"values": [SEEDED_TOPIC, f"{SEEDED_TOPIC}:123"]},
                "destination_ids": {"values": [SEEDED_DESTINATION_ID]},
                "consumer_names": {"values": [SEEDED_CONSUMER]},
            },
            "parameters": {
                "path.name": {"dictionary": "topic_names", "probability": 0.5},
                "path.ref": {"dictionary": "topic_refs", "probability": 0.5},
                "path.destination_id": {"dictionary": "destination_ids", "probability": 0.5},
                "path.consumer": {"dictionary": "consumer_names", "probability": 0.5},
                "body.topic": {"dictionary": "topic_refs", "probability": 0.5},
            },
        }
    ),
)


@pytest.fixture
def seeded(transactional_db: None, settings: Any, admin: Any) -> Iterator[None]:
    """A topic with three events and a destination for it. Every topic left at the end
    (Schemathesis creates some) is dropped with its table."""
    settings.ER_WEBHOOK_ALLOW_PRIVATE = True
    try:
        create_topic(SEEDED_TOPIC)
        publish(
            admin, f"{SEEDED_TOPIC}:123", [{"name": "seed", "data": {"n": n}} for n in range(SEEDED_EVENTS)], "http"
        )
        destination = create_destination(name="seed", url="http://127.0.0.1:9/hook", topic=SEEDED_TOPIC)
        Destination.objects.filter(pk=destination.pk).update(id=SEEDED_DESTINATION_ID)
        create_consumer(admin, SEEDED_TOPIC, SEEDED_CONSUMER, {})
        yield
    finally:
        for name in Topic.objects.values_list("name", flat=True):
            delete_topic(name)


@schema.parametrize()
@hypothesis_settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_get_no_server_error_and_the_valid_ones_are_accepted_as_documented(case, seeded):
    """Every generated request (valid and invalid ones): never a 500, a documented content type and body;
    and a request valid by the schema is never refused as malformed."""
    within_this_world(case)
    case.call_and_validate(
        checks=[not_a_server_error, positive_data_acceptance, content_type_conformance, response_schema_conformance]
    )


def within_this_world(case: Any) -> None:
    """Rules no schema can state, as they depend on the world, not on the request: a webhook URL's host must
    resolve (this machine has no DNS: only IP literals and localhost do), and its startOffset is at most the
    topic's last offset; an ackId must be one the consumer handed out, and a redriven offset one of its dead
    letters. A valid request gets values that hold here, so a 400 still means the schema and the API disagree.
    And a fetch waits at most a moment: the run would otherwise sit out long-polls of up to 30 seconds."""
    if isinstance(case.body, dict) and type(case.body.get("waitMs")) is int:
        case.body["waitMs"] = min(case.body["waitMs"], 10)
    if case.meta is None or not case.meta.generation.mode.is_positive or not isinstance(case.body, dict):
        return
    if "ackIds" in case.body:
        case.body["ackIds"] = []
    if "offsets" in case.body:
        case.body["offsets"] = []
    if "url" in case.body:
        case.body["url"] = WEBHOOK_URLS[len(case.body["url"]) % len(WEBHOOK_URLS)]
    if "startOffset" in case.body:
        case.body["startOffset"] = min(case.body["startOffset"], SEEDED_EVENTS)
