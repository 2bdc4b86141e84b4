"""Signals the topic lifecycle sends, so apps above it (live hub, webhooks) can react without topics importing them."""

from django.dispatch import Signal

# Sent by topics.services.delete_topic INSIDE its transaction, before the row and table are dropped: receivers
# end what refers to the topic's offsets (webhook cursors, live feeds) in the same transaction, so a topic created
# again under the same name starts from nothing. Arguments: name (str), topic_pk (int, the deleted row's id).
topic_deleted = Signal()
