"""CONTRACT STUB — player movement input. The world-core work adds stepping with collision."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MoveInput:
    """One movement sample from a player (the latest one wins).

    Axes are in [-1, 1]; look deltas in radians since the previous input.

    Attributes:
        forward: +1 walks forward (along the yaw direction), -1 backward.
        right: +1 strafes right.
        up: +1 rises, -1 sinks (fly mode only).
        yaw_delta: turn right by this many radians.
        pitch_delta: look up by this many radians.
        run: move at run speed instead of walk speed.
        fly: fly mode (no gravity, no ground) instead of walk mode.
    """

    forward: float = 0.0
    right: float = 0.0
    up: float = 0.0
    yaw_delta: float = 0.0
    pitch_delta: float = 0.0
    run: bool = False
    fly: bool = False


WALK_SPEED = 1.5  # m/s
RUN_SPEED = 4.0  # m/s
FLY_SPEED = 6.0  # m/s
EYE_HEIGHT = 1.7  # m above the ground in walk mode
