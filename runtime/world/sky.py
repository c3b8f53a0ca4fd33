"""The sky: a background drawn from view direction alone, shared by generators and renderers.

Sky is at infinite distance, so it is never turned into splats; every renderer
composites the splats over :meth:`Sky.colors` and a generator that draws sky uses
the same function, so the sky in a generated frame matches the rendered sky.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import Cameras


@dataclass(frozen=True)
class Sky:
    """A vertical gradient sky with a sun glow. Colours are RGB in [0, 1].

    Attributes:
        zenith: colour straight up.
        horizon: colour at the horizon.
        ground: colour below the horizon (seen only where the scene has holes).
        sun_direction: ``[3]`` unit vector towards the sun (world coordinates).
        sun_color: added glow colour around the sun.
    """

    zenith: tuple[float, float, float] = (0.25, 0.45, 0.85)
    horizon: tuple[float, float, float] = (0.75, 0.85, 0.95)
    ground: tuple[float, float, float] = (0.55, 0.6, 0.65)
    sun_direction: tuple[float, float, float] = (0.3, -0.6, 0.74)
    sun_color: tuple[float, float, float] = (1.0, 0.9, 0.7)

    def colors_for_directions(self, directions: np.ndarray) -> np.ndarray:
        """``[..., 3]`` unit world directions -> ``[..., 3]`` float32 RGB in [0, 1]."""
        d = directions.astype(np.float32)
        up = -d[..., 1:2]  # world +y is down
        zen, hor, gnd = (np.asarray(c, np.float32) for c in (self.zenith, self.horizon, self.ground))
        t = np.clip(up, 0.0, 1.0) ** 0.6
        above = hor * (1.0 - t) + zen * t
        below = hor * (1.0 - np.clip(-up * 4.0, 0.0, 1.0)) + gnd * np.clip(-up * 4.0, 0.0, 1.0)
        rgb = np.where(up >= 0.0, above, below)
        sun = np.asarray(self.sun_direction, np.float32)
        sun = sun / np.linalg.norm(sun)
        glow = np.clip((d @ sun), 0.0, 1.0)[..., None] ** 64
        rgb = rgb + glow * np.asarray(self.sun_color, np.float32) * 0.6
        return np.clip(rgb, 0.0, 1.0)

    def colors(self, cameras: Cameras) -> np.ndarray:
        """``[N, H, W, 3]`` float32 sky colours for every pixel of every camera."""
        return self.colors_for_directions(pixel_directions(cameras))


def pixel_directions(cameras: Cameras) -> np.ndarray:
    """``[N, H, W, 3]`` unit world-space ray directions through pixel centres."""
    H, W = cameras.height, cameras.width
    u, v = np.meshgrid(np.arange(W, dtype=np.float32) + 0.5, np.arange(H, dtype=np.float32) + 0.5)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)  # [H,W,3]
    Kinv = np.linalg.inv(cameras.K)  # [N,3,3]
    R_c2w = np.transpose(cameras.w2c[:, :3, :3], (0, 2, 1))
    M = R_c2w @ Kinv  # [N,3,3]
    d = np.einsum("nij,hwj->nhwi", M, pix)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)
