"""``Events.PublishStream`` end to end (docs/grpc.md#publishstream): real grpcio clients against real
``manage.py grpcserver`` processes on the test database.

Each test checks the acks a stream gets (order, request ids, offsets, per-request errors) and what is stored
in PostgreSQL afterwards, including that nothing is stored for a refused request.
"""

import json
import os
import queue
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest
from django.db import connection

from eventrelay.auth import mint_token
from eventrelay.v1 import eventrelay_pb2 as pb
from harness.processes import GrpcServer, wait_until
from harness.processes import test_database_url as session_database_url
from tests.faults import PrivatePostgres
from tests.grpc_client import Client, unique_topic
from tests.helpers import admin_token, pulled_offsets, stored_offsets
from topics.tables import events_table_name

pytestmark = pytest.mark.e2e

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS.value[0]
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]

_CLOSE = object()


class PublishStreamCall:
    """One PublishStream call driven by the test: ``send`` requests (grpc's thread takes them from a queue),
    ``next_ack`` / ``finish`` read the acks."""

    def __init__(self, client: Client, metadata: Any = None, timeout: float = 60) -> None:
        self.requests: queue.Queue[Any] = queue.Queue()
        self.call = client.events.PublishStream(
            iter(self.requests.get, _CLOSE),
            metadata=client.metadata if metadata is None else metadata,
            timeout=timeout,
        )
        self.acks = iter(self.call)
        self.request_ids = iter(range(1, 1_000_000))

    def send(self, topic: str, *events: pb.NewEvent, request_id: int | None = None) -> int:
        request_id = next(self.request_ids) if request_id is None else request_id
        self.requests.put(pb.PublishStreamRequest(request_id=request_id, topic=topic, events=list(events)))
        return request_id

    def next_ack(self) -> pb.PublishStreamAck:
        return next(self.acks)

    def finish(self) -> list[pb.PublishStreamAck]:
        """Close the client's side; every ack still to come, then the stream's end (it must be OK)."""
        self.requests.put(_CLOSE)
        acks = list(self.acks)
        assert self.call.code() == grpc.StatusCode.OK
        return acks


def event(n: Any = 0, **fields: Any) -> pb.NewEvent:
    return pb.NewEvent(name=fields.pop("name", "test_event"), data=json.dumps({"n": n}), **fields)


def offsets_of(acks: list[pb.PublishStreamAck]) -> list[int]:
    return [offset for ack in acks for offset in ack.offsets]


def stored_data(topic: str) -> list[tuple[int, Any]]:
    """``(offset, data)`` of every event stored in ``topic``, read from PostgreSQL."""
    table = connection.ops.quote_name(events_table_name(topic))
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT "offset", data::text FROM {table} ORDER BY "offset"')
        return [(offset, json.loads(data)) for offset, data in cursor.fetchall()]


def stored_event_ids(topic: str) -> set[str]:
    table = connection.ops.quote_name(events_table_name(topic))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT event_id::text FROM {table}")
        return {row[0] for row in cursor.fetchall()}


@pytest.fixture
def client_for(grpc_server: GrpcServer) -> Iterator[Any]:
    clients: list[Client] = []

    def make(*granted: str, admin: bool = False, token: str | None = "", server: GrpcServer | None = None) -> Client:
        if token == "":
            token = mint_token(granted, admin=admin, ttl_seconds=3600)
        client = Client((server or grpc_server).address, token)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# --- Order and offsets -----------------------------------------------------------------------------------------


def test_each_request_gets_one_ack_in_request_order_with_its_stored_offsets(admin_client: Client, topics) -> None:
    # Given a topic and a stream
    name = topics("ordered")
    stream = PublishStreamCall(admin_client)

    # When 60 requests of 1 to 3 events are sent without waiting for any ack, with ids of the client's choosing
    sizes = [1 + n % 3 for n in range(60)]
    sent = []
    n = 0
    for index, size in enumerate(sizes):
        sent.append(stream.send(name, *[event(n + i) for i in range(size)], request_id=10_000 - 7 * index))
        n += size
    acks = stream.finish()

    # Then each request has one ack, in the order sent, carrying its request id and no error
    assert [ack.request_id for ack in acks] == sent
    assert not any(ack.HasField("error") for ack in acks)
    # And the offsets are gapless in request order, each request's as many as its events
    assert [len(ack.offsets) for ack in acks] == sizes
    assert offsets_of(acks) == list(range(1, sum(sizes) + 1))
    # And the events are stored at those offsets, in the order sent
    assert stored_data(name) == [(offset, {"n": offset - 1}) for offset in range(1, sum(sizes) + 1)]


def test_acks_keep_request_order_across_topics_and_each_topics_offsets_follow_it(admin_client: Client, topics) -> None:
    # Given two topics and one stream
    first, second = topics("first"), topics("second")
    stream = PublishStreamCall(admin_client)

    # When requests alternate between them irregularly
    targets = [first if n % 3 else second for n in range(30)]
    sent = [stream.send(target, event(n)) for n, target in enumerate(targets)]
    acks = stream.finish()

    # Then the acks come in the order of the requests, whatever their topic
    assert [ack.request_id for ack in acks] == sent
    # And each topic's offsets rise in the order its requests were sent
    for topic in (first, second):
        mine = [ack.offsets[0] for ack, target in zip(acks, targets, strict=True) if target == topic]
        assert mine == list(range(1, len(mine) + 1))
        expected = [n for n, target in enumerate(targets) if target == topic]
        assert [data["n"] for _, data in stored_data(topic)] == expected


def test_an_ack_comes_only_once_its_events_are_committed(admin_client: Client, topics) -> None:
    # Given a stream
    name = topics("committed")
    stream = PublishStreamCall(admin_client)

    # When each ack is read
    for n in range(5):
        stream.send(name, event(n))
        ack = stream.next_ack()
        # Then another connection already sees what it acknowledges
        assert admin_client.pull(name, ack.offsets[0]).events[0].offset == ack.offsets[0]
    assert stream.finish() == []


def test_a_stream_the_client_closes_at_once_ends_ok_with_no_acks(admin_client: Client) -> None:
    assert PublishStreamCall(admin_client).finish() == []


# --- A refused request fails alone -----------------------------------------------------------------------------


def test_a_refused_request_gets_its_error_in_its_ack_and_the_stream_goes_on(admin_client: Client, topics) -> None:
    # Given a stream with valid requests between refused ones
    name = topics("refused")
    missing = unique_topic("missing")
    stream = PublishStreamCall(admin_client)
    stream.send(name, event("a"))
    stream.send(name, event("b-0"), pb.NewEvent(name="x", data="{not json"))  # its event 0 is valid
    stream.send(name, event("c"))
    stream.send(name)  # no events
    stream.send(name, pb.NewEvent(name="", data="1"))
    stream.send(missing, event("lost"))
    stream.send("Bad Name!", event("lost"))
    stream.send(name, event("d"))

    acks = stream.finish()

    # Then each refused request's ack names its status, the event index and the field, as PublishEvents would
    errors = [(ack.error.code, ack.error.field) if ack.HasField("error") else None for ack in acks]
    assert errors == [
        None,
        (INVALID_ARGUMENT, "events[1].data"),
        None,
        (INVALID_ARGUMENT, "events"),
        (INVALID_ARGUMENT, "events[0].name"),
        (NOT_FOUND, "topic"),
        (INVALID_ARGUMENT, acks[6].error.field),
        None,
    ]
    assert acks[1].error.message.startswith("events[1].data: is not valid JSON")
    assert "empty" in acks[3].error.message
    assert missing in acks[5].error.message
    assert all(not ack.offsets for ack in acks if ack.HasField("error"))
    # And the accepted requests got consecutive offsets: nothing of a refused request was stored
    assert [list(ack.offsets) for ack in acks if not ack.HasField("error")] == [[1], [2], [3]]
    assert stored_data(name) == [(1, {"n": "a"}), (2, {"n": "c"}), (3, {"n": "d"})]


def test_every_field_check_of_publish_events_applies_to_each_request(admin_client: Client, topics) -> None:
    # Given the same invalid batch sent both ways
    name = topics("same_checks")
    bad = [event(1), pb.NewEvent(name="late", data="1", event_id="not-a-uuid")]
    with pytest.raises(grpc.RpcError) as unary:
        admin_client.events.PublishEvents(
            pb.PublishEventsRequest(topic=name, events=bad), metadata=admin_client.metadata, timeout=30
        )
    stream = PublishStreamCall(admin_client)
    stream.send(name, *bad)
    [ack] = stream.finish()

    # Then the stream's ack says what PublishEvents's status says
    assert ack.error.code == unary.value.code().value[0] == INVALID_ARGUMENT
    assert ack.error.message == unary.value.details()
    assert ack.error.field == "events[1].eventId"
    assert stored_offsets(name) == []


def test_a_bad_request_of_one_stream_fails_no_other_streams_events(admin_client: Client, topics) -> None:
    # Given two streams publishing to one topic at the same time (their requests share transactions)
    name = topics("neighbours")
    careless, careful = PublishStreamCall(admin_client), PublishStreamCall(admin_client)

    # When one sends an invalid request after every valid one
    for n in range(40):
        careless.send(name, event(f"careless-{n}"))
        careless.send(name, pb.NewEvent(name="x", data="[1,"))
        careful.send(name, event(f"careful-{n}"))
    careless_acks, careful_acks = careless.finish(), careful.finish()

    # Then every valid request of either stream is stored, and only the invalid ones are refused
    assert not any(ack.HasField("error") for ack in careful_acks)
    assert [ack.HasField("error") for ack in careless_acks] == [False, True] * 40
    stored = stored_data(name)
    assert len(stored) == 80
    assert sorted(offsets_of(careful_acks) + offsets_of(careless_acks)) == [offset for offset, _ in stored]


# --- Authorization ---------------------------------------------------------------------------------------------


def test_a_token_for_one_topic_id_may_stream_to_it_and_nowhere_else(admin_client: Client, topics, client_for) -> None:
    # Given a token granting only id 123 of a topic
    name, other = topics("users"), topics("other")
    producer = client_for(f"{name}:123")
    stream = PublishStreamCall(producer)

    # When its stream sends to that id, another id, the whole topic and another topic
    stream.send(f"{name}:123", event(1))
    stream.send(f"{name}:456", event(2))
    stream.send(name, event(3))
    stream.send(other, event(4))
    stream.send(f"{name}:123", event(5))
    acks = stream.finish()

    # Then only the granted requests are stored; each other one is denied, naming its topic
    assert [list(ack.offsets) for ack in acks] == [[1], [], [], [], [2]]
    for ack, refused in zip(acks[1:4], [f"{name}:456", name, other], strict=True):
        assert ack.error.code == PERMISSION_DENIED
        assert f"token does not grant topic '{refused}'" in ack.error.message
    assert [data for _, data in stored_data(name)] == [{"n": 1}, {"n": 5}]
    assert pulled_offsets(admin_client, other) == []


@pytest.mark.parametrize("token", [None, "not-a-jwt"], ids=["no-token", "bad-token"])
def test_a_stream_without_an_accepted_token_ends_unauthenticated_and_stores_nothing(
    admin_client: Client, topics, client_for, token
) -> None:
    # Given a client without a valid token
    name = topics("unauth")
    stream = PublishStreamCall(client_for(token=token))

    # When it sends a request
    stream.send(name, event(1))
    stream.requests.put(_CLOSE)

    # Then the stream ends UNAUTHENTICATED before any ack, and nothing is stored
    with pytest.raises(grpc.RpcError) as ended:
        stream.next_ack()
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stored_offsets(name) == []


def test_the_stream_answers_with_its_request_id(admin_client: Client) -> None:
    stream = PublishStreamCall(admin_client, metadata=[*admin_client.metadata, ("x-request-id", "stream-test-0001")])
    assert stream.finish() == []
    assert dict(stream.call.initial_metadata())["x-request-id"] == "stream-test-0001"


# --- Idempotency -----------------------------------------------------------------------------------------------


def test_an_event_id_sent_again_is_acked_with_its_stored_offset_and_stored_once(admin_client: Client, topics) -> None:
    # Given an event published on one stream
    name = topics("idem")
    event_id = str(uuid.uuid4())
    first = PublishStreamCall(admin_client)
    first.send(name, event("original", event_id=event_id))
    [original] = first.finish()

    # When a new stream sends it again (a producer retrying requests that had no ack), twice in a row without
    # waiting, and beside a new event
    retry = PublishStreamCall(admin_client)
    retry.send(name, event("retry-1", event_id=event_id))
    retry.send(name, event("retry-2", event_id=event_id), event("fresh"))
    again, again_with_fresh = retry.finish()

    # Then each ack carries the stored offset, and only the new event was stored
    assert list(original.offsets) == [1]
    assert list(again.offsets) == [1]
    assert list(again_with_fresh.offsets) == [1, 2]
    assert stored_data(name) == [(1, {"n": "original"}), (2, {"n": "fresh"})]


def test_an_event_id_repeated_in_requests_in_flight_together_is_stored_once(admin_client: Client, topics) -> None:
    name = topics("idem_flight")
    event_id = str(uuid.uuid4())
    stream = PublishStreamCall(admin_client)
    for n in range(20):
        stream.send(name, event(n, event_id=event_id))
    acks = stream.finish()

    assert {tuple(ack.offsets) for ack in acks} == {(1,)}
    assert stored_data(name) == [(1, {"n": 0})]


def test_an_event_id_stored_under_another_topic_id_is_refused_alone(admin_client: Client, topics) -> None:
    name = topics("idem_ids")
    event_id = str(uuid.uuid4())
    stream = PublishStreamCall(admin_client)
    stream.send(f"{name}:1", event(1, event_id=event_id))
    first = stream.next_ack()
    stream.send(f"{name}:2", event(2, event_id=event_id))
    stream.send(f"{name}:2", event(3))
    conflict, after = stream.finish()

    assert list(first.offsets) == [1]
    assert conflict.error.code == ALREADY_EXISTS
    assert event_id in conflict.error.message
    assert list(after.offsets) == [2]
    assert stored_data(name) == [(1, {"n": 1}), (2, {"n": 3})]


# --- Flow control ----------------------------------------------------------------------------------------------

MAX_IN_FLIGHT = 4


@pytest.fixture(scope="module")
def small_window_server(django_db_setup: None) -> Iterator[GrpcServer]:
    server = GrpcServer(env={"ER_GRPC_PUBLISH_STREAM_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT)}, name="grpc_small_window")
    yield server
    server.stop()


def events_per_transaction(topic: str) -> list[int]:
    """How many of the topic's events each transaction stored (rows of one transaction share its ``xmin``), in
    offset order."""
    table = connection.ops.quote_name(events_table_name(topic))
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT xmin::text, min("offset"), count(*) FROM {table} GROUP BY 1 ORDER BY 2')
        return [count for _, _, count in cursor.fetchall()]


def test_a_stream_has_at_most_max_in_flight_requests_read_and_unacknowledged(
    admin_client: Client, topics, small_window_server: GrpcServer
) -> None:
    # Given a topic whose row lock the test holds, so that no publish to it can commit
    name = topics("window")
    client = Client(small_window_server.address, admin_token())
    with psycopg.connect(session_database_url()) as blocker:
        blocker.execute("SELECT 1 FROM topics_topic WHERE name = %s FOR UPDATE", [name])

        # When a stream sends far more single-event requests than its window, all at once
        stream = PublishStreamCall(client)
        for n in range(5 * MAX_IN_FLIGHT):
            stream.send(name, event(n))
        # ... and the server's first transaction waits for the lock (the others pile up behind it while it does)
        wait_until(lambda: lock_waiters(name) == 1, 30, "the server's publish to wait for the topic's lock")
        time.sleep(1)
        blocker.rollback()
        acks = stream.finish()
    client.close()

    # Then every request was acknowledged in order
    assert offsets_of(acks) == list(range(1, 5 * MAX_IN_FLIGHT + 1))
    # And no transaction took more requests than the window: the server did not read past it while blocked
    # (without the window, all but the first would have gone into the second transaction)
    groups = events_per_transaction(name)
    assert sum(groups) == 5 * MAX_IN_FLIGHT
    assert max(groups) <= MAX_IN_FLIGHT, groups
    assert len(groups) >= 5


def lock_waiters(topic: str) -> int:
    """Sessions of the grpc server waiting on a lock while publishing (the test's own holds it)."""
    with psycopg.connect(session_database_url(), autocommit=True) as probe:
        [(count,)] = probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchall()
    return int(count)


# --- Many streams ----------------------------------------------------------------------------------------------


def test_many_concurrent_streams_each_get_their_acks_in_order_and_offsets_stay_gapless(
    admin_client: Client, topics, client_for
) -> None:
    # Given 24 streams over 3 channels, to two topics, every fourth request of every stream invalid
    names = [topics("many_a"), topics("many_b")]
    clients = [client_for(admin=True) for _ in range(3)]
    requests_per_stream = 40
    results: dict[int, list[pb.PublishStreamAck]] = {}
    failures: list[BaseException] = []

    def produce(index: int) -> None:
        try:
            stream = PublishStreamCall(clients[index % 3])
            for n in range(requests_per_stream):
                target = names[(index + n) % 2]
                if n % 4 == 3:
                    stream.send(target, event(n), pb.NewEvent(name="bad", data=""))
                else:
                    stream.send(target, event(f"{index}-{n}"), request_id=index * 1000 + n)
            results[index] = stream.finish()
        except BaseException as error:  # reported by the test below
            failures.append(error)

    # When they all publish at once
    threads = [threading.Thread(target=produce, args=(index,)) for index in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    # Then each stream got one ack per request, in its order, errors exactly for its invalid requests
    assert failures == []
    for index, acks in results.items():
        assert len(acks) == requests_per_stream
        assert [ack.HasField("error") for ack in acks] == [n % 4 == 3 for n in range(requests_per_stream)]
        for n, ack in enumerate(acks):
            if n % 4 != 3:
                assert ack.request_id == index * 1000 + n
        # And each stream's offsets in a topic rise in the order it sent them
        for topic_index in range(2):
            mine = [ack.offsets[0] for n, ack in enumerate(acks) if n % 4 != 3 and (index + n) % 2 == topic_index]
            assert mine == sorted(mine)
    # And each topic holds exactly the valid events, at gapless offsets, each once
    valid_per_topic = 24 * requests_per_stream * 3 // 4 // 2
    for name in names:
        stored = stored_data(name)
        assert [offset for offset, _ in stored] == list(range(1, valid_per_topic + 1))
        assert len({data["n"] for _, data in stored}) == valid_per_topic


# --- Rate limits -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_server(django_db_setup: None) -> Iterator[GrpcServer]:
    limits = {"ER_RATE_LIMIT_PUBLISH_PER_S": "1", "ER_RATE_LIMIT_PUBLISH_BURST": "20"}
    server = GrpcServer(env=limits, name="grpc_stream_limited")
    yield server
    server.stop()


def test_each_requests_events_count_against_the_publish_budget(admin_client: Client, topics, limited_server) -> None:
    # Given a producer whose budget is 20 events (1 more a second)
    name = topics("limited")
    client = Client(limited_server.address, mint_token([name], subject=f"producer-{uuid.uuid4().hex}"))
    stream = PublishStreamCall(client)

    # When one stream sends 15 events, then 10, then 5
    stream.send(name, *[event(n) for n in range(15)])
    stream.send(name, *[event(n) for n in range(10)])
    stream.send(name, *[event(n) for n in range(5)])
    fifteen, ten, five = stream.finish()
    client.close()

    # Then the request that would overspend is refused alone, with a retry hint, and the stream goes on
    assert len(fifteen.offsets) == 15
    assert ten.error.code == RESOURCE_EXHAUSTED
    assert 0 < ten.error.retry_after_ms <= 10_000
    assert list(five.offsets) == [16, 17, 18, 19, 20]
    assert stored_offsets(name) == list(range(1, 21))


# --- Shutdown --------------------------------------------------------------------------------------------------


def test_sigterm_acks_what_was_read_then_ends_the_stream_unavailable(admin_client: Client, topics) -> None:
    # Given a server of the test's own and a stream publishing to it as fast as it can
    server = GrpcServer(name="grpc_stream_shutdown")
    name = topics("shutdown")
    client = Client(server.address, admin_token())
    sent_ids: list[str] = []
    stop_sending = threading.Event()

    def requests() -> Iterator[pb.PublishStreamRequest]:
        for n in range(1_000_000):
            if stop_sending.is_set():
                return
            event_id = str(uuid.uuid4())
            sent_ids.append(event_id)
            yield pb.PublishStreamRequest(request_id=n, topic=name, events=[event(n, event_id=event_id)])

    try:
        call = client.events.PublishStream(requests(), metadata=client.metadata, timeout=60)
        acks: list[pb.PublishStreamAck] = []
        # When SIGTERM arrives while acks are coming
        with pytest.raises(grpc.RpcError) as ended:
            for ack in call:
                acks.append(ack)
                if len(acks) == 200:
                    os.kill(server.process.pid, signal.SIGTERM)
        stop_sending.set()

        # Then the stream ends UNAVAILABLE, saying the server is shutting down, and the server exits cleanly
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in ended.value.details()
        assert server.process.wait(30) == 0
        # And the acks were in order, without an error, and what is stored is exactly what was acknowledged
        assert [ack.request_id for ack in acks] == list(range(len(acks)))
        assert offsets_of(acks) == list(range(1, len(acks) + 1))
        assert stored_event_ids(name) == set(sent_ids[: len(acks)])
    finally:
        client.close()
        server.stop()


# --- PostgreSQL down -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(name="outage-publish-stream")
    yield server
    server.close()


@pytest.fixture(scope="module")
def outage_server(postgres: PrivatePostgres) -> Iterator[GrpcServer]:
    server = GrpcServer(env={"DATABASE_URL": postgres.url}, name="outage-publish-stream-grpc")
    yield server
    server.stop()


def test_with_postgres_down_the_stream_ends_unavailable_and_a_new_one_serves_once_it_is_back(
    postgres: PrivatePostgres, outage_server: GrpcServer
) -> None:
    # Given a topic on a server whose PostgreSQL the test may stop, and a stream that has published
    client = Client(outage_server.address, admin_token())
    name = unique_topic("outage")
    client.create_topic(name)
    stream = PublishStreamCall(client)
    stream.send(name, event(1))
    assert list(stream.next_ack().offsets) == [1]

    # When PostgreSQL stops and the stream sends again
    postgres.stop()
    try:
        stream.send(name, event(2))
        # Then the stream ends UNAVAILABLE (retryable), naming the database
        with pytest.raises(grpc.RpcError) as ended:
            stream.next_ack()
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "database is unavailable" in ended.value.details()
    finally:
        postgres.start()

    # And once it is back, a new stream resending the unacknowledged event is served (a connection found dead
    # may answer UNAVAILABLE once more)
    codes: Counter[str] = Counter()
    for _ in range(10):
        retry = PublishStreamCall(client)
        retry.send(name, event(2))
        try:
            acks = retry.finish()
        except grpc.RpcError as error:
            codes[error.code().name] += 1
            continue
        assert list(acks[0].offsets) == [2]
        break
    else:
        raise AssertionError(f"no stream served after PostgreSQL came back: {codes}")
    assert set(codes) <= {"UNAVAILABLE"}
    assert pulled_offsets(client, name) == [1, 2]
    client.close()
