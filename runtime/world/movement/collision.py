"""Collision against the Gaussian scene itself: a ground height map and an obstacle grid.

Nothing here knows what made the scene, so imported PLY scenes collide the same
way as generated ones. Both structures are built from Gaussian *means* with a
meaningful opacity, per chunk, and cached by chunk id: a new chunk costs only its
own Gaussians, and chunks never change once built.

Conventions: world ``+y`` points **down**, so a surface *below* the eye has a
*larger* ``y``. Cells are addressed by integer indices packed into one ``int64``
key, sorted, and searched with ``np.searchsorted`` (no Python dicts per point).

* **Ground** (``ground_cell`` x ``ground_cell`` columns over ``(x, z)``, heights
  quantised to ``ground_level`` metres): the ground under a player is the
  smallest surface ``y`` not above the feet by more than a step.
* **Obstacles** (``voxel`` metre cubes): a body cylinder may not overlap an
  occupied voxel between knee and head height.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numba
import numpy as np

from ..scene import Chunk, SceneSnapshot

_BIAS = 1 << 20  # indices in [-2^20, 2^20) -> 21 bits each
_MASK = (1 << 21) - 1


def pack_keys(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Pack three int index arrays (each in ``[-2^20, 2^20)``) into sortable int64 keys.

    ``c`` is the least significant part, so all keys of one ``(a, b)`` column are
    contiguous and ordered by ``c`` once sorted.
    """
    a = np.clip(np.asarray(a, np.int64) + _BIAS, 0, _MASK)
    b = np.clip(np.asarray(b, np.int64) + _BIAS, 0, _MASK)
    c = np.clip(np.asarray(c, np.int64) + _BIAS, 0, _MASK)
    return (a << 42) | (b << 21) | c


@numba.njit(cache=True, nogil=True)
def _cylinder_hits(voxels: np.ndarray, x: float, z: float, y_top: float, y_bottom: float, radius: float, v: float) -> bool:
    """Does any occupied voxel (sorted packed keys) overlap the vertical cylinder?

    Columns count when their square comes within ``radius`` of the axis (a disc, not a box).
    """
    r2 = radius * radius
    for ix in range(math.floor((x - radius) / v), math.floor((x + radius) / v) + 1):
        cx = min(max(x, ix * v), (ix + 1) * v) - x
        for iz in range(math.floor((z - radius) / v), math.floor((z + radius) / v) + 1):
            cz = min(max(z, iz * v), (iz + 1) * v) - z
            if cx * cx + cz * cz > r2:
                continue
            a = min(max(ix + _BIAS, 0), _MASK)
            b = min(max(iz + _BIAS, 0), _MASK)
            for iy in range(math.floor(y_top / v), math.floor(y_bottom / v) + 1):
                key = (a << 42) | (b << 21) | min(max(iy + _BIAS, 0), _MASK)
                i = np.searchsorted(voxels, key)
                if i < voxels.size and voxels[i] == key:
                    return True
    return False


@numba.njit(cache=True, nogil=True)
def _column_first_level(ground: np.ndarray, ix: int, iz: int, lo_level: int, hi_level: int) -> int:
    """The smallest stored level in ``[lo_level, hi_level]`` of column ``(ix, iz)`` (sorted
    packed keys), or ``hi_level + 1`` when there is none."""
    a = min(max(ix + _BIAS, 0), _MASK)
    b = min(max(iz + _BIAS, 0), _MASK)
    column = (a << 42) | (b << 21)
    i = np.searchsorted(ground, column | min(max(lo_level + _BIAS, 0), _MASK))
    if i >= ground.size or ground[i] > (column | min(max(hi_level + _BIAS, 0), _MASK)):
        return hi_level + 1
    return int(ground[i] & _MASK) - _BIAS


@dataclass(frozen=True)
class ColliderConfig:
    """Sizes and thresholds of the collision grids (metres unless noted).

    Attributes:
        voxel: edge of an obstacle voxel.
        ground_cell: edge of a ground column over ``(x, z)``.
        ground_level: vertical quantum of stored ground heights.
        min_opacity: Gaussians below this opacity are ignored (haze, soft edges).
        max_scale: Gaussians whose largest sigma exceeds this are ignored (huge
            background blobs from imported scenes would fill whole voxels).
        min_obstacle_count: Gaussians a voxel needs to count as occupied; 1 means any.
    """

    voxel: float = 0.25
    ground_cell: float = 0.5
    ground_level: float = 0.05
    min_opacity: float = 0.3
    max_scale: float = 1.0
    min_obstacle_count: int = 1


@dataclass(frozen=True)
class ChunkCollision:
    """One chunk's collision data: sorted unique keys (``int64``)."""

    ground_keys: np.ndarray  # packed (ix, iz, iy_level) of ground columns
    voxel_keys: np.ndarray  # packed (ix, iz, iy) of occupied voxels


class SceneCollider:
    """Ground heights and occupied voxels of a scene, updated as chunks land.

    Call :meth:`sync` with the latest snapshot (cheap when nothing changed), then
    query :meth:`ground_y` and :meth:`blocked`. Thread-safe: queries see either the
    old or the new merged grids, never a half-built one.
    """

    def __init__(self, config: ColliderConfig | None = None) -> None:
        self.config = config or ColliderConfig()
        self._per_chunk: dict[int, ChunkCollision] = {}
        self._lock = threading.Lock()
        self._version = -1
        self._chunk_ids: tuple[int, ...] = ()
        self._ground = np.zeros(0, np.int64)
        self._voxels = np.zeros(0, np.int64)

    # ---- building ----
    def chunk_data(self, chunk: Chunk) -> ChunkCollision:
        """Collision data of one chunk (built once, then cached by chunk id)."""
        cached = self._per_chunk.get(chunk.id)
        if cached is not None:
            return cached
        cfg = self.config
        g = chunk.gaussians
        if len(g):
            keep = (g.opacities >= cfg.min_opacity) & (g.log_scales.max(axis=1) <= math.log(cfg.max_scale))
            means = g.means[keep]
            means = means[np.isfinite(means).all(axis=1)]
        else:
            means = np.zeros((0, 3), np.float32)
        gx = np.floor(means[:, 0] / cfg.ground_cell)
        gz = np.floor(means[:, 2] / cfg.ground_cell)
        gy = np.round(means[:, 1] / cfg.ground_level)
        ground = np.unique(pack_keys(gx, gz, gy))
        vx, vy, vz = (np.floor(means[:, i] / cfg.voxel) for i in range(3))
        vkeys = pack_keys(vx, vz, vy)
        if cfg.min_obstacle_count > 1:
            vkeys, counts = np.unique(vkeys, return_counts=True)
            vkeys = vkeys[counts >= cfg.min_obstacle_count]
        else:
            vkeys = np.unique(vkeys)
        data = ChunkCollision(ground, vkeys)
        self._per_chunk[chunk.id] = data
        return data

    def sync(self, snapshot: SceneSnapshot) -> None:
        """Bring the merged grids up to ``snapshot`` (no-op if already there)."""
        if snapshot.version == self._version:
            return
        ids = tuple(c.id for c in snapshot.chunks)
        if ids == self._chunk_ids:
            self._version = snapshot.version
            return
        parts = [self.chunk_data(c) for c in snapshot.chunks]
        ground = np.unique(np.concatenate([p.ground_keys for p in parts])) if parts else np.zeros(0, np.int64)
        voxels = np.unique(np.concatenate([p.voxel_keys for p in parts])) if parts else np.zeros(0, np.int64)
        live = set(ids)
        for stale in [k for k in self._per_chunk if k not in live]:
            del self._per_chunk[stale]
        with self._lock:
            self._ground, self._voxels = ground, voxels
            self._version, self._chunk_ids = snapshot.version, ids

    @property
    def num_voxels(self) -> int:
        return int(self._voxels.size)

    # ---- queries ----
    def ground_y(self, x: float, z: float, from_y: float, max_drop: float = 50.0) -> float | None:
        """The highest surface at or below height ``from_y`` in the column at ``(x, z)``.

        With +y down that is the smallest stored ``y >= from_y``. Returns None when
        no surface lies within ``max_drop`` metres below ``from_y`` (unexplored).
        """
        cfg = self.config
        ground = self._ground
        if ground.size == 0:
            return None
        ix, iz = math.floor(x / cfg.ground_cell), math.floor(z / cfg.ground_cell)
        lo_level = math.ceil(from_y / cfg.ground_level)
        hi_level = math.floor((from_y + max_drop) / cfg.ground_level)
        # numba: a walking player asks this up to six times per move step; through
        # np.searchsorted on one key each call cost ~6 us of Python overhead.
        level = _column_first_level(ground, ix, iz, lo_level, hi_level)
        return None if level > hi_level else level * cfg.ground_level

    def blocked(self, x: float, z: float, y_top: float, y_bottom: float, radius: float) -> bool:
        """Does a vertical cylinder overlap an occupied voxel?

        Args:
            x, z: cylinder axis (metres).
            y_top, y_bottom: its extent along world y (``y_top < y_bottom``, +y down).
            radius: its radius (metres).
        """
        voxels = self._voxels
        if voxels.size == 0:
            return False
        # numba: every player's every move step asks this a few times; as numpy ops on
        # arrays of a dozen cells it cost ~60 us, a third of a 32-player tick's host time.
        return _cylinder_hits(voxels, x, z, y_top, y_bottom, radius, self.config.voxel)

    def blocked_sphere(self, position: np.ndarray, radius: float) -> bool:
        """Does a sphere (fly mode's body) overlap an occupied voxel? (box-approximated in y)."""
        x, y, z = (float(c) for c in position)
        return self.blocked(x, z, y - radius, y + radius, radius)
