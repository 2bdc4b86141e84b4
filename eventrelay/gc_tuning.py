"""Garbage-collector settings for the long-running server processes.

Python's cyclic garbage collector stops the process while it runs, and a full collection visits
every tracked object. A web process holding many WebSocket connections tracks hundreds of thousands
of objects, and with Python's default thresholds a full collection ran every few seconds during the
WebSocket fan-out benchmark, delaying every frame in flight: they alone made the latency's p99
several times its median (docs/benchmarks.md, "Measurements behind design choices").

Two changes, both standard for long-running servers:

- ``gc.freeze()`` once everything is imported (web and gRPC processes): the startup objects
  (Django, the application's modules, ~80,000 objects) are never visited again. They live as long
  as the process anyway.
- In the web process only, a full collection at most once per ``ER_GC_FULL_EVERY``
  middle-generation collections (Python's default is 10). Young collections stay as frequent and
  as cheap as before; cyclic garbage that reaches the old generation (mostly from connections
  opening and closing) waits longer, so it costs some memory, and a full collection, when it
  comes, takes longer (rarer, longer pauses instead of frequent ones). ``ER_GC_FULL_EVERY=10``
  restores Python's behaviour.

The gRPC process keeps Python's thresholds: with full collections ten times rarer, its stream
fan-out benchmark got much slower, not faster (docs/benchmarks.md): grpc.aio's per-call objects
seem to need collecting promptly.
"""

import gc

from django.conf import settings


def tune_gc_for_serving(*, rarer_full_collections: bool) -> None:
    """Call once, when the server has imported everything and is about to serve."""
    gc.freeze()
    if rarer_full_collections:
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, settings.ER_GC_FULL_EVERY)
