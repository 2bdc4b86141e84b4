"""Create a topic, publish, pull and stream over gRPC with the generated stubs.

    ER_TOKEN=$(.venv/bin/python manage.py mint_token --admin) .venv/bin/python examples/grpc_quickstart.py

Run from the repository root (the generated code lives in eventrelay/v1/). ER_GRPC_ADDRESS defaults
to 127.0.0.1:50051.
"""

import json
import os
import sys
import uuid

import grpc

sys.path.insert(0, os.getcwd())
from eventrelay.v1 import eventrelay_pb2 as pb
from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc

channel = grpc.insecure_channel(os.environ.get("ER_GRPC_ADDRESS", "127.0.0.1:50051"))
auth = [("authorization", f"Bearer {os.environ['ER_TOKEN']}")]
topics = pb_grpc.TopicsStub(channel)
events = pb_grpc.EventsStub(channel)

# An admin token may create topics. The name becomes the table "<name>_events".
name = f"quickstart_{uuid.uuid4().hex[:8]}"
topics.CreateTopic(pb.CreateTopicRequest(name=name), metadata=auth)

# Publish to "<name>:123": data and context travel as JSON text.
published = events.PublishEvents(
    pb.PublishEventsRequest(
        topic=f"{name}:123",
        events=[pb.NewEvent(name="user_login", user_id="123", data=json.dumps({"email": "thomas@example.com"}))],
    ),
    metadata=auth,
)
print("published offset", published.events[0].offset)

# Pull from offset 1; continue from next_offset.
page = events.PullEvents(pb.PullEventsRequest(topic=f"{name}:123", offset=1, batch_size=100), metadata=auth)
print("pulled", [(event.offset, json.loads(event.data)) for event in page.events], "next", page.next_offset)

# Stream: replay from offset 1, then live events as they are published.
stream = events.StreamEvents(pb.StreamEventsRequest(topic=f"{name}:123", from_offset=1), metadata=auth)
for event in stream:
    print("streamed", event.offset, event.name, event.data)
    break
stream.cancel()
