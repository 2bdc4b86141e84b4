"""A password in a destination URL is write-only, like the signing secret (issue 17 K).

``http://user:secret@host/...`` carries the receiver's basic-auth credentials. No API response and no admin page
shows them: the URL reads ``http://user:***@host/...``. Sending that masked URL back (REST PATCH, the admin's
edit form saved unchanged) keeps the stored password; a URL with another password replaces it.
"""

import json

import pytest
from django.urls import reverse

from eventrelay.auth import mint_token
from webhooks.models import Destination
from webhooks.services import create_destination

pytestmark = pytest.mark.django_db

STORED = "http://crm:s3cr3t-pw@93.184.215.14:8080/hook?x=1"
MASKED = "http://crm:***@93.184.215.14:8080/hook?x=1"


class Api:
    def __init__(self, client) -> None:
        self.client = client
        self.auth = {"HTTP_AUTHORIZATION": f"Bearer {mint_token([], admin=True)}"}

    def call(self, method: str, path: str, body: dict | None = None):
        data = "" if body is None else json.dumps(body)
        return self.client.generic(method, f"/api/v1/{path}", data=data, content_type="application/json", **self.auth)


@pytest.fixture
def api(client) -> Api:
    return Api(client)


@pytest.fixture
def orders(make_topic):
    return make_topic("orders")


@pytest.fixture
def destination(orders) -> Destination:
    return create_destination(name="crm", url=STORED, topic="orders")


def stored_url(destination: Destination) -> str:
    destination.refresh_from_db()
    return destination.url


def test_creating_a_webhook_answers_its_url_with_the_password_masked(api, orders):
    response = api.call("POST", "webhooks", {"name": "crm", "url": STORED, "topic": "orders"})

    assert response.status_code == 201, response.content
    assert response.json()["url"] == MASKED
    assert "s3cr3t-pw" not in response.content.decode()
    assert Destination.objects.get().url == STORED


def test_no_webhook_response_shows_the_password(api, destination):
    responses = [
        api.call("GET", f"webhooks/{destination.pk}"),
        api.call("GET", "webhooks"),
        api.call("PATCH", f"webhooks/{destination.pk}", {"name": "crm v2"}),
        api.call("POST", f"webhooks/{destination.pk}/pause"),
        api.call("POST", f"webhooks/{destination.pk}/resume"),
    ]

    for response in responses:
        assert response.status_code == 200, response.content
        assert "s3cr3t-pw" not in response.content.decode()
    assert responses[0].json()["url"] == MASKED
    assert responses[1].json()["webhooks"][0]["url"] == MASKED


def test_patching_the_masked_url_back_keeps_the_stored_password(api, destination):
    response = api.call("PATCH", f"webhooks/{destination.pk}", {"url": MASKED, "name": "crm v2"})

    assert response.status_code == 200, response.content
    assert response.json()["url"] == MASKED
    assert stored_url(destination) == STORED


def test_patching_the_masked_url_with_another_path_keeps_the_password_for_the_new_path(api, destination):
    response = api.call("PATCH", f"webhooks/{destination.pk}", {"url": "http://crm:***@93.184.215.14:8080/v2"})

    assert response.status_code == 200, response.content
    assert stored_url(destination) == "http://crm:s3cr3t-pw@93.184.215.14:8080/v2"


def test_patching_a_url_with_a_new_password_replaces_it(api, destination):
    response = api.call("PATCH", f"webhooks/{destination.pk}", {"url": "http://crm:n3w@93.184.215.14:8080/hook"})

    assert response.status_code == 200, response.content
    assert response.json()["url"] == "http://crm:***@93.184.215.14:8080/hook"
    assert stored_url(destination) == "http://crm:n3w@93.184.215.14:8080/hook"


def test_the_masked_password_is_never_sent_to_another_host(api, destination):
    response = api.call("PATCH", f"webhooks/{destination.pk}", {"url": "http://crm:***@93.184.215.15:8080/hook"})

    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == "url"
    assert "s3cr3t-pw" not in response.content.decode()
    assert stored_url(destination) == STORED


def test_a_refused_url_is_quoted_without_its_password(api, orders, settings):
    settings.ER_WEBHOOK_ALLOW_PRIVATE = False

    response = api.call(
        "POST", "webhooks", {"name": "crm", "url": "http://crm:s3cr3t-pw@127.0.0.1/", "topic": "orders"}
    )

    assert response.status_code == 400, response.content
    assert "s3cr3t-pw" not in response.content.decode()
    assert "crm:***@127.0.0.1" in response.json()["error"]["message"]


# --- The admin ------------------------------------------------------------------------------------


def change_page(destination: Destination) -> str:
    return reverse("admin:webhooks_destination_change", args=[destination.pk])


def edit_form(**fields: str) -> dict[str, str]:
    return {
        "name": "crm",
        "url": MASKED,
        "active": "on",
        **{f"streams-{name}": "0" for name in ("TOTAL_FORMS", "INITIAL_FORMS", "MIN_NUM_FORMS", "MAX_NUM_FORMS")},
        **fields,
    }


def test_the_admin_pages_show_the_url_with_the_password_masked(staff, destination):
    pages = [staff.get(change_page(destination)), staff.get(reverse("admin:webhooks_destination_changelist"))]

    for page in pages:
        assert page.status_code == 200
        assert "s3cr3t-pw" not in page.content.decode()
    assert pages[0].context["adminform"].form["url"].value() == MASKED


def test_saving_the_admin_form_unchanged_keeps_the_stored_password(staff, destination):
    response = staff.post(change_page(destination), edit_form(name="crm v2"))

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert stored_url(destination) == STORED
    assert destination.name == "crm v2"


def test_saving_the_admin_form_with_another_path_keeps_the_password(staff, destination):
    response = staff.post(change_page(destination), edit_form(url="http://crm:***@93.184.215.14:8080/v2"))

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert stored_url(destination) == "http://crm:s3cr3t-pw@93.184.215.14:8080/v2"


def test_saving_the_admin_form_with_a_new_url_replaces_the_password(staff, destination):
    response = staff.post(change_page(destination), edit_form(url="http://crm:n3w@93.184.215.14:8080/hook"))

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert stored_url(destination) == "http://crm:n3w@93.184.215.14:8080/hook"
