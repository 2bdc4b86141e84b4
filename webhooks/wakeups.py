"""Celery messages queued from request paths (a publish's wake-up, a destination's replay), sent off the request.

A publish must not wait on the broker: with Redis down, a plain send waited out kombu's publish retry policy
on every publish, and a broker that accepts connections but never answers would hold the publisher
for as long as the socket allows. So callers only ``submit``: one background thread per process sends, with
retry off and short socket timeouts. The queue is small, bounded, and coalesces per key (one pending wake-up per
topic, its topic ids merged): while the broker is away, wake-ups are dropped rather than piled up. Losing them is
safe: every one only asks for work the beat sweep finds by itself (streams that are due and behind), so a dropped
wake-up delays delivery until the next sweep, never loses it.
"""

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from django.conf import settings

from eventrelay import logs
from eventrelay.celery import app
from webhooks import scheduling

logger = logging.getLogger(__name__)


class _Sender:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        # key -> (task name, args, the request id of the request that asked first: its message is sent for both)
        self._pending: OrderedDict[Hashable, tuple[str, tuple, str]] = OrderedDict()
        self._sending = 0
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._connection: Any = None
        self._dropped = 0

    def submit(self, key: Hashable, task_name: str, args: tuple, merge: Any = None) -> bool:
        """Queue a ``task_name(*args)`` message; never blocks. With ``key`` already pending, ``merge(old_args, args)``
        gives the one message to send instead (or the new ``args`` replace the old). False when dropped."""
        with self._lock:
            self._ensure_thread()
            if key in self._pending:
                _, old, rid = self._pending[key]
                self._pending[key] = (task_name, merge(old, args) if merge else args, rid)
                return True
            if len(self._pending) >= settings.ER_WEBHOOK_WAKE_QUEUE:
                self._dropped += 1
                if self._dropped == 1 or self._dropped % 1000 == 0:
                    logger.warning(
                        "%d webhook wake-ups dropped (the broker is slow or down); the sweep will find the work",
                        self._dropped,
                    )
                return False
            self._pending[key] = (task_name, args, logs.current_request_id())
            self._lock.notify()
            return True

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted so far was sent (or given up); for tests and shutdown."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending or self._sending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def _ensure_thread(self) -> None:
        # A forked child (Celery's prefork pool) has the parent's memory but not its thread.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._connection = None
            self._thread = threading.Thread(target=self._run, name="webhook-wakeups", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending:
                    self._lock.wait()
                _, (task_name, args, rid) = self._pending.popitem(last=False)
                self._sending += 1
            try:
                # The task (and the worker's lines for it) carries the id of the request that queued it.
                with logs.request_id_bound(rid):
                    self._send(task_name, args)
            except Exception:
                self._drop_connection()
                logger.warning("could not queue %s%r; the sweep will pick the work up", task_name, args, exc_info=True)
            finally:
                with self._lock:
                    self._sending -= 1
                    self._lock.notify_all()

    def _send(self, task_name: str, args: tuple) -> None:
        if self._connection is None:
            timeout = settings.ER_WEBHOOK_WAKE_TIMEOUT_S
            self._connection = app.connection_for_write(
                connect_timeout=timeout,
                transport_options={"socket_timeout": timeout, "socket_connect_timeout": timeout, "max_retries": 0},
            )
        app.send_task(task_name, args=args, connection=self._connection, retry=False)

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.release()
            except Exception:
                logger.debug("could not close the wake-up connection", exc_info=True)


_sender = _Sender()


def _merge_topic_ids(old: tuple, new: tuple) -> tuple:
    """Two pending wake-ups of one topic as one: the union of their topic ids (``None``: every id)."""
    topic_name, old_ids = old
    _, new_ids = new
    if old_ids is None or new_ids is None:
        return (topic_name, None)
    return (topic_name, sorted(set(old_ids) | set(new_ids)))


def wake_topic_soon(topic_name: str, topic_ids: list[str] | None = None) -> bool:
    """Queue ``webhooks.tasks.wake_topic`` for the topic without waiting for the broker."""
    return _sender.submit(
        ("wake_topic", topic_name), scheduling.WAKE_TOPIC, (topic_name, topic_ids), merge=_merge_topic_ids
    )


def queue_soon(task_name: str, *args: object) -> bool:
    """Queue ``task_name(*args)`` without waiting for the broker (identical pending messages are sent once)."""
    return _sender.submit((task_name, args), task_name, args)


def flush(timeout: float = 10) -> bool:
    """Wait until every wake-up submitted so far was sent or given up; True if that happened in time."""
    return _sender.flush(timeout)
