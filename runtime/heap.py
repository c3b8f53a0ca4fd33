"""The garbage collector's full collections, kept short for a process that streams.

A full (generation 2) collection walks every object the process holds and holds the
interpreter lock all the while: every thread waits, the render thread and the event loop
included. A started server holds about 150,000 objects that live as long as it does
(modules, functions, classes, the kernels' dispatchers), and walking them took 70 ms of
CPU on CPU-2 (more with the server's own imports): two frame intervals at 30 fps, at
every full collection, which a flood of allocations makes come every few seconds
(``docs/benchmarks.md``, stall watch). :func:`settle_heap` moves those objects into the
collector's permanent generation once start-up is done, so a full collection walks only
what was made since: the worlds and players of the moment.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("worldstream")


def settle_heap() -> int:
    """Collect once, then freeze every object alive now (``gc.freeze``): later collections
    skip them. Call it once, when start-up is done. Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("start-up heap frozen: %d objects the collector no longer walks", frozen)
    return frozen
