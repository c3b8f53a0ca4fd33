"""Per-chunk derived data (activated Gaussians, GPU copies), computed once per chunk.

Chunks are immutable, so anything derived from one stays valid as long as the chunk
lives. The key is the chunk id *and* the identity of its Gaussians: ids are unique
only within one world, and one renderer may serve several worlds. An entry is
dropped when its Gaussians are garbage-collected (the chunk is gone) or when the
byte budget is exceeded (least recently used first).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Callable, Generic, TypeVar

from ..scene import Chunk

T = TypeVar("T")


class ChunkCache(Generic[T]):
    """Thread-safe LRU map from chunk to ``derive(chunk)``, bounded by ``max_bytes``.

    Args:
        derive: builds the value for a chunk (runs outside the lock, so two threads
            may derive the same chunk at once; derivation must be deterministic).
        size_of: bytes a value occupies (counted against ``max_bytes``).
        max_bytes: budget; the most recently used entry is always kept.
    """

    def __init__(self, derive: Callable[[Chunk], T], size_of: Callable[[T], int], max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"ChunkCache.max_bytes must be positive, got {max_bytes}")
        self._derive = derive
        self._size_of = size_of
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[int, int], tuple[weakref.ref, T, int]] = OrderedDict()
        self._bytes = 0
        self.derived = 0
        """How many times ``derive`` ran (a chunk derived twice, after eviction or by two
        threads at once, counts twice)."""
        # Keys whose Gaussians died. The weakref callback may run inside any allocation
        # (cyclic GC), even while this thread holds the lock, so it only appends here
        # (atomic) and get() purges.
        self._dead: list[tuple[tuple[int, int], weakref.ref]] = []

    def get(self, chunk: Chunk) -> T:
        key = (chunk.id, id(chunk.gaussians))
        with self._lock:
            self._purge_dead()
            entry = self._entries.get(key)
            # id() can be reused after the old Gaussians died: check the weakref too.
            if entry is not None and entry[0]() is chunk.gaussians:
                self._entries.move_to_end(key)
                return entry[1]
        value = self._derive(chunk)
        size = int(self._size_of(value))
        dead = self._dead
        ref = weakref.ref(chunk.gaussians, lambda r, key=key: dead.append((key, r)))
        with self._lock:
            self.derived += 1
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[2]
            self._entries[key] = (ref, value, size)
            self._bytes += size
            while self._bytes > self._max_bytes and len(self._entries) > 1:
                _, (_, _, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
        return value

    def _purge_dead(self) -> None:
        while self._dead:
            key, ref = self._dead.pop()
            entry = self._entries.get(key)
            if entry is not None and entry[0] is ref:
                del self._entries[key]
                self._bytes -= entry[2]

    def chunk_ids(self) -> list[int]:
        """Ids of the chunks held now, least recently used first."""
        with self._lock:
            self._purge_dead()
            return [key[0] for key in self._entries]

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
