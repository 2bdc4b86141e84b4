"""The webhook admin: destinations (create, edit, pause/resume, rotate secret, test event, streams),
delivery streams, delivery attempts and undeliverable events, through Django's test client on the real
PostgreSQL. Test events are sent by a real Celery worker; other queued work is observed through a stub."""

import json
import re

import pytest
from django.contrib.admin.templatetags.admin_list import results
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils.html import strip_tags

from events.services import publish
from harness.processes import CeleryWorker, wait_until
from webhooks import delivery, signing
from webhooks.models import DeliveryAttempt, DeliveryStream, Destination, UndeliverableEvent
from webhooks.services import create_destination

PUBLIC_URL = "http://93.184.215.14/hook"
SECRET_RE = re.compile(r"whsec_[A-Za-z0-9+/=]+")


@pytest.fixture(scope="module")
def test_event_worker(django_db_setup):
    worker = CeleryWorker(name="admin_test_event_worker", concurrency=1)
    yield worker
    worker.stop()


@pytest.fixture
def orders(make_topic):
    return make_topic("orders")


@pytest.fixture
def destination(orders, allow_private):
    return create_destination(name="billing", url="http://127.0.0.1:9/hook", topic="orders")


def changelist(model):
    return reverse(f"admin:webhooks_{model._meta.model_name}_changelist")


def change_page(obj):
    return reverse(f"admin:webhooks_{obj._meta.model_name}_change", args=[obj.pk])


def messages_of(response):
    return [str(message) for message in get_messages(response.wsgi_request)]


def list_rows(response):
    """The changelist's cells as text, as the page shows them."""
    return [[strip_tags(cell).strip() for cell in row] for row in results(response.context["cl"])]


def add_form(**fields):
    return {"name": "billing", "url": "http://127.0.0.1:9/hook", "topic": "orders", "active": "on", **fields}


def change_form(destination, **fields):
    """What the change page posts: the editable fields plus the (read-only) streams inline's management form."""
    data = {
        "name": destination.name,
        "url": destination.url,
        "event_names": "\n".join(destination.event_names),
        "active": "on" if destination.active else "",
        "streams-TOTAL_FORMS": "0",
        "streams-INITIAL_FORMS": "0",
        "streams-MIN_NUM_FORMS": "0",
        "streams-MAX_NUM_FORMS": "0",
        **fields,
    }
    return {name: value for name, value in data.items() if value != ""}


def run_action(client, model, action, *objects, **extra):
    return client.post(
        changelist(model), {"action": action, "_selected_action": [obj.pk for obj in objects], **extra}, follow=True
    )


def make_undeliverable(destination, offset=1, topic_id="1"):
    stream, _ = DeliveryStream.objects.get_or_create(destination=destination, topic_id=topic_id)
    return UndeliverableEvent.objects.create(
        stream=stream,
        event_id="0b7f8a9c-1d2e-4f50-8a6b-7c8d9e0f1a2b",
        offset=offset,
        attempts=20,
        last_error="HTTP 500",
    )


# --- Lists ------------------------------------------------------------------------------------------


def test_every_webhook_list_renders_for_a_superuser(staff, destination):
    stream = DeliveryStream.objects.create(destination=destination, topic_id="1", last_error="HTTP 503", attempts=2)
    DeliveryAttempt.objects.create(
        stream=stream, event_id="0b7f8a9c-1d2e-4f50-8a6b-7c8d9e0f1a2b", offset=1, attempt=1, status="failed"
    )
    make_undeliverable(destination)

    for model in (Destination, DeliveryStream, DeliveryAttempt, UndeliverableEvent):
        response = staff.get(changelist(model))
        assert response.status_code == 200, model
        assert "billing" in response.content.decode(), model


def test_the_destination_list_never_shows_a_secret(staff, destination):
    response = staff.get(changelist(Destination))

    assert response.status_code == 200
    assert destination.secret not in response.content.decode()
    assert not SECRET_RE.search(response.content.decode())


def test_the_destination_list_costs_the_same_queries_for_one_destination_or_thirty(staff, orders, allow_private):
    def list_queries():
        with CaptureQueriesContext(connection) as queries:
            assert staff.get(changelist(Destination)).status_code == 200
        return len(queries)

    first = create_destination(name="d0", url="http://127.0.0.1:9/hook", topic="orders:0")
    make_undeliverable(first, topic_id="0")
    one = list_queries()
    for n in range(1, 30):
        made = create_destination(name=f"d{n}", url="http://127.0.0.1:9/hook", topic=f"orders:{n}")
        make_undeliverable(made, topic_id=str(n))

    assert list_queries() == one


def test_the_destination_list_shows_streams_backlog_and_undeliverable_counts(staff, orders, allow_private, admin):
    destination = create_destination(name="billing", url="http://127.0.0.1:9/hook", topic="orders:1")
    publish(admin, "orders:1", [{"name": "placed", "data": {"n": n}} for n in range(4)], "grpc")
    make_undeliverable(destination)

    response = staff.get(changelist(Destination))

    # name, topic, URL, state, disabled reason, streams, backlog, undeliverable (after the checkbox)
    assert list_rows(response) == [
        ["", "billing", "orders:1", "http://127.0.0.1:9/hook", "active", "-", "1", "up to 4", "1"]
    ]


def test_the_delivery_attempt_list_filters_by_destination_and_status(staff, destination, allow_private, orders):
    other = create_destination(name="crm", url="http://127.0.0.1:9/other", topic="orders")
    for dest, status in ((destination, "failed"), (other, "succeeded")):
        stream = DeliveryStream.objects.create(destination=dest, topic_id="1")
        DeliveryAttempt.objects.create(
            stream=stream, event_id="0b7f8a9c-1d2e-4f50-8a6b-7c8d9e0f1a2b", offset=1, attempt=1, status=status
        )

    by_destination = staff.get(changelist(DeliveryAttempt), {"destination": destination.pk})
    by_status = staff.get(changelist(DeliveryAttempt), {"status__exact": "succeeded"})

    assert [a.stream.destination for a in by_destination.context["cl"].result_list] == [destination]
    assert [a.stream.destination for a in by_status.context["cl"].result_list] == [other]


# --- Adding and editing -----------------------------------------------------------------------------


def test_adding_a_destination_creates_it_with_a_secret_shown_once(staff, orders, allow_private, admin):
    publish(admin, "orders", [{"name": "placed", "data": {}}] * 3, "grpc")

    response = staff.post(reverse("admin:webhooks_destination_add"), add_form(), follow=True)

    destination = Destination.objects.get()
    assert destination.secret.startswith("whsec_")
    assert (destination.name, destination.url, destination.topic) == ("billing", "http://127.0.0.1:9/hook", "orders")
    assert destination.start_offset == 3  # new events only
    shown = [message for message in messages_of(response) if destination.secret in message]
    assert len(shown) == 1
    assert destination.secret in response.content.decode()

    again = staff.get(change_page(destination))
    assert destination.secret not in again.content.decode()
    assert not SECRET_RE.search(again.content.decode())


def test_adding_a_destination_with_a_start_offset_replays_from_there(staff, orders, allow_private, admin):
    publish(admin, "orders:7", [{"name": "placed", "data": {}}] * 5, "grpc")

    staff.post(reverse("admin:webhooks_destination_add"), add_form(topic="orders:7", start_offset="2"))

    destination = Destination.objects.get()
    assert destination.start_offset == 2
    assert DeliveryStream.objects.get(destination=destination).last_offset == 2


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"url": "ftp://example.com/hook"}, "url", "only http and https are allowed"),
        ({"url": "not a url"}, "url", "is refused"),
        ({"url": "http://127.0.0.1:9/hook"}, "url", "loopback address"),
        ({"url": "http://10.1.2.3/hook"}, "url", "private address"),
        ({"topic": "nosuch"}, "topic", "topic 'nosuch' does not exist"),
        ({"topic": "Orders"}, "topic", "must start with a lowercase letter"),
        ({"topic": "orders:"}, "topic", "topic id after ':' is empty"),
        ({"start_offset": "5"}, "start_offset", "must be between 0 and 0"),
        ({"max_attempts": "0"}, "max_attempts", "greater than or equal to 1"),
        ({"timeout_seconds": str(2**31)}, "timeout_seconds", "less than or equal to 2147483647"),
        ({"name": "n" * 101}, "name", "at most 100 characters"),
    ],
)
def test_adding_a_destination_with_a_bad_value_shows_the_services_message_and_stores_nothing(
    staff, orders, fields, field, message, settings
):
    settings.ER_WEBHOOK_ALLOW_PRIVATE = False
    # A public address literal: valid without a DNS lookup.
    response = staff.post(reverse("admin:webhooks_destination_add"), add_form(url=PUBLIC_URL) | fields)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field]
    assert message in errors[field][0]
    assert Destination.objects.count() == 0


def test_editing_a_destination_saves_through_the_service_and_keeps_the_topic(staff, destination):
    response = staff.post(
        change_page(destination),
        change_form(
            destination, name="billing v2", url="http://127.0.0.1:9/v2", event_names="placed\nshipped", topic="x"
        ),
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    destination.refresh_from_db()
    assert (destination.name, destination.url) == ("billing v2", "http://127.0.0.1:9/v2")
    assert destination.event_names == ["placed", "shipped"]
    assert destination.topic == "orders"


def test_editing_a_destination_to_a_private_url_is_refused(staff, destination, settings):
    settings.ER_WEBHOOK_ALLOW_PRIVATE = False

    response = staff.post(change_page(destination), change_form(destination, url="http://[::1]/hook"))

    assert "loopback address" in response.context["adminform"].form.errors["url"][0]
    destination.refresh_from_db()
    assert destination.url == "http://127.0.0.1:9/hook"


def test_reactivating_a_disabled_destination_on_its_page_clears_the_reason(staff, destination):
    Destination.objects.filter(pk=destination.pk).update(active=False, disabled_reason="receiver answered 410 Gone")
    destination.refresh_from_db()

    staff.post(change_page(destination), change_form(destination, active="on"))

    destination.refresh_from_db()
    assert destination.active and destination.disabled_reason == ""


# --- The destination page: streams ------------------------------------------------------------------


def test_the_destination_page_lists_its_streams_with_exact_backlogs(staff, orders, allow_private, admin):
    destination = create_destination(name="billing", url="http://127.0.0.1:9/hook", topic="orders", start_offset=0)
    publish(admin, "orders:1", [{"name": "placed", "data": {}}] * 5, "grpc")
    publish(admin, "orders:2", [{"name": "placed", "data": {}}] * 2, "grpc")
    delivery.discover_streams(destination)
    DeliveryStream.objects.filter(destination=destination, topic_id="2").update(
        attempts=3, last_error="HTTP 503 from the receiver"
    )

    response = staff.get(change_page(destination))

    streams = response.context["inline_admin_formsets"][0]
    rows = {
        form.original.topic: {
            field.field["name"]: field.contents() for fieldset in form for line in fieldset for field in line
        }
        for form in streams
    }
    assert rows["orders:1"]["backlog"] == "5" and rows["orders:1"]["attempts"] == "0"
    assert rows["orders:2"]["backlog"] == "2" and rows["orders:2"]["attempts"] == "3"
    assert rows["orders:2"]["last_error"] == "HTTP 503 from the receiver"
    assert rows["orders:1"]["lease"] == "free"
    # Failing streams first.
    assert list(rows) == ["orders:2", "orders:1"]


def test_a_destination_with_more_streams_than_its_page_shows_lists_the_failing_ones_first(
    staff, destination, monkeypatch
):
    monkeypatch.setattr("console.webhooks.STREAMS_SHOWN", 2)
    for n in range(5):
        DeliveryStream.objects.create(destination=destination, topic_id=str(n), last_offset=10 + n)
    DeliveryStream.objects.filter(destination=destination, topic_id="4").update(attempts=1)

    response = staff.get(change_page(destination))

    streams = response.context["inline_admin_formsets"][0]
    assert [form.original.topic for form in streams] == ["orders:4", "orders:0"]
    assert "2 of 5" in streams.opts.verbose_name_plural


# --- Deleting ---------------------------------------------------------------------------------------


def test_deleting_a_destination_counts_its_records_and_deletes_them_with_it(staff, destination):
    stream = DeliveryStream.objects.create(destination=destination, topic_id="1")
    for n in range(3):
        DeliveryAttempt.objects.create(
            stream=stream, event_id="0b7f8a9c-1d2e-4f50-8a6b-7c8d9e0f1a2b", offset=1, attempt=n + 1
        )
    make_undeliverable(destination)
    delete = reverse("admin:webhooks_destination_delete", args=[destination.pk])

    confirm = staff.get(delete)
    response = staff.post(delete, {"post": "yes"})

    assert dict(confirm.context["model_count"]) == {
        "destinations": 1,
        "delivery streams": 1,
        "delivery attempts": 3,
        "undeliverable events": 1,
    }
    assert not confirm.context["perms_lacking"]
    assert response.status_code == 302
    assert not Destination.objects.exists()
    assert not DeliveryAttempt.objects.exists() and not UndeliverableEvent.objects.exists()


# --- Actions ----------------------------------------------------------------------------------------


def test_pause_and_resume_actions_change_the_rows(staff, destination):
    run_action(staff, Destination, "pause_destinations", destination)
    destination.refresh_from_db()
    assert destination.active is False

    response = run_action(staff, Destination, "resume_destinations", destination)
    destination.refresh_from_db()
    assert destination.active is True
    assert any("Resumed 1 destination" in message for message in messages_of(response))


def test_rotating_the_secret_shows_the_new_one_once(staff, destination):
    old = destination.secret

    response = run_action(staff, Destination, "rotate_secrets", destination)

    destination.refresh_from_db()
    assert destination.secret != old and destination.secret.startswith("whsec_")
    assert [m for m in messages_of(response) if destination.secret in m]
    assert destination.secret not in staff.get(changelist(Destination)).content.decode()


def test_the_destination_page_buttons_run_the_actions_by_post(staff, destination):
    url = reverse("admin:webhooks_destination_run", args=[destination.pk, "pause_destinations"])
    page = staff.get(change_page(destination)).content.decode()
    assert f'action="{url}"' in page

    response = staff.post(url)

    assert response.status_code == 302 and response["location"] == change_page(destination)
    destination.refresh_from_db()
    assert destination.active is False


def test_a_get_on_an_action_url_changes_nothing(staff, destination):
    old_secret = destination.secret

    run = staff.get(reverse("admin:webhooks_destination_run", args=[destination.pk, "rotate_secrets"]))
    listed = staff.get(
        changelist(Destination), {"action": "pause_destinations", "_selected_action": destination.pk, "index": 0}
    )

    assert run.status_code == 405
    # The stock changelist reads unknown GET parameters as a bad filter and redirects: no action runs.
    assert listed.status_code == 302 and listed["location"].endswith("?e=1")
    destination.refresh_from_db()
    assert destination.active is True and destination.secret == old_secret


def test_an_action_without_the_csrf_token_is_refused(destination, django_user_model):
    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", None))

    listed = client.post(changelist(Destination), {"action": "pause_destinations", "_selected_action": destination.pk})
    button = client.post(reverse("admin:webhooks_destination_run", args=[destination.pk, "pause_destinations"]))

    assert listed.status_code == button.status_code == 403
    destination.refresh_from_db()
    assert destination.active is True


def test_an_unknown_action_on_the_destination_page_is_refused(staff, destination):
    response = staff.post(reverse("admin:webhooks_destination_run", args=[destination.pk, "delete_selected"]))

    assert response.status_code == 403
    assert Destination.objects.filter(pk=destination.pk).exists()


def destination_page_shows(client, destination, text):
    return text in client.get(change_page(destination)).content.decode()


@pytest.mark.e2e
def test_a_test_event_is_queued_then_a_worker_posts_it_signed_and_its_result_shows_on_the_destination(
    transactional_db, test_event_worker, staff, orders, allow_private, receiver
):
    destination = create_destination(name="billing", url=receiver.url, topic="orders:42")

    response = run_action(staff, Destination, "send_test_event", destination)

    [queued] = [m for m in messages_of(response) if "queued" in m]
    wait_until(lambda: len(receiver.requests) == 1, 60, "the test event at the receiver")
    request = receiver.requests[0]
    signing.verify(destination.secret, request.headers, request.body)  # raises if the signature is wrong
    event = json.loads(request.body)
    assert request.headers["webhook-id"] == event["eventId"] and event["eventId"] in queued
    assert {k: event[k] for k in ("name", "topic", "source", "userId", "context", "data", "offset")} == {
        "name": "eventrelay.test",
        "topic": "orders:42",
        "source": "http",
        "userId": None,
        "context": {},
        "data": {"test": True},
        "offset": 0,
    }
    result = f"Test event {event['eventId']}: HTTP 200 in "
    wait_until(lambda: destination_page_shows(staff, destination, result), 30, "the result on the destination page")
    history = staff.get(reverse("admin:webhooks_destination_history", args=[destination.pk])).content.decode()
    assert result in history
    assert len(receiver.requests) == 1
    assert DeliveryAttempt.objects.count() == 0
    stream = DeliveryStream.objects.get(destination=destination)
    assert (stream.last_offset, stream.attempts, stream.delivered_count) == (0, 0, 0)


@pytest.mark.e2e
def test_a_failed_test_event_shows_the_receivers_status_on_the_destination(
    transactional_db, test_event_worker, staff, orders, allow_private, receiver
):
    receiver.answer = lambda event, tries: 503
    destination = create_destination(name="billing", url=receiver.url, topic="orders")

    run_action(staff, Destination, "send_test_event", destination)

    wait_until(lambda: len(receiver.requests) == 1, 60, "the test event at the receiver")
    event_id = json.loads(receiver.requests[0].body)["eventId"]
    result = f"Test event {event_id} failed: HTTP 503."
    wait_until(lambda: destination_page_shows(staff, destination, result), 30, "the result on the destination page")


def test_the_redeliver_action_queues_each_selected_event(
    staff, destination, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr("webhooks.wakeups.queue_soon", lambda task_name, *args: queued.append((task_name, *args)))
    first, second = make_undeliverable(destination, offset=1), make_undeliverable(destination, offset=2)

    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(staff, UndeliverableEvent, "redeliver", first, second)

    assert sorted(queued) == sorted([("webhooks.tasks.redeliver_undeliverable", pk) for pk in (first.pk, second.pk)])
    assert [m for m in messages_of(response) if "Queued 2 event(s) for redelivery" in m]


def test_undeliverable_events_filter_by_redelivered(staff, destination):
    waiting = make_undeliverable(destination, offset=1)
    done = make_undeliverable(destination, offset=2)
    UndeliverableEvent.objects.filter(pk=done.pk).update(redelivered_at="2024-01-01T00:00:00Z")

    not_yet = staff.get(changelist(UndeliverableEvent), {"redelivered": "no"})
    yes = staff.get(changelist(UndeliverableEvent), {"redelivered": "yes"})

    assert list(not_yet.context["cl"].result_list) == [waiting]
    assert list(yes.context["cl"].result_list) == [done]


# --- Permissions ------------------------------------------------------------------------------------


def test_delivery_records_cannot_be_added_changed_or_deleted(staff, destination):
    stream = DeliveryStream.objects.create(destination=destination, topic_id="1")
    attempt = DeliveryAttempt.objects.create(
        stream=stream, event_id="0b7f8a9c-1d2e-4f50-8a6b-7c8d9e0f1a2b", offset=1, attempt=1
    )
    undeliverable = make_undeliverable(destination)

    for record in (stream, attempt, undeliverable):
        model = type(record)
        assert staff.get(reverse(f"admin:webhooks_{model._meta.model_name}_add")).status_code == 403
        assert staff.get(change_page(record)).status_code == 200  # view only
        assert staff.post(change_page(record), {"offset": 99}).status_code == 403
        delete = reverse(f"admin:webhooks_{model._meta.model_name}_delete", args=[record.pk])
        assert staff.post(delete, {"post": "yes"}).status_code == 403
        assert model.objects.filter(pk=record.pk).exists()


def test_every_webhook_admin_page_sends_a_non_staff_user_to_the_login_page(client, destination, django_user_model):
    stream = DeliveryStream.objects.create(destination=destination, topic_id="1")
    undeliverable = make_undeliverable(destination)
    pages = [
        *(changelist(model) for model in (Destination, DeliveryStream, DeliveryAttempt, UndeliverableEvent)),
        reverse("admin:webhooks_destination_add"),
        change_page(destination),
        change_page(stream),
        change_page(undeliverable),
    ]
    posts = [reverse("admin:webhooks_destination_run", args=[destination.pk, "rotate_secrets"])]
    old_secret = destination.secret

    for who in ("anonymous", "member"):
        if who == "member":
            client.force_login(django_user_model.objects.create_user("member", "m@example.com", None))
        for url in pages:
            response = client.get(url)
            assert response.status_code == 302 and response["location"].startswith("/admin/login/"), (who, url)
        for url in [*posts, changelist(Destination)]:
            response = client.post(url, {"action": "pause_destinations", "_selected_action": destination.pk})
            assert response.status_code == 302 and response["location"].startswith("/admin/login/"), (who, url)

    destination.refresh_from_db()
    assert destination.active is True and destination.secret == old_secret
