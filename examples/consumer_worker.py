"""A worker on a durable consumer: fetch with a long-poll, process, ack; nack what failed. Run several at once:
the server hands each event to one of them at a time, and whatever a killed worker held comes back to the others
after ``ackWaitSeconds``.

    ER_GRPC_ADDRESS=127.0.0.1:50051 ER_TOKEN=<jwt> python examples/consumer_worker.py orders billing

The consumer is created when it does not exist yet. ``process`` is where your work goes; raising from it nacks
the event (it comes back after a short delay, up to the consumer's maxDeliveries, then becomes a dead letter
with the error as its reason). Each processed event is printed as ``processed <offset> <deliveryCount>``.
"""

import json
import os
import sys

import grpc

sys.path.insert(0, os.getcwd())  # the generated stubs live in the repository (run from its root)
from eventrelay.v1 import eventrelay_pb2 as pb
from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc


def process(event: pb.Event) -> None:
    data = json.loads(event.data)
    if isinstance(data, dict) and data.get("fail"):
        raise ValueError(f"event {event.offset} asked to fail")


def main(topic: str, consumer: str) -> None:
    channel = grpc.insecure_channel(os.environ.get("ER_GRPC_ADDRESS", "127.0.0.1:50051"))
    metadata = [("authorization", f"Bearer {os.environ['ER_TOKEN']}")]
    consumers = pb_grpc.ConsumersStub(channel)
    try:
        consumers.CreateConsumer(
            pb.CreateConsumerRequest(topic=topic, consumer=consumer, ack_wait_seconds=30), metadata=metadata
        )
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    idle_polls = int(os.environ.get("ER_EXIT_AFTER_IDLE_POLLS", "0"))  # 0: run for ever
    idle = 0
    while True:
        try:
            reply = consumers.Fetch(
                pb.FetchRequest(topic=topic, consumer=consumer, max_events=100, wait_ms=5000),
                metadata=metadata,
                timeout=30,
            )
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                continue  # the server restarts: nothing is lost, leases wait for us or come back
            raise
        if not reply.deliveries:
            idle += 1
            if idle_polls and idle >= idle_polls:
                return
            continue
        idle = 0
        done, failed = [], []
        for delivery in reply.deliveries:
            try:
                process(delivery.event)
            except Exception as error:  # noqa: BLE001  (any failure of the work nacks its event)
                failed.append((delivery.ack_id, str(error)))
                continue
            print(f"processed {delivery.event.offset} {delivery.delivery_count}", flush=True)
            done.append(delivery.ack_id)
        if done:
            consumers.Ack(pb.AckRequest(topic=topic, consumer=consumer, ack_ids=done), metadata=metadata)
        for ack_id, reason in failed:
            consumers.Nack(
                pb.NackRequest(topic=topic, consumer=consumer, ack_ids=[ack_id], delay_ms=100, reason=reason),
                metadata=metadata,
            )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
