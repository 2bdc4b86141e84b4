"""The peer the performance table compares with: a nats-server of the bench's own, JetStream on.

SPEC.md names NATS as the system a team would pick instead, run on the same box in the same run. The machine's
shared server (4222) serves other work and keeps whatever streams they left, so the harness never uses it: it starts
``nats-server`` from PATH on a free loopback port, with JetStream's file store in a temporary directory of its own and
no monitoring port, and removes both at the end of the run. When the binary is absent, :func:`start` returns None
and every scenario skips its peer with a note (``bench.nats_url`` is None).
"""

import json
import shutil
import socket
import tempfile
from pathlib import Path

from bench.stack import Process
from harness.processes import free_port, wait_until

BINARY = "nats-server"
ABSENT_NOTE = f"{BINARY} is not on PATH: no peer measured"
# What an acknowledged JetStream publish promises on this server: beside every figure that stores messages.
NATS_STORE_NOTE = (
    "JetStream 2.9 file store, which fsyncs every 2 minutes, not per acknowledged publish "
    "(an acknowledged message can be lost in a power cut; ours are committed to PostgreSQL first)"
)


class NatsPeer:
    """One ``nats-server -js`` process on 127.0.0.1, its store in a temporary directory."""

    def __init__(self, binary: str, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.store_dir = Path(tempfile.mkdtemp(prefix="er_bench_nats_"))
        # No -m: the monitoring port stays off (the bench reads the server's CPU from /proc instead). No -c: the
        # machine's configuration, if any, is not read.
        self.process = Process(
            "nats-server",
            [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store_dir)],
            {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
            log_dir,
        )
        self.version = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def _answers(self) -> bool:
        """The server's greeting (``INFO {...}``) says JetStream is on: it is ready for streams."""
        self.process.check_alive()
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            greeting = sock.makefile("rb").readline()
        if not greeting.startswith(b"INFO "):
            return False
        info = json.loads(greeting[5:])
        self.version = str(info.get("version", ""))
        return bool(info.get("jetstream"))

    def wait_ready(self) -> None:
        wait_until(self._answers, 30, f"{BINARY} on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.store_dir, ignore_errors=True)


def start(log_dir: Path) -> NatsPeer | None:
    """The bench's own nats-server, answering; None when the binary is not on PATH."""
    binary = shutil.which(BINARY)
    if binary is None:
        return None
    log_dir.mkdir(parents=True, exist_ok=True)
    peer = NatsPeer(binary, log_dir)
    try:
        peer.wait_ready()
    except BaseException:
        peer.stop()
        raise
    return peer
