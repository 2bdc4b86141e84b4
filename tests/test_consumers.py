"""Durable consumers through their services, on the real PostgreSQL: leases, acks, nacks, dead letters, seeks,
ordering, filters and authorization (docs/consumers.md). The transports' own tests start real processes."""

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections

from consumers import services
from consumers.models import LeasedBatch, PendingEvent
from eventrelay.auth import Principal
from eventrelay.errors import AlreadyExists, Forbidden, InvalidInput, NotFound
from events.services import publish

pytestmark = pytest.mark.django_db(transaction=True)


def events(count: int, name: str = "signed_up", **extra: Any) -> list[dict[str, Any]]:
    return [{"name": name, "data": {"n": n}, **extra} for n in range(count)]


def offsets_of(deliveries: list[services.Delivery]) -> list[int]:
    return [delivery.event.offset for delivery in deliveries]


@pytest.fixture
def users(make_topic: Callable[[str], Any]) -> str:
    make_topic("users")
    return "users"


def test_a_consumer_starts_at_the_first_event_with_the_documented_defaults(admin: Principal, users: str) -> None:
    publish(admin, users, events(3), "http")
    info = services.create_consumer(admin, users, "billing", {})
    assert info.as_canonical() | {"createdAt": None} == {
        "name": "billing",
        "topic": "users",
        "startOffset": 1,
        "ackWaitSeconds": 30,
        "maxDeliveries": 20,
        "maxInFlight": 1000,
        "eventNames": [],
        "ordered": False,
        "ackFloor": 0,
        "pending": 0,
        "lag": 3,
        "deadLetters": 0,
        "expired": 0,
        "createdAt": None,
    }


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"ackWaitSeconds": 0}, "ackWaitSeconds"),
        ({"ackWaitSeconds": 43_201}, "ackWaitSeconds"),
        ({"maxDeliveries": 1001}, "maxDeliveries"),
        ({"maxInFlight": True}, "maxInFlight"),
        ({"startOffset": -2}, "startOffset"),
        ({"eventNames": "signed_up"}, "eventNames"),
        ({"ordered": "yes"}, "ordered"),
        ({"ackwait": 5}, "ackwait"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(admin: Principal, users: str, options: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        services.create_consumer(admin, users, "billing", options)
    assert refused.value.field == field
    assert services.list_consumers(admin, users) == []


def test_names_are_validated_and_unique_per_reference(admin: Principal, users: str) -> None:
    with pytest.raises(InvalidInput):
        services.create_consumer(admin, users, "Billing", {})
    services.create_consumer(admin, users, "billing", {})
    with pytest.raises(AlreadyExists):
        services.create_consumer(admin, users, "billing", {})
    services.create_consumer(admin, "users:123", "billing", {})  # another reference, another namespace
    assert [info.topic for info in services.list_consumers(admin, "users:123")] == ["users:123"]
    with pytest.raises(NotFound) as missing:
        services.get_consumer(admin, users, "shipping")
    assert missing.value.field == "consumer"


def test_fetch_leases_in_offset_order_and_acks_move_the_floor(admin: Principal, users: str) -> None:
    publish(admin, users, events(10), "http")
    services.create_consumer(admin, users, "billing", {})
    first = services.fetch(admin, users, "billing", 4)
    second = services.fetch(admin, users, "billing", 4)
    assert offsets_of(first) == [1, 2, 3, 4] and offsets_of(second) == [5, 6, 7, 8]
    assert {d.delivery_count for d in first + second} == {1}
    services.ack(admin, users, "billing", [d.ack_id for d in second])
    info = services.get_consumer(admin, users, "billing")
    assert (info.ack_floor, info.pending, info.lag) == (0, 4, 6)  # 1-4 pending hold the floor; 5-8 are done
    services.ack(admin, users, "billing", [d.ack_id for d in first])
    info = services.get_consumer(admin, users, "billing")
    assert (info.ack_floor, info.pending, info.lag) == (8, 0, 2)
    assert services.ack(admin, users, "billing", [first[0].ack_id]).stale == []  # idempotent


def test_an_unknown_or_malformed_ack_id_refuses_the_whole_call(admin: Principal, users: str) -> None:
    publish(admin, users, events(3), "http")
    services.create_consumer(admin, users, "billing", {})
    [delivery] = services.fetch(admin, users, "billing", 1)
    consumer_pk, epoch, _, _ = delivery.ack_id.split("-")
    never_handed_out = f"{consumer_pk}-{epoch}-3-1"
    two_in_one = f"{delivery.ack_id}\n{delivery.ack_id}"  # (the ackIds are parsed together, a line each)
    no_delivery = f"{consumer_pk}-{epoch}-1-0"
    for bad in ["nonsense", never_handed_out, f"{int(consumer_pk) + 1}-0-1-1", 7, two_in_one, no_delivery, ""]:
        with pytest.raises(InvalidInput) as refused:
            services.ack(admin, users, "billing", [delivery.ack_id, bad])
        assert refused.value.field == "ackIds" and "ackIds[1]" in refused.value.message
    assert services.get_consumer(admin, users, "billing").pending == 1  # the good ackId was not applied either


@pytest.mark.parametrize(
    "ack_ids",
    [
        [],
        ["5-0-1-1", "5-0-2-1", "5-1-3-2"],
        ["05-0-1-1", "5-00-02-01"],  # leading zeros: the same ackIds, read one by one
        ["5-0-1-1", "5-0-2-1\n5-0-3-1"],
        ["5-0-1-1\n", "5-0-2-1"],
        ["5-0-1-1", "6-0-2-1"],
        ["5-0-1-1", "5-0-2-0"],
        ["5-0-1-1", "5-0-2"],
        ["5-0-1-1", "5-0-2-1-1"],
        ["5-0-1-1", None],
        ["5-0-1-1", "5-0-\u0661-1"],  # an Arabic-Indic digit one
        ["5-0-9223372036854775807-1", "5-0-1234567890123456789-1"],
    ],
)
def test_ack_ids_read_together_as_one_by_one(ack_ids: list[Any]) -> None:
    def outcome(parse: Callable[[int, list[Any]], Any]) -> Any:
        try:
            parsed = parse(5, ack_ids)
            services._refuse_deliveries_never_made(parsed)
        except InvalidInput as refused:
            return refused.message
        return (parsed.texts, parsed.epochs, parsed.offsets, parsed.deliveries)

    assert outcome(services._parse_ack_ids) == outcome(services._parsed_one_by_one)


def test_concurrent_fetches_on_separate_connections_never_share_a_lease(admin: Principal, users: str) -> None:
    publish(admin, users, events(1000), "http")
    services.create_consumer(admin, users, "billing", {"maxInFlight": 10_000})
    handed: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            while True:
                batch = services.fetch(admin, users, "billing", 25)
                if not batch:
                    return
                with lock:
                    handed.extend(offsets_of(batch))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(handed) == list(range(1, 1001)), [o for o, n in Counter(handed).items() if n > 1][:10]
    connections.close_all()


def test_nacked_events_come_back_and_the_last_delivery_is_dead_lettered_with_its_reason(
    admin: Principal, users: str
) -> None:
    publish(admin, users, events(2), "http")
    services.create_consumer(admin, users, "billing", {"maxDeliveries": 2})
    first = services.fetch(admin, users, "billing", 1)
    services.nack(admin, users, "billing", [first[0].ack_id], reason="boom 1")
    again = services.fetch(admin, users, "billing", 1)
    assert offsets_of(again) == [1] and again[0].delivery_count == 2  # a redelivery before new events
    assert services.nack(admin, users, "billing", [first[0].ack_id]).stale == [first[0].ack_id]  # not the one out
    services.nack(admin, users, "billing", [again[0].ack_id], reason="boom 2")
    [letter] = services.list_dead_letters(admin, users, "billing")
    assert (letter.offset, letter.deliveries, letter.last_error) == (1, 2, "boom 2")
    rest = services.fetch(admin, users, "billing")
    assert offsets_of(rest) == [2]
    services.ack(admin, users, "billing", [rest[0].ack_id])
    info = services.get_consumer(admin, users, "billing")
    assert (info.ack_floor, info.dead_letters, info.lag) == (2, 1, 0)  # dead counts as done for the floor
    assert services.redrive(admin, users, "billing", [1]) == [1]
    assert services.get_consumer(admin, users, "billing").ack_floor == 0  # back below it until acked
    redriven = services.fetch(admin, users, "billing")
    assert offsets_of(redriven) == [1] and redriven[0].delivery_count == 1
    with pytest.raises(InvalidInput):
        services.redrive(admin, users, "billing", [2])  # not a dead letter


def test_an_expired_lease_comes_back_with_its_delivery_count(admin: Principal, users: str) -> None:
    publish(admin, users, events(3), "http")
    services.create_consumer(admin, users, "billing", {"ackWaitSeconds": 1})
    held = services.fetch(admin, users, "billing", 2)
    kept = services.fetch(admin, users, "billing", 1)
    services.extend(admin, users, "billing", [kept[0].ack_id])
    deadline = time.monotonic() + 30
    back: list[services.Delivery] = []
    while not back and time.monotonic() < deadline:
        back = services.fetch(admin, users, "billing")
        services.extend(admin, users, "billing", [kept[0].ack_id])
        time.sleep(0.05)
    assert offsets_of(back) == [1, 2] and {d.delivery_count for d in back} == {2}
    assert services.ack(admin, users, "billing", [d.ack_id for d in held]).stale == []  # old ackIds still ack


def test_ordered_hands_out_one_event_per_topic_id_and_a_failing_id_holds_back_only_itself(
    admin: Principal, users: str
) -> None:
    for n in range(3):
        publish(admin, "users:a", events(1, data={"a": n}), "http")
        publish(admin, "users:b", events(1, data={"b": n}), "http")
    services.create_consumer(admin, users, "billing", {"ordered": True})
    batch = services.fetch(admin, users, "billing")
    assert [(d.event.topic_id, d.event.offset) for d in batch] == [("a", 1), ("b", 2)]
    assert services.fetch(admin, users, "billing") == []  # each id has its one event out
    services.nack(admin, users, "billing", [batch[0].ack_id])  # a fails
    services.ack(admin, users, "billing", [batch[1].ack_id])  # b succeeds
    batch = services.fetch(admin, users, "billing")
    assert [(d.event.topic_id, d.event.offset, d.delivery_count) for d in batch] == [("a", 1, 2), ("b", 4, 1)]
    info = services.get_consumer(admin, users, "billing")
    assert (info.pending, info.lag) == (2, 5)


def test_seek_replays_and_makes_older_ack_ids_stale(admin: Principal, users: str) -> None:
    publish(admin, users, events(5), "http")
    services.create_consumer(admin, users, "billing", {})
    old = services.fetch(admin, users, "billing")
    services.seek(admin, users, "billing", 3)
    assert services.ack(admin, users, "billing", [d.ack_id for d in old]).stale == [d.ack_id for d in old]
    assert offsets_of(services.fetch(admin, users, "billing")) == [3, 4, 5]
    assert services.get_consumer(admin, users, "billing").pending == 3  # the stale acks changed nothing


def test_event_names_filter_and_start_offset_minus_one(admin: Principal, users: str) -> None:
    publish(admin, users, events(2, "signed_up") + events(2, "logged_in"), "http")
    services.create_consumer(admin, users, "logins", {"eventNames": ["logged_in"]})
    services.create_consumer(admin, users, "new_only", {"startOffset": -1})
    publish(admin, users, events(1, "signed_up"), "http")
    assert offsets_of(services.fetch(admin, users, "logins")) == [3, 4]
    assert offsets_of(services.fetch(admin, users, "new_only")) == [5]
    logins = services.get_consumer(admin, users, "logins")
    assert (logins.lag, logins.pending) == (2, 2)


def test_a_consumer_of_one_id_sees_only_that_id_and_tokens_keep_to_their_grants(
    admin: Principal, users: str, principal_for: Callable[..., Principal]
) -> None:
    publish(admin, "users:123", events(2), "http")
    publish(admin, "users:456", events(2), "http")
    user_123 = principal_for("users:123")
    services.create_consumer(user_123, "users:123", "mine", {})
    assert {d.event.topic for d in services.fetch(user_123, "users:123", "mine")} == {"users:123"}
    services.create_consumer(admin, users, "all", {})
    for call in [
        lambda: services.get_consumer(user_123, "users", "all"),
        lambda: services.fetch(user_123, "users", "all"),
        lambda: services.create_consumer(user_123, "users:456", "theirs", {}),
        lambda: services.delete_consumer(user_123, "users", "all"),
    ]:
        with pytest.raises(Forbidden):
            call()


def test_deleting_the_topic_deletes_its_consumers(admin: Principal, users: str) -> None:
    from topics.services import create_topic, delete_topic

    publish(admin, users, events(2), "http")
    services.create_consumer(admin, users, "billing", {})
    services.fetch(admin, users, "billing")
    delete_topic(users)
    assert not PendingEvent.objects.exists() and not LeasedBatch.objects.exists()
    create_topic(users)
    assert services.list_consumers(admin, users) == []


def test_numbers_past_what_postgresql_stores_are_refused_naming_the_field(admin: Principal, users: str) -> None:
    services.create_consumer(admin, users, "billing", {})
    with pytest.raises(InvalidInput) as refused:
        services.seek(admin, users, "billing", 2**63)
    assert refused.value.field == "offset"
    with pytest.raises(InvalidInput) as refused:
        services.redrive(admin, users, "billing", [2**64])
    assert refused.value.field == "offsets"
    with pytest.raises(InvalidInput) as refused:
        services.create_consumer(admin, users, "other", {"startOffset": 2**70})
    assert refused.value.field == "startOffset"
