"""Fixtures for webhook tests with real Celery processes: import ``start_fixture`` / ``broker_fixture`` into a
test module to use ``start`` / ``broker``."""

import pytest
import redis
from django.conf import settings

from harness.processes import TEST_QUEUE

# Leases expire 2 s after a request's timeout, beat sweeps every second, and a queued wake-up nobody
# claimed for 2 s counts as lost: recovery takes seconds, not the production minutes.
FAST_RECOVERY = {
    "ER_WEBHOOK_LEASE_MARGIN_S": "2",
    "ER_WEBHOOK_TIMEOUT_S": "2",
    "ER_WEBHOOK_SWEEP_S": "1",
    "ER_WEBHOOK_REQUEUE_S": "2",
    "ER_WEBHOOK_BACKOFF_BASE_MS": "100",
    "ER_WEBHOOK_BACKOFF_CAP_MS": "200",
}


@pytest.fixture(name="start")
def start_fixture():
    """``start(CeleryWorker, name=...)``: a process (or private server) stopped after the test, whatever happens.

    Registered before its constructor waits for it to be ready, so one that never becomes ready is stopped too.
    """
    started = []

    def start_process(kind, **kwargs):
        process = kind.__new__(kind)
        started.append(process)
        process.__init__(**kwargs)
        return process

    yield start_process
    for process in reversed(started):
        if hasattr(process, "close"):
            process.close()
        elif hasattr(process, "process"):
            process.stop()


@pytest.fixture(name="broker")
def broker_fixture():
    """The shared Redis broker with this run's queue empty before and after the test."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete(TEST_QUEUE)
    yield client
    client.delete(TEST_QUEUE)
    client.close()
