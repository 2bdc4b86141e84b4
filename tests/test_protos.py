"""The committed gRPC code matches the proto, and the proto matches docs/grpc.md.

The generated modules in ``eventrelay/v1/`` are committed so the server runs without a build step;
these tests catch a proto edited without ``make protos``, and a proto that drifts from the contract.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from eventrelay.v1 import eventrelay_pb2 as pb

REPO = Path(__file__).resolve().parent.parent
PROTO = "protos/eventrelay/v1/eventrelay.proto"
GENERATED = (
    "eventrelay/v1/eventrelay_pb2.py",
    "eventrelay/v1/eventrelay_pb2.pyi",
    "eventrelay/v1/eventrelay_pb2_grpc.py",
)

# docs/grpc.md: service → {rpc: (request message, response message, server streaming)}.
SPEC_SERVICES = {
    "Topics": {
        "CreateTopic": ("CreateTopicRequest", "Topic", False),
        "DeleteTopic": ("DeleteTopicRequest", "DeleteTopicResponse", False),
        "ListTopics": ("ListTopicsRequest", "ListTopicsResponse", False),
        "UpdateTopic": ("UpdateTopicRequest", "Topic", False),
    },
    "Events": {
        "PublishEvents": ("PublishEventsRequest", "PublishEventsResponse", False),
        "PullEvents": ("PullEventsRequest", "PullEventsResponse", False),
        "StreamEvents": ("StreamEventsRequest", "Event", True),
        "PublishStream": ("PublishStreamRequest", "PublishStreamAck", True),
    },
    # SPEC.md "Durable consumers" names the RPCs; docs/consumers.md and the proto name their messages.
    "Consumers": {
        "CreateConsumer": ("CreateConsumerRequest", "ConsumerInfo", False),
        "GetConsumer": ("ConsumerRef", "ConsumerInfo", False),
        "ListConsumers": ("ListConsumersRequest", "ListConsumersResponse", False),
        "DeleteConsumer": ("ConsumerRef", "DeleteConsumerResponse", False),
        "Fetch": ("FetchRequest", "FetchResponse", False),
        "Ack": ("AckRequest", "AckResponse", False),
        "Nack": ("NackRequest", "AckResponse", False),
        "Extend": ("AckRequest", "AckResponse", False),
        "Seek": ("SeekRequest", "ConsumerInfo", False),
        "ListDeadLetters": ("ListDeadLettersRequest", "ListDeadLettersResponse", False),
        "Redrive": ("RedriveRequest", "RedriveResponse", False),
    },
}

# The RPCs whose requests stream from the client (docs/grpc.md#publishstream); no other RPC's do.
CLIENT_STREAMING = {"Events": {"PublishStream"}}

# docs/grpc.md: message → {field: type}, where a type is a scalar name, "Timestamp", a message
# name, or "repeated <message>".
SPEC_MESSAGES = {
    "CreateTopicRequest": {"name": "string", "retention_max_age_seconds": "int64", "retention_max_events": "int64"},
    "UpdateTopicRequest": {"name": "string", "retention_max_age_seconds": "int64", "retention_max_events": "int64"},
    "Topic": {
        "name": "string",
        "last_offset": "int64",
        "created_at": "Timestamp",
        "first_offset": "int64",
        "retention_max_age_seconds": "int64",
        "retention_max_events": "int64",
    },
    "DeleteTopicRequest": {"name": "string"},
    "DeleteTopicResponse": {},
    "ListTopicsRequest": {},
    "ListTopicsResponse": {"topics": "repeated Topic"},
    "PublishEventsRequest": {"topic": "string", "events": "repeated NewEvent"},
    "PublishEventsResponse": {"events": "repeated Event"},
    "PublishStreamRequest": {"request_id": "int64", "topic": "string", "events": "repeated NewEvent"},
    "PublishStreamAck": {"request_id": "int64", "offsets": "repeated int64", "error": "PublishStreamError"},
    "PublishStreamError": {"code": "int32", "message": "string", "field": "string", "retry_after_ms": "int64"},
    "PullEventsRequest": {"topic": "string", "offset": "int64", "batch_size": "int32"},
    "PullEventsResponse": {"events": "repeated Event", "next_offset": "int64"},
    "StreamEventsRequest": {"topic": "string", "from_offset": "int64"},
    "NewEvent": {
        "event_id": "string",
        "name": "string",
        "user_id": "string",
        "event_occurred_at": "Timestamp",
        "context": "string",
        "data": "string",
    },
    "Event": {
        "event_id": "string",
        "name": "string",
        "topic": "string",
        "source": "string",
        "user_id": "string",
        "event_occurred_at": "Timestamp",
        "context": "string",
        "data": "string",
        "offset": "int64",
    },
}

SCALAR_NAMES = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_INT32: "int32",
}


def field_type(field: FieldDescriptor) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        name = field.message_type.name if field.message_type.full_name != "google.protobuf.Timestamp" else "Timestamp"
    else:
        name = SCALAR_NAMES.get(field.type, f"type#{field.type}")
    return f"repeated {name}" if field.is_repeated else name


def test_the_committed_generated_code_is_what_protoc_makes_from_the_proto(tmp_path: Path) -> None:
    # Given the proto as committed
    # When it is compiled again exactly as `make protos` does, into a scratch directory
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            "protos",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            PROTO,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"protoc failed:\n{result.stdout}\n{result.stderr}"

    # Then each of the three generated files is byte for byte the committed one
    for relative in GENERATED:
        fresh = (tmp_path / relative).read_bytes()
        committed = (REPO / relative).read_bytes()
        assert fresh == committed, f"{relative} is stale: it differs from what {PROTO} generates; run `make protos`"


def test_the_proto_declares_package_eventrelay_v1() -> None:
    assert pb.DESCRIPTOR.package == "eventrelay.v1"
    assert pb.DESCRIPTOR.name == "eventrelay/v1/eventrelay.proto"


def test_the_proto_declares_exactly_the_services_of_the_spec() -> None:
    assert set(pb.DESCRIPTOR.services_by_name) == set(SPEC_SERVICES)
    assert {service.full_name for service in pb.DESCRIPTOR.services_by_name.values()} == {
        "eventrelay.v1.Topics",
        "eventrelay.v1.Events",
        "eventrelay.v1.Consumers",
    }


@pytest.mark.parametrize("service_name", sorted(SPEC_SERVICES))
def test_each_service_has_exactly_the_rpcs_of_the_spec(service_name: str) -> None:
    # Given the service as the generated descriptor describes it
    service = pb.DESCRIPTOR.services_by_name[service_name]

    # When its methods are read as (request, response, server streaming)
    declared = {
        method.name: (method.input_type.name, method.output_type.name, method.server_streaming)
        for method in service.methods
    }

    # Then they are exactly docs/grpc.md's, and only PublishStream streams from the client
    assert declared == SPEC_SERVICES[service_name]
    assert {method.name for method in service.methods if method.client_streaming} == CLIENT_STREAMING.get(
        service_name, set()
    )
    for method in service.methods:
        assert method.input_type.file is pb.DESCRIPTOR
        assert method.output_type.file is pb.DESCRIPTOR


@pytest.mark.parametrize("message_name", sorted(SPEC_MESSAGES))
def test_each_message_has_exactly_the_fields_of_the_spec(message_name: str) -> None:
    message = pb.DESCRIPTOR.message_types_by_name[message_name]

    assert {field.name: field_type(field) for field in message.fields} == SPEC_MESSAGES[message_name]


def test_from_offset_is_optional_so_zero_and_absent_differ() -> None:
    # Given a StreamEvents request without from_offset, and one asking from offset 0
    live_only = pb.StreamEventsRequest(topic="users")
    from_zero = pb.StreamEventsRequest(topic="users", from_offset=0)

    # Then the server can tell them apart
    assert pb.StreamEventsRequest.DESCRIPTOR.fields_by_name["from_offset"].has_presence
    assert not live_only.HasField("from_offset")
    assert from_zero.HasField("from_offset")
