"""What the world knows of a player: enough to plan generation around them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .camera import Pose


@dataclass
class PlayerState:
    """What the world needs to know of a player to plan generation."""

    player_id: str
    pose: Pose
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))  # [3] m/s, world
    fov_y: float = math.radians(60.0)
