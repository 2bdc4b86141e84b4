"""Leased batches (consumers.leases): a fetch of fresh events leases them as one row, and every act on part of a
batch (an ack of some of its events, a nack, an extend, the end of its lease, retention, a seek) treats each
event as the pending event it stands for. On the real PostgreSQL, with concurrent transactions where the
question is what two of them do to one batch."""

import threading
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, connections, transaction

from consumers import services
from consumers.models import Consumer, LeasedBatch, PendingEvent
from eventrelay.auth import Principal
from eventrelay.errors import InvalidInput, NotFound
from events.services import publish
from topics import retention
from topics.services import update_topic

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def orders(admin: Principal, make_topic: Callable[..., Any]) -> str:
    make_topic("orders")
    publish(admin, "orders", [{"name": "paid", "data": n} for n in range(10)], "http")
    services.create_consumer(admin, "orders", "billing", {})
    return "orders"


def pending_offsets() -> dict[int, tuple[str, int]]:
    """Every pending row: offset → (state, delivery count)."""
    return {row.offset: (row.state, row.delivery_count) for row in PendingEvent.objects.all()}


def expire_every_lease() -> None:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE consumers_pendingevent SET available_at = now() - interval '1 second'")
        cursor.execute("UPDATE consumers_leasedbatch SET available_at = now() - interval '1 second'")


def test_a_fetch_of_fresh_events_is_one_row_and_an_ack_of_all_of_them_deletes_it(admin: Principal, orders: str) -> None:
    handed = services.fetch(admin, orders, "billing", 4)
    [batch] = LeasedBatch.objects.all()
    assert (batch.first_offset, batch.last_offset, batch.offsets) == (1, 4, [1, 2, 3, 4])
    assert not PendingEvent.objects.exists()
    info = services.get_consumer(admin, orders, "billing")
    assert (info.pending, info.ack_floor, info.lag) == (4, 0, 10)
    services.ack(admin, orders, "billing", [d.ack_id for d in handed])
    assert not LeasedBatch.objects.exists() and not PendingEvent.objects.exists()
    info = services.get_consumer(admin, orders, "billing")
    assert (info.pending, info.ack_floor, info.lag) == (0, 4, 6)


def test_an_ack_of_part_of_a_batch_leaves_the_rest_leased_under_the_same_lease(admin: Principal, orders: str) -> None:
    handed = services.fetch(admin, orders, "billing", 4)
    lease_ends = LeasedBatch.objects.get().available_at
    services.ack(admin, orders, "billing", [handed[0].ack_id, handed[2].ack_id])
    assert not LeasedBatch.objects.exists()
    assert pending_offsets() == {2: ("leased", 1), 4: ("leased", 1)}
    assert {row.available_at for row in PendingEvent.objects.all()} == {lease_ends}
    assert services.get_consumer(admin, orders, "billing").ack_floor == 1
    assert services.ack(admin, orders, "billing", [handed[1].ack_id, handed[3].ack_id]).stale == []
    assert pending_offsets() == {}
    assert services.get_consumer(admin, orders, "billing").ack_floor == 4


def test_a_nack_or_an_extend_of_one_event_leaves_the_others_of_its_batch_alone(admin: Principal, orders: str) -> None:
    handed = services.fetch(admin, orders, "billing", 3)
    services.nack(admin, orders, "billing", [handed[1].ack_id])
    assert pending_offsets() == {1: ("leased", 1), 2: ("waiting", 1), 3: ("leased", 1)}
    again = services.fetch(admin, orders, "billing", 1)
    assert [(d.event.offset, d.delivery_count) for d in again] == [(2, 2)]
    other = services.fetch(admin, orders, "billing", 2)  # a second batch, 4 and 5
    assert services.extend(admin, orders, "billing", [other[0].ack_id]).stale == []
    assert LeasedBatch.objects.count() == 0
    assert pending_offsets()[4] == ("leased", 1) and pending_offsets()[5] == ("leased", 1)
    services.ack(admin, orders, "billing", [d.ack_id for d in handed + again + other])
    assert pending_offsets() == {}


def test_a_batch_whose_lease_ended_comes_back_without_the_events_acked_from_it(admin: Principal, orders: str) -> None:
    handed = services.fetch(admin, orders, "billing", 5)
    kept = services.fetch(admin, orders, "billing", 2)  # 6 and 7, still leased
    services.ack(admin, orders, "billing", [handed[0].ack_id])
    with connection.cursor() as cursor:  # only the first batch's lease ends
        cursor.execute("UPDATE consumers_pendingevent SET available_at = now() - interval '1 second'")
    back = services.fetch(admin, orders, "billing", 4)  # (redeliveries go first; room left would take new events)
    assert [(d.event.offset, d.delivery_count) for d in back] == [(2, 2), (3, 2), (4, 2), (5, 2)]
    assert [batch.offsets for batch in LeasedBatch.objects.all()] == [[6, 7]]
    expire_every_lease()
    back = services.fetch(admin, orders, "billing", 6)
    assert [(d.event.offset, d.delivery_count) for d in back] == [(2, 3), (3, 3), (4, 3), (5, 3), (6, 2), (7, 2)]
    assert services.ack(admin, orders, "billing", [d.ack_id for d in handed + kept]).stale == []
    assert pending_offsets() == {}


def test_a_batch_at_its_last_allowed_delivery_is_dead_lettered_when_its_lease_ends(
    admin: Principal, make_topic: Callable[..., Any]
) -> None:
    make_topic("orders")
    publish(admin, "orders", [{"name": "paid", "data": n} for n in range(3)], "http")
    services.create_consumer(admin, "orders", "billing", {"maxDeliveries": 1})
    services.fetch(admin, "orders", "billing")
    expire_every_lease()
    assert services.fetch(admin, "orders", "billing") == []
    info = services.get_consumer(admin, "orders", "billing")
    assert (info.dead_letters, info.pending, info.ack_floor) == (3, 0, 3)


def test_an_ack_racing_a_nack_of_the_same_batch_is_not_lost(admin: Principal, orders: str) -> None:
    """The nack's transaction splits the batch and holds it; the ack of the batch's other events waits for it and
    then finds the batch gone: its events are the pending rows the nack made, newer than the ack's statement."""
    handed = services.fetch(admin, orders, "billing", 4)
    split, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def nack_and_hold() -> None:
        try:
            with transaction.atomic():
                services.nack(admin, orders, "billing", [handed[0].ack_id], delay_ms=60_000)
                split.set()
                release.wait(30)
        except BaseException as error:  # (reported by the test below)
            errors.append(error)
        finally:
            connections.close_all()

    def ack_the_others() -> None:
        try:
            services.ack(admin, orders, "billing", [d.ack_id for d in handed[1:]])
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    nacking = threading.Thread(target=nack_and_hold)
    nacking.start()
    assert split.wait(30)
    acking = threading.Thread(target=ack_the_others)
    acking.start()
    acking.join(1)
    assert acking.is_alive()  # waiting for the nack's transaction, which deleted the batch's row
    release.set()
    nacking.join(30)
    acking.join(30)
    assert errors == []
    assert pending_offsets() == {1: ("waiting", 1)}


def test_retention_counts_the_events_of_a_batch_it_deletes(admin: Principal, make_topic: Callable[..., Any]) -> None:
    make_topic("orders")
    update_topic("orders", {"retentionMaxEvents": 5})
    publish(admin, "orders", [{"name": "paid", "data": n} for n in range(5)], "http")
    services.create_consumer(admin, "orders", "billing", {})
    services.fetch(admin, "orders", "billing", 3)  # 1-3, one batch, never acked
    publish(admin, "orders", [{"name": "paid", "data": n} for n in range(5)], "http")  # 6-10
    retention.sweep_topic("orders")  # keeps 6-10
    billing = Consumer.objects.get(name="billing")
    assert (billing.expired, billing.next_offset) == (5, 6)
    assert not LeasedBatch.objects.exists() and not PendingEvent.objects.exists()


def test_a_seek_drops_the_batches(admin: Principal, orders: str) -> None:
    services.fetch(admin, orders, "billing", 4)
    services.seek(admin, orders, "billing", 1)
    assert not LeasedBatch.objects.exists()
    again = services.fetch(admin, orders, "billing", 4)
    assert [(d.event.offset, d.delivery_count) for d in again] == [(1, 1), (2, 1), (3, 1), (4, 1)]


def test_a_consumer_deleted_and_created_again_elsewhere_is_found_by_fetch_and_ack(
    admin: Principal, orders: str
) -> None:
    """Fetches and acks remember the consumer they found; another process (here: the ORM, as the admin does)
    deleting it and creating one of the same name must not leave them with the old one."""
    first = services.fetch(admin, orders, "billing", 2)
    services.ack(admin, orders, "billing", [d.ack_id for d in first])
    Consumer.objects.filter(name="billing").delete()  # (not through the service: this process is not told)
    with pytest.raises(NotFound):
        services.fetch(admin, orders, "billing", 2)
    services.create_consumer(admin, orders, "billing", {})
    again = services.fetch(admin, orders, "billing", 2)
    assert [(d.event.offset, d.delivery_count) for d in again] == [(1, 1), (2, 1)]
    Consumer.objects.filter(name="billing").delete()
    services.create_consumer(admin, orders, "billing", {})
    with pytest.raises(InvalidInput):  # the old consumer's ackIds are another consumer's
        services.ack(admin, orders, "billing", [d.ack_id for d in again])
    fresh = services.fetch(admin, orders, "billing", 2)
    Consumer.objects.filter(name="billing").delete()
    services.create_consumer(admin, orders, "billing", {})
    newest = services.fetch(admin, orders, "billing", 1)  # the remembered one is gone: found again
    assert services.ack(admin, orders, "billing", [d.ack_id for d in newest]).stale == []
    assert fresh and services.get_consumer(admin, orders, "billing").ack_floor == 1


def fetch_acking(admin: Principal, topic: str, ack_ids: list[str], max_events: int = 3) -> tuple[list[Any], list[str]]:
    """A fetch that acknowledges ``ack_ids`` first (what the transports call)."""
    return async_to_sync(services.afetch)(admin, topic, "billing", max_events, 0, ack_ids)


def test_a_fetch_acks_the_previous_batch_and_leases_the_next_in_one_call(admin: Principal, orders: str) -> None:
    first, stale = fetch_acking(admin, orders, [])
    assert [d.event.offset for d in first] == [1, 2, 3] and stale == []
    second, stale = fetch_acking(admin, orders, [d.ack_id for d in first])
    assert [d.event.offset for d in second] == [4, 5, 6] and stale == []
    assert [batch.offsets for batch in LeasedBatch.objects.all()] == [[4, 5, 6]]
    assert services.get_consumer(admin, orders, "billing").ack_floor == 3
    # Part of a batch, with a redelivery due: the general path applies the acks and hands the rest out.
    expire_every_lease()
    third, stale = fetch_acking(admin, orders, [second[0].ack_id], max_events=10)
    assert [(d.event.offset, d.delivery_count) for d in third][:2] == [(5, 2), (6, 2)]
    assert services.get_consumer(admin, orders, "billing").ack_floor == 4
    services.seek(admin, orders, "billing", 1)
    again, stale = fetch_acking(admin, orders, [d.ack_id for d in third])
    assert stale == [d.ack_id for d in third]  # of the epoch before the seek: acted on nothing
    assert [d.event.offset for d in again] == [1, 2, 3]


def test_a_fetch_with_an_ackid_never_handed_out_acks_nothing_and_leases_nothing(admin: Principal, orders: str) -> None:
    first, _ = fetch_acking(admin, orders, [])
    made_up = f"{first[0].ack_id.split('-')[0]}-0-9-1"  # offset 9 was never handed out
    with pytest.raises(InvalidInput, match="9"):
        fetch_acking(admin, orders, [first[0].ack_id, made_up])
    assert [batch.offsets for batch in LeasedBatch.objects.all()] == [[1, 2, 3]]
    assert Consumer.objects.get(name="billing").next_offset == 4
    with pytest.raises(InvalidInput):
        fetch_acking(admin, orders, ["not an ackId"])


def test_an_ordered_consumer_s_fetch_acks_first_and_then_hands_out_the_next_event_of_the_id(
    admin: Principal, make_topic: Callable[..., Any]
) -> None:
    make_topic("orders")
    publish(admin, "orders:a", [{"name": "paid", "data": n} for n in range(2)], "http")
    services.create_consumer(admin, "orders", "billing", {"ordered": True})
    first, _ = fetch_acking(admin, "orders", [])
    assert [d.event.offset for d in first] == [1]
    second, _ = fetch_acking(admin, "orders", [first[0].ack_id])
    assert [d.event.offset for d in second] == [2]
