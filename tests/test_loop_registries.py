"""State kept per event loop (group commit's committers, the live hubs, the rate limiter's async clients) belongs
to the loop that made it: a new loop never inherits a dead one's, and the registries do not grow with every loop."""

import asyncio

from eventrelay import ratelimit
from events import group_commit, live
from events.group_commit import TopicCommitter
from events.services import apublish
from tests.helpers import in_a_fresh_loop


def test_each_registry_keeps_the_state_of_running_loops_only():
    async def use_every_registry() -> None:
        group_commit.committers.get()
        live.hubs.get()
        ratelimit._async_clients.get()

    for _ in range(5):
        asyncio.run(use_every_registry())

    # Each new loop dropped the closed loops' values when it made its own.
    assert len(group_commit.committers) == 1
    assert len(live.hubs) == 1
    assert len(ratelimit._async_clients) == 1


def test_a_loop_that_died_while_its_committer_was_draining_does_not_block_the_next_loop(
    transactional_db, make_topic, admin
):
    make_topic("orders")

    async def die_while_draining() -> None:
        # As if the loop stopped in the middle of a drain: its committer stays "draining" with nothing to do.
        group_commit.committers.get()["orders"] = TopicCommitter("orders", draining=True)

    in_a_fresh_loop(die_while_draining)

    async def publish_in_a_new_loop() -> list:
        return await asyncio.wait_for(apublish(admin, "orders", [{"name": "a", "data": 1}], "grpc"), 10)

    # A registry keyed by id(loop) hands the stuck committer to a new loop that reuses the dead one's id.
    [event] = in_a_fresh_loop(publish_in_a_new_loop)
    assert event.offset == 1
