"""Shared fixtures. Every test runs against the real PostgreSQL (pytest-django's test database)
and, where it needs one, the real Redis."""

import builtins
import inspect
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from types import CodeType
from typing import TYPE_CHECKING, Any

import pytest

from eventrelay.auth import Principal, authenticate, mint_token
from topics.models import Topic
from topics.services import create_topic, delete_topic

if TYPE_CHECKING:
    from harness.processes import GrpcServer, WebServer
    from tests.grpc_client import Client
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
def staff(client: Any, django_user_model: Any) -> Any:
    """Django's test client, logged in to the admin console as a superuser."""
    # No password: hashing one costs more than the rest of a test.
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", None))
    return client


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
    from harness.processes import GrpcServer

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
    from harness.processes import WebServer

    server = WebServer()
    yield server
    server.stop()


@pytest.fixture(autouse=True, scope="session")
def _this_run_has_its_own_queue_and_redis_prefix() -> Iterator[None]:
    """Tasks this test process queues (wake-ups after a publish) go to the run's own queue; its live notifications
    and rate-limit keys use the run's own Redis prefix, as the processes it starts do (harness.processes)."""
    from channels.layers import channel_layers
    from django.conf import settings

    from eventrelay.celery import app
    from harness.processes import TEST_QUEUE, TEST_REDIS_PREFIX

    app.conf.task_default_queue = TEST_QUEUE
    settings.ER_REDIS_PREFIX = TEST_REDIS_PREFIX
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"{TEST_REDIS_PREFIX}:live"
    channel_layers.backends.clear()  # a layer made before this (at import) would keep the default prefix
    yield


@pytest.fixture(autouse=True, scope="session")
def _no_rate_limits_unless_a_test_sets_them() -> Iterator[None]:
    """This process's own calls (Django test client, services) are not rate limited by default."""
    from django.conf import settings

    from harness.processes import NO_RATE_LIMITS

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
async def one_database_thread(transactional_db: None) -> AsyncIterator[None]:
    """The loop's database calls (the live hub's and the test's) on one thread, whose connection is closed at
    the end: left open, it would keep the test database from being dropped. Their threads have connections of
    their own, which see only committed data, hence ``transactional_db``."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    from events import live

    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1))
    yield
    await live.get_hub().close()
    await loop.run_in_executor(None, connections.close_all)


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


# --- Test tiers -------------------------------------------------------------------------------------------------
# `make test-fast` runs `-m "not e2e"`: the tests that start no process and no browser. A test is marked from what
# its code can reach, not from a list someone must keep up: the test function, its fixtures and the helpers of ours
# they name (followed through functions and classes of the test packages), looking for the subprocess module
# (servers, workers, private PostgreSQL/Redis and every other child process start through it) and Playwright.
# A guard below fails any unmarked test that starts a process anyway, so a new test cannot slip into the fast tier.
OUR_TEST_PACKAGES = ("tests", "harness", "bench")
PROCESS_STARTERS = {id(subprocess), id(subprocess.Popen), id(subprocess.run), id(os.fork), id(os.posix_spawn)}
FAULT_SERVERS = {"PrivatePostgres", "PrivateRedis"}


def _code_objects(code: CodeType) -> Iterator[CodeType]:
    yield code
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            yield from _code_objects(constant)


def _is_ours(thing: object) -> bool:
    return (getattr(thing, "__module__", None) or "").split(".")[0] in OUR_TEST_PACKAGES


def _reaches(thing: object, seen: set[int]) -> set[str]:
    """Markers ``thing`` (a function or class) earns: e2e when it can start a process, plus browser/faults."""
    if id(thing) in seen:
        return set()
    seen.add(id(thing))
    if id(thing) in PROCESS_STARTERS:
        return {"e2e"}
    if (getattr(thing, "__module__", None) or "").startswith("playwright"):
        return {"e2e", "browser"}
    if not _is_ours(thing):
        return set()
    found = {"e2e", "faults"} if getattr(thing, "__name__", "") in FAULT_SERVERS else set()
    if isinstance(thing, type):
        for base in thing.__mro__:
            for member in vars(base).values():
                found |= _reaches(getattr(member, "__func__", member), seen)
        return found if "e2e" in found else set()
    function = inspect.unwrap(thing) if callable(thing) else thing
    code = getattr(function, "__code__", None)
    if code is None:
        return found
    scope = {**vars(builtins), **getattr(function, "__globals__", {})}
    for cell in getattr(function, "__closure__", None) or ():
        try:
            found |= _reaches(cell.cell_contents, seen)
        except ValueError:  # an empty cell: the closure variable is not assigned yet
            pass
    for each in _code_objects(code):
        for name in each.co_names:
            if name in scope:
                found |= _reaches(scope[name], seen)
    return found


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        seen: set[int] = set()
        markers = _reaches(item.function, seen)
        # pytest has no public map from a test to the fixture functions it will run.
        for definitions in item._fixtureinfo.name2fixturedefs.values():
            markers |= _reaches(definitions[-1].func, seen)
        for marker in sorted(markers - {mark.name for mark in item.iter_markers()}):
            item.add_marker(marker)


_running: pytest.Item | None = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    global _running
    _running = item
    try:
        return (yield)
    finally:
        _running = None


def _refuse_processes_outside_e2e(event: str, args: tuple[Any, ...]) -> None:
    if event in {"subprocess.Popen", "os.posix_spawn", "os.fork", "os.system"} and _running is not None:
        if _running.get_closest_marker("e2e") is None:
            raise RuntimeError(
                f"{_running.nodeid} starts a process ({event} {args[:2]!r}) but is not marked e2e, so it would run "
                "in the fast tier: mark it pytest.mark.e2e (tests/conftest.py marks tests that reach "
                "subprocess through our helpers by themselves)"
            )


sys.addaudithook(_refuse_processes_outside_e2e)
