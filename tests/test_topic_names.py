"""Topic names and references (docs/api.md "Topics and references"): what is accepted, what is refused and why, and that a
refused name leaves nothing behind in the database (no ``Topic`` row, no table)."""

import pytest
from django.db import connection

from eventrelay.errors import InvalidInput
from eventrelay.refs import TopicRef, validate_topic_name
from topics.models import Topic
from topics.services import create_topic

NAME_RULE = r"must start with a lowercase letter a-z and contain only lowercase letters, digits and underscores"
ID_RULE = r"only letters, digits and _ \. @ - are allowed"
NOT_A_STRING = r"must be a string"

# Every way a topic *name* can be wrong, with the part of the message that states the rule it broke.
BAD_NAMES = [
    pytest.param("a" * 51, r"topic name is 51 characters long; at most 50 are allowed", id="51-chars"),
    pytest.param("Users", NAME_RULE, id="uppercase"),
    pytest.param("1users", NAME_RULE, id="leading-digit"),
    pytest.param("_users", NAME_RULE, id="leading-underscore"),
    pytest.param("users;drop table x", NAME_RULE, id="sql-injection"),
    pytest.param('users"x', NAME_RULE, id="double-quote"),
    pytest.param("users'x", NAME_RULE, id="single-quote"),
    pytest.param("us ers", NAME_RULE, id="space"),
    pytest.param("users\n", NAME_RULE, id="trailing-newline"),
    pytest.param("usérs", NAME_RULE, id="unicode"),
    pytest.param("users-x", NAME_RULE, id="hyphen"),
    pytest.param("", r"topic name is empty", id="empty"),
    pytest.param(None, NOT_A_STRING, id="None"),
    pytest.param(5, NOT_A_STRING, id="int"),
]

# References that fail only because of the ``:id`` part (or the lack of a name before it).
BAD_REFS_ONLY = [
    pytest.param("users:", r"topic id after ':' is empty", id="colon-without-id"),
    pytest.param(":123", r"topic name is empty", id="id-without-name"),
    pytest.param("users:" + "a" * 256, r"topic id is 256 characters long; at most 255 are allowed", id="256-char-id"),
    pytest.param("users:a b", ID_RULE, id="space-in-id"),
    pytest.param("users:a/b", ID_RULE, id="slash-in-id"),
    pytest.param("users:1:2", ID_RULE, id="second-colon"),
    pytest.param("users:é", ID_RULE, id="unicode-id"),
    pytest.param("Users:123", NAME_RULE, id="bad-name-good-id"),
]

# create_topic() takes a bare name: a reference, even a well-formed one, is not a name.
REFS_ARE_NOT_NAMES = [
    pytest.param("users:123", NAME_RULE, id="well-formed-ref"),
    pytest.param("users:", NAME_RULE, id="colon-without-id"),
    pytest.param(":123", NAME_RULE, id="id-without-name"),
]


# --- Accepted -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "name", "topic_id"),
    [
        ("users", "users", None),
        ("users:123", "users", "123"),
        ("form_submissions", "form_submissions", None),
        ("signups:987", "signups", "987"),
        ("a", "a", None),
        ("a" * 50, "a" * 50, None),
        ("users:Alice.B@x-1_2", "users", "Alice.B@x-1_2"),
        ("users:" + "x" * 255, "users", "x" * 255),
        ("v2_events:_", "v2_events", "_"),
    ],
)
def test_it_parses_a_valid_reference_into_name_and_id(ref: str, name: str, topic_id: str | None) -> None:
    parsed = TopicRef.parse(ref)

    assert (parsed.name, parsed.id) == (name, topic_id)
    assert str(parsed) == ref


@pytest.mark.parametrize("name", ["users", "form_submissions", "a", "a" * 50, "z9_", "signups2"])
def test_it_returns_a_valid_name_unchanged(name: str) -> None:
    assert validate_topic_name(name) == name


# --- Refused --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "rule"), BAD_NAMES)
def test_it_refuses_an_invalid_topic_name_saying_which_rule_it_broke(bad: object, rule: str) -> None:
    with pytest.raises(InvalidInput, match=rule) as refused:
        validate_topic_name(bad)

    assert refused.value.field == "topic"


@pytest.mark.parametrize(("bad", "rule"), BAD_NAMES + BAD_REFS_ONLY)
def test_it_refuses_an_invalid_reference_saying_which_rule_it_broke(bad: object, rule: str) -> None:
    with pytest.raises(InvalidInput, match=rule) as refused:
        TopicRef.parse(bad, field="topics[0]")

    assert refused.value.field == "topics[0]"


def test_the_message_quotes_the_rejected_name_so_the_caller_can_find_it() -> None:
    with pytest.raises(InvalidInput) as refused:
        TopicRef.parse("users;drop table x")

    assert "'users;drop table x'" in refused.value.message


# --- Refused names leave nothing behind -----------------------------------------------------------


def tables() -> set[str]:
    """Every table in the database (any schema but PostgreSQL's own), as ``schema.table``."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT n.nspname || '.' || c.relname
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p')
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg_toast%%'
            """
        )
        return {row[0] for row in cursor.fetchall()}


def events_tables() -> set[str]:
    return {table for table in tables() if table.endswith("_events")}


def test_creating_a_valid_topic_adds_its_row_and_exactly_one_table(db: None) -> None:
    # A positive control for the test below: the snapshot does see what create_topic creates.
    before = tables()

    create_topic("a" * 50)

    assert tables() - before == {"public." + "a" * 50 + "_events"}
    assert list(Topic.objects.values_list("name", flat=True)) == ["a" * 50]


# transactional_db: create_topic's own transaction is the outermost one, as in production, so anything it
# left behind would really have been committed.
@pytest.mark.parametrize(("bad", "rule"), BAD_NAMES + REFS_ARE_NOT_NAMES)
def test_create_topic_refuses_an_invalid_name_and_stores_nothing(
    transactional_db: None, bad: object, rule: str
) -> None:
    # Given the database as it is
    tables_before = tables()
    events_tables_before = events_tables()

    # When a topic with an invalid name is created
    with pytest.raises(InvalidInput, match=rule) as refused:
        create_topic(bad)  # type: ignore[arg-type]

    # Then the caller is told why, and neither a Topic row nor any table exists
    assert refused.value.field == "name"
    assert not Topic.objects.exists()
    assert events_tables() == events_tables_before
    assert tables() == tables_before
