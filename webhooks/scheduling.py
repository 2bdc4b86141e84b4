"""The webhook tasks by name, and queuing them through the Celery app.

``webhooks.tasks`` holds the Celery entry points and imports the delivery engine; the engine, the services and
the wake-up sender queue work by task name through here, so none of them imports the task module back (an
import cycle the engine once hid inside its functions).
"""

from typing import Any

from eventrelay.celery import app

DELIVER = "webhooks.tasks.deliver"
WAKE_TOPIC = "webhooks.tasks.wake_topic"
SWEEP = "webhooks.tasks.sweep"
REDELIVER_UNDELIVERABLE = "webhooks.tasks.redeliver_undeliverable"
REDELIVER_IN_ORDER = "webhooks.tasks.redeliver_in_order"
SEND_TEST_EVENT = "webhooks.tasks.send_test_event"


def queue(task_name: str, *args: object, **options: Any) -> None:
    """Send one message for ``task_name(*args)``, waiting for the broker (``options`` as for ``apply_async``)."""
    app.send_task(task_name, args=args, **options)


def queue_delivery(stream_id: int, countdown: float | None = None) -> None:
    queue(DELIVER, stream_id, countdown=countdown)
