"""Signals the topic lifecycle sends, so apps above it (live hub, webhooks) can react without topics importing them."""

from django.dispatch import Signal

# Sent by topics.services.delete_topic INSIDE its transaction, before the row and table are dropped: receivers
# end what refers to the topic's offsets (webhook cursors, live feeds) in the same transaction, so a topic created
# again under the same name starts from nothing. Arguments: name (str), topic_pk (int, the deleted row's id).
topic_deleted = Signal()

# Sent by topics.retention INSIDE each sweep transaction, before the events with first <= offset < up_to are
# deleted (they are still readable): receivers move what points below ``up_to`` (consumer positions, webhook
# cursors) past it and count what they had not delivered as expired, in the same transaction. Arguments: name
# (str), first (int), up_to (int).
events_expiring = Signal()
