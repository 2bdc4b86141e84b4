"""Celery tasks: the thin entry points of webhook work. They take ids, reload state, do one thing, and are safe to
run twice. Work is queued by these names (webhooks.scheduling), never by importing this module."""

from celery import shared_task

from webhooks import delivery, scheduling, services


@shared_task(name=scheduling.DELIVER, acks_late=True)
def deliver(stream_id: int) -> str:
    return delivery.deliver_stream(stream_id)


@shared_task(name=scheduling.WAKE_TOPIC, acks_late=True)
def wake_topic(topic_name: str, topic_ids: list[str] | None = None) -> int:
    return delivery.wake_topic(topic_name, topic_ids)


@shared_task(name=scheduling.SWEEP)
def sweep() -> int:
    return delivery.sweep()


@shared_task(name=scheduling.REDELIVER_UNDELIVERABLE, acks_late=True)
def redeliver_undeliverable(undeliverable_id: int) -> bool:
    return delivery.redeliver_undeliverable(undeliverable_id)


@shared_task(name=scheduling.REDELIVER_IN_ORDER, acks_late=True)
def redeliver_in_order(undeliverable_ids: list[int]) -> int:
    return delivery.redeliver_in_order(undeliverable_ids)


@shared_task(name=scheduling.SEND_TEST_EVENT, acks_late=True)
def send_test_event(destination_id: int, event_id: str, requested_by: int) -> str:
    return services.deliver_test_event(destination_id, event_id, requested_by)
