"""Subscribe and publish over the WebSocket API with the `websockets` library.

    ER_TOKEN=$(.venv/bin/python manage.py mint_token --topics users:123) \
        .venv/bin/python examples/ws_quickstart.py users:123

ER_WS_URL defaults to ws://127.0.0.1:9000/ws/events. The topic must exist (manage.py create_topic users).
"""

import asyncio
import json
import os
import sys

import websockets


async def main(topic: str) -> None:
    url = f"{os.environ.get('ER_WS_URL', 'ws://127.0.0.1:9000/ws/events')}?token={os.environ['ER_TOKEN']}"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "topic": topic, "fromOffset": 1}))
        print(json.loads(await ws.recv()))  # {"type": "subscribed", "topic": ..., "offset": <last offset>}

        await ws.send(
            json.dumps(
                {
                    "type": "publish",
                    "topic": topic,
                    "ref": "r1",
                    "events": [{"name": "user_login", "data": {"email": "thomas@example.com"}}],
                }
            )
        )
        # The reply to the publish and the subscription's copy of the event may come in either order.
        seen = set()
        while seen != {"published", "event"}:
            frame = json.loads(await ws.recv())
            print(frame["type"], frame.get("event", frame.get("events")))
            if frame["type"] == "published" or (frame["type"] == "event" and frame["event"]["name"] == "user_login"):
                seen.add(frame["type"])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
