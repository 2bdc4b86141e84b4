"""Shared fixtures. Every test runs against the real PostgreSQL (pytest-django's test database)
and, where it needs one, the real Redis."""

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from eventrelay.auth import Principal, authenticate, mint_token
from topics.models import Topic
from topics.services import create_topic, delete_topic

if TYPE_CHECKING:
    from tests.grpc_client import Client
    from tests.processes import GrpcServer, WebServer
    from tests.webhook_receiver import Receiver


@pytest.fixture
def token_for() -> Callable[..., str]:
    """``token_for("users:123", "visits")`` → a signed token granting those topics."""

    def make(*topics: str, admin: bool = False, ttl_seconds: int | None = 3600) -> str:
        return mint_token(topics, admin=admin, ttl_seconds=ttl_seconds)

    return make


@pytest.fixture
def principal_for(token_for: Callable[..., str]) -> Callable[..., Principal]:
    """``principal_for("users:123")`` → the Principal a transport would get for such a token."""

    def make(*topics: str, admin: bool = False) -> Principal:
        return authenticate(token_for(*topics, admin=admin))

    return make


@pytest.fixture
def admin(principal_for: Callable[..., Principal]) -> Principal:
    return principal_for(admin=True)


@pytest.fixture
def make_topic(db: None) -> Iterator[Callable[[str], Topic]]:
    """Create topics (and their tables). Dropped again afterwards: in ``transactional_db`` tests
    the flush at teardown empties Django's tables but knows nothing of per-topic tables."""
    created: list[str] = []

    def make(name: str) -> Topic:
        topic = create_topic(name)
        created.append(name)
        return topic

    yield make
    for name in created:
        if Topic.objects.filter(name=name).exists():
            delete_topic(name)


@pytest.fixture(scope="session")
def grpc_server(django_db_setup: None) -> Iterator["GrpcServer"]:
    """One real grpcserver process for the session, on the test database."""
    from tests.processes import GrpcServer

    server = GrpcServer()
    yield server
    server.stop()


@pytest.fixture
def admin_client(grpc_server: "GrpcServer", transactional_db: None) -> Iterator["Client"]:
    """A gRPC client with an admin token. Tests that talk to a server process need committed data,
    hence ``transactional_db``."""
    from tests.grpc_client import Client

    client = Client(grpc_server.address, mint_token([], admin=True))
    yield client
    client.close()


@pytest.fixture(scope="session")
def web_server(django_db_setup: None) -> Iterator["WebServer"]:
    """One real daphne process for the session, on the test database."""
    from tests.processes import WebServer

    server = WebServer()
    yield server
    server.stop()


@pytest.fixture(autouse=True, scope="session")
def _celery_uses_the_test_queue() -> Iterator[None]:
    """Tasks this test process queues (wake-ups after a publish) go to the run's own queue."""
    from eventrelay.celery import app
    from tests.processes import TEST_QUEUE

    app.conf.task_default_queue = TEST_QUEUE
    yield


@pytest.fixture(autouse=True, scope="session")
def _no_rate_limits_unless_a_test_sets_them() -> Iterator[None]:
    """This process's own calls (Django test client, services) are not rate limited by default."""
    from django.conf import settings

    from tests.processes import NO_RATE_LIMITS

    for name in NO_RATE_LIMITS:
        setattr(settings, name, 0)
    yield


@pytest.fixture
def receiver() -> Iterator["Receiver"]:
    """A local HTTP receiver for webhooks whose answers the test can switch (tests/webhook_receiver.py)."""
    from tests.webhook_receiver import Receiver

    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def allow_private(settings: Any) -> None:
    """Webhook destinations on 127.0.0.1 are accepted in this process (the receiver lives there)."""
    settings.ER_WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def topics(admin_client: "Client") -> Iterator[Callable[..., str]]:
    """``topics("orders")`` → the name of a new topic (unique per test), created over gRPC and
    deleted again afterwards (the transactional flush knows nothing of per-topic tables)."""
    import grpc

    from tests.grpc_client import unique_topic

    created: list[str] = []

    def make(prefix: str = "t") -> str:
        name = unique_topic(prefix)
        admin_client.create_topic(name)
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            admin_client.delete_topic(name)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
