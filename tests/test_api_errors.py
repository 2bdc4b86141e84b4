"""Every answer under ``/api/v1/`` is the API's JSON error shape, ``{"error": {"code", "message", "field"?}}``:
paths no route matches, methods an endpoint does not have, and our own bugs (a 500 that tells nothing of the
internals). Outside the API (the viewer, the admin) Django's own pages stay. And the web process's status
line carries a real reason phrase for every status the API answers with (Twisted has none for 429).
"""

import ast
import http.client
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from django.test import Client
from django.urls import reverse

from api.errors import STATUS_BY_CODE
from eventrelay.auth import mint_token
from harness.processes import REPO, VENV_BIN, WebServer
from tests.test_rest_api import error_of

pytestmark = pytest.mark.django_db

ADMIN = {"HTTP_AUTHORIZATION": f"Bearer {mint_token([], admin=True)}"}


def json_error(response, status: int, code: str) -> dict[str, str]:
    """``error_of``, and the response says it is JSON (Django's own pages are HTML)."""
    assert response["Content-Type"].startswith("application/json"), (response.status_code, response["Content-Type"])
    return error_of(response, status, code)


# --- Paths no route matches -----------------------------------------------------------------------

UNMATCHED = [
    "/api/v1/topics/",  # a trailing slash
    "/api/v1/topics/users/events/",
    "/api/v1/webhooks/",
    "/api/v1/webhooks/null%2Cnull",  # not an integer id
    "/api/v1/webhooks/null%2Cnull/pause",
    "/api/v1/webhooks/abc/resume",
    "/api/v1/webhooks/-1/attempts",
    "/api/v1/nope",
    "/api/v1/",
    "/api/v1",
]


@pytest.mark.parametrize("path", UNMATCHED)
def test_a_path_no_api_route_matches_answers_a_json_not_found(client, path):
    for headers in ({}, ADMIN):
        error = json_error(client.get(path, **headers), 404, "not_found")

        assert "/api/v1" in error["message"]


def test_a_post_to_an_unmatched_api_path_answers_a_json_not_found_too(client):
    json_error(client.post("/api/v1/webhooks/null%2Cnull/pause", **ADMIN), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", "/api/v1/topics"),
        ("patch", "/api/v1/topics"),
        ("post", "/api/v1/webhooks/1/attempts"),
        ("get", "/api/v1/webhooks/1/pause"),
        ("delete", "/api/v1/webhooks"),
    ],
)
def test_a_method_an_endpoint_does_not_have_answers_a_json_405_with_allow(client, method, path):
    response = getattr(client, method)(path, **ADMIN)

    error = json_error(response, 405, "invalid")
    assert method.upper() in error["message"]
    assert response["Allow"]


def test_pages_outside_the_api_keep_djangos_own_not_found_page(client):
    for path in ("/nope", "/api/v2/topics", "/api/v1x"):
        response = client.get(path)

        assert response.status_code == 404
        assert response["Content-Type"].startswith("text/html"), path


# --- Our own bugs -----------------------------------------------------------------------------------

SECRET_DETAIL = "internal detail: dsn=postgres://secret@db/eventrelay"


@pytest.fixture
def broken_topic_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in a service: listing topics raises something no handler knows."""

    def broken(principal):
        raise RuntimeError(SECRET_DETAIL)

    monkeypatch.setattr("api.views.list_topics_as", broken)


def test_an_unexpected_error_answers_a_json_500_that_tells_nothing_of_the_internals(broken_topic_list):
    client = Client(raise_request_exception=False)

    response = client.get(reverse("api-topics"), **ADMIN)

    error = json_error(response, 500, "error")
    assert error == {"code": "error", "message": "internal server error"}
    assert SECRET_DETAIL not in response.content.decode()
    assert "Traceback" not in response.content.decode()


def test_an_unexpected_error_outside_the_api_keeps_djangos_own_500_page(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError(SECRET_DETAIL)

    monkeypatch.setattr("eventrelay.views.render", broken)  # the viewer page cannot be rendered

    response = Client(raise_request_exception=False).get(reverse("viewer"))

    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    assert SECRET_DETAIL not in response.content.decode()


# --- Reason phrases on the real web process ---------------------------------------------------------


@pytest.fixture(scope="module")
def limited_web_server(django_db_setup: None) -> Iterator[WebServer]:
    """The real web process with the request rate limit on: one call at a time, one a minute."""
    server = WebServer(
        env={"ER_RATE_LIMIT_REQUESTS_PER_S": "1", "ER_RATE_LIMIT_REQUESTS_BURST": "1"}, name="rest-api-errors-web"
    )
    yield server
    server.stop()


def status_line(server: WebServer, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """The status code and reason phrase exactly as the server wrote them on the wire."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status, response.reason
    finally:
        connection.close()


def test_a_429_from_the_web_process_has_its_reason_phrase(limited_web_server, transactional_db):
    # A subject of its own: no other test or run has spent this token's budget.
    token = mint_token([], admin=True, subject=f"rest-429-{uuid.uuid4().hex}")
    headers = {"Authorization": f"Bearer {token}"}

    answers = [status_line(limited_web_server, "GET", "/api/v1/topics", headers) for _ in range(3)]

    assert (429, "Too Many Requests") in answers, answers
    assert all(reason != "Unknown Status" for _, reason in answers), answers


def test_every_status_the_api_answers_with_has_a_reason_phrase_in_the_web_process():
    statuses = sorted({*STATUS_BY_CODE.values(), 405, 500, 503})
    # In a process of its own: importing the web server installs Twisted's asyncio reactor.
    script = (
        "import eventrelay.webserver; from twisted.web.http import RESPONSES; "
        f"print({{code: RESPONSES.get(code, b'Unknown Status').decode() for code in {statuses!r}}})"
    )
    output = subprocess.run(
        [str(VENV_BIN / "python"), "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"DJANGO_SETTINGS_MODULE": "eventrelay.settings", "PATH": "/usr/bin:/bin"},
    ).stdout
    phrases = ast.literal_eval(output)

    assert phrases[429] == "Too Many Requests"
    assert phrases[413] in {"Request Entity Too Large", "Content Too Large"}
    assert "Unknown Status" not in phrases.values(), phrases
