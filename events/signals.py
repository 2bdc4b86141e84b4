"""Signals the core sends. Receivers (the live hub, webhook wake-up) run only after commit."""

from django.dispatch import Signal

# Sent once per committed publish that stored at least one new event.
# Arguments: topic_name (str), events (list[events.canonical.StoredEvent], ascending offsets),
# live_announced (bool): the publisher announces them to the live hub itself, from its event loop
# (events.group_commit), so the hub's receiver leaves them alone.
events_committed = Signal()
