"""The C allocator's settings for the server process: keep freed large buffers for reuse.

A ``hello`` with a start image is a WebSocket message of up to 8 MiB, read on the event
loop: websockets grows a buffer chunk by chunk, slices the payload out and unmasks it, and
each of those is a fresh buffer of up to 8 MiB. glibc's ``malloc`` serves blocks that large
with ``mmap`` and returns them to the kernel when freed (its threshold adapts upwards after
such a free, which in the server did not spare the cost): every such message cost the event
loop 15 ms of CPU, two thirds of it in the kernel faulting in new zeroed pages, against
5.5 ms with the settings below (``bench.flood_cost`` ``read_8mib``, ``docs/benchmarks.md``).
With them, blocks under ``MMAP_THRESHOLD_BYTES`` come from the heap, and up to
``TRIM_THRESHOLD_BYTES`` of free memory at a heap's top is kept for the next message
instead of being returned.

The cost: the process may hold up to ``TRIM_THRESHOLD_BYTES`` more resident memory per
heap than it uses at the moment. Only glibc has ``mallopt``; elsewhere this does nothing.
``WORLDSTREAM_KEEP_LARGE_BUFFERS=0`` keeps glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("worldstream")

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20
"""Blocks this large or larger still come from ``mmap`` (glibc's maximum); an 8 MiB message's buffers do not."""
TRIM_THRESHOLD_BYTES = 64 * 2**20
"""Free memory kept at a heap's top: the three 8 MiB buffers of one large message, with room to spare."""
ENV = "WORLDSTREAM_KEEP_LARGE_BUFFERS"
"""``0``: leave glibc's defaults (say, where resident memory matters more than the loop's CPU)."""


def keep_large_buffers() -> bool:
    """Apply the settings above to this process's ``malloc``; True when they took effect."""
    if os.environ.get(ENV, "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS, Windows)
        log.debug("no mallopt here: the C allocator keeps its defaults")
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    if not ok:
        log.warning("mallopt refused the large-buffer settings: the C allocator keeps its defaults")
    return ok
