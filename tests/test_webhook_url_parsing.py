"""Webhook URLs that two URL parsers read as two different hosts are refused (issue 17 A).

``http://127.0.0.1:9305\\@8.8.8.8/x`` is host ``8.8.8.8`` to ``urllib.parse.urlsplit`` but ``127.0.0.1`` to
urllib3, which requests uses to connect: a check on the first and a POST with the second is a server-side request
forgery into loopback. Each URL of the table points, for the HTTP client, at a real local receiver, with
ER_WEBHOOK_ALLOW_PRIVATE off. It must be refused on every way in (REST POST and PATCH, the admin form) with a 400
naming ``url``, and before a delivery attempt of a destination stored before this check existed, and nothing may
reach the receiver.
"""

import json
import uuid
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from eventrelay.auth import mint_token
from events.canonical import StoredEvent
from webhooks import delivery, signing, ssrf
from webhooks.models import DeliveryAttempt, Destination
from webhooks.services import create_destination

pytestmark = pytest.mark.django_db

PUBLIC_URL = "http://93.184.215.14/hook"

# (id, template): "{port}" is the receiver's port. Every one reaches, or could reach, something other than
# what a check on urlsplit sees.
AMBIGUOUS = [
    pytest.param("http://127.0.0.1:{port}\\@8.8.8.8/hook", id="backslash-before-at"),
    pytest.param("http://[::1]:{port}\\@8.8.8.8/hook", id="ipv6-backslash-before-at"),
    pytest.param("http:\\\\127.0.0.1:{port}/hook", id="backslashes-for-slashes"),
    pytest.param("http://127.0.0.1:{port}/\\@8.8.8.8/hook", id="backslash-in-path"),
    pytest.param("http://u@127.0.0.1:{port}@8.8.8.8/hook", id="two-at-signs"),
    pytest.param("http://127.0.0.1:{port}\t@8.8.8.8/hook", id="tab-before-at"),
    pytest.param("http://8.8.8.8\n@127.0.0.1:{port}/hook", id="newline-in-userinfo"),
    pytest.param("http://127.0.0.1:{port} @8.8.8.8/hook", id="space-before-at"),
    pytest.param("http://127.0.0.1:{port}\r\n@8.8.8.8/hook", id="crlf-before-at"),
    pytest.param("http://127.0.0.1:{port}\u200b@8.8.8.8/hook", id="zero-width-space"),
    pytest.param("http://127.0.0.1:{port}\x01@8.8.8.8/hook", id="control-character"),
    pytest.param("http://%31%32%37.0.0.1:{port}/hook", id="percent-encoded-host"),
    pytest.param("http://127\u30020\u30020\u30021:{port}/hook", id="ideographic-full-stops"),
]
# Read the same by both parsers, as loopback (the "@8.8.8.8" is in the fragment or query): refused as loopback.
DISGUISED_LOOPBACK = [
    pytest.param("http://127.0.0.1:{port}#@8.8.8.8/hook", id="fragment-before-at"),
    pytest.param("http://127.0.0.1:{port}?@8.8.8.8/hook", id="query-before-at"),
]
REFUSED = AMBIGUOUS + DISGUISED_LOOPBACK


class Api:
    def __init__(self, client) -> None:
        self.client = client
        self.auth = {"HTTP_AUTHORIZATION": f"Bearer {mint_token([], admin=True)}"}

    def call(self, method: str, path: str, body: dict):
        return self.client.generic(
            method, f"/api/v1/{path}", data=json.dumps(body), content_type="application/json", **self.auth
        )


@pytest.fixture
def api(client) -> Api:
    return Api(client)


@pytest.fixture
def private_off(settings) -> None:
    settings.ER_WEBHOOK_ALLOW_PRIVATE = False


@pytest.fixture
def orders(make_topic):
    return make_topic("orders")


def assert_refused_naming_url(response) -> None:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == "url", error


@pytest.mark.parametrize("template", REFUSED)
def test_creating_a_webhook_with_an_ambiguous_url_is_refused_naming_url(api, orders, receiver, private_off, template):
    url = template.format(port=receiver.server.server_address[1])

    response = api.call("POST", "webhooks", {"name": "crm", "url": url, "topic": "orders"})

    assert_refused_naming_url(response)
    assert not Destination.objects.exists()
    assert receiver.requests == []


@pytest.mark.parametrize("template", REFUSED)
def test_changing_a_webhook_to_an_ambiguous_url_is_refused_and_keeps_the_old_one(
    api, orders, receiver, private_off, template
):
    destination = create_destination(name="crm", url=PUBLIC_URL, topic="orders")
    url = template.format(port=receiver.server.server_address[1])

    response = api.call("PATCH", f"webhooks/{destination.pk}", {"url": url})

    assert_refused_naming_url(response)
    destination.refresh_from_db()
    assert destination.url == PUBLIC_URL


@pytest.mark.parametrize("template", AMBIGUOUS[:4])
def test_the_admin_form_refuses_an_ambiguous_url(staff, orders, receiver, private_off, template):
    client = staff
    destination = create_destination(name="crm", url=PUBLIC_URL, topic="orders")
    url = template.format(port=receiver.server.server_address[1])
    form = {
        "name": "crm",
        "url": url,
        "active": "on",
        **{f"streams-{name}": "0" for name in ("TOTAL_FORMS", "INITIAL_FORMS", "MIN_NUM_FORMS", "MAX_NUM_FORMS")},
    }

    response = client.post(reverse("admin:webhooks_destination_change", args=[destination.pk]), form)

    assert response.status_code == 200
    assert "url" in response.context["adminform"].form.errors
    destination.refresh_from_db()
    assert destination.url == PUBLIC_URL


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize("template", AMBIGUOUS)
def test_a_stored_ambiguous_url_is_refused_before_each_attempt_and_nothing_reaches_the_receiver(
    orders, receiver, settings, template, allow_private
):
    settings.ER_WEBHOOK_ALLOW_PRIVATE = allow_private
    port = receiver.server.server_address[1]
    # Stored before the check existed: straight into the table, past the services.
    stored = Destination.objects.create(
        name="old", url=template.format(port=port), topic_name="orders", secret=signing.new_secret()
    )
    event = StoredEvent(
        offset=1,
        event_id=uuid.uuid4(),
        name="placed",
        topic_name="orders",
        topic_id="",
        source="test",
        user_id=None,
        event_occurred_at=datetime.now(UTC),
        context_json="{}",
        data_json='{"n":1}',
    )

    outcome = delivery.post_event(stored, event)

    assert not outcome.ok
    assert outcome.error.startswith("refused: ")
    # The receiver is there and answers: the same event to its plain URL arrives, and is the only one.
    settings.ER_WEBHOOK_ALLOW_PRIVATE = True
    assert delivery.post_event(Destination(url=receiver.url, secret=signing.new_secret()), event).ok
    assert receiver.offsets("orders") == [1]
    assert not DeliveryAttempt.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://8.8.8.8/hook",
        "https://user:p%40ss@8.8.8.8:8443/hook?x=1#f",
        "http://127.0.0.1%2f@8.8.8.8/hook",
        "http://[2606:2800:220:1:248:1893:25c8:1946]/hook",
        "HTTP://8.8.8.8/hook",
    ],
)
def test_an_unambiguous_public_url_is_still_accepted(url):
    ssrf.check_url(url, allow_private=False)
    assert ssrf.connect_target(url).host in ("8.8.8.8", "2606:2800:220:1:248:1893:25c8:1946")


def test_the_refusal_of_a_backslash_says_where_it_is(private_off):
    with pytest.raises(ssrf.UnsafeURL, match=r"contains a backslash at position 21; percent-encode it"):
        ssrf.check_url("http://127.0.0.1:9305\\@8.8.8.8/x", allow_private=False)
