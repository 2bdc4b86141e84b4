"""Creating a topic creates its table (with indexes) in the same transaction; deleting drops it."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from eventrelay.errors import AlreadyExists, Forbidden, NotFound
from events.services import publish, pull
from tests.helpers import index_names, table_exists
from topics.models import Topic
from topics.services import create_topic, create_topic_as, delete_topic, list_topics_as


def test_creating_a_topic_creates_its_table_with_every_index(db):
    topic = create_topic("users")

    assert Topic.objects.filter(name="users").exists()
    assert topic.table_name == "users_events"
    assert table_exists("users_events")
    assert index_names("users_events") == {
        "users_events_pkey",  # pull a whole topic by offset
        "users_ev_event_id",  # idempotency on eventId (topics.tables names it)
        "users_ev_tid_off",  # pull / stream / webhook cursor by (topic id, offset)
        "users_ev_name_off",  # admin browser: filter by event name
        "users_ev_uid_off",  # admin browser: filter by user id
        "users_ev_occurred",  # admin browser: time range
        "users_ev_stored",  # admin dashboard: events per minute, events today
    }


def test_deleting_a_topic_drops_its_table_and_row(db):
    create_topic("users")

    delete_topic("users")

    assert not Topic.objects.filter(name="users").exists()
    assert not table_exists("users_events")


def test_publishing_to_a_deleted_topic_fails_cleanly(db, admin):
    create_topic("users")
    publish(admin, "users", [{"name": "before", "data": {}}], "http")
    delete_topic("users")

    with pytest.raises(NotFound, match="topic 'users' does not exist"):
        publish(admin, "users", [{"name": "after", "data": {}}], "http")
    with pytest.raises(NotFound):
        pull(admin, "users", 0)


def test_a_recreated_topic_starts_empty_at_offset_one(db, admin):
    create_topic("users")
    publish(admin, "users", [{"name": "old", "data": 1}, {"name": "old", "data": 2}], "http")
    delete_topic("users")

    create_topic("users")
    stored = publish(admin, "users", [{"name": "new", "data": 3}], "http")

    assert stored[0].offset == 1
    assert [event.name for event in pull(admin, "users", 0).events] == ["new"]


def test_creating_an_existing_topic_is_a_conflict_and_changes_nothing(db):
    create_topic("users")

    with pytest.raises(AlreadyExists, match="topic 'users' already exists"):
        create_topic("users")

    assert Topic.objects.filter(name="users").count() == 1


def test_deleting_an_unknown_topic_is_not_found(db):
    with pytest.raises(NotFound):
        delete_topic("nothing_here")


def test_only_admins_manage_topics(db, principal_for):
    with pytest.raises(Forbidden):
        create_topic_as(principal_for("users"), "users")
    assert not Topic.objects.exists()


def test_a_non_admin_lists_only_the_topics_it_is_granted(db, principal_for):
    create_topic("users")
    create_topic("visits")

    names = [topic.name for topic in list_topics_as(principal_for("users:123"))]

    assert names == ["users"]


def test_management_commands_create_list_and_delete_topics(db, capsys):
    call_command("create_topic", "signups")
    call_command("list_topics")
    assert "signups\tfirst_offset=1\tlast_offset=0\tmax_age_s=-\tmax_events=-" in capsys.readouterr().out

    call_command("delete_topic", "signups", "--yes")
    assert not table_exists("signups_events")

    with pytest.raises(CommandError, match="must start with a lowercase letter"):
        call_command("create_topic", "Bad")


def test_the_topic_commands_set_and_change_retention(db, capsys):
    call_command("create_topic", "visits", "--max-age", "7d", "--max-events", "1000000")
    assert "keeping max age 604800 s and max 1000000 events" in capsys.readouterr().out
    call_command("update_topic", "visits", "--max-age", "12h")
    call_command("update_topic", "visits", "--max-events", "0")
    call_command("list_topics")
    assert "visits\tfirst_offset=1\tlast_offset=0\tmax_age_s=43200\tmax_events=-" in capsys.readouterr().out
    for bad, says in [(["--max-age", "7 days"], "is not a duration"), (["--max-events", "-1"], "retentionMaxEvents")]:
        with pytest.raises(CommandError, match=says):
            call_command("update_topic", "visits", *bad)
    with pytest.raises(CommandError, match="nothing to change"):
        call_command("update_topic", "visits")
    call_command("sweep_retention", "visits")
    assert "visits: deleted 0, first offset now 1" in capsys.readouterr().out
    call_command("delete_topic", "visits", "--yes")
