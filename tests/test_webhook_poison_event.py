"""A webhook stream on an event nobody can parse back is not stuck (issue 17 C, the webhook side).

Before ``ER_MAX_JSON_DEPTH`` a producer could store ``data`` nested deeper than Python's parser reads (orjson
accepts it). Delivery used to parse the stored payload to build the body: RecursionError on every try, no attempt
row, never undeliverable, and every later event of the stream waited for ever. Now the body splices the stored text,
and anything that still fails for one event is that event's failed attempt, then undeliverable, and the stream
moves on. A real worker (its own process, Python's default recursion limit) delivers; the poison event is put
straight into the topic table by SQL, as old data could be.
"""

import sys

import pytest
from django.db import connection

from events.services import publish, read_stream_events
from harness.processes import CeleryWorker, wait_until
from tests.grpc_client import unique_topic
from tests.webhook_processes import FAST_RECOVERY, broker_fixture, start_fixture  # noqa: F401 (fixtures)
from topics.tables import events_table_name
from webhooks import delivery, signing
from webhooks.models import DeliveryAttempt, DeliveryStream, UndeliverableEvent
from webhooks.services import create_destination

pytestmark = pytest.mark.e2e

DEPTH = 1000


@pytest.fixture
def receiver_reads_deep_json():
    """The test's receiver (Python's json, in this process) gets the headroom to read the poison event back."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * DEPTH))
    yield
    sys.setrecursionlimit(limit)


def test_a_stream_delivers_an_event_nested_too_deep_to_parse_and_the_events_after_it(
    transactional_db, make_topic, receiver, allow_private, admin, broker, start, receiver_reads_deep_json
):
    topic = unique_topic("poison")
    make_topic(topic)
    offsets = [
        event.offset for event in publish(admin, topic, [{"name": "n", "data": {"n": n}} for n in range(5)], "grpc")
    ]
    poison = offsets[1]
    deep = '{"a":' * DEPTH + "1" + "}" * DEPTH
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE {connection.ops.quote_name(events_table_name(topic))} SET data = %s::jsonb WHERE "offset" = %s',
            [deep, poison],
        )
    destination = create_destination(name="poison", url=receiver.url, topic=topic, start_offset=0, max_attempts=2)

    start(CeleryWorker, env=FAST_RECOVERY, name="hooks_poison_worker")

    wait_until(lambda: offsets[-1] in receiver.offsets(topic, answered_ok=True), 60, "the events after the poison one")
    delivered = receiver.offsets(topic, answered_ok=True)
    assert delivered == offsets
    received = receiver.of(topic)[1]
    assert received.body.count(b'"a":') == DEPTH
    stream = DeliveryStream.objects.get(destination=destination)
    assert stream.last_offset == offsets[-1]
    attempts = DeliveryAttempt.objects.filter(stream=stream, offset=poison)
    assert list(attempts.values_list("status", flat=True)) == [DeliveryAttempt.Status.SUCCEEDED]
    assert not UndeliverableEvent.objects.exists()


def test_an_event_whose_body_cannot_be_built_is_a_failed_attempt_then_undeliverable_and_the_stream_moves_on(
    transactional_db, make_topic, receiver, allow_private, admin, monkeypatch
):
    """Anything that fails for one event (here: signing raises) is recorded on that event, never a loop."""
    topic = unique_topic("unsendable")
    make_topic(topic)
    destination = create_destination(name="unsendable", url=receiver.url, topic=f"{topic}:1", max_attempts=2)
    offsets = [
        e.offset for e in publish(admin, f"{topic}:1", [{"name": "n", "data": {"n": n}} for n in range(3)], "grpc")
    ]
    headers = signing.webhook_headers

    def fail_for_the_second(secret, event_id, *args, **kwargs):
        if event_id == str(second_id):
            raise RecursionError("maximum recursion depth exceeded")
        return headers(secret, event_id, *args, **kwargs)

    second_id = read_stream_events(topic, "1", after=offsets[0], limit=1)[0].event_id
    monkeypatch.setattr(signing, "webhook_headers", fail_for_the_second)
    monkeypatch.setattr(delivery, "backoff_seconds", lambda *args: 0)
    stream = DeliveryStream.objects.get(destination=destination)

    outcomes = [delivery.deliver_stream(stream.pk) for _ in range(3)]

    assert "retrying" in outcomes
    assert receiver.offsets(f"{topic}:1") == [offsets[0], offsets[2]]
    failed = DeliveryAttempt.objects.filter(stream=stream, offset=offsets[1])
    assert list(failed.values_list("status", flat=True)) == [DeliveryAttempt.Status.FAILED] * 2
    assert all("RecursionError" in error for error in failed.values_list("error", flat=True))
    undeliverable = UndeliverableEvent.objects.get(stream=stream)
    assert undeliverable.offset == offsets[1]
    assert "RecursionError" in undeliverable.last_error
    stream.refresh_from_db()
    assert stream.last_offset == offsets[2]
