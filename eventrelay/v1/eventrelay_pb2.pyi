import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateTopicRequest(_message.Message):
    __slots__ = ("name", "retention_max_age_seconds", "retention_max_events")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RETENTION_MAX_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETENTION_MAX_EVENTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    retention_max_age_seconds: int
    retention_max_events: int
    def __init__(self, name: _Optional[str] = ..., retention_max_age_seconds: _Optional[int] = ..., retention_max_events: _Optional[int] = ...) -> None: ...

class UpdateTopicRequest(_message.Message):
    __slots__ = ("name", "retention_max_age_seconds", "retention_max_events")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RETENTION_MAX_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETENTION_MAX_EVENTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    retention_max_age_seconds: int
    retention_max_events: int
    def __init__(self, name: _Optional[str] = ..., retention_max_age_seconds: _Optional[int] = ..., retention_max_events: _Optional[int] = ...) -> None: ...

class Topic(_message.Message):
    __slots__ = ("name", "last_offset", "created_at", "first_offset", "retention_max_age_seconds", "retention_max_events")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FIRST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    RETENTION_MAX_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETENTION_MAX_EVENTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    last_offset: int
    created_at: _timestamp_pb2.Timestamp
    first_offset: int
    retention_max_age_seconds: int
    retention_max_events: int
    def __init__(self, name: _Optional[str] = ..., last_offset: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., first_offset: _Optional[int] = ..., retention_max_age_seconds: _Optional[int] = ..., retention_max_events: _Optional[int] = ...) -> None: ...

class DeleteTopicRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteTopicResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTopicsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTopicsResponse(_message.Message):
    __slots__ = ("topics",)
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedCompositeFieldContainer[Topic]
    def __init__(self, topics: _Optional[_Iterable[_Union[Topic, _Mapping]]] = ...) -> None: ...

class NewEvent(_message.Message):
    __slots__ = ("event_id", "name", "user_id", "event_occurred_at", "context", "data")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    name: str
    user_id: str
    event_occurred_at: _timestamp_pb2.Timestamp
    context: str
    data: str
    def __init__(self, event_id: _Optional[str] = ..., name: _Optional[str] = ..., user_id: _Optional[str] = ..., event_occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., context: _Optional[str] = ..., data: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "name", "topic", "source", "user_id", "event_occurred_at", "context", "data", "offset")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    name: str
    topic: str
    source: str
    user_id: str
    event_occurred_at: _timestamp_pb2.Timestamp
    context: str
    data: str
    offset: int
    def __init__(self, event_id: _Optional[str] = ..., name: _Optional[str] = ..., topic: _Optional[str] = ..., source: _Optional[str] = ..., user_id: _Optional[str] = ..., event_occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., context: _Optional[str] = ..., data: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class PublishEventsRequest(_message.Message):
    __slots__ = ("topic", "events")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    events: _containers.RepeatedCompositeFieldContainer[NewEvent]
    def __init__(self, topic: _Optional[str] = ..., events: _Optional[_Iterable[_Union[NewEvent, _Mapping]]] = ...) -> None: ...

class PublishEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class PublishStreamRequest(_message.Message):
    __slots__ = ("request_id", "topic", "events")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    topic: str
    events: _containers.RepeatedCompositeFieldContainer[NewEvent]
    def __init__(self, request_id: _Optional[int] = ..., topic: _Optional[str] = ..., events: _Optional[_Iterable[_Union[NewEvent, _Mapping]]] = ...) -> None: ...

class PublishStreamAck(_message.Message):
    __slots__ = ("request_id", "offsets", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    offsets: _containers.RepeatedScalarFieldContainer[int]
    error: PublishStreamError
    def __init__(self, request_id: _Optional[int] = ..., offsets: _Optional[_Iterable[int]] = ..., error: _Optional[_Union[PublishStreamError, _Mapping]] = ...) -> None: ...

class PublishStreamError(_message.Message):
    __slots__ = ("code", "message", "field", "retry_after_ms")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    field: str
    retry_after_ms: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., field: _Optional[str] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class PullEventsRequest(_message.Message):
    __slots__ = ("topic", "offset", "batch_size")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    topic: str
    offset: int
    batch_size: int
    def __init__(self, topic: _Optional[str] = ..., offset: _Optional[int] = ..., batch_size: _Optional[int] = ...) -> None: ...

class PullEventsResponse(_message.Message):
    __slots__ = ("events", "next_offset")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    next_offset: int
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., next_offset: _Optional[int] = ...) -> None: ...

class StreamEventsRequest(_message.Message):
    __slots__ = ("topic", "from_offset")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    FROM_OFFSET_FIELD_NUMBER: _ClassVar[int]
    topic: str
    from_offset: int
    def __init__(self, topic: _Optional[str] = ..., from_offset: _Optional[int] = ...) -> None: ...

class CreateConsumerRequest(_message.Message):
    __slots__ = ("topic", "consumer", "start_offset", "ack_wait_seconds", "max_deliveries", "max_in_flight", "event_names", "ordered")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    ACK_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    EVENT_NAMES_FIELD_NUMBER: _ClassVar[int]
    ORDERED_FIELD_NUMBER: _ClassVar[int]
    topic: str
    consumer: str
    start_offset: int
    ack_wait_seconds: int
    max_deliveries: int
    max_in_flight: int
    event_names: _containers.RepeatedScalarFieldContainer[str]
    ordered: bool
    def __init__(self, topic: _Optional[str] = ..., consumer: _Optional[str] = ..., start_offset: _Optional[int] = ..., ack_wait_seconds: _Optional[int] = ..., max_deliveries: _Optional[int] = ..., max_in_flight: _Optional[int] = ..., event_names: _Optional[_Iterable[str]] = ..., ordered: _Optional[bool] = ...) -> None: ...

class ConsumerRef(_message.Message):
    __slots__ = ("topic", "consumer")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    topic: str
    consumer: str
    def __init__(self, topic: _Optional[str] = ..., consumer: _Optional[str] = ...) -> None: ...

class ConsumerInfo(_message.Message):
    __slots__ = ("name", "topic", "start_offset", "ack_wait_seconds", "max_deliveries", "max_in_flight", "event_names", "ordered", "ack_floor", "pending", "lag", "dead_letters", "created_at", "expired")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    ACK_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    EVENT_NAMES_FIELD_NUMBER: _ClassVar[int]
    ORDERED_FIELD_NUMBER: _ClassVar[int]
    ACK_FLOOR_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    name: str
    topic: str
    start_offset: int
    ack_wait_seconds: int
    max_deliveries: int
    max_in_flight: int
    event_names: _containers.RepeatedScalarFieldContainer[str]
    ordered: bool
    ack_floor: int
    pending: int
    lag: int
    dead_letters: int
    created_at: _timestamp_pb2.Timestamp
    expired: int
    def __init__(self, name: _Optional[str] = ..., topic: _Optional[str] = ..., start_offset: _Optional[int] = ..., ack_wait_seconds: _Optional[int] = ..., max_deliveries: _Optional[int] = ..., max_in_flight: _Optional[int] = ..., event_names: _Optional[_Iterable[str]] = ..., ordered: _Optional[bool] = ..., ack_floor: _Optional[int] = ..., pending: _Optional[int] = ..., lag: _Optional[int] = ..., dead_letters: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expired: _Optional[int] = ...) -> None: ...

class ListConsumersRequest(_message.Message):
    __slots__ = ("topic",)
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    topic: str
    def __init__(self, topic: _Optional[str] = ...) -> None: ...

class ListConsumersResponse(_message.Message):
    __slots__ = ("consumers",)
    CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    consumers: _containers.RepeatedCompositeFieldContainer[ConsumerInfo]
    def __init__(self, consumers: _Optional[_Iterable[_Union[ConsumerInfo, _Mapping]]] = ...) -> None: ...

class DeleteConsumerResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ("topic", "consumer", "max_events", "wait_ms", "ack_ids")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENTS_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    consumer: str
    max_events: int
    wait_ms: int
    ack_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, topic: _Optional[str] = ..., consumer: _Optional[str] = ..., max_events: _Optional[int] = ..., wait_ms: _Optional[int] = ..., ack_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("ack_id", "delivery_count", "event")
    ACK_ID_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_COUNT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ack_id: str
    delivery_count: int
    event: Event
    def __init__(self, ack_id: _Optional[str] = ..., delivery_count: _Optional[int] = ..., event: _Optional[_Union[Event, _Mapping]] = ...) -> None: ...

class FetchResponse(_message.Message):
    __slots__ = ("deliveries", "stale_ack_ids")
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    STALE_ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    stale_ack_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ..., stale_ack_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AckRequest(_message.Message):
    __slots__ = ("topic", "consumer", "ack_ids")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    consumer: str
    ack_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, topic: _Optional[str] = ..., consumer: _Optional[str] = ..., ack_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class NackRequest(_message.Message):
    __slots__ = ("topic", "consumer", "ack_ids", "delay_ms", "reason")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    topic: str
    consumer: str
    ack_ids: _containers.RepeatedScalarFieldContainer[str]
    delay_ms: int
    reason: str
    def __init__(self, topic: _Optional[str] = ..., consumer: _Optional[str] = ..., ack_ids: _Optional[_Iterable[str]] = ..., delay_ms: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class AckResponse(_message.Message):
    __slots__ = ("stale_ack_ids",)
    STALE_ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    stale_ack_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stale_ack_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SeekRequest(_message.Message):
    __slots__ = ("topic", "consumer", "offset")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    topic: str
    consumer: str
    offset: int
    def __init__(self, topic: _Optional[str] = ..., consumer: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("topic", "consumer", "after", "limit")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    topic: str
    consumer: str
    after: int
    limit: int
    def __init__(self, topic: _Optional[str] = ..., consumer: _Optional[str] = ..., after: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("offset", "event_id", "topic", "deliveries", "last_error", "dead_at")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    DEAD_AT_FIELD_NUMBER: _ClassVar[int]
    offset: int
    event_id: str
    topic: str
    deliveries: int
    last_error: str
    dead_at: _timestamp_pb2.Timestamp
    def __init__(self, offset: _Optional[int] = ..., event_id: _Optional[str] = ..., topic: _Optional[str] = ..., deliveries: _Optional[int] = ..., last_error: _Optional[str] = ..., dead_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("dead_letters",)
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    dead_letters: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    def __init__(self, dead_letters: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ...) -> None: ...

class RedriveRequest(_message.Message):
    __slots__ = ("topic", "consumer", "offsets", "all")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    topic: str
    consumer: str
    offsets: _containers.RepeatedScalarFieldContainer[int]
    all: bool
    def __init__(self, topic: _Optional[str] = ..., consumer: _Optional[str] = ..., offsets: _Optional[_Iterable[int]] = ..., all: _Optional[bool] = ...) -> None: ...

class RedriveResponse(_message.Message):
    __slots__ = ("offsets",)
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    offsets: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, offsets: _Optional[_Iterable[int]] = ...) -> None: ...
