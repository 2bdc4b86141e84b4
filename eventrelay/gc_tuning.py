"""Garbage-collector settings for the long-running server processes.

Python's cyclic garbage collector stops the process while it runs, and a full collection visits
every tracked object. A web process holding 1,000 WebSocket connections tracks ~300,000 objects:
a full collection takes 100-250 ms on the development machine, and with Python's default
thresholds one ran every ~12 s during the WebSocket fan-out benchmark, delaying every frame in
flight. Those events alone made the latency p99 ~200 ms while the median event's slowest
delivery was ~45 ms (docs/benchmarks.md).

Two changes, both standard for long-running servers:

- ``gc.freeze()`` once everything is imported (web and gRPC processes): the startup objects
  (Django, the application's modules, ~80,000 objects) are never visited again. They live as long
  as the process anyway.
- In the web process only, a full collection at most once per ``ER_GC_FULL_EVERY``
  middle-generation collections (Python's default is 10). Young collections stay as frequent and
  as cheap as before; cyclic garbage that reaches the old generation (mostly from connections
  opening and closing) waits longer, so it costs some memory, and a full collection, when it
  comes, takes longer (0.3-0.9 s measured with 5,000 connections, against 0.1-0.25 s every ~12 s
  before). ``ER_GC_FULL_EVERY=10`` restores Python's behaviour.

The gRPC process keeps Python's thresholds: with full collections ten times rarer, its stream
fan-out benchmark got slower, not faster (p99 650 ms against 58 ms, publish calls p50 84 ms
against 4 ms): grpc.aio's per-call objects seem to need collecting promptly.
"""

import gc

from django.conf import settings


def tune_gc_for_serving(*, rarer_full_collections: bool) -> None:
    """Call once, when the server has imported everything and is about to serve."""
    gc.freeze()
    if rarer_full_collections:
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, settings.ER_GC_FULL_EVERY)
