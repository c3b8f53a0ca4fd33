"""A generated frame: the unit the frame memory keeps and generators receive as context."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One generated view with its geometry.

    Attributes:
        id: unique within the world, increasing.
        rgb: ``[H, W, 3]`` uint8.
        depth: ``[H, W]`` float32 metres along camera +z; ``inf`` for sky.
        w2c: ``[4, 4]`` float32 world-to-camera (OpenCV).
        K: ``[3, 3]`` float32 intrinsics for ``H`` x ``W``.
        chunk_id: the scene chunk reconstructed from the job that made this frame (-1 if none).
        caption: the caption it was generated with.
    """

    id: int
    rgb: np.ndarray
    depth: np.ndarray
    w2c: np.ndarray
    K: np.ndarray
    chunk_id: int = -1
    caption: str = ""

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def center(self) -> np.ndarray:
        """``[3]`` camera centre in world coordinates (metres)."""
        R, t = self.w2c[:3, :3], self.w2c[:3, 3]
        return -R.T @ t
