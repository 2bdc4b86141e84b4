"""StreamEvents end to end: real grpcserver processes, real grpcio clients, real Redis pub/sub."""

import json
import os
import signal
import threading
import time

import grpc
import pytest

from eventrelay.auth import mint_token
from harness.processes import GrpcServer
from tests.grpc_client import Client, unique_topic
from tests.helpers import admin_token, rss_kib

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def second_server(django_db_setup):
    """Another grpcserver whose tick is ten minutes: live events must reach it through Redis."""
    server = GrpcServer(env={"ER_LIVE_TICK_MS": "600000"}, name="grpcserver_b")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def small_buffer_server(django_db_setup):
    server = GrpcServer(env={"ER_LIVE_BUFFER_EVENTS": "50"}, name="grpcserver_small_buffer")
    yield server
    server.stop()


class Publisher(threading.Thread):
    """Publishes ``total`` events in small batches, as fast as the server takes them."""

    def __init__(self, address: str, topic: str, total: int, batch: int = 7) -> None:
        super().__init__(daemon=True)
        self.client = Client(address, admin_token())
        self.topic, self.total, self.batch = topic, total, batch
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            sent = 0
            while sent < self.total:
                size = min(self.batch, self.total - sent)
                self.client.publish(self.topic, *[{"n": sent + i} for i in range(size)])
                sent += size
        except BaseException as exc:
            self.error = exc
        finally:
            self.client.close()


def read_offsets(stream, until: int) -> list[int]:
    offsets = []
    for event in stream:
        offsets.append(event.offset)
        if event.offset >= until:
            break
    return offsets


def wait_for_live(client: Client, topic: str, stream) -> int:
    """Publish probes until the live-only stream yields one; returns the probe's offset."""
    received: list[int] = []
    reader = threading.Thread(target=lambda: received.append(next(stream).offset), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while reader.is_alive() and time.monotonic() < deadline:
        client.publish(topic, {"probe": True}, name="probe")
        reader.join(0.2)
    assert received, "the live stream never received a probe"
    return received[0]


def test_a_live_stream_receives_new_events_in_order(admin_client):
    topic = unique_topic("live")
    admin_client.create_topic(topic)
    stream = admin_client.stream(topic)
    first = wait_for_live(admin_client, topic, stream)
    last_probe = admin_client.pull(topic, 1, 1000).events[-1].offset

    published = [event.offset for event in admin_client.publish(topic, *[{"n": i} for i in range(50)])]

    assert read_offsets(stream, published[-1]) == list(range(first + 1, last_probe + 1)) + published
    stream.cancel()


@pytest.mark.parametrize("run", range(8))
def test_from_offset_replays_then_goes_live_with_every_offset_exactly_once(admin_client, grpc_server, run):
    topic = unique_topic("seam")
    admin_client.create_topic(topic)
    admin_client.publish(topic, *[{"n": i} for i in range(120)])  # stored before the stream starts
    publisher = Publisher(grpc_server.address, topic, total=600)
    publisher.start()
    from_offset = 1 + run * 13

    stream = admin_client.stream(topic, from_offset=from_offset)
    offsets = read_offsets(stream, until=720)
    stream.cancel()
    publisher.join(60)

    assert publisher.error is None, publisher.error
    assert offsets == list(range(from_offset, 721))


def test_an_event_published_through_one_server_reaches_a_stream_on_another(admin_client, second_server):
    topic = unique_topic("cross")
    admin_client.create_topic(topic)
    other = Client(second_server.address, admin_token())
    stream = other.stream(topic)
    first = wait_for_live(admin_client, topic, stream)

    published = []
    for i in range(20):
        published += [event.offset for event in admin_client.publish(topic, *[{"i": i, "j": j} for j in range(10)])]

    offsets = read_offsets(stream, until=published[-1])
    assert offsets[-200:] == published
    assert offsets == list(range(first + 1, published[-1] + 1))
    stream.cancel()
    other.close()


def test_a_topic_id_stream_never_yields_another_ids_events(admin_client, grpc_server):
    topic = unique_topic("scope")
    admin_client.create_topic(topic)
    for i in range(30):
        admin_client.publish(f"{topic}:456", {"secret": i})
        admin_client.publish(f"{topic}:123", {"mine": i})
    consumer = Client(grpc_server.address, mint_token([f"{topic}:123"]))

    stream = consumer.stream(f"{topic}:123", from_offset=1)
    received = []
    for event in stream:
        received.append(event)
        if len(received) == 30:
            # Live now: more 456 events, then one more of ours.
            admin_client.publish(f"{topic}:456", {"secret": "live"})
            admin_client.publish(f"{topic}:123", {"mine": "live"})
        if len(received) == 31:
            break
    stream.cancel()

    assert {event.topic for event in received} == {f"{topic}:123"}
    assert [json.loads(event.data)["mine"] for event in received] == [*range(30), "live"]
    with pytest.raises(grpc.RpcError) as denied:
        next(consumer.stream(f"{topic}:456", from_offset=1))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as denied:
        next(consumer.stream(topic, from_offset=1))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    consumer.close()


def test_a_stream_that_stops_reading_is_ended_and_resumes_without_loss(admin_client, small_buffer_server):
    topic = unique_topic("slow")
    admin_client.create_topic(topic)
    client = Client(small_buffer_server.address, admin_token())
    stream = client.stream(topic, from_offset=1)
    admin_client.publish(topic, {"first": True})
    received = [next(stream).offset]
    rss_before = rss_kib(small_buffer_server.process.pid)

    # The client now stops reading while 3,000 events of ~10 KB (~30 MB) are published.
    payload = "x" * 10_000
    for batch in range(30):
        admin_client.publish(topic, *[{"batch": batch, "pad": payload} for _ in range(100)])
    time.sleep(1)  # let the server's feed dispatch them (not a threshold: only lets the buffer fill)
    rss_after = rss_kib(small_buffer_server.process.pid)

    with pytest.raises(grpc.RpcError) as ended:
        for event in stream:
            received.append(event.offset)
    assert ended.value.code() == grpc.StatusCode.ABORTED
    assert "slow_consumer" in ended.value.details()
    # What the server buffered stayed far below what was published (30 MB).
    assert rss_after - rss_before < 20_000, f"server RSS grew by {rss_after - rss_before} KiB"

    resumed = client.stream(topic, from_offset=received[-1] + 1)
    received += read_offsets(resumed, until=3001)
    resumed.cancel()
    client.close()
    assert received == list(range(1, 3002))


def test_deleting_the_topic_ends_its_streams_with_not_found(admin_client):
    topic = unique_topic("gone")
    admin_client.create_topic(topic)
    stream = admin_client.stream(topic)
    wait_for_live(admin_client, topic, stream)

    admin_client.delete_topic(topic)

    with pytest.raises(grpc.RpcError) as ended:
        for _ in stream:
            pass
    assert ended.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("token", "topic", "code"),
    [
        (None, "users", grpc.StatusCode.UNAUTHENTICATED),
        ("not-a-jwt", "users", grpc.StatusCode.UNAUTHENTICATED),
        ("admin", "no_such_topic", grpc.StatusCode.NOT_FOUND),
        ("admin", "Bad Name", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_stream_errors_have_their_status_codes(grpc_server, transactional_db, token, topic, code):
    client = Client(grpc_server.address, admin_token() if token == "admin" else token)
    with pytest.raises(grpc.RpcError) as error:
        next(client.stream(topic, from_offset=1))
    assert error.value.code() == code
    client.close()


def test_sigterm_ends_streams_cleanly_and_the_server_exits(admin_client, django_db_setup):
    server = GrpcServer(name="grpcserver_shutdown")
    try:
        topic = unique_topic("shutdown")
        admin_client.create_topic(topic)
        admin_client.publish(topic, {"n": 1})
        client = Client(server.address, admin_token())
        stream = client.stream(topic, from_offset=1)
        assert next(stream).offset == 1

        os.kill(server.process.pid, signal.SIGTERM)

        with pytest.raises(grpc.RpcError) as ended:
            next(stream)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in ended.value.details()
        assert server.process.wait(30) == 0
        client.close()
    finally:
        server.stop()


class silenced_notifications:
    """Publish from this test process without announcing: as if every pub/sub message were lost."""

    def __enter__(self) -> None:
        from events import live

        async def lost(topic_name: str, events: list) -> None:
            pass

        self.announce = live.announce
        live.announce = lost

    def __exit__(self, *exc_info: object) -> None:
        from events import live

        live.announce = self.announce


def test_lost_notifications_are_repaired_by_the_tick(admin_client, grpc_server, admin):
    from events.services import publish

    topic = unique_topic("lost")
    admin_client.create_topic(topic)
    stream = admin_client.stream(topic)
    first = wait_for_live(admin_client, topic, stream)

    with silenced_notifications():
        stored = publish(admin, topic, [{"name": "quiet", "data": i} for i in range(25)], "http")

    # No notification was sent; the 200 ms tick of the server finds them in PostgreSQL.
    assert read_offsets(stream, until=stored[-1].offset) == list(range(first + 1, stored[-1].offset + 1))
    stream.cancel()


def test_a_gap_in_notifications_is_read_from_postgresql_before_newer_events(admin_client, second_server, admin):
    from events.services import publish

    topic = unique_topic("gap")
    admin_client.create_topic(topic)
    client = Client(second_server.address, admin_token())
    stream = client.stream(topic, timeout=60)  # far shorter than second_server's tick
    first = wait_for_live(admin_client, topic, stream)

    with silenced_notifications():
        publish(admin, topic, [{"name": "missed", "data": i} for i in range(10)], "http")
    [announced] = publish(admin, topic, [{"name": "announced", "data": 0}], "http")

    # second_server ticks every ten minutes: only gap repair can deliver the 10 missed events in time.
    assert read_offsets(stream, until=announced.offset) == list(range(first + 1, announced.offset + 1))
    stream.cancel()
    client.close()
