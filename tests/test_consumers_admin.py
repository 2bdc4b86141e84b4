"""Durable consumers in the admin: the list's position figures, the change page's dead letters with their redrive,
the seek with its confirmation, and a topic's delete confirmation naming its consumers. Django's test client on
the real PostgreSQL; consumers are made and used through ``consumers.services``, as a worker would."""

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.admin.templatetags.admin_list import results
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils.html import strip_tags

from consumers import services
from consumers.models import Consumer
from eventrelay.auth import Principal
from events.services import publish
from topics.models import Topic

# Transactional, as tests/test_consumers.py: leases compare with now(), which a test-long transaction would freeze.
pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/consumers/consumer/"


@pytest.fixture
def orders(make_topic: Callable[[str], Topic]) -> Topic:
    return make_topic("orders")


@pytest.fixture
def billing(admin: Principal, orders: Topic) -> Consumer:
    """A consumer of ``orders`` with five events: 1 dead-lettered (``maxDeliveries`` 1), 2 leased, 3 acked, 4-5
    not yet fetched."""
    publish(admin, "orders", [{"name": "placed", "data": {"n": n}} for n in range(5)], "http")
    services.create_consumer(admin, "orders", "billing", {"maxDeliveries": 1})
    first, _leased, third = services.fetch(admin, "orders", "billing", 3)
    services.nack(admin, "orders", "billing", [first.ack_id], reason="card declined")
    services.ack(admin, "orders", "billing", [third.ack_id])
    return Consumer.objects.get(name="billing")


def change_page(consumer: Consumer) -> str:
    return reverse("admin:consumers_consumer_change", args=[consumer.pk])


def seek_page(consumer: Consumer) -> str:
    return reverse("admin:consumers_consumer_seek", args=[consumer.pk])


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def list_rows(response: Any) -> list[list[str]]:
    return [[strip_tags(cell).strip() for cell in row] for row in results(response.context["cl"])]


def fetched_offsets(admin: Principal, name: str = "billing") -> list[int]:
    return [delivery.event.offset for delivery in services.fetch(admin, "orders", name)]


# --- The list -----------------------------------------------------------------------------------------------


def test_the_list_shows_each_consumers_floor_lag_pending_redeliveries_and_dead_letters(
    staff: Any, admin: Principal, billing: Consumer, make_topic: Callable[[str], Topic]
) -> None:
    make_topic("visits")
    services.create_consumer(admin, "visits:7", "stats", {"ordered": True})

    response = staff.get(CHANGELIST)

    assert response.status_code == 200
    # name, topic, floor, lag, pending, redeliveries, dead letters, ordered (after the selection checkbox)
    rows = {row[1]: row[2:8] for row in list_rows(response)}
    # Floor 1: offset 1 is dead (done), 2 is leased. Lag: 2 pending, 4 and 5 unexamined.
    assert rows["billing"] == ["orders", "1", "3", "1", "0", "1"]
    assert rows["stats"] == ["visits:7", "0", "0", "0", "0", "0"]
    assert 'alt="True"' in response.content.decode()  # the ordered consumer's icon


def test_the_list_filters_by_topic(staff: Any, admin: Principal, billing: Consumer, make_topic: Callable) -> None:
    visits = make_topic("visits")
    services.create_consumer(admin, "visits", "stats", {})

    response = staff.get(CHANGELIST, {"topic__id__exact": visits.pk})

    assert [row[1] for row in list_rows(response)] == ["stats"]


def test_consumers_cannot_be_added_or_edited_in_the_console(staff: Any, billing: Consumer) -> None:
    assert staff.get(f"{CHANGELIST}add/").status_code == 403
    response = staff.post(change_page(billing), {"name": "renamed", "max_deliveries": 5})
    assert response.status_code == 403
    billing.refresh_from_db()
    assert (billing.name, billing.max_deliveries) == ("billing", 1)


# --- Dead letters and redrive --------------------------------------------------------------------------------


def test_the_change_page_shows_settings_position_and_the_dead_letter_with_its_reason(
    staff: Any, billing: Consumer
) -> None:
    response = staff.get(change_page(billing))

    assert response.status_code == 200
    page = response.content.decode()
    assert "card declined" in page
    [letter] = response.context["dead_letters"]
    assert (letter.offset, letter.deliveries, letter.last_error) == (1, 1, "card declined")
    assert re.search(r'<div class="readonly">\s*1\s*</div>', page)  # max deliveries, ack floor...
    assert 'name="offset" value="1"' in page and 'id="redrive-all"' in page
    assert 'id="seek-link"' in page


def test_redriving_one_dead_letter_makes_it_deliverable_again(staff: Any, admin: Principal, billing: Consumer) -> None:
    response = staff.post(reverse("admin:consumers_consumer_redrive", args=[billing.pk]), {"offset": "1"}, follow=True)

    assert response.redirect_chain[-1][0] == change_page(billing)
    assert any("Redrove 1 dead letter(s)" in message for message in messages_of(response))
    assert response.context["dead_letters"] == []
    assert fetched_offsets(admin) == [1, 4, 5]  # the redriven event first, then the new ones


def test_redriving_an_offset_that_is_not_a_dead_letter_changes_nothing_and_says_why(
    staff: Any, billing: Consumer
) -> None:
    url = reverse("admin:consumers_consumer_redrive", args=[billing.pk])

    response = staff.post(url, {"offset": "2"}, follow=True)

    assert any("not dead letters" in message for message in messages_of(response))
    assert [letter.offset for letter in services.dead_letters_of(billing)] == [1]
    assert staff.get(url).status_code == 405


def test_the_list_action_redrives_every_dead_letter_of_the_selected_consumers(
    staff: Any, admin: Principal, billing: Consumer
) -> None:
    response = staff.post(
        CHANGELIST, {"action": "redrive_all_dead_letters", "_selected_action": [billing.pk]}, follow=True
    )

    assert any("Redrove 1 dead letter(s)" in message for message in messages_of(response))
    assert services.describe(billing).dead_letters == 0
    assert fetched_offsets(admin)[0] == 1


# --- Seek -------------------------------------------------------------------------------------------------


def test_seek_asks_for_confirmation_first_and_then_replays_from_the_offset(
    staff: Any, admin: Principal, billing: Consumer
) -> None:
    before = services.describe(billing)

    asked = staff.post(seek_page(billing), {"offset": "1"})

    assert asked.status_code == 200
    page = asked.content.decode()
    assert 'id="seek-confirmation"' in page and "replays from offset <strong>1</strong>" in page
    assert "drops every lease and pending redelivery" in page
    assert services.describe(billing) == before  # nothing happened yet

    done = staff.post(seek_page(billing), {"offset": "1", "confirm": "1"}, follow=True)

    assert done.redirect_chain[-1][0] == change_page(billing)
    assert any("starts over from offset 1" in message for message in messages_of(done))
    after = services.describe(billing)
    assert (after.pending, after.dead_letters, after.next_offset) == (0, 0, 1)
    assert fetched_offsets(admin) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("offset", ["-2", "abc", str(2**63), ""])
def test_a_bad_seek_offset_is_a_form_error_on_the_offset_and_changes_nothing(
    staff: Any, billing: Consumer, offset: str
) -> None:
    before = services.describe(billing)

    response = staff.post(seek_page(billing), {"offset": offset, "confirm": "1"})

    assert response.status_code == 200
    assert response.context["form"].errors["offset"]
    assert 'class="errorlist' in response.content.decode()
    assert services.describe(billing) == before


# --- Topics -----------------------------------------------------------------------------------------------


def test_the_topic_page_links_to_its_consumers(staff: Any, billing: Consumer, orders: Topic) -> None:
    page = staff.get(reverse("admin:topics_topic_change", args=[orders.pk])).content.decode()

    assert f'href="{CHANGELIST}?topic__id__exact={orders.pk}">Consumers (1)</a>' in page


def test_the_topic_delete_confirmation_names_its_consumers_and_deleting_removes_them(
    staff: Any, admin: Principal, billing: Consumer, orders: Topic
) -> None:
    services.create_consumer(admin, "orders:42", "audit", {})
    url = reverse("admin:topics_topic_delete", args=[orders.pk])

    page = staff.get(url).content.decode()

    assert "Consumers that will be deleted: billing, audit (orders:42)" in page

    staff.post(url, {"post": "yes"})

    assert not Topic.objects.filter(name="orders").exists()
    assert not Consumer.objects.exists()


def test_deleting_a_consumer_counts_what_goes_with_it_instead_of_listing_every_row(
    staff: Any, billing: Consumer
) -> None:
    url = reverse("admin:consumers_consumer_delete", args=[billing.pk])

    page = staff.get(url).content.decode()

    assert re.search(r"Events in flight: 1\b", page) and re.search(r"Dead letters: 1\b", page)

    staff.post(url, {"post": "yes"})

    assert not Consumer.objects.exists()
