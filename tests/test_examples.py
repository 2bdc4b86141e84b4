"""The README's examples run as written against real processes."""

import os
import subprocess

import pytest

from eventrelay.auth import mint_token
from harness.processes import REPO, VENV_BIN

pytestmark = pytest.mark.e2e


def test_the_grpc_quickstart_runs(grpc_server, transactional_db):
    result = subprocess.run(
        [str(VENV_BIN / "python"), "examples/grpc_quickstart.py"],
        cwd=REPO,
        env={**os.environ, "ER_GRPC_ADDRESS": grpc_server.address, "ER_TOKEN": mint_token([], admin=True)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "published offset 1" in result.stdout
    assert "pulled [(1, {'email': 'thomas@example.com'})] next 2" in result.stdout
    assert "streamed 1 user_login" in result.stdout


def test_the_websocket_quickstart_runs(web_server, admin_client):
    from tests.grpc_client import unique_topic

    topic = unique_topic("wsdemo")
    admin_client.create_topic(topic)
    result = subprocess.run(
        [str(VENV_BIN / "python"), "examples/ws_quickstart.py", f"{topic}:123"],
        cwd=REPO,
        env={**os.environ, "ER_WS_URL": web_server.ws_url, "ER_TOKEN": mint_token([f"{topic}:123"])},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "'type': 'subscribed'" in result.stdout
    assert "published [{'eventId'" in result.stdout
    assert "event {'eventId'" in result.stdout


def test_the_webhook_receiver_example_verifies_a_real_delivery(transactional_db, settings, admin):
    from events.services import publish
    from harness.processes import CeleryWorker, free_port, log_of, start, stop, wait_until
    from tests.grpc_client import unique_topic
    from topics.services import create_topic
    from webhooks.services import create_destination

    settings.ER_WEBHOOK_ALLOW_PRIVATE = True
    topic = unique_topic("signed")
    create_topic(topic)
    port = free_port()
    destination = create_destination(name="example", url=f"http://127.0.0.1:{port}/", topic=topic)
    receiver = start(
        [str(VENV_BIN / "python"), "examples/webhook_receiver.py", str(port)],
        env={"ER_WEBHOOK_SECRET": destination.secret, "PYTHONUNBUFFERED": "1"},
        log_name="example_receiver",
    )
    worker = CeleryWorker(name="example_worker", concurrency=1)
    try:
        publish(admin, f"{topic}:42", [{"name": "order_paid", "data": {"total": 5}}], "http")
        wait_until(lambda: "verified" in log_of("example_receiver"), 60, "the example receiver to verify a delivery")
        assert f"verified {topic}:42 1 order_paid" in log_of("example_receiver")
    finally:
        worker.stop()
        stop(receiver)


def test_the_consumer_worker_example_processes_every_event_and_dead_letters_a_failing_one(
    grpc_server, admin_client, topics
):
    topic = topics("worker")
    admin_client.publish(topic, {"n": 1}, {"fail": True}, {"n": 3})
    result = subprocess.run(
        [str(VENV_BIN / "python"), "examples/consumer_worker.py", topic, "billing"],
        cwd=REPO,
        env={
            **os.environ,
            "ER_GRPC_ADDRESS": grpc_server.address,
            "ER_TOKEN": mint_token([topic], ttl_seconds=3600),
            "ER_EXIT_AFTER_IDLE_POLLS": "1",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["processed 1 1", "processed 3 1"]
    from eventrelay.v1 import eventrelay_pb2 as pb

    letters = admin_client.consumers.ListDeadLetters(
        pb.ListDeadLettersRequest(topic=topic, consumer="billing"), metadata=admin_client.metadata
    ).dead_letters
    assert [(letter.offset, letter.deliveries) for letter in letters] == [(2, 20)]
    assert letters[0].last_error == "event 2 asked to fail"
