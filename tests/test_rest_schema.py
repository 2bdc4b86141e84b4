"""The OpenAPI description of the REST API (SPEC.md "REST API": OpenAPI at ``/api/v1/schema``) and a
Schemathesis run against it: every operation, generated inputs, an admin token, and no 500 allowed.

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
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error

from eventrelay.auth import mint_token
from events.services import publish
from tests.grpc_client import unique_topic
from topics.models import Topic
from topics.services import create_topic, delete_topic
from webhooks.models import Destination
from webhooks.services import create_destination

# SPEC.md's REST table: every path with its methods ({id} stands for any path parameter name).
SPEC_PATHS = {
    "/api/v1/topics": {"get", "post"},
    "/api/v1/topics/{}": {"get", "delete"},
    "/api/v1/topics/{}/events": {"get", "post"},
    "/api/v1/webhooks": {"get", "post"},
    "/api/v1/webhooks/{}": {"get", "patch", "delete"},
    "/api/v1/webhooks/{}/pause": {"post"},
    "/api/v1/webhooks/{}/resume": {"post"},
    "/api/v1/webhooks/{}/attempts": {"get"},
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
ERROR_CODES = ["invalid", "unauthenticated", "forbidden", "not_found", "conflict", "too_large", "rate_limited"]


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

    for path, method, operation in operations(openapi):
        for status in ("400", "401", "403", "404"):
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

schema = schemathesis.openapi.from_wsgi(
    "/api/v1/schema?format=json",
    get_wsgi_application(),
    config=schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Bearer {ADMIN_TOKEN}"},
            # A fixed seed: every run sends the same requests, so a failure reproduces.
            "seed": 1,
            # Half the generated path parameters name a resource that exists, so bodies and query
            # strings are fuzzed against a real topic and a real destination too, not only 404s.
            "dictionaries": {
                "topic_names": {"values": [SEEDED_TOPIC]},
                "topic_refs": {"values": [SEEDED_TOPIC, f"{SEEDED_TOPIC}:123"]},
                "destination_ids": {"values": [SEEDED_DESTINATION_ID]},
            },
            "parameters": {
                "path.name": {"dictionary": "topic_names", "probability": 0.5},
                "path.ref": {"dictionary": "topic_refs", "probability": 0.5},
                "path.destination_id": {"dictionary": "destination_ids", "probability": 0.5},
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
        publish(admin, f"{SEEDED_TOPIC}:123", [{"name": "seed", "data": {"n": n}} for n in range(3)], "http")
        destination = create_destination(name="seed", url="http://127.0.0.1:9/hook", topic=SEEDED_TOPIC)
        Destination.objects.filter(pk=destination.pk).update(id=SEEDED_DESTINATION_ID)
        yield
    finally:
        for name in Topic.objects.values_list("name", flat=True):
            delete_topic(name)


@schema.parametrize()
@hypothesis_settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(case, seeded):
    case.call_and_validate(checks=[not_a_server_error])
