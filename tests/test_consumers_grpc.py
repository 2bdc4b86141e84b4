"""Durable consumers over the real gRPC server: several workers share one consumer, a worker killed with
SIGKILL gives back exactly the leases it held, and a long-polling Fetch returns when an event is published."""

import os
import signal
import subprocess
import threading
import time
from collections import Counter

import grpc
import pytest

from eventrelay.auth import mint_token
from eventrelay.v1 import eventrelay_pb2 as pb
from harness.processes import REPO, VENV_BIN, wait_until
from tests.grpc_client import Client

pytestmark = pytest.mark.e2e

WORKERS = 8
EVENTS = 20_000


def publish_many(client: Client, topic: str, count: int) -> None:
    for start in range(0, count, 500):
        client.publish(topic, *[{"n": n} for n in range(start, min(start + 500, count))])


def consumer_info(client: Client, topic: str, name: str) -> pb.ConsumerInfo:
    return client.consumers.GetConsumer(pb.ConsumerRef(topic=topic, consumer=name), metadata=client.metadata)


def test_workers_on_one_consumer_ack_every_event_exactly_once(admin_client: Client, topics, grpc_server) -> None:
    topic = topics("cons")
    publish_many(admin_client, topic, EVENTS)
    admin_client.consumers.CreateConsumer(
        pb.CreateConsumerRequest(topic=topic, consumer="work"), metadata=admin_client.metadata
    )
    acked: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        client = Client(grpc_server.address, mint_token([topic], ttl_seconds=3600))
        try:
            while True:
                reply = client.consumers.Fetch(
                    pb.FetchRequest(topic=topic, consumer="work", max_events=100), metadata=client.metadata
                )
                if not reply.deliveries:
                    return
                offsets = [d.event.offset for d in reply.deliveries]
                with lock:
                    acked.extend(offsets)
                client.consumers.Ack(
                    pb.AckRequest(topic=topic, consumer="work", ack_ids=[d.ack_id for d in reply.deliveries]),
                    metadata=client.metadata,
                )
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    twice = [offset for offset, n in Counter(acked).items() if n > 1]
    assert not twice and sorted(acked) == list(range(1, EVENTS + 1))
    info = consumer_info(admin_client, topic, "work")
    assert (info.ack_floor, info.lag, info.pending) == (EVENTS, 0, 0)


def test_workers_whose_fetches_ack_the_previous_batch_ack_every_event_exactly_once(
    admin_client: Client, topics, grpc_server
) -> None:
    """FetchRequest.ack_ids: each worker's Fetch acknowledges its previous batch; the final, empty Fetch the last."""
    topic = topics("cons")
    publish_many(admin_client, topic, 5_000)
    admin_client.consumers.CreateConsumer(
        pb.CreateConsumerRequest(topic=topic, consumer="work"), metadata=admin_client.metadata
    )
    handed: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        client = Client(grpc_server.address, mint_token([topic], ttl_seconds=3600))
        previous: list[str] = []
        try:
            while True:
                reply = client.consumers.Fetch(
                    pb.FetchRequest(topic=topic, consumer="work", max_events=100, ack_ids=previous),
                    metadata=client.metadata,
                )
                assert list(reply.stale_ack_ids) == []
                if not reply.deliveries:
                    return
                with lock:
                    handed.extend(d.event.offset for d in reply.deliveries)
                previous = [d.ack_id for d in reply.deliveries]
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(handed) == list(range(1, 5_001))
    info = consumer_info(admin_client, topic, "work")
    assert (info.ack_floor, info.lag, info.pending) == (5_000, 0, 0)
    with pytest.raises(grpc.RpcError) as refused:
        admin_client.consumers.Fetch(
            pb.FetchRequest(topic=topic, consumer="work", ack_ids=["not an ackId"]), metadata=admin_client.metadata
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "ackIds[0]" in refused.value.details()


def test_a_fetch_answers_its_deliveries_and_the_stale_ack_ids_it_carried(
    admin_client: Client, topics, grpc_server
) -> None:
    """The Fetch answer is built from the stored wire forms (grpc_api.consumers): every field of each delivery
    and the stale ackIds beside them read back as the messages they stand for."""
    topic = topics("cons")
    admin_client.publish(topic, *[{"n": n} for n in range(3)])
    ref = {"topic": topic, "consumer": "work"}
    admin_client.consumers.CreateConsumer(pb.CreateConsumerRequest(**ref), metadata=admin_client.metadata)
    first = admin_client.consumers.Fetch(pb.FetchRequest(**ref, max_events=2), metadata=admin_client.metadata)
    pulled = admin_client.pull(topic, 1)
    assert [d.event for d in first.deliveries] == list(pulled.events[:2])
    assert [(d.delivery_count, d.ack_id.split("-")[1:]) for d in first.deliveries] == [
        (1, ["0", "1", "1"]),
        (1, ["0", "2", "1"]),
    ]
    admin_client.consumers.Seek(pb.SeekRequest(**ref, offset=2), metadata=admin_client.metadata)
    old = [d.ack_id for d in first.deliveries]
    again = admin_client.consumers.Fetch(pb.FetchRequest(**ref, ack_ids=old), metadata=admin_client.metadata)
    assert list(again.stale_ack_ids) == old  # (of the epoch before the seek)
    assert [(d.event, d.delivery_count) for d in again.deliveries] == [(e, 1) for e in pulled.events[1:]]
    assert all(d.ack_id.split("-")[1] == "1" for d in again.deliveries)


def test_a_killed_worker_gives_back_exactly_the_leases_it_held(admin_client: Client, topics, grpc_server) -> None:
    topic = topics("cons")
    publish_many(admin_client, topic, 300)
    admin_client.consumers.CreateConsumer(
        pb.CreateConsumerRequest(topic=topic, consumer="work", ack_wait_seconds=2), metadata=admin_client.metadata
    )
    # A worker that fetches 100 events and dies holding them.
    holder = subprocess.Popen(
        [
            str(VENV_BIN / "python"),
            "-c",
            "import os, sys, time, grpc\n"
            "from eventrelay.v1 import eventrelay_pb2 as pb, eventrelay_pb2_grpc as g\n"
            "stub = g.ConsumersStub(grpc.insecure_channel(os.environ['ER_GRPC_ADDRESS']))\n"
            "md = [('authorization', 'Bearer ' + os.environ['ER_TOKEN'])]\n"
            "r = stub.Fetch(pb.FetchRequest(topic=sys.argv[1], consumer='work', max_events=100), metadata=md)\n"
            "print(' '.join(str(d.event.offset) for d in r.deliveries), flush=True)\n"
            "time.sleep(3600)\n",
            topic,
        ],
        cwd=REPO,
        env={**os.environ, "ER_GRPC_ADDRESS": grpc_server.address, "ER_TOKEN": mint_token([topic], ttl_seconds=3600)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    held = [int(offset) for offset in holder.stdout.readline().split()]
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert len(held) == 100
    # The other worker acks everything else at once, then sees exactly the held events come back.
    seen: dict[int, int] = {}

    def drain() -> bool:
        reply = admin_client.consumers.Fetch(
            pb.FetchRequest(topic=topic, consumer="work", max_events=1000, wait_ms=1000),
            metadata=admin_client.metadata,
        )
        for delivery in reply.deliveries:
            seen[delivery.event.offset] = delivery.delivery_count
        if reply.deliveries:
            admin_client.consumers.Ack(
                pb.AckRequest(topic=topic, consumer="work", ack_ids=[d.ack_id for d in reply.deliveries]),
                metadata=admin_client.metadata,
            )
        return len(seen) == 300

    wait_until(drain, 60, "every event to be handed out")
    assert sorted(offset for offset, count in seen.items() if count == 2) == sorted(held)
    assert {count for offset, count in seen.items() if offset not in held} == {1}
    assert consumer_info(admin_client, topic, "work").ack_floor == 300


def test_a_long_poll_returns_when_an_event_is_published(admin_client: Client, topics) -> None:
    topic = topics("cons")
    admin_client.consumers.CreateConsumer(
        pb.CreateConsumerRequest(topic=topic, consumer="work"), metadata=admin_client.metadata
    )
    replies: list[tuple[float, pb.FetchResponse]] = []

    def poll() -> None:
        reply = admin_client.consumers.Fetch(
            pb.FetchRequest(topic=topic, consumer="work", wait_ms=10_000), metadata=admin_client.metadata
        )
        replies.append((time.monotonic(), reply))

    poller = threading.Thread(target=poll)
    poller.start()
    # Correct however the two race (a publish before the poll waits is found by its first read); the pause only
    # makes the printed figure the wake-up's latency rather than a read's.
    time.sleep(0.5)
    published_at = time.monotonic()
    admin_client.publish(topic, {"n": 1})
    poller.join()
    [(returned_at, reply)] = replies
    assert [d.event.offset for d in reply.deliveries] == [1]
    print(f"long-poll returned {1000 * (returned_at - published_at):.1f} ms after the publish")


def test_errors_have_their_status_codes(admin_client: Client, topics, grpc_server) -> None:
    topic = topics("cons")
    ref = pb.ConsumerRef(topic=topic, consumer="nobody")
    with pytest.raises(grpc.RpcError) as missing:
        admin_client.consumers.GetConsumer(ref, metadata=admin_client.metadata)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    request = pb.CreateConsumerRequest(topic=topic, consumer="work", ack_wait_seconds=0)
    with pytest.raises(grpc.RpcError) as invalid:
        admin_client.consumers.CreateConsumer(request, metadata=admin_client.metadata)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "ackWaitSeconds" in invalid.value.details()
    admin_client.consumers.CreateConsumer(
        pb.CreateConsumerRequest(topic=topic, consumer="work"), metadata=admin_client.metadata
    )
    scoped = Client(grpc_server.address, mint_token([f"{topic}:123"], ttl_seconds=3600))
    try:
        with pytest.raises(grpc.RpcError) as forbidden:
            scoped.consumers.Fetch(pb.FetchRequest(topic=topic, consumer="work"), metadata=scoped.metadata)
        assert forbidden.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        scoped.close()


def test_the_grpc_server_killed_and_restarted_mid_run_loses_no_ack_no_lease_and_skips_nothing(
    admin_client: Client, topics
) -> None:
    from harness.processes import GrpcServer

    topic = topics("cons")
    total = 2000
    publish_many(admin_client, topic, total)
    admin_client.consumers.CreateConsumer(
        pb.CreateConsumerRequest(topic=topic, consumer="work", ack_wait_seconds=3), metadata=admin_client.metadata
    )
    server = GrpcServer(name="grpcserver-consumers-kill")
    address = [server.address]
    acked: set[int] = set()
    deliveries_seen: list[int] = []
    lock = threading.Lock()
    killed = threading.Event()

    def ack_until_answered(token: str, ack_ids: list[str]) -> None:
        """An ack whose answer was lost with the server may have committed: acks are idempotent, so a worker sends
        it again (to the restarted server) until it is answered."""
        while True:
            client = Client(address[0], token)
            try:
                client.consumers.Ack(
                    pb.AckRequest(topic=topic, consumer="work", ack_ids=ack_ids), metadata=client.metadata, timeout=10
                )
                return
            except grpc.RpcError as error:
                assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), error
                time.sleep(0.1)
            finally:
                client.close()

    def worker() -> None:
        token = mint_token([topic], ttl_seconds=3600)
        while True:
            client = Client(address[0], token)
            try:
                reply = client.consumers.Fetch(
                    pb.FetchRequest(topic=topic, consumer="work", max_events=50, wait_ms=1000),
                    metadata=client.metadata,
                    timeout=10,
                )
                with lock:
                    deliveries_seen.extend(d.event.offset for d in reply.deliveries)
                    if not reply.deliveries and killed.is_set() and len(acked) == total:
                        return
                if reply.deliveries:
                    ack_until_answered(token, [d.ack_id for d in reply.deliveries])
                    with lock:
                        acked.update(d.event.offset for d in reply.deliveries)
            except grpc.RpcError as error:
                assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), error
                time.sleep(0.1)
            finally:
                client.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(acked) >= total // 4, 120, "a quarter of the events to be acked")
        server.stop(signal.SIGKILL)
        server = GrpcServer(name="grpcserver-consumers-restarted")
        address[0] = server.address
        killed.set()
        for thread in threads:
            thread.join(180)
    finally:
        server.stop()
    assert acked == set(range(1, total + 1))
    info = consumer_info(admin_client, topic, "work")
    assert (info.ack_floor, info.lag, info.pending) == (total, 0, 0)
    # Whatever was handed out twice was out when the server died (its ack never arrived), not a lost lease.
    twice = [offset for offset, n in Counter(deliveries_seen).items() if n > 1]
    assert len(twice) <= 4 * 50, twice


def test_ordered_with_eight_workers_and_random_nacks_keeps_each_topic_id_in_offset_order(
    admin_client: Client, topics, grpc_server
) -> None:
    import random

    topic = topics("cons")
    ids = [f"u{n}" for n in range(8)]
    for round_ in range(12):
        for topic_id in ids:
            admin_client.publish(f"{topic}:{topic_id}", {"round": round_})
    total = 12 * len(ids)
    admin_client.consumers.CreateConsumer(
        pb.CreateConsumerRequest(topic=topic, consumer="work", ordered=True, max_deliveries=1000),
        metadata=admin_client.metadata,
    )
    processed: dict[str, list[int]] = {topic_id: [] for topic_id in ids}
    done: set[int] = set()
    lock = threading.Lock()
    failures = random.Random(19)

    def worker() -> None:
        client = Client(grpc_server.address, mint_token([topic], ttl_seconds=3600))
        try:
            while True:
                with lock:
                    if len(done) == total:
                        return
                reply = client.consumers.Fetch(
                    pb.FetchRequest(topic=topic, consumer="work", max_events=10, wait_ms=200), metadata=client.metadata
                )
                for delivery in reply.deliveries:
                    topic_id = delivery.event.topic.split(":", 1)[1]
                    with lock:
                        fail = failures.random() < 0.3
                        if not fail:
                            processed[topic_id].append(delivery.event.offset)
                            done.add(delivery.event.offset)
                    if fail:
                        client.consumers.Nack(
                            pb.NackRequest(topic=topic, consumer="work", ack_ids=[delivery.ack_id], reason="random"),
                            metadata=client.metadata,
                        )
                    else:
                        client.consumers.Ack(
                            pb.AckRequest(topic=topic, consumer="work", ack_ids=[delivery.ack_id]),
                            metadata=client.metadata,
                        )
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert len(done) == total
    for topic_id, offsets in processed.items():
        assert offsets == sorted(offsets) and len(offsets) == 12, topic_id  # processed once each, in offset order


def test_a_dead_letter_keeps_the_workers_reason_and_redrive_delivers_it_again(admin_client: Client, topics) -> None:
    topic = topics("cons")
    admin_client.publish(topic, {"n": 1}, {"n": 2})
    consumers, md = admin_client.consumers, admin_client.metadata
    consumers.CreateConsumer(pb.CreateConsumerRequest(topic=topic, consumer="work", max_deliveries=2), metadata=md)
    for attempt in (1, 2):
        reply = consumers.Fetch(pb.FetchRequest(topic=topic, consumer="work", max_events=1), metadata=md)
        [delivery] = reply.deliveries
        assert (delivery.event.offset, delivery.delivery_count) == (1, attempt)
        consumers.Nack(
            pb.NackRequest(topic=topic, consumer="work", ack_ids=[delivery.ack_id], reason=f"failed {attempt}"),
            metadata=md,
        )
    [letter] = consumers.ListDeadLetters(
        pb.ListDeadLettersRequest(topic=topic, consumer="work"), metadata=md
    ).dead_letters
    assert (letter.offset, letter.deliveries, letter.last_error) == (1, 2, "failed 2")
    [second] = consumers.Fetch(pb.FetchRequest(topic=topic, consumer="work"), metadata=md).deliveries
    consumers.Ack(pb.AckRequest(topic=topic, consumer="work", ack_ids=[second.ack_id]), metadata=md)
    assert consumer_info(admin_client, topic, "work").ack_floor == 2  # past the dead letter: it is done
    redriven = consumers.Redrive(pb.RedriveRequest(topic=topic, consumer="work", all=True), metadata=md)
    assert list(redriven.offsets) == [1]
    assert consumer_info(admin_client, topic, "work").ack_floor == 0  # back below it until it is acked
    [again] = consumers.Fetch(pb.FetchRequest(topic=topic, consumer="work"), metadata=md).deliveries
    assert (again.event.offset, again.delivery_count) == (1, 1)
    consumers.Ack(pb.AckRequest(topic=topic, consumer="work", ack_ids=[again.ack_id]), metadata=md)
    assert consumer_info(admin_client, topic, "work").ack_floor == 2
