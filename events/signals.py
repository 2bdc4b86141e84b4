"""Signals the core sends. Receivers (the live hub, webhook wake-up) run only after commit."""

from django.dispatch import Signal

# Sent once per committed publish that stored at least one new event.
# Arguments: topic_name (str), events (list[events.canonical.StoredEvent], ascending offsets).
events_committed = Signal()
