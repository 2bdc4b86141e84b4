"""The README's examples run as written against real processes."""

import os
import subprocess

import pytest

from eventrelay.auth import mint_token
from tests.processes import REPO, VENV_BIN

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
