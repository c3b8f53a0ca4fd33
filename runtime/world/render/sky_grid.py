"""The sky sampled on a coarse pixel grid, for renderers to interpolate.

Evaluating :meth:`Sky.colors` for every pixel costs ~30 ms at 640x360 on one core
(more than a whole frame's budget), and the sky is smooth, so renderers evaluate
it on every ``stride``-th pixel centre and interpolate bilinearly. The samples
depend only on the camera's rotation and intrinsics, not on its position, so
:class:`SkyGridCache` keeps recent grids: a player walking without turning pays nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from ..camera import Cameras
from ..sky import Sky, pixel_directions

SKY_COARSE_COLUMNS = 160
"""Target number of samples across the longer image side."""


def sky_stride(width: int, height: int, coarse_columns: int = SKY_COARSE_COLUMNS) -> int:
    """Pixels between coarse sky samples for an image size (1 = every pixel)."""
    return max(1, int(round(max(width, height) / coarse_columns)))


def coarse_sky(sky: Sky, camera: Cameras, coarse_columns: int = SKY_COARSE_COLUMNS) -> tuple[np.ndarray, int]:
    """``([hc, wc, 3] float32 RGB, stride)`` for the first camera of ``camera``.

    Sample ``(i, j)`` lies exactly on pixel ``(i*stride, j*stride)``'s centre, and the
    grid reaches the last row and column (``(wc-1)*stride >= width-1``). With
    ``stride == 1`` this is exactly ``sky.colors(camera)[0]``.
    """
    stride = sky_stride(camera.width, camera.height, coarse_columns)
    if stride == 1:
        return np.ascontiguousarray(sky.colors(camera[0])[0], dtype=np.float32), 1
    colors = sky.colors_for_directions(pixel_directions(coarse_camera(camera[0], stride)))[0]
    return np.ascontiguousarray(colors, dtype=np.float32), stride


def coarse_camera(cameras: Cameras, stride: int) -> Cameras:
    """The cameras whose pixel ``(i, j)`` centre is ``cameras``' pixel ``(i*stride, j*stride)``
    centre, covering the image up to its last row and column: what a coarse grid samples
    (``[hc, wc]`` with ``wc = ceil((W-1)/stride) + 1``). ``stride == 1`` returns ``cameras``."""
    if stride == 1:
        return cameras
    wc = -(-(cameras.width - 1) // stride) + 1
    hc = -(-(cameras.height - 1) // stride) + 1
    # Intrinsics for a camera whose pixel centre i + 0.5 is the fine pixel centre i*stride + 0.5.
    K = cameras.K.copy()
    K[:, 0, 0] /= stride
    K[:, 1, 1] /= stride
    K[:, 0, 2] = (K[:, 0, 2] - 0.5) / stride + 0.5
    K[:, 1, 2] = (K[:, 1, 2] - 0.5) / stride + 0.5
    return Cameras(cameras.w2c, K, wc, hc)


class SkyGridCache:
    """Thread-safe LRU of :func:`coarse_sky` results keyed by (sky, rotation, K, size)."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._grids: OrderedDict[tuple, tuple[np.ndarray, int]] = OrderedDict()

    def get(self, sky: Sky, camera: Cameras) -> tuple[np.ndarray, int]:
        try:
            key = (sky, camera.w2c[0, :3, :3].tobytes(), camera.K[0].tobytes(), camera.width, camera.height)
            hash(key)
        except TypeError:  # an unhashable Sky subclass: no caching
            return coarse_sky(sky, camera)
        with self._lock:
            hit = self._grids.get(key)
            if hit is not None:
                self._grids.move_to_end(key)
                return hit
        grid = coarse_sky(sky, camera)
        with self._lock:
            self._grids[key] = grid
            while len(self._grids) > self._size:
                self._grids.popitem(last=False)
        return grid
