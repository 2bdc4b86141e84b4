"""Wakes webhook delivery after a publish commits (``events_committed`` is sent after commit)."""

import logging

from django.dispatch import receiver

from events.signals import events_committed
from webhooks.models import Destination

logger = logging.getLogger(__name__)


@receiver(events_committed, dispatch_uid="webhooks.wake_after_publish")
def wake_after_publish(sender: object, topic_name: str, events: list, **kwargs: object) -> None:
    """Queue one wake-up for the topic if any active destination listens to it. A lost message only
    delays delivery: the beat sweep finds streams that are behind."""
    from webhooks.tasks import wake_topic

    try:
        if Destination.objects.for_topic(topic_name).active().exists():
            wake_topic.delay(topic_name, sorted({event.topic_id for event in events}))
    except Exception:
        logger.warning("could not queue the webhook wake-up for '%s'; the sweep will", topic_name, exc_info=True)
