"""Celery tasks: they take ids, reload state, do one thing, and are safe to run twice."""

from celery import shared_task

from webhooks import delivery


@shared_task(name="webhooks.tasks.deliver", acks_late=True)
def deliver(stream_id: int) -> str:
    return delivery.deliver_stream(stream_id)


@shared_task(name="webhooks.tasks.wake_topic", acks_late=True)
def wake_topic(topic_name: str, topic_ids: list[str] | None = None) -> int:
    return delivery.wake_topic(topic_name, topic_ids)


@shared_task(name="webhooks.tasks.sweep")
def sweep() -> int:
    return delivery.sweep()


@shared_task(name="webhooks.tasks.redeliver_undeliverable", acks_late=True)
def redeliver_undeliverable(undeliverable_id: int) -> bool:
    return delivery.redeliver_undeliverable(undeliverable_id)
