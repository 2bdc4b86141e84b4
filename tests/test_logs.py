"""What the processes log for an operator (docs/operations.md "Logs"): with ER_LOG_FORMAT=json one JSON object per
line; a client's mistake is one INFO line without a traceback, a fault of ours one ERROR line with one traceback;
and the request id a client sees (X-Request-Id, x-request-id metadata, a WebSocket's handshake) is on the lines of
every process that did work for it, the Celery worker's included.
"""

import asyncio
import io
import json
import logging
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import requests
import websockets
from django.test import Client

from eventrelay.auth import mint_token
from eventrelay.logfilters import ClientErrorsAtInfo
from eventrelay.logs import JsonFormatter, RequestIdFilter, accepted_request_id, request_id_bound
from eventrelay.v1 import eventrelay_pb2 as pb
from harness import processes
from harness.processes import (
    COMMON_ENV,
    VENV_BIN,
    CeleryWorker,
    GrpcServer,
    WebServer,
    free_port,
    log_of,
    start,
    stop,
    wait_until,
)
from tests.grpc_client import Client as GrpcClient
from tests.grpc_client import unique_topic
from tests.planted_faults import PLANTED
from topics.services import create_topic
from webhooks.services import create_destination

WAIT = 60  # seconds; far longer than anything here takes, short enough to fail rather than hang
JSON_LOGS = {"ER_LOG_FORMAT": "json"}
TRACEBACK = "Traceback (most recent call last)"


def json_lines(log: str) -> list[dict[str, Any]]:
    """Every line of ``log`` as the JSON object it must be (a line that is not one fails the test here)."""
    return [json.loads(line) for line in log.splitlines() if line.strip()]


def lines_of(log: str, rid: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(log) if line.get("request_id") == rid]


def a_request_id() -> str:
    return f"test-{uuid.uuid4().hex}"


# --- In the test process: the id a client may choose, the formats --------------------------------------------------


@pytest.mark.parametrize("given", ["abc-123", "3f2a9c1e-7b4d-4e8a-9c1f-0a1b2c3d4e5f", "trace.id:01HZX_Y"])
def test_a_clients_own_request_id_is_kept(given):
    assert accepted_request_id(given) == given
    assert accepted_request_id(given.encode()) == given


@pytest.mark.parametrize("given", [None, "", "x" * 129, "two words", "forged\nERROR line", 'quote"d', "é"])
def test_a_missing_or_unsafe_request_id_is_replaced_by_a_new_one(given):
    made = accepted_request_id(given)
    assert made != given and len(made) == 32 and int(made, 16) >= 0


def test_a_json_line_is_one_object_with_its_traceback_as_one_string():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("tests.test_logs.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with request_id_bound("rid-1"):
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("it failed: %s", "badly", extra={"status_code": 500})
        logger.info("after the request")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True

    first, second = stream.getvalue().splitlines()
    failed = json.loads(first)
    assert {key: failed[key] for key in ("level", "logger", "message", "request_id", "status_code")} == {
        "level": "ERROR",
        "logger": "tests.test_logs.json",
        "message": "it failed: badly",
        "request_id": "rid-1",
        "status_code": 500,
    }
    assert failed["traceback"].startswith(TRACEBACK) and failed["traceback"].endswith("ValueError: boom")
    assert failed["time"].endswith("+00:00")
    assert json.loads(second)["request_id"] == "" and "traceback" not in json.loads(second)


def test_a_rest_response_carries_its_request_id_and_its_client_error_is_one_info_line(db):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(RequestIdFilter())
    handler.addFilter(ClientErrorsAtInfo())
    logging.getLogger().addHandler(handler)
    try:
        chosen = Client().get("/api/v1/topics", HTTP_X_REQUEST_ID="mine-1")
        made = Client().get("/api/v1/topics", HTTP_X_REQUEST_ID="not mine")
    finally:
        logging.getLogger().removeHandler(handler)

    assert chosen.status_code == made.status_code == 401
    assert chosen["X-Request-Id"] == "mine-1" and made["X-Request-Id"] not in ("", "not mine")
    for response in (chosen, made):
        [line] = [record for record in records if getattr(record, "request_id", "") == response["X-Request-Id"]]
        assert (line.name, line.levelno, line.exc_info) == ("django.request", logging.INFO, None)


def test_a_bad_host_header_is_one_info_line_without_its_traceback(db):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(ClientErrorsAtInfo())
    logging.getLogger().addHandler(handler)
    try:
        response = Client().get("/api/v1/topics", HTTP_HOST="evil.example")
    finally:
        logging.getLogger().removeHandler(handler)

    assert response.status_code == 400
    # Django logs it at ERROR with the exception's traceback: a client's mistake read like a bug of ours.
    [line] = records
    assert (line.name, line.levelno, line.exc_info) == ("django.security.DisallowedHost", logging.INFO, None)


def test_a_process_refuses_to_start_with_an_unknown_log_format():
    finished = subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", "check"],
        cwd=processes.REPO,
        env={**os.environ, "ER_LOG_FORMAT": "xml"},
        capture_output=True,
        text=True,
        timeout=WAIT,
    )

    assert finished.returncode != 0
    assert "ER_LOG_FORMAT must be plain or json, got 'xml'" in finished.stderr


# --- The web process -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def json_web(django_db_setup: None) -> Iterator[WebServer]:
    server = WebServer(env=JSON_LOGS, name="logs-json-web")
    yield server
    server.stop()


def ws_headers(rid: str) -> dict[str, str]:
    return {"x-request-id": rid}


def test_a_bad_token_a_404_and_an_invalid_frame_are_one_info_line_each_in_json(json_web, transactional_db):
    api = f"{json_web.base_url}/api/v1"
    admin = {"authorization": f"Bearer {mint_token([], admin=True)}"}
    bad_token, not_found, bad_handshake, bad_frame = (a_request_id() for _ in range(4))

    refused = requests.get(f"{api}/topics", headers={"authorization": "Bearer nope", "x-request-id": bad_token})
    missing = requests.get(f"{api}/topics/{unique_topic('missing')}", headers={**admin, "x-request-id": not_found})
    with pytest.raises(websockets.InvalidStatus):
        asyncio.run(
            websockets.connect(
                f"{json_web.ws_url}?token=nope", additional_headers=ws_headers(bad_handshake), open_timeout=WAIT
            ).__aenter__()
        )

    async def send_a_bad_frame() -> dict[str, Any]:
        url = f"{json_web.ws_url}?token={mint_token(['users'])}"
        async with websockets.connect(url, additional_headers=ws_headers(bad_frame)) as ws:
            await ws.send("{not json")
            return json.loads(await asyncio.wait_for(ws.recv(), WAIT))

    frame = asyncio.run(send_a_bad_frame())

    assert (refused.status_code, missing.status_code, frame["type"]) == (401, 404, "error")
    assert (refused.headers["x-request-id"], missing.headers["x-request-id"]) == (bad_token, not_found)
    # Each line is written before its answer is sent.
    log = json_web.log()
    for rid, logger, text in [
        (bad_token, "django.request", "Unauthorized: /api/v1/topics"),
        (not_found, "django.request", "Not Found: /api/v1/topics/"),
        (bad_handshake, "ws_api.consumers", "refused a WebSocket handshake"),
        (bad_frame, "ws_api.consumers", "WebSocket frame refused: invalid: frame is not valid JSON"),
    ]:
        [line] = lines_of(log, rid)
        assert (line["level"], line["logger"]) == ("INFO", logger), line
        assert line["message"].startswith(text) and "traceback" not in line, line
    assert TRACEBACK not in log
    assert {line["level"] for line in json_lines(log)} <= {"DEBUG", "INFO"}, log
    assert not [line for line in json_lines(log) if line["logger"] == "eventrelay.access"]  # off unless asked for


def test_every_line_the_web_process_writes_is_a_json_object_its_access_log_too(transactional_db):
    server = WebServer(env={**JSON_LOGS, "ER_ACCESS_LOG": "1"}, name="logs-json-web-lines")
    try:
        requests.get(f"{server.base_url}/api/v1/no-such-path", timeout=WAIT)
    finally:
        server.stop()  # its shutdown lines too

    lines = json_lines(server.log())  # fails on the first line that is not JSON
    assert any("Listening on TCP address" in line["message"] for line in lines), lines
    [access] = [line for line in lines if '"GET /api/v1/no-such-path" 404' in line["message"]]
    assert (access["logger"], access["level"]) == ("eventrelay.access", "INFO")
    assert len(lines) >= 3
    for line in lines:
        assert {"time", "level", "logger", "message", "request_id"} <= set(line), line


# --- A fault of ours ---------------------------------------------------------------------------------------------


class PlantedFaultServers:
    """The web and gRPC processes (JSON logs) with tests/planted_faults.py's bug: listing topics raises."""

    def __init__(self) -> None:
        python = str(VENV_BIN / "python")
        env = {"DATABASE_URL": processes.test_database_url(), **COMMON_ENV, **JSON_LOGS}
        web_port, self.grpc_port = free_port(), free_port()
        self.base_url = f"http://127.0.0.1:{web_port}"
        self.web = start(
            [
                python,
                "-m",
                "tests.planted_faults",
                "web",
                *("-b", "127.0.0.1", "-p", str(web_port)),
                "eventrelay.asgi:application",
            ],
            env=env,
            log_name="logs-planted-web",
        )
        self.grpc = start(
            [python, "-m", "tests.planted_faults", "grpc", "--port", str(self.grpc_port)],
            env=env,
            log_name="logs-planted-grpc",
        )
        wait_until(lambda: requests.get(f"{self.base_url}/healthz", timeout=1).ok, WAIT, "the planted web process")
        wait_until(lambda: "gRPC server listening" in log_of("logs-planted-grpc"), WAIT, "the planted gRPC process")

    def close(self) -> None:
        stop(self.web)
        stop(self.grpc)


@pytest.fixture(scope="module")
def planted(django_db_setup: None) -> Iterator[PlantedFaultServers]:
    servers = PlantedFaultServers()
    yield servers
    servers.close()


def test_a_fault_of_ours_over_rest_is_one_error_line_with_one_traceback(planted, transactional_db):
    rid = a_request_id()
    admin = {"authorization": f"Bearer {mint_token([], admin=True)}", "x-request-id": rid}

    response = requests.get(f"{planted.base_url}/api/v1/topics", headers=admin, timeout=WAIT)

    assert response.status_code == 500 and response.headers["x-request-id"] == rid
    [line] = lines_of(log_of("logs-planted-web"), rid)
    assert (line["level"], line["logger"], line["message"]) == (
        "ERROR",
        "django.request",
        "Internal Server Error: /api/v1/topics",
    )
    assert line["traceback"].count(TRACEBACK) == 1 and f"RuntimeError: {PLANTED}" in line["traceback"]
    assert log_of("logs-planted-web").count(PLANTED) == 1


def test_a_fault_of_ours_over_grpc_is_one_error_line_with_one_traceback(planted, transactional_db):
    rid = a_request_id()
    client = GrpcClient(f"127.0.0.1:{planted.grpc_port}", mint_token([], admin=True))
    try:
        with pytest.raises(grpc.RpcError) as failure:
            client.topics.ListTopics(
                pb.ListTopicsRequest(), metadata=[*client.metadata, ("x-request-id", rid)], timeout=WAIT
            )
    finally:
        client.close()

    assert failure.value.code() == grpc.StatusCode.UNKNOWN
    # The answer names the request id, never the fault: that is in the log, for us (docs/api.md "Errors").
    assert PLANTED not in (failure.value.details() or "") and rid in (failure.value.details() or "")
    assert ("x-request-id", rid) in tuple(failure.value.trailing_metadata() or ())
    log = log_of("logs-planted-grpc")
    [line] = lines_of(log, rid)
    assert line["level"] == "ERROR", line
    assert line["traceback"].count(TRACEBACK) == 1 and f"RuntimeError: {PLANTED}" in line["traceback"]
    assert log.count(PLANTED) == 1


# --- The gRPC process --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def json_grpc(django_db_setup: None) -> Iterator[GrpcServer]:
    server = GrpcServer(env=JSON_LOGS, name="logs-json-grpc")
    yield server
    server.stop()


def test_grpc_client_errors_are_one_info_line_each_and_every_line_is_json(json_grpc, transactional_db):
    bad_token, bad_name, missing = (a_request_id() for _ in range(3))
    refused = GrpcClient(json_grpc.address, "nope")
    admin = GrpcClient(json_grpc.address, mint_token([], admin=True))
    answers = {}
    try:
        for rid, client, call in [
            (bad_token, refused, lambda c, md: c.topics.ListTopics(pb.ListTopicsRequest(), metadata=md, timeout=WAIT)),
            (bad_name, admin, lambda c, md: c.topics.CreateTopic(pb.CreateTopicRequest(name="Bad Name"), metadata=md)),
            (
                missing,
                admin,
                lambda c, md: next(c.events.StreamEvents(pb.StreamEventsRequest(topic="nope_x"), metadata=md)),
            ),
        ]:
            with pytest.raises(grpc.RpcError) as failure:
                call(client, [*client.metadata, ("x-request-id", rid)])
            answers[rid] = failure.value
    finally:
        refused.close()
        admin.close()

    assert [answers[rid].code() for rid in (bad_token, bad_name, missing)] == [
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
    ]
    # A unary call echoes the id in its trailing metadata, a stream in its initial metadata.
    assert ("x-request-id", bad_token) in tuple(answers[bad_token].trailing_metadata())
    assert ("x-request-id", missing) in tuple(answers[missing].initial_metadata())
    log = json_grpc.log()
    for rid, status in [(bad_token, "UNAUTHENTICATED"), (bad_name, "INVALID_ARGUMENT"), (missing, "NOT_FOUND")]:
        [line] = lines_of(log, rid)
        assert (line["level"], line["logger"]) == ("INFO", "grpc_api.handlers"), line
        assert line["message"].startswith(f"answered {status} to 127.0.0.1: ") and "traceback" not in line, line
    assert TRACEBACK not in log


# --- Request ids into the Celery worker ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def json_worker(django_db_setup: None) -> Iterator[CeleryWorker]:
    worker = CeleryWorker(env=JSON_LOGS, name="logs-json-worker", concurrency=8)
    yield worker
    worker.stop()


def worker_lines_of(rid: str) -> list[dict[str, Any]]:
    return lines_of(log_of("logs-json-worker"), rid)


def a_topic_with_a_webhook(receiver: Any) -> str:
    topic = unique_topic("logs")
    create_topic(topic)
    create_destination(name=topic, url=receiver.url, topic=f"{topic}:1")
    return topic


def wait_for_the_deliveries_under(rid: str, receiver: Any, topic: str) -> list[dict[str, Any]]:
    wait_until(lambda: receiver.offsets(f"{topic}:1") == [1], WAIT, "the webhook delivery")
    delivered = "Task webhooks.tasks.deliver["

    wait_until(
        lambda: any(delivered in line["message"] and "succeeded" in line["message"] for line in worker_lines_of(rid)),
        WAIT,
        f"the worker's line for the delivery task under request id {rid}",
    )
    return worker_lines_of(rid)


def test_a_rest_publish_wakes_a_worker_whose_lines_carry_the_request_id_the_web_process_returned(
    json_web, json_worker, receiver, allow_private, transactional_db
):
    topic = a_topic_with_a_webhook(receiver)

    response = requests.post(
        f"{json_web.base_url}/api/v1/topics/{topic}:1/events",
        json={"name": "n", "data": 1},
        headers={"authorization": f"Bearer {mint_token([], admin=True)}"},
        timeout=WAIT,
    )

    assert response.status_code == 201, response.text
    rid = response.headers["x-request-id"]

    lines = wait_for_the_deliveries_under(rid, receiver, topic)
    # The wake-up the publish queued and the delivery the wake-up queued, both under the request's id.
    assert any("Task webhooks.tasks.wake_topic[" in line["message"] for line in lines), lines
    assert all(line["level"] == "INFO" for line in lines), lines
    # Every line the worker logged is JSON (Celery prints nothing of its own once it runs: no banner with JSON).
    worker_log = log_of("logs-json-worker")
    assert "[tasks]" not in worker_log
    assert all({"time", "level", "logger", "message", "request_id"} <= set(line) for line in json_lines(worker_log))


def test_a_grpc_publish_wakes_a_worker_whose_lines_carry_the_callers_request_id(
    json_grpc, json_worker, receiver, allow_private, transactional_db
):
    topic = a_topic_with_a_webhook(receiver)
    rid = a_request_id()
    client = GrpcClient(json_grpc.address, mint_token([], admin=True))
    try:
        event = pb.NewEvent(name="n", data="1")
        _, call = client.events.PublishEvents.with_call(
            pb.PublishEventsRequest(topic=f"{topic}:1", events=[event]),
            metadata=[*client.metadata, ("x-request-id", rid)],
            timeout=WAIT,
        )
    finally:
        client.close()
    assert ("x-request-id", rid) in tuple(call.trailing_metadata())

    lines = wait_for_the_deliveries_under(rid, receiver, topic)
    assert any("Task webhooks.tasks.wake_topic[" in line["message"] for line in lines), lines
