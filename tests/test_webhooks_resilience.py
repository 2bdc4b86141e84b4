"""Webhook delivery survives crashes and lost messages (docs/webhooks.md: at-least-once, order per
stream). Real Celery workers and beat, the real Redis broker, a local HTTP receiver.

What at-least-once with per-stream order allows after a crash: a stream has one lease holder, which
sends one event at a time and commits the cursor after each acknowledgement. So a worker that dies
can leave exactly one event unaccounted for (sent, maybe received, cursor not moved): the next
worker starts from the cursor, i.e. with that event. The receiver therefore sees the published order
with at most one event repeated, right where one worker stopped and the next took over.
"""

import json
import os
import re
import signal
import time

import pytest
import redis
from django.conf import settings

from events.services import publish
from harness.processes import TEST_QUEUE, CeleryBeat, CeleryWorker, log_of, wait_until
from tests.grpc_client import unique_topic
from tests.webhook_processes import start_fixture  # noqa: F401  (the ``start`` fixture)
from topics.models import Topic
from webhooks import delivery, wakeups
from webhooks.models import DeliveryAttempt, DeliveryStream
from webhooks.services import create_destination

pytestmark = pytest.mark.e2e


# Leases expire 4 s after the last request began, beat sweeps every second, and a queued wake-up
# nobody claimed for 2 s counts as lost: recovery takes seconds, not the production minutes.
FAST_RECOVERY = {
    "ER_WEBHOOK_LEASE_MARGIN_S": "2",
    "ER_WEBHOOK_TIMEOUT_S": "2",
    "ER_WEBHOOK_SWEEP_S": "1",
    "ER_WEBHOOK_REQUEUE_S": "2",
}


@pytest.fixture(autouse=True)
def broker():
    """The Celery broker, with this run's queue empty before and after each test: wake-ups a test
    left unprocessed must not wait for the next test's workers, nor stay in Redis."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    purge(client)
    yield client
    purge(client)
    client.close()


def answer_slowly(event, tries):
    """200, after a few milliseconds: long enough for a stream of 1,000 events to take seconds."""
    time.sleep(0.007)
    return 200


def kill_with_its_children(worker: CeleryWorker) -> None:
    """``kill -9`` the worker's process group: the celery parent and its prefork children."""
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(20)


def purge(broker: redis.Redis) -> None:
    """Lose every message waiting in this run's Celery queue (kombu keeps it as a Redis list), including the
    wake-ups this process submitted and its background sender has not sent yet."""
    wakeups.flush()
    broker.delete(TEST_QUEUE)


def queued_tasks(broker: redis.Redis) -> list[tuple[str, str]]:
    """(task name, arguments) of the messages waiting in this run's Celery queue."""
    wakeups.flush()
    messages = [json.loads(raw) for raw in broker.lrange(TEST_QUEUE, 0, -1)]
    return [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages]


def publish_in_batches(admin, topic: str, count: int, batch: int, after_each=None) -> list[int]:
    offsets = []
    for first in range(0, count, batch):
        events = [{"name": "tick", "data": {"n": n}} for n in range(first, min(first + batch, count))]
        offsets += [event.offset for event in publish(admin, topic, events, "grpc")]
        if after_each:
            after_each()
    return offsets


def assert_handed_over_with_at_most_the_event_in_flight_resent(received, published, sent_by_first_worker):
    """The first worker sent a prefix of the published order; the next one resumed at the event that
    was in flight when the first stopped: either re-sending it, or with the one after it."""
    assert 0 < sent_by_first_worker < len(published)
    assert received[:sent_by_first_worker] == published[:sent_by_first_worker]
    resent = published[sent_by_first_worker - 1 :]
    not_resent = published[sent_by_first_worker:]
    assert received[sent_by_first_worker:] in (resent, not_resent), (
        f"after {sent_by_first_worker} events the next worker sent "
        f"{received[sent_by_first_worker : sent_by_first_worker + 5]}..., expected {resent[:5]}..."
    )


def test_a_worker_killed_mid_stream_loses_nothing_and_resends_at_most_the_event_in_flight(
    transactional_db, make_topic, receiver, allow_private, admin, start
):
    topic = unique_topic("crash")
    make_topic(topic)
    stream_topic = f"{topic}:1"
    destination = create_destination(name="crash", url=receiver.url, topic=stream_topic)
    receiver.answer = answer_slowly
    start(CeleryBeat, env=FAST_RECOVERY, name="crash_beat")
    worker_a = start(CeleryWorker, env=FAST_RECOVERY, name="crash_worker_a")

    published = publish_in_batches(admin, stream_topic, 1000, batch=100)
    wait_until(lambda: len(receiver.offsets(stream_topic)) >= 200, 120, "200 deliveries before the crash")
    kill_with_its_children(worker_a)
    # A request the dead worker made may still be in the receiver's hands for a few milliseconds.
    time.sleep(0.5)
    sent_by_a = len(receiver.offsets(stream_topic))
    start(CeleryWorker, env=FAST_RECOVERY, name="crash_worker_b")

    wait_until(lambda: set(receiver.offsets(stream_topic)) >= set(published), 180, "all 1,000 offsets")
    stream = DeliveryStream.objects.get(destination=destination)
    # The worker releases the lease when it finds nothing more to send, just after the last cursor move.
    wait_until(
        lambda: DeliveryStream.objects.filter(pk=stream.pk, last_offset=published[-1], lease_owner="").exists(),
        30,
        "the cursor at the last offset, the lease released",
    )

    received = receiver.offsets(stream_topic)
    assert set(received) == set(published)
    assert_handed_over_with_at_most_the_event_in_flight_resent(received, published, sent_by_a)
    stream.refresh_from_db()
    assert stream.delivered_count == 1000
    attempts = DeliveryAttempt.objects.filter(stream=stream)
    assert set(attempts.filter(status="succeeded").values_list("offset", flat=True)) == set(published)
    # Only the attempt the dead worker had begun can stay unfinished, for the event in flight.
    in_flight = received[sent_by_a]
    assert set(attempts.filter(status="pending").values_list("offset", flat=True)) <= {in_flight}
    assert not attempts.filter(status="failed").exists()


def test_a_worker_stopped_mid_stream_with_its_queue_purged_loses_nothing(
    transactional_db, make_topic, receiver, allow_private, admin, broker, start
):
    topic = unique_topic("lost")
    make_topic(topic)
    stream_topic = f"{topic}:1"
    destination = create_destination(name="lost", url=receiver.url, topic=stream_topic)
    receiver.answer = answer_slowly
    start(CeleryBeat, env=FAST_RECOVERY, name="lost_beat")
    worker_a = start(CeleryWorker, env=FAST_RECOVERY, name="lost_worker_a")

    # While worker A delivers, every wake-up it has not yet taken is lost.
    published = publish_in_batches(admin, stream_topic, 150, batch=10, after_each=lambda: purge(broker))
    wait_until(lambda: len(receiver.offsets(stream_topic)) >= 50, 120, "50 deliveries")
    # stop() sends SIGTERM to the whole process group: the pool child delivering dies at once (Celery
    # resets SIGTERM in its children), the parent shuts down.
    worker_a.stop()
    purge(broker)
    # A request the stopped worker made may still be in the receiver's hands for a few milliseconds.
    time.sleep(0.5)
    sent_by_a = len(receiver.offsets(stream_topic))
    # With no worker running, the wake-ups of the second half wait in the queue, and are lost too.
    published += publish_in_batches(admin, stream_topic, 150, batch=10)
    assert any(
        name == "webhooks.tasks.wake_topic" and args.startswith(repr((topic,))[:-2])
        for name, args in queued_tasks(broker)
    )
    purge(broker)
    start(CeleryWorker, env=FAST_RECOVERY, name="lost_worker_b")

    wait_until(lambda: set(receiver.offsets(stream_topic)) >= set(published), 120, "all 300 offsets")
    received = receiver.offsets(stream_topic)
    assert set(received) == set(published)
    assert_handed_over_with_at_most_the_event_in_flight_resent(received, published, sent_by_a)
    wait_until(lambda: DeliveryStream.objects.get(destination=destination).delivered_count == 300, 30, "the cursor")


def test_the_sweep_alone_delivers_a_replayed_backlog_whose_wake_up_was_lost(
    transactional_db, make_topic, receiver, allow_private, admin, broker, start
):
    topic = unique_topic("backlog")
    make_topic(topic)
    published = {topic_id: publish_in_batches(admin, f"{topic}:{topic_id}", 100, batch=25) for topic_id in ("a", "b")}
    destination = create_destination(name="backlog", url=receiver.url, topic=topic, start_offset=0)
    # The destination's only wake-up is queued (no worker runs yet); lose it.
    assert ("webhooks.tasks.wake_topic", repr((topic, None))) in queued_tasks(broker)
    purge(broker)
    assert not DeliveryStream.objects.filter(destination=destination).exists()

    start(CeleryWorker, env=FAST_RECOVERY, name="backlog_worker")
    start(CeleryBeat, env=FAST_RECOVERY, name="backlog_beat")

    wait_until(lambda: all(len(receiver.offsets(f"{topic}:{tid}")) >= 100 for tid in published), 120, "both backlogs")
    for topic_id, offsets in published.items():
        assert receiver.offsets(f"{topic}:{topic_id}") == offsets
    streams = DeliveryStream.objects.filter(destination=destination)
    assert sorted(streams.values_list("topic_id", flat=True)) == ["a", "b"]
    assert re.search(r"Task webhooks\.tasks\.sweep\[[^\]]+\] succeeded in [\d.]+s: [12]\b", log_of("backlog_worker"))


def test_a_task_that_read_its_stream_before_another_task_delivered_it_sends_nothing_again(
    transactional_db, make_topic, receiver, allow_private, admin, monkeypatch
):
    """Two deliver tasks of one stream, in the order two worker processes can run them: the second
    reads the stream, the first delivers the backlog and releases the lease, the second claims it."""
    topic = unique_topic("stale")
    make_topic(topic)
    destination = create_destination(name="stale", url=receiver.url, topic=f"{topic}:1")
    [event] = publish(admin, f"{topic}:1", [{"name": "tick", "data": {}}], "grpc")
    # Another topic id moves the topic head past the stream's last event.
    publish(admin, f"{topic}:2", [{"name": "tick", "data": {}}], "grpc")
    stream = DeliveryStream.objects.get(destination=destination)
    claim = delivery.claim
    outcomes = []

    def claim_once_the_other_task_is_done(stream_id, owner, lease):
        monkeypatch.setattr(delivery, "claim", claim)
        outcomes.append(delivery.deliver_stream(stream_id))
        return claim(stream_id, owner, lease)

    monkeypatch.setattr(delivery, "claim", claim_once_the_other_task_is_done)
    outcomes.append(delivery.deliver_stream(stream.pk))

    assert outcomes == ["drained", "drained"]
    assert receiver.offsets(f"{topic}:1") == [event.offset]
    stream.refresh_from_db()
    assert stream.delivered_count == 1
    assert stream.last_offset == Topic.objects.get(name=topic).last_offset


def test_a_task_queued_while_another_holds_the_lease_does_not_leave_the_stream_marked_queued(
    transactional_db, make_topic, receiver, allow_private, admin, monkeypatch
):
    """The order two workers ran three tasks of one stream in a CI run: task A claims the stream; the previous
    holder's re-check after its release ("an event came after my cursor") queues task B; B finds the lease taken
    and ends; A drains and releases. The next publish's wake-up must then queue the stream: a "queued" mark left
    by B's enqueue made every later wake-up skip it, and the stream waited for the sweep."""
    topic = unique_topic("marked")
    make_topic(topic)
    destination = create_destination(name="marked", url=receiver.url, topic=f"{topic}:1")
    [first] = publish(admin, f"{topic}:1", [{"name": "tick", "data": {}}], "grpc")
    stream = DeliveryStream.objects.get(destination=destination)
    claim = delivery.claim
    outcomes = []

    def claim_then_the_late_recheck_queues_another_task(stream_id, owner, lease):
        monkeypatch.setattr(delivery, "claim", claim)
        claimed = claim(stream_id, owner, lease)
        delivery.enqueue([stream_id])  # the previous holder's re-check, just after this claim
        outcomes.append(delivery.deliver_stream(stream_id))  # the task it queued, while this one holds the lease
        return claimed

    monkeypatch.setattr(delivery, "claim", claim_then_the_late_recheck_queues_another_task)
    outcomes.append(delivery.deliver_stream(stream.pk))
    assert outcomes == ["not claimed", "drained"]
    assert receiver.offsets(f"{topic}:1") == [first.offset]

    [second] = publish(admin, f"{topic}:1", [{"name": "tick", "data": {}}], "grpc")
    assert delivery.wake_topic(topic, ["1"]) == 1, "the next publish's wake-up queued the stream"
    assert delivery.deliver_stream(stream.pk) == "drained"
    assert receiver.offsets(f"{topic}:1") == [first.offset, second.offset]


# The stale read above happens here in about half the runs (a task must read a stream in the few
# milliseconds between another task's last cursor move and its release), so not strict: remove the
# mark once the strict test above passes.
def test_two_workers_deliver_64_interleaved_streams_each_complete_and_in_order(
    transactional_db, make_topic, receiver, allow_private, admin, start
):
    topic = unique_topic("fanout")
    make_topic(topic)
    destination = create_destination(name="fanout", url=receiver.url, topic=topic)
    workers = [start(CeleryWorker, name=f"fanout_worker_{n}", concurrency=2) for n in range(2)]

    published: dict[str, list[int]] = {str(topic_id): [] for topic_id in range(64)}
    for n in range(20):
        for topic_id, offsets in published.items():
            [event] = publish(admin, f"{topic}:{topic_id}", [{"name": "tick", "data": {"n": n}}], "grpc")
            offsets.append(event.offset)

    def all_delivered() -> bool:
        return all(set(receiver.offsets(f"{topic}:{tid}")) >= set(offsets) for tid, offsets in published.items())

    wait_until(all_delivered, 180, "1,280 deliveries")
    for topic_id, offsets in published.items():
        assert receiver.offsets(f"{topic}:{topic_id}") == offsets, f"stream {topic}:{topic_id}"
    assert len(receiver.requests) == 64 * 20
    streams = DeliveryStream.objects.filter(destination=destination)
    assert sorted(streams.values_list("topic_id", flat=True)) == sorted(published)
    wait_until(lambda: all(s.delivered_count == 20 for s in streams.all()), 30, "every stream's cursor")
    for worker in workers:
        assert re.search(r"Task webhooks\.tasks\.deliver\[[^\]]+\] succeeded", log_of(worker.name)), worker.name
