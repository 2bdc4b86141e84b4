"""``eventOccurredAt`` (issue 17, items K, 10 and D): only RFC 3339 date-times are accepted, every
transport serves the same value for one event (stored to the millisecond, as the canonical form
carries it), and a gRPC ``Timestamp`` out of range refuses its own batch only, never the other
batches committed in the same transaction.
"""

import json
import logging
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
import requests
from django.db import connection
from django.test import Client as DjangoClient
from google.protobuf.timestamp_pb2 import Timestamp

from eventrelay.auth import mint_token
from eventrelay.errors import EventRelayError, InvalidInput
from eventrelay.refs import TopicRef
from eventrelay.v1 import eventrelay_pb2 as pb
from events.validation import EventsToValidate, validate_batch
from grpc_api.convert import validate_message
from harness.processes import GrpcServer
from tests.grpc_client import Client
from tests.helpers import store
from topics.services import create_topic
from topics.tables import events_table_name

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def publish_rest(client: DjangoClient, topic: str, events: Any) -> Any:
    return client.post(
        f"/api/v1/topics/{topic}/events",
        data=json.dumps(events),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {mint_token([], admin=True)}",
    )


# --- K: RFC 3339 only -------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "moment",
    [
        "2020-W01-1T00:00:00Z",  # ISO 8601 week date
        "20200101T000000Z",  # ISO 8601 basic format
        "2020-001T00:00:00Z",  # ordinal date
        "2020-01-01",  # a date without a time
        "2020-01-01T00:00Z",  # no seconds
        "2020-01-01T00Z",
        "2020-01-01T00:00:00+0100",  # offset without a colon
        "2020-01-01T00:00:00+01",
        "2020-01-01T00:00:00.Z",  # a fraction without digits
        "2020-01-01T00:00:00,5Z",  # a comma fraction
        "2020-01-01X00:00:00Z",  # another separator
        "\uff12020-01-01T00:00:00Z",  # a non-ASCII digit
        "2020-01-01T00:00:00Z ",
        "2020-02-30T00:00:00Z",  # the right shape, but no such day
        "2020-01-01T00:00:00+24:00",
    ],
)
def test_an_occurred_at_that_is_not_an_rfc_3339_date_time_is_refused_naming_the_field(client, moment):
    create_topic("times")

    response = publish_rest(
        client, "times", [{"name": "a", "data": 1}, {"name": "b", "data": 2, "eventOccurredAt": moment}]
    )

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == "events[1].eventOccurredAt"
    assert error["message"].startswith(f"events[1].eventOccurredAt: {moment!r} is not an RFC 3339 date-time")


@pytest.mark.parametrize(
    ("moment", "stored"),
    [
        ("2020-01-01T00:00:00Z", "2020-01-01T00:00:00.000Z"),
        ("2020-01-01t00:00:00z", "2020-01-01T00:00:00.000Z"),  # RFC 3339 5.6: case-insensitive
        ("2020-01-01 00:00:00Z", "2020-01-01T00:00:00.000Z"),  # and a space is allowed
        ("2020-01-01T00:00:00.1Z", "2020-01-01T00:00:00.100Z"),
        ("2020-01-01T00:00:00.123456789Z", "2020-01-01T00:00:00.123Z"),  # any number of digits
        ("2020-01-01T00:00:00.999999+00:00", "2020-01-01T00:00:00.999Z"),  # truncated, not rounded
        ("2020-01-01T00:00:00-00:00", "2020-01-01T00:00:00.000Z"),
        ("2020-01-01T05:45:00.5+05:45", "2020-01-01T00:00:00.500Z"),
    ],
)
def test_an_rfc_3339_date_time_is_stored_in_utc_to_the_millisecond(moment, stored):
    [event] = validate_batch([{"name": "a", "data": 1, "eventOccurredAt": moment}])

    assert event.event_occurred_at.isoformat(timespec="microseconds") == stored.replace("Z", "000+00:00")


# --- 10: one value on every transport ----------------------------------------------------------------


def test_the_server_default_time_and_grpc_timestamps_are_stored_to_the_millisecond():
    batch = EventsToValidate(
        [
            pb.NewEvent(name="a", data="1", event_occurred_at=Timestamp(seconds=1_700_000_000, nanos=123_456_789)),
            pb.NewEvent(name="b", data="1"),
        ],
        validate_message,
    )

    timed, default = batch.validated()

    assert timed.event_occurred_at == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert default.event_occurred_at.microsecond % 1000 == 0


@pytest.mark.e2e
def test_an_events_time_reads_the_same_over_grpc_and_rest(admin_client, web_server, topics):
    topic = topics("times")
    admin_client.publish(topic, 1, event_occurred_at=Timestamp(seconds=1_700_000_000, nanos=123_456_789))
    admin_client.publish(topic, 2)  # the server's "now"
    posted = requests.post(
        f"{web_server.base_url}/api/v1/topics/{topic}/events",
        json={"name": "r", "data": 3, "eventOccurredAt": "2021-06-07T08:09:10.987654321+02:00"},
        headers={"authorization": f"Bearer {mint_token([], admin=True)}"},
        timeout=30,
    )

    over_grpc = [event.event_occurred_at for event in admin_client.pull(topic, 1).events]
    over_rest = [
        event["eventOccurredAt"]
        for event in requests.get(
            f"{web_server.base_url}/api/v1/topics/{topic}/events",
            headers={"authorization": f"Bearer {mint_token([], admin=True)}"},
            timeout=30,
        ).json()["events"]
    ]

    assert posted.status_code == 201, posted.text
    assert [moment.ToJsonString() for moment in over_grpc] == over_rest
    assert over_rest[0] == "2023-11-14T22:13:20.123Z"
    assert over_rest[2] == "2021-06-07T06:09:10.987Z"
    assert {moment.nanos % 1_000_000 for moment in over_grpc} == {0}


# --- D: a bad Timestamp refuses its own batch only -------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [Timestamp(seconds=10**15), Timestamp(seconds=-(10**15)), Timestamp(seconds=1, nanos=-1), Timestamp(nanos=10**9)],
    ids=["far future", "far past", "negative nanos", "nanos of a whole second"],
)
def test_a_grpc_timestamp_out_of_range_is_invalid_input_naming_the_field(moment):
    batch = EventsToValidate(
        [pb.NewEvent(name="a", data="1"), pb.NewEvent(name="b", data="1", event_occurred_at=moment)], validate_message
    )

    with pytest.raises(InvalidInput) as error:
        batch.validated()

    assert error.value.field == "events[1].eventOccurredAt"
    assert error.value.message.startswith("events[1].eventOccurredAt: ")


def test_a_validator_that_raises_unexpectedly_refuses_its_batch_only_and_logs_why(make_topic, caplog):
    make_topic("times")

    def broken(raw: Any, where: str, now: datetime, limits: Any) -> Any:
        raise RuntimeError("a bug in a validator")

    good = validate_batch([{"name": "a", "data": 1}])
    later = validate_batch([{"name": "c", "data": 3}])
    with caplog.at_level(logging.ERROR):
        results = store(
            "times",
            [
                (TopicRef("times", None), good, "grpc"),
                (TopicRef("times", None), EventsToValidate([pb.NewEvent(name="b", data="2")], broken), "grpc"),
                (TopicRef("times", None), later, "grpc"),
            ],
        )

    assert [event.offset for event in results[0]] == [1]
    assert isinstance(results[1], EventRelayError) and "nothing of it was stored" in results[1].message
    assert [event.offset for event in results[2]] == [2]
    [record] = [r for r in caplog.records if r.exc_info and r.exc_info[0] is RuntimeError]
    assert "times" in record.getMessage()
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT "offset", name FROM {events_table_name("times")} ORDER BY "offset"')
        assert cursor.fetchall() == [(1, "a"), (2, "c")]


@pytest.fixture(scope="module")
def times_grpc(django_db_setup: None):
    server = GrpcServer(name="grpc_event_times")
    yield server
    server.stop()


@pytest.mark.e2e
def test_bad_timestamps_from_one_producer_never_fail_other_producers_publishes(times_grpc, transactional_db):
    client = Client(times_grpc.address, mint_token([], admin=True))
    topic = f"times_{uuid.uuid4().hex[:10]}"
    client.create_topic(topic)
    publishers, rounds, per_batch = 6, 25, 4
    failures: list[BaseException] = []
    refusals: list[tuple[grpc.StatusCode, str]] = []
    done = threading.Event()

    def good(worker: int) -> None:
        producer = Client(times_grpc.address, mint_token([], admin=True))
        try:
            for n in range(rounds):
                producer.publish(topic, *[{"w": worker, "n": n, "i": i} for i in range(per_batch)])
        except BaseException as error:
            failures.append(error)
        finally:
            producer.close()

    def bad() -> None:
        producer = Client(times_grpc.address, mint_token([], admin=True))
        moments = [Timestamp(seconds=10**15), Timestamp(seconds=1, nanos=-1)]
        try:
            while not done.is_set():
                events = [
                    pb.NewEvent(name="ok", data="1"),
                    pb.NewEvent(name="bad", data="1", event_occurred_at=moments[len(refusals) % 2]),
                ]
                try:
                    producer.events.PublishEvents(
                        pb.PublishEventsRequest(topic=topic, events=events), metadata=producer.metadata, timeout=60
                    )
                except grpc.RpcError as error:
                    refusals.append((error.code(), error.details()))
        finally:
            producer.close()

    spoiler = threading.Thread(target=bad)
    spoiler.start()
    workers = [threading.Thread(target=good, args=(w,)) for w in range(publishers)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    spoiler.join()

    assert [type(error).__name__ + str(getattr(error, "code", lambda: "")()) for error in failures] == []
    pulled = []
    while len(pulled) < publishers * rounds * per_batch:
        page = client.pull(topic, len(pulled) + 1, 1000).events
        assert page, "fewer events stored than published"
        pulled.extend(page)
    after_the_last = client.pull(topic, len(pulled) + 1).events
    client.delete_topic(topic)
    client.close()
    assert refusals and {code for code, _ in refusals} == {grpc.StatusCode.INVALID_ARGUMENT}
    assert all(details.startswith("events[1].eventOccurredAt: ") for _, details in refusals)
    assert [event.offset for event in pulled] == list(range(1, publishers * rounds * per_batch + 1))
    assert {event.name for event in pulled} == {"test_event"} and list(after_the_last) == []
    assert "Traceback" not in times_grpc.log()
