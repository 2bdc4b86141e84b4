"""Shared fixtures. Every test runs against the real PostgreSQL (pytest-django's test database)
and, where it needs one, the real Redis."""

from collections.abc import Callable, Iterator

import pytest

from eventrelay.auth import Principal, authenticate, mint_token
from topics.models import Topic
from topics.services import create_topic, delete_topic


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
