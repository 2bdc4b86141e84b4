"""The web process's ASGI application served by uvicorn, for the web-server comparison (bench/scenarios/ws_servers.py).

    python -m bench.uvicorn_web --port 9001 --ws websockets

Everything but the server is the web process's: the same application, the same settings, the same garbage-collector
tuning as ``eventrelay.webserver`` applies, so the comparison measures the server. uvicorn's WebSocket ``send`` waits
while the connection's write buffer is above its high-water mark (back-pressure), which is what daphne lacks; it adds
no ``eventrelay.transport_backlog`` probe, so the consumer logs that its byte limit is off and relies on the
subscription's event limit. Not a way to run EventRelay: uvicorn is a development requirement of the bench only.
"""

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.uvicorn_web", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ws", default="websockets", help="uvicorn's WebSocket implementation")
    args = parser.parse_args()
    os.environ.setdefault("ER_DB_APPLICATION_NAME", "eventrelay-web-uvicorn")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventrelay.settings")

    import uvicorn

    from eventrelay.asgi import application
    from eventrelay.db import close_connections_after_each_request
    from eventrelay.gc_tuning import tune_gc_for_serving

    close_connections_after_each_request()
    tune_gc_for_serving(rarer_full_collections=True)
    # asyncio's own loop and h11, as daphne runs on asyncio: the comparison is of servers, not of event loops.
    uvicorn.run(
        application,
        host=args.host,
        port=args.port,
        ws=args.ws,
        loop="asyncio",
        http="h11",
        lifespan="off",
        log_level="warning",
    )


if __name__ == "__main__":
    main()
