"""The README's REST session (the ``sh`` block of "REST API") runs as written against real processes, without
network access: its webhook reaches the example receiver on 127.0.0.1 and every call after it finds the destination.

The block is typed into one bash, as a reader would paste it, with three substitutions only: the web process's
address for ``127.0.0.1:9000``, a free port for the receiver's ``8000``, and a fresh topic name for ``users``. The
session pauses after the publish that the receiver should verify, like a reader looking at its output, so the
later ``pause`` cannot overtake the delivery.
"""

import re
import subprocess
import threading

import pytest

from harness.processes import REPO, CeleryWorker, free_port, stop, wait_until
from tests.grpc_client import unique_topic

pytestmark = pytest.mark.e2e

README = REPO / "README.md"
# The line after which a reader sees the receiver print "verified ...".
DELIVERY_LINE = "# the receiver prints: verified"


def readme_rest_session() -> str:
    """The ``sh`` block of the README's "REST API" section."""
    section = README.read_text().split("\n## REST API\n", 1)[1]
    match = re.search(r"^```sh\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert match, "the README's REST API section has no sh block"
    return match.group(1)


class Session:
    """One bash reading commands from its stdin, its output collected as it comes."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            ["bash"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # the receiver it starts in the background is stopped with it
        )
        self.output = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output += line

    def type(self, commands: str) -> None:
        self.process.stdin.write(commands)
        self.process.stdin.flush()

    def finish(self) -> int:
        self.process.stdin.close()
        returncode = self.process.wait(120)
        self._reader.join(10)
        return returncode

    def stop(self) -> None:
        stop(self.process)


def test_the_readme_rest_session_runs_offline_and_its_webhook_reaches_the_example_receiver(
    web_server, transactional_db
):
    topic = unique_topic("readme")
    script = (
        readme_rest_session()
        .replace("http://127.0.0.1:9000", web_server.base_url)
        .replace("8000", str(free_port()))
        .replace("users", topic)
    )
    # A reader looks at the receiver's output after the publish it should verify, before going on.
    before, marker, after = script.partition(DELIVERY_LINE)
    worker = CeleryWorker(name="readme_session_worker", concurrency=1)
    session = Session()
    try:
        if marker:
            session.type(before + marker + "\n")
            wait_until(lambda: f"verified {topic}:123" in session.output, 60, "the example receiver to verify")
            session.type(after.split("\n", 1)[1])
        else:
            session.type(script)
        returncode = session.finish()
    finally:
        session.stop()
        worker.stop()

    output = session.output
    assert returncode == 0, output
    for code in ("invalid", "not_found", "error", "unavailable"):
        assert f'"code":"{code}"' not in output.replace(" ", ""), output
    assert '"secret":"whsec_' in output  # the destination was created
    assert '"maxAttempts":5' in output  # PATCH found it
    assert f"verified {topic}:123 2 user_login" in output  # the second event of the topic, to the receiver
    assert '"status":"succeeded"' in output and '"responseStatus":204' in output  # its attempt, as answered
