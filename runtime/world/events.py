"""What a world tells its subscribers (the session, the store), and the bus that delivers it.

Events go out from whichever thread made them: the server's (planning) or a
generation worker's (progress, landed chunks, failures).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from .frontier.jobs import GenerationJob
from .keyframes.frames import Frame
from .scene import Chunk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkRequested:
    job: GenerationJob


@dataclass(frozen=True)
class JobProgress:
    job_id: int
    fraction: float
    message: str = ""


@dataclass(frozen=True)
class ChunkAdded:
    job_id: int
    chunks: tuple[Chunk, ...]
    frames: tuple[Frame, ...]
    explored_cells: tuple[tuple[int, int], ...]  # newly explored (i, j) grid cells
    far: tuple[Chunk, ...] = ()  # far-field chunks the job added or merged into (see SceneSnapshot.far)
    far_dropped: tuple[int, ...] = ()  # ids of far-field chunks it dropped (the far field's cap)


@dataclass(frozen=True)
class JobFailed:
    """A job ended without a chunk. ``cancelled`` jobs were no longer wanted (not an error)."""

    job_id: int
    error: str
    cancelled: bool = False


WorldEvent = ChunkRequested | JobProgress | ChunkAdded | JobFailed


class EventBus:
    """Subscribers of one world and delivery of its events to them.

    Args:
        world_name: names the world in log messages.
        lock: guards the subscriber list; the world passes its planner lock so that
            subscribing orders with planning exactly as it always has.
    """

    def __init__(self, world_name: str, lock: threading.RLock) -> None:
        self._world_name = world_name
        self._lock = lock
        self._subscribers: list[Callable[[WorldEvent], None]] = []

    def subscribe(self, callback: Callable[[WorldEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; returns an unsubscribe function."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: WorldEvent) -> None:
        """Deliver ``event`` to every subscriber, outside the lock (callbacks may be slow)."""
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # a broken subscriber must not break generation
                log.exception("world %s: subscriber failed on %s", self._world_name, type(event).__name__)
