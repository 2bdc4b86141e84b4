"""Which publishes wake webhook delivery: only those to a topic an active destination listens to."""

import pytest

from webhooks.models import Destination
from webhooks.receivers import any_active_destination
from webhooks.services import create_destination, pause, resume


@pytest.fixture
def orders(make_topic, allow_private):
    return make_topic("orders").name


def agrees_with_the_orm(topic_name: str) -> bool:
    answer = any_active_destination(topic_name)
    assert answer == Destination.objects.for_topic(topic_name).active().exists()
    return answer


def test_a_topic_with_no_destination_wakes_nothing(orders, make_topic):
    other = make_topic("payments").name
    create_destination(name="payments", url="http://127.0.0.1:9/hook", topic=other)
    assert agrees_with_the_orm(orders) is False
    assert agrees_with_the_orm(other) is True


@pytest.mark.parametrize("topic", ["orders", "orders:42"])
def test_an_active_destination_for_the_topic_or_one_of_its_ids_wakes_it(orders, topic):
    create_destination(name="hook", url="http://127.0.0.1:9/hook", topic=topic)
    assert agrees_with_the_orm(orders) is True


def test_a_paused_destination_does_not_wake_its_topic_until_resumed(orders):
    destination = create_destination(name="hook", url="http://127.0.0.1:9/hook", topic=orders)
    pause(destination)
    assert agrees_with_the_orm(orders) is False
    resume(destination)
    assert agrees_with_the_orm(orders) is True


def test_a_destination_created_inactive_does_not_wake_its_topic(orders):
    create_destination(name="hook", url="http://127.0.0.1:9/hook", topic=orders, active=False)
    assert agrees_with_the_orm(orders) is False


def test_the_topic_name_is_matched_exactly_not_as_a_pattern(orders, make_topic):
    make_topic("orders_eu")
    create_destination(name="hook", url="http://127.0.0.1:9/hook", topic="orders_eu")
    assert agrees_with_the_orm(orders) is False
    assert agrees_with_the_orm("orders_eu") is True
