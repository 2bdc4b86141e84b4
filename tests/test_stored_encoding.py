"""The core stores and serves whatever encoding a transport registers (events.encoding), knowing nothing of it:
here a stand-in encoding replaces gRPC's for one test, and publish, pull_encoded and rows stored without bytes
all go through it."""

from collections.abc import Iterator

import pytest
from django.db import connection

from events import encoding
from events.canonical import StoredEvent
from events.encoding import RowEncoder
from events.services import publish, pull_encoded


class OffsetAndName:
    """Encodes an event as ``<offset>:<name>;``."""

    def __init__(self) -> None:
        self.row_encoders_made = 0

    def row_encoder(self) -> RowEncoder:
        self.row_encoders_made += 1

        def encode_row(offset: int, event_id: str, name: str, *_rest: object) -> bytes:
            return f"{offset}:{name};".encode()

        return encode_row

    def encode(self, event: StoredEvent) -> bytes:
        return f"{event.offset}:{event.name};".encode()


@pytest.fixture
def stand_in() -> Iterator[OffsetAndName]:
    registered = encoding.registered()
    assert registered is not None  # grpc_api registers gRPC's at start-up
    replacement = OffsetAndName()
    encoding.register(replacement)
    yield replacement
    encoding.register(registered)


def test_publish_stores_the_registered_encoding_and_pull_encoded_joins_it(make_topic, admin, stand_in):
    make_topic("users")
    stored = publish(admin, "users", [{"name": f"e{n}", "data": n} for n in range(5)], "http")

    assert [event.wire for event in stored] == [f"{n + 1}:e{n};".encode() for n in range(5)]
    assert stand_in.row_encoders_made == 1  # one per transaction
    page = pull_encoded(admin, "users", 2, 3)
    assert (page.joined, page.next_offset) == (b"2:e1;3:e2;4:e3;", 5)


def test_rows_stored_without_bytes_are_encoded_by_the_registered_encoding(make_topic, admin, stand_in):
    make_topic("users")
    publish(admin, "users", [{"name": f"e{n}", "data": n} for n in range(3)], "http")
    with connection.cursor() as cursor:
        cursor.execute('UPDATE users_events SET wire = NULL WHERE "offset" = 2')

    assert pull_encoded(admin, "users", 1, 10).joined == b"1:e0;2:e1;3:e2;"
