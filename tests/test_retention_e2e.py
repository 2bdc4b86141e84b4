"""Retention end to end: beat schedules the sweep, a real worker runs it, and every reader continues from the
first offset kept (gRPC pull and stream, WebSocket); a sweep killed mid-way (kill -9) leaves nothing half-done."""

import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from django.db import connection

from eventrelay.auth import mint_token
from eventrelay.v1 import eventrelay_pb2 as pb
from events.services import publish
from harness import processes
from harness.processes import REPO, CeleryBeat, CeleryWorker, wait_until
from tests.grpc_client import Client, unique_topic
from tests.webhook_processes import broker_fixture, start_fixture  # noqa: F401 (fixtures)
from tests.ws_client import ws_connect
from topics.models import RetentionState
from topics.retention import sweep_topic
from topics.services import create_topic, delete_topic, get_topic
from topics.tables import quoted_table

pytestmark = pytest.mark.e2e


def first_offset_of(client: Client, name: str) -> int:
    return next(topic.first_offset for topic in client.list_topics() if topic.name == name)


async def test_beat_sweeps_and_every_reader_continues_from_the_first_offset_kept(
    admin_client: Client, web_server: Any, broker: Any, start: Any
) -> None:
    name = unique_topic("kept")
    topic = admin_client.topics.CreateTopic(
        pb.CreateTopicRequest(name=name, retention_max_events=10), metadata=admin_client.metadata
    )
    assert (topic.first_offset, topic.last_offset, topic.retention_max_events) == (1, 0, 10)
    try:
        admin_client.publish(name, *range(50))
        start(CeleryWorker, name="retention_worker")
        start(CeleryBeat, env={"ER_RETENTION_SWEEP_S": "1"}, name="retention_beat")

        wait_until(lambda: first_offset_of(admin_client, name) == 41, 60, "beat's sweep to keep the newest 10")

        assert [event.offset for event in admin_client.pull(name, 1).events] == list(range(41, 51))
        stream = admin_client.stream(name, from_offset=1, timeout=30)
        try:
            assert next(iter(stream)).offset == 41
        finally:
            stream.cancel()
        async with ws_connect(web_server.ws_url, mint_token([], admin=True)) as ws:
            await ws.subscribe(name, from_offset=1)
            assert (await ws.next_event(name))["event"]["offset"] == 41
        # Changed later: the next sweep applies it.
        changed = admin_client.topics.UpdateTopic(
            pb.UpdateTopicRequest(name=name, retention_max_events=3), metadata=admin_client.metadata
        )
        assert changed.retention_max_events == 3
        wait_until(lambda: first_offset_of(admin_client, name) == 48, 60, "the sweep to keep the newest 3")
    finally:
        admin_client.delete_topic(name)


def test_a_sweep_killed_mid_way_leaves_a_contiguous_topic_that_publishes_dedupes_and_sweeps_on(
    transactional_db: None, admin: Any
) -> None:
    name = unique_topic("crash")
    create_topic(name, {"retentionMaxEvents": 1000})
    try:
        for start in range(0, 60_000, 1000):
            publish(admin, name, [{"name": "e", "data": n} for n in range(start, start + 1000)], "http")
        kept_event = publish(admin, name, [{"name": "kept", "data": {}}], "http")[0]
        sweeper = subprocess.Popen(
            [sys.executable, "manage.py", "sweep_retention", name, "--batch", "100"],
            cwd=REPO,
            env={**os.environ, "DATABASE_URL": processes.test_database_url()},
        )
        # Killed once some batches have committed, before the last.
        wait_until(lambda: _first(name) > 5_000 or sweeper.poll() is not None, 60, "the sweep to get going")
        sweeper.send_signal(signal.SIGKILL)
        sweeper.wait(30)
        first = _first(name)
        assert 1 < first < 59_002, "the sweep was not killed mid-way"

        # What is left is exactly the run of offsets from the recorded first offset: no batch half-done.
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT min("offset"), max("offset"), count(*) FROM {quoted_table(name)}')
            assert cursor.fetchone() == (first, 60_001, 60_001 - first + 1)
        # Publishing goes on from the counter, and a retained eventId is still deduplicated.
        again = publish(admin, name, [{"eventId": str(kept_event.event_id), "name": "kept", "data": {}}], "http")
        assert again[0].offset == kept_event.offset
        assert publish(admin, name, [{"name": "after", "data": {}}], "http")[0].offset == 60_002
        # The next sweep finishes the job.
        sweep_topic(name)
        assert get_topic(name).first_offset == 59_003
        assert RetentionState.objects.get(topic__name=name).deleted_total == 59_002
    finally:
        delete_topic(name)


def _first(name: str) -> int:
    state = RetentionState.objects.filter(topic__name=name).values_list("first_offset", flat=True).first()
    return state or 1
