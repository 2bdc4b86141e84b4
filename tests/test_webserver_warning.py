"""WebSocket slow-consumer protection is never off without saying so (docs/architecture.md, "Why the web server is
what it is").

The protection needs the ``eventrelay.transport_backlog`` probe that only ``python -m eventrelay.webserver`` (the
Procfile's ``web``) puts into a WebSocket scope. Served by anything else (plain ``daphne`` here), the consumer logs
one warning per process naming the command to use. And the probe reads private Twisted and daphne fields: when an
upgrade removes one, the web server refuses to start instead of serving without the protection.
"""

import subprocess
from collections.abc import Iterator

import pytest
import requests

from eventrelay.auth import mint_token
from harness.processes import (
    COMMON_ENV,
    REPO,
    VENV_BIN,
    WebServer,
    free_port,
    log_of,
    start,
    stop,
    wait_until,
)
from harness.processes import test_database_url as database_url_of_the_tests
from tests.ws_client import ws_connect

pytestmark = pytest.mark.e2e

WARNING = "WebSocket slow-consumer protection is off in this process"
ADVICE = "python -m eventrelay.webserver"


class PlainDaphne:
    """The ASGI application served by the ``daphne`` command itself, which adds no backlog probe."""

    def __init__(self, name: str = "plain_daphne") -> None:
        self.name = name
        self.port = free_port()
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws/events"
        self.process = start(
            [str(VENV_BIN / "daphne"), "-b", "127.0.0.1", "-p", str(self.port), "eventrelay.asgi:application"],
            env={"DATABASE_URL": database_url_of_the_tests(), **COMMON_ENV},
            log_name=name,
        )
        wait_until(self._answers, 60, f"{name} to answer /healthz")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
        return requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200

    def log(self) -> str:
        return log_of(self.name)

    def stop(self) -> None:
        stop(self.process)


@pytest.fixture
def plain_daphne(django_db_setup: None) -> Iterator[PlainDaphne]:
    server = PlainDaphne()
    yield server
    server.stop()


async def answered_frame(ws_url: str) -> dict:
    """Open a connection and get one reply: the consumer has read the probe (every reply reads it) by then."""
    async with ws_connect(ws_url, mint_token([], admin=True)) as client:
        return await client.request({"type": "no_such_frame"})


async def test_a_websocket_served_by_plain_daphne_logs_that_the_protection_is_off_once_per_process(plain_daphne):
    replies = [await answered_frame(plain_daphne.ws_url) for _ in range(3)]

    assert [reply["type"] for reply in replies] == ["error"] * 3, replies
    # Logged before the first reply was sent, and not again for the later connections.
    log = plain_daphne.log()
    assert log.count(WARNING) == 1, log
    assert ADVICE in log


async def test_the_procfiles_web_server_gives_the_probe_and_logs_no_such_warning(web_server: WebServer):
    reply = await answered_frame(web_server.ws_url)

    assert reply["type"] == "error", reply
    assert WARNING not in web_server.log()


def run_web_server_script(script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a Python process of its own: importing eventrelay.webserver installs Twisted's reactor."""
    try:
        return subprocess.run(
            [str(VENV_BIN / "python"), "-c", script],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"DJANGO_SETTINGS_MODULE": "eventrelay.settings", "PATH": "/usr/bin:/bin", **COMMON_ENV},
            check=False,
        )
    except subprocess.TimeoutExpired as running:
        pytest.fail(f"the script was still running after {timeout:.0f}s:\n{running.stderr!r}")


def test_the_installed_twisted_and_daphne_have_every_field_the_web_server_reads():
    finished = run_web_server_script("import eventrelay.webserver as w; print(w.missing_server_internals())")

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "[]"


def test_the_web_server_refuses_to_start_when_an_upgrade_removed_a_field_it_reads():
    # What a Twisted release that renamed the write buffer would look like to the web server.
    script = (
        "import eventrelay.webserver as w; from twisted.internet import abstract; "
        "del abstract.FileDescriptor.dataBuffer; "
        f"w.main(['-b', '127.0.0.1', '-p', '{free_port()}', 'eventrelay.asgi:application'])"
    )
    finished = run_web_server_script(script)

    assert finished.returncode != 0
    assert "eventrelay.webserver refuses to start" in finished.stderr, finished.stderr
    assert "twisted.internet.abstract.FileDescriptor.dataBuffer" in finished.stderr
    assert "Listening on TCP address" not in finished.stderr
