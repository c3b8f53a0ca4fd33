"""Everything a world is — scene, frame memory, coverage, generators, reconstruction,
rendering, movement and storage — with no networking in it."""

from .camera import Cameras, Pose
from .movement.motion import MoveInput
from .world import (
    ChunkAdded,
    ChunkRequested,
    GenerationJob,
    JobFailed,
    JobProgress,
    PlayerState,
    World,
    WorldConfig,
    WorldEvent,
)

__all__ = [
    "Cameras",
    "ChunkAdded",
    "ChunkRequested",
    "GenerationJob",
    "JobFailed",
    "JobProgress",
    "MoveInput",
    "PlayerState",
    "Pose",
    "World",
    "WorldConfig",
    "WorldEvent",
]
