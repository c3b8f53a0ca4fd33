"""A ring of picture buffers in shared memory: one writer process, one reader process.

The server's render thread writes each player's newest picture here and sends the
picture's sequence number to the player's media worker (``media_worker``), which copies
it out (straight into the encoder's frame) and encodes it. No lock and no reply per
picture: the segment's header holds the newest sequence number the reader has finished
copying (``consumed``), and the writer reuses the buffer of picture ``s - depth`` for
picture ``s`` only once ``consumed >= s - depth``. Pictures are read in order (they are
announced in order over one socket), so that is exactly "the reader is done with that
buffer".

When the reader is ``depth`` pictures behind, ``write`` returns None and the caller drops
that picture: the worker is overloaded and a newer picture comes next tick.

Layout: 64 header bytes (``consumed``: int64 at offset 0), then ``depth`` buffers of
``capacity`` bytes each.
"""

from __future__ import annotations

from multiprocessing import shared_memory
from typing import Callable, TypeVar

import numpy as np

T = TypeVar("T")

HEADER_BYTES = 64
DEFAULT_DEPTH = 3


class PictureRing:
    """Shared picture buffers and the reader's progress.

    Args:
        capacity: bytes per picture (1280x720 I420: 1,382,400).
        depth: buffers in the ring (pictures the reader may be behind).
        name: attach to an existing ring (the reader side) instead of creating one.
    """

    def __init__(self, capacity: int, depth: int = DEFAULT_DEPTH, name: str | None = None) -> None:
        if capacity <= 0 or depth < 2:
            raise ValueError(f"PictureRing: capacity must be > 0 and depth >= 2, got {capacity}, {depth}")
        self.capacity = capacity
        self.depth = depth
        self.owner = name is None
        size = HEADER_BYTES + capacity * depth
        if self.owner:
            self._shm = shared_memory.SharedMemory(create=True, size=size)
        else:
            # Spawned workers share the server's resource tracker, which keeps one entry
            # per name: attaching registers nothing new, and the server's unlink clears it.
            self._shm = shared_memory.SharedMemory(name=name)
            if self._shm.size < size:
                raise ValueError(f"PictureRing {name!r}: {self._shm.size} bytes, need {size}")
        self.name = self._shm.name
        self._consumed = np.ndarray((1,), np.int64, buffer=self._shm.buf)
        self._data = np.ndarray((depth, capacity), np.uint8, buffer=self._shm.buf, offset=HEADER_BYTES)
        if self.owner:
            self._consumed[0] = 0
        self._next_seq = 1  # writer side: sequence numbers start at 1 (0 = nothing read yet)

    # ------------------------------------------------------------------ writer
    def reserve(self, nbytes: int) -> np.ndarray | None:
        """The buffer the next picture goes into (a ``[nbytes]`` uint8 view), or None when
        the reader still holds it. Write the picture there, then :meth:`commit`; until
        then, reserving again returns the same buffer. Any one thread at a time."""
        if not 0 < nbytes <= self.capacity:
            raise ValueError(f"PictureRing.reserve: nbytes must be in (0, {self.capacity}], got {nbytes}")
        seq = self._next_seq
        if int(self._consumed[0]) < seq - self.depth:
            return None
        return self._data[seq % self.depth, :nbytes]

    def commit(self) -> int:
        """The reserved buffer holds a whole picture: its sequence number, for the reader."""
        seq = self._next_seq
        self._next_seq = seq + 1
        return seq

    def write(self, picture: np.ndarray) -> int | None:
        """Copy ``picture`` (uint8, at most ``capacity`` bytes) into the next buffer.

        Returns its sequence number, or None when the reader still holds that buffer.
        Callable from any one thread at a time (the render thread).
        """
        flat = picture.reshape(-1)
        if flat.dtype != np.uint8 or flat.size > self.capacity:
            raise ValueError(f"PictureRing.write: need uint8 of at most {self.capacity} bytes, got {picture.dtype} {picture.shape}")
        buffer = self.reserve(flat.size)
        if buffer is None:
            return None
        # A memoryview copy keeps the interpreter lock (numpy's drops and retakes it): one
        # copy per player per tick, and each retake could wait a switch interval behind
        # the event loop.
        memoryview(buffer)[:] = memoryview(np.ascontiguousarray(flat))
        return self.commit()

    @property
    def memory(self) -> np.ndarray:
        """The whole segment (header and buffers) as one uint8 array, e.g. to page-lock it."""
        return np.ndarray((self._shm.size,), np.uint8, buffer=self._shm.buf)

    # ------------------------------------------------------------------ reader
    def read(self, seq: int, size: int, copy: Callable[[np.ndarray], T] = np.copy) -> T:
        """A copy of picture ``seq``'s first ``size`` bytes; marks it consumed.

        ``seq`` must be the newest announced picture not yet read or later (in order).
        ``copy`` makes the copy from a ``[size]`` uint8 view of the buffer (which the writer
        reuses once this returns), e.g. straight into an encoder's frame.
        """
        if not 0 < size <= self.capacity:
            raise ValueError(f"PictureRing.read: size must be in (0, {self.capacity}], got {size}")
        out = copy(self._data[seq % self.depth, :size])
        # The copy above released and took back the interpreter lock, so its loads are
        # complete before this store is seen, on weakly ordered CPUs too.
        self._consumed[0] = max(int(self._consumed[0]), seq)
        return out

    @property
    def consumed(self) -> int:
        return int(self._consumed[0])

    def close(self) -> None:
        """Detach; the creating side also frees the segment."""
        self._consumed = self._data = None
        try:
            self._shm.close()
        except BufferError:  # a view still exists somewhere; the OS frees it at exit
            return
        if self.owner:
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass

