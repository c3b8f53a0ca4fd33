"""CONTRACT STUB — the World facade's public interface. The world-core work fills it in.

Everything a world is, with no networking in it: scene, frame memory, coverage,
generation scheduling, reconstruction, rendering and movement. The server drives it
through this class only.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .camera import Cameras, Pose
from .render.base import Renderer, RenderOutput
from .scene import Chunk
from .frames import Frame
from .generators.base import GenerationResult, Generator


@dataclass
class WorldConfig:
    """A world's identity and generation settings (saved with the world)."""

    name: str
    seed: int = 0
    caption: str = ""
    generator: str = "procedural"
    generator_options: dict = field(default_factory=dict)
    keyframe_width: int = 320
    keyframe_height: int = 180
    keyframe_fov_y: float = math.radians(75.0)
    lookahead_s: float = 1.5
    uncovered_fraction: float = 0.15
    max_retrieved_frames: int = 5


@dataclass
class PlayerState:
    """What the world needs to know of a player to plan generation."""

    player_id: str
    pose: Pose
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))  # [3] m/s, world
    fov_y: float = math.radians(60.0)


@dataclass
class GenerationJob:
    """One scheduled generation: target cameras and who wants them.

    ``region_center`` ``[3]`` and ``region_radius`` (metres) describe where it lands, for events.
    ``state`` is one of queued, running, done, failed, cancelled.
    """

    id: int
    cameras: Cameras
    caption: str
    region_center: np.ndarray
    region_radius: float
    requested_by: set[str] = field(default_factory=set)
    state: str = "queued"
    progress: float = 0.0


# ---- events (delivered to subscribers from any thread) ----
@dataclass(frozen=True)
class ChunkRequested:
    job: GenerationJob


@dataclass(frozen=True)
class GenerationProgress:
    job_id: int
    fraction: float
    message: str = ""


@dataclass(frozen=True)
class ChunkAdded:
    job_id: int
    chunks: tuple[Chunk, ...]
    frames: tuple[Frame, ...]
    explored_cells: tuple[tuple[int, int], ...]  # newly explored (i, j) grid cells


@dataclass(frozen=True)
class GenerationFailed:
    job_id: int
    error: str


WorldEvent = ChunkRequested | GenerationProgress | ChunkAdded | GenerationFailed


class World:
    def __init__(
        self,
        config: WorldConfig,
        generator: Generator | None = None,
        renderer: Renderer | None = None,
        executor: Executor | None = None,
        start_image: np.ndarray | None = None,
    ) -> None: ...

    def subscribe(self, callback: Callable[[WorldEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; returns an unsubscribe function."""
        ...

    def spawn_pose(self) -> Pose: ...

    def move(self, pose: Pose, move, dt: float) -> Pose:
        """Advance ``pose`` by a :class:`runtime.world.motion.MoveInput` over ``dt`` seconds, with collision."""
        ...

    def update(self, players: Sequence[PlayerState]) -> list[GenerationJob]:
        """Plan generation for these players; returns the jobs newly scheduled (already submitted)."""
        ...

    def apply(self, job: GenerationJob, result: GenerationResult) -> list[Chunk]:
        """Reconstruct a result into the scene and memory (the worker calls this)."""
        ...

    def render(self, cameras: Cameras) -> RenderOutput: ...

    def set_caption(self, caption: str) -> None: ...

    def wait_idle(self, timeout: float | None = None) -> bool: ...

    def close(self) -> None: ...

    # ---- persistence hooks (used by runtime/world/store) ----
    def state_dict(self) -> dict:
        """Small JSON-able state beyond chunks and frames: config, explored cells, captions, id counters."""
        ...

    def restore(self, chunks: Sequence[Chunk], frames: Sequence[Frame], state: dict) -> None:
        """Load saved chunks, memory frames and :meth:`state_dict` output into an empty world."""
        ...
