"""Signals the core sends, for the features that follow the log (webhook delivery)."""

import logging

from django.dispatch import Signal

from events.canonical import StoredEvent

# Sent once per committed publish that stored at least one new event, after the commit, from the thread
# that committed (receivers may read the database). Arguments: topic_name (str), events
# (list[events.canonical.StoredEvent], ascending offsets).
events_committed = Signal()


logger = logging.getLogger(__name__)


def send_committed(topic_name: str, events: list[StoredEvent]) -> None:
    """Send ``events_committed``. A receiver that fails is logged, never raised: the events are committed, and
    the publisher must get its answer."""
    for receiver, outcome in events_committed.send_robust(sender=StoredEvent, topic_name=topic_name, events=events):
        if isinstance(outcome, Exception):
            logger.error("after committing to '%s', %s failed", topic_name, receiver, exc_info=outcome)
