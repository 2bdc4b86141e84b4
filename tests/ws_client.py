"""A small WebSocket client for end-to-end tests: the real ``websockets`` library, JSON frames.

Replies (``subscribed``, ``published``, ``error`` …) and ``event`` frames share one connection and
interleave, so the client sorts what it reads: replies into one queue, events into one queue per
subscribed topic reference. A test asks for "the next reply" or "the events of ``t:1`` through
offset 40" and gets them whatever else arrived in between. Every read has a deadline.
"""

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

TIMEOUT = 30.0


class WsClient:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.replies: deque[dict[str, Any]] = deque()
        self.events: defaultdict[str, deque[dict[str, Any]]] = defaultdict(deque)

    # --- raw frames --------------------------------------------------------------------------------

    async def send_json(self, frame: Any) -> None:
        await self.connection.send(json.dumps(frame))

    async def send_raw(self, data: str | bytes) -> None:
        await self.connection.send(data)

    async def _read_one(self, timeout: float) -> None:
        raw = await asyncio.wait_for(self.connection.recv(), timeout)
        frame = json.loads(raw)
        if frame.get("type") == "event":
            self.events[frame["topic"]].append(frame)
        else:
            self.replies.append(frame)

    # --- replies -----------------------------------------------------------------------------------

    async def reply(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame that is not an ``event`` (events read meanwhile are kept for later)."""
        async with asyncio.timeout(timeout):
            while not self.replies:
                await self._read_one(timeout)
        return self.replies.popleft()

    async def request(self, frame: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        await self.send_json(frame)
        return await self.reply(timeout)

    async def subscribe(self, topic: str, from_offset: int | None = None) -> dict[str, Any]:
        """Subscribe and return the ``subscribed`` frame (fails on any other reply)."""
        frame: dict[str, Any] = {"type": "subscribe", "topic": topic}
        if from_offset is not None:
            frame["fromOffset"] = from_offset
        reply = await self.request(frame)
        assert reply["type"] == "subscribed", reply
        return reply

    async def publish(self, topic: str, events: list[dict[str, Any]], ref: str = "r") -> dict[str, Any]:
        """Publish over the WebSocket and return the ``published`` frame (fails on any other reply)."""
        reply = await self.request({"type": "publish", "topic": topic, "ref": ref, "events": events})
        assert reply["type"] == "published", reply
        return reply

    # --- events ------------------------------------------------------------------------------------

    async def next_event(self, topic: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next ``event`` frame of the subscription to ``topic``."""
        async with asyncio.timeout(timeout):
            while not self.events[topic]:
                await self._read_one(timeout)
        return self.events[topic].popleft()

    async def events_through(self, topic: str, offset: int, timeout: float = 60) -> list[dict[str, Any]]:
        """Canonical events of the subscription to ``topic``, read until one with ``offset`` >= ``offset``."""
        received: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while not received or received[-1]["offset"] < offset:
                frame = await self.next_event(topic, timeout)
                received.append(frame["event"])
        return received

    def pending(self) -> list[dict[str, Any]]:
        """Frames read but not yet taken by the test."""
        return list(self.replies) + [frame for queue in self.events.values() for frame in queue]


@asynccontextmanager
async def ws_connect(
    url: str, token: str | None = None, headers: dict[str, str] | None = None
) -> AsyncIterator[WsClient]:
    """Connect with ``?token=`` (when ``token`` is given) and/or extra handshake headers."""
    if token is not None:
        url = f"{url}?token={token}"
    # proxy=None: a proxy from the environment must not stand between the test and loopback.
    async with connect(url, additional_headers=headers, proxy=None, open_timeout=TIMEOUT, max_size=None) as connection:
        yield WsClient(connection)
