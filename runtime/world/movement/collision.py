"""Collision against the Gaussian scene itself: a ground height map and an obstacle grid.

Nothing here knows what made the scene, so imported PLY scenes collide the same
way as generated ones. Both structures are built from Gaussian *means* with a
meaningful opacity, per chunk, and cached per chunk object: a new chunk costs only its
own Gaussians, and so does one that refinement took Gaussians out of (a new object
under the same id).

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
_EPS_LEVELS = 1e-6  # a surface exactly at a query's bound is inside it (1.7 - 0.5 is not 1.2 in floats)


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
def _surface_hits(ground: np.ndarray, x: float, z: float, y_top: float, y_bottom: float, radius: float, cell: float, level: float) -> bool:
    """Does any stored surface level (sorted packed ground keys) lie between ``y_top`` and
    ``y_bottom`` in a ground column whose square comes within ``radius`` of ``(x, z)``?"""
    lo = math.ceil(y_top / level)
    hi = math.floor(y_bottom / level)
    for ix in range(math.floor((x - radius) / cell), math.floor((x + radius) / cell) + 1):
        cx = min(max(x, ix * cell), (ix + 1) * cell) - x
        for iz in range(math.floor((z - radius) / cell), math.floor((z + radius) / cell) + 1):
            cz = min(max(z, iz * cell), (iz + 1) * cell) - z
            if cx * cx + cz * cz > radius * radius:
                continue
            a = min(max(ix + _BIAS, 0), _MASK)
            b = min(max(iz + _BIAS, 0), _MASK)
            column = (a << 42) | (b << 21)
            i = np.searchsorted(ground, column | min(max(lo + _BIAS, 0), _MASK))
            if i < ground.size and ground[i] <= (column | min(max(hi + _BIAS, 0), _MASK)):
                return True
    return False


@numba.njit(cache=True, nogil=True)
def _column_first_floor(ground: np.ndarray, ix: int, iz: int, lo_level: int, hi_level: int, gap: int) -> int:
    """The smallest *floor* level in ``[lo_level, hi_level]`` of column ``(ix, iz)`` (sorted
    packed keys), or ``hi_level + 1`` when there is none.

    A floor is the top of a run of stored levels: no stored level lies within ``gap`` levels
    above it (+y down: at a level in ``[level - gap, level)``). The face of a wall or a step
    is one long run, so only its top is a floor and a player never climbs it rung by rung.
    """
    a = min(max(ix + _BIAS, 0), _MASK)
    b = min(max(iz + _BIAS, 0), _MASK)
    column = (a << 42) | (b << 21)
    last = column | min(max(hi_level + _BIAS, 0), _MASK)
    i = np.searchsorted(ground, column | min(max(lo_level + _BIAS, 0), _MASK))
    while i < ground.size and ground[i] <= last:
        level = int(ground[i] & _MASK) - _BIAS
        above = column | min(max(level - gap + _BIAS, 0), _MASK)
        # The run reaching down to this level starts above lo_level: look for the previous
        # stored level in the column (it may lie above lo_level, outside the search window).
        if i == 0 or ground[i - 1] < above:
            return level
        i += 1
    return hi_level + 1


@numba.njit(cache=True, nogil=True)
def _nearest_floor(ground: np.ndarray, ix: int, iz: int, lo_level: int, hi_level: int, near: int, gap: int) -> int:
    """Of column ``(ix, iz)``'s floors in ``[lo_level, hi_level]``, the one nearest ``near``
    (levels), or ``hi_level + 1`` when there is none."""
    best = hi_level + 1
    level = _column_first_floor(ground, ix, iz, lo_level, hi_level, gap)
    while level <= hi_level:
        if best > hi_level or abs(level - near) < abs(best - near):
            best = level
        level = _column_first_floor(ground, ix, iz, level + 1, hi_level, gap)
    return best


@numba.njit(cache=True, nogil=True)
def _run_below(ground: np.ndarray, ix: int, iz: int, level: int, gap: int) -> int:
    """The lowest level (largest, +y down) of the run of stored levels that goes down from
    ``level`` in column ``(ix, iz)`` (sorted packed keys): consecutive stored levels at most
    ``gap`` apart. ``level`` itself when it is not stored."""
    a = min(max(ix + _BIAS, 0), _MASK)
    b = min(max(iz + _BIAS, 0), _MASK)
    column = (a << 42) | (b << 21)
    i = np.searchsorted(ground, column | min(max(level + _BIAS, 0), _MASK))
    if i >= ground.size or ground[i] != column | min(max(level + _BIAS, 0), _MASK):
        return level
    while i + 1 < ground.size and (ground[i + 1] >> 21) == (column >> 21) and ground[i + 1] - ground[i] <= gap:
        i += 1
    return int(ground[i] & _MASK) - _BIAS


@numba.njit(cache=True, nogil=True)
def _floor_across(ground: np.ndarray, ix: int, iz: int, feet: int, step: int, rise: int, gap: int, reach: int, own: bool) -> float:
    """The floor level that the columns on either side of column ``(ix, iz)`` give it, or nan.

    Along x and along z: the line between the nearest floor on each side, up to ``reach``
    columns out (of a column's floors the one nearest ``feet`` among those within
    ``step + rise * k`` levels of it, ``k`` columns out). Where the column has a floor of its
    ``own``, that line counts only where the ground goes on rising beyond the higher of the
    two (a slope, not a kerb or a wall beside flat ground). Never where it is steeper than
    ``rise`` levels per column (+1 for quantisation): that is no slope to walk; nor where the
    higher of the two tops a face (its run of stored levels goes down more than ``step``
    levels): a column of a walkable slope spans less than a step, and the line from a rock's
    or a wall's top to the ground behind the player is no slope. Of the two axes, the higher
    floor (smaller level) wins.
    """
    best = np.nan
    ks = np.empty(2 * reach, np.int64)
    fs = np.empty(2 * reach, np.int64)
    for axis in range(2):
        n = 0
        lo = -1  # index in ks of the nearest floor on the negative side, and on the positive side
        hi = -1
        for k in range(-reach, reach + 1):
            if k == 0:
                continue
            jx = ix + k if axis == 0 else ix
            jz = iz if axis == 0 else iz + k
            span = step + rise * abs(k)
            f = _nearest_floor(ground, jx, jz, feet - span, feet + span, feet, gap)
            if f > feet + span:
                continue
            ks[n] = k
            fs[n] = f
            if k < 0:
                lo = n
            elif hi < 0:
                hi = n
            n += 1
        if lo < 0 or hi < 0 or abs(fs[hi] - fs[lo]) > rise * (ks[hi] - ks[lo]) + 1:
            continue  # none on one side, or steeper than a walkable slope between them
        top = hi if fs[hi] < fs[lo] else lo  # the higher end (+y down: the smaller level)
        if own:
            rising = False  # beyond the higher end, a floor higher still
            for j in range(n):
                rising |= (j > top if top == hi else j < top) and fs[j] < fs[top]
            if not rising:
                continue
        jx = ix + ks[top] if axis == 0 else ix
        jz = iz if axis == 0 else iz + ks[top]
        if _run_below(ground, jx, jz, fs[top], gap) - fs[top] > step:
            continue  # the higher end is the top of a face (a rock's, a wall's), not a column of a slope
        a = fs[lo] + (fs[hi] - fs[lo]) * (-ks[lo]) / (ks[hi] - ks[lo])
        if np.isnan(best) or a < best:
            best = a
    return best


@numba.njit(cache=True, nogil=True)
def _body_contacts(
    voxels: np.ndarray, ground: np.ndarray, x: float, z: float, y_top: float, y_bottom: float,
    floor_lo: int, floor_hi: int, radius: float, v: float, cell: float, level: float, gap: int, first_only: bool,
) -> tuple[float, float, int]:
    """Occupied voxel columns a walking body's cylinder overlaps, and how to get out of them.

    A column counts when it holds an occupied voxel between ``y_top`` and ``y_bottom``
    (head and knee, +y down) *above its own floor*: where the ground column it stands in has
    a floor at a level in ``[floor_lo, floor_hi]`` (one the body could step onto), the voxel
    holding that floor and those below it are ground, not obstacle -- the rising ground of
    a slope, a step's face, or grass on a floor never stop the walk.

    Returns ``(px, pz, n)``: the sum over the ``n`` columns of each one's penetration vector
    (from the column towards the axis, as long as the overlap), whose direction is the
    obstacle's outward normal. ``first_only`` stops at the first column (a yes/no test).
    """
    px = 0.0
    pz = 0.0
    n = 0
    for ix in range(math.floor((x - radius) / v), math.floor((x + radius) / v) + 1):
        cx = min(max(x, ix * v), (ix + 1) * v) - x
        for iz in range(math.floor((z - radius) / v), math.floor((z + radius) / v) + 1):
            cz = min(max(z, iz * v), (iz + 1) * v) - z
            d2 = cx * cx + cz * cz
            if d2 > radius * radius:
                continue
            last = math.floor(y_bottom / v)
            if ground.size:
                f = _column_first_floor(
                    ground, math.floor((ix + 0.5) * v / cell), math.floor((iz + 0.5) * v / cell), floor_lo, floor_hi, gap
                )
                if f <= floor_hi:
                    # The floor's voxel holds the samples that round to its level, up to half
                    # a level above it (a floor just under a voxel's edge read as a wall).
                    last = min(last, math.floor((f - 0.5) * level / v + 1e-6) - 1)
            a = min(max(ix + _BIAS, 0), _MASK)
            b = min(max(iz + _BIAS, 0), _MASK)
            hit = False
            for iy in range(math.floor(y_top / v), last + 1):
                key = (a << 42) | (b << 21) | min(max(iy + _BIAS, 0), _MASK)
                i = np.searchsorted(voxels, key)
                if i < voxels.size and voxels[i] == key:
                    hit = True
                    break
            if not hit:
                continue
            n += 1
            if first_only:
                return px, pz, n
            d = math.sqrt(d2)
            if d > 1e-9:  # nearest point of the column's square -> axis, scaled to the overlap
                px -= cx / d * (radius - d)
                pz -= cz / d * (radius - d)
            else:  # the axis is inside the column: away from its centre
                ox = x - (ix + 0.5) * v
                oz = z - (iz + 0.5) * v
                o = math.sqrt(ox * ox + oz * oz) + 1e-9
                px += ox / o * radius
                pz += oz / o * radius
    return px, pz, n


DRY_LEAF_RED = 0.9
"""Dry foliage's green is at least this share of its red (olive: red and green about equal)..."""
DRY_LEAF_BLUE = 1.5
"""...and at least this many times its blue (and by :data:`DRY_LEAF_MARGIN`): sand, dirt, rock
and trunks are redder than that, walls and roads greyer."""
DRY_LEAF_MARGIN = 0.08


def foliage(colors: np.ndarray, ratio: float) -> np.ndarray:
    """``[G]`` bool: which of ``colors`` ``[G, 3]`` (RGB in [0, 1]) are foliage.

    Green foliage: green above ``ratio`` times red and blue, and by a margin, so dark or grey
    splats never are. Dry foliage (a desert's olive bushes, whose green is no more than their
    red, issue 16): green about equal to red or above it, and well above blue. ``ratio <= 0``
    turns both off.
    """
    if ratio <= 0 or len(colors) == 0:
        return np.zeros(len(colors), bool)
    r, g, b = colors[:, 0], colors[:, 1], colors[:, 2]
    green = (g > ratio * r) & (g > ratio * b) & (g - np.maximum(r, b) > 0.03)
    dry = (g >= DRY_LEAF_RED * r) & (g >= DRY_LEAF_BLUE * b) & (g - b > DRY_LEAF_MARGIN)
    return green | dry


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
        foliage_ratio: Gaussians whose green exceeds both red and blue this many times over
            are foliage (bushes, grass, leaves): ground to stand on, never an obstacle, so
            a player walks through a bush as through tall grass. 0 turns this off.
        floor_gap: a surface is a floor only if the column holds nothing within this many
            metres above it (see :meth:`SceneCollider.ground_y`). It spans the vertical
            spacing of a far wall's samples (pixel stride x distance), so walls and steps
            read as one face with a floor on top, never as a ladder.
        across_reach: ground columns on each side that :meth:`SceneCollider.floor_across`
            looks at.
    """

    voxel: float = 0.25
    ground_cell: float = 0.5
    ground_level: float = 0.05
    min_opacity: float = 0.3
    max_scale: float = 1.0
    min_obstacle_count: int = 1
    floor_gap: float = 0.35
    foliage_ratio: float = 1.15
    across_reach: int = 3


@dataclass(frozen=True)
class ChunkCollision:
    """One chunk's collision data: sorted unique keys (``int64``)."""

    ground_keys: np.ndarray  # packed (ix, iz, iy_level) of ground columns
    voxel_keys: np.ndarray  # packed (ix, iz, iy) of occupied voxels (foliage left out)
    hard_ground_keys: np.ndarray  # ground_keys without foliage


class SceneCollider:
    """Ground heights and occupied voxels of a scene, updated as chunks land.

    Call :meth:`sync` with the latest snapshot (cheap when nothing changed), then
    query :meth:`ground_y` and :meth:`blocked`. Thread-safe: queries see either the
    old or the new merged grids, never a half-built one.
    """

    def __init__(self, config: ColliderConfig | None = None) -> None:
        self.config = config or ColliderConfig()
        # chunk id -> (the chunk object, its data): refinement retires Gaussians from a chunk,
        # which keeps its id in a new Chunk object, so the data holds only for that object.
        self._per_chunk: dict[int, tuple[Chunk, ChunkCollision]] = {}
        self._lock = threading.Lock()
        self._merging = threading.Lock()  # one merge at a time: a second caller waits for it, then has nothing to do
        self._version = -1
        self._chunks: tuple[Chunk, ...] = ()
        self._ground = np.zeros(0, np.int64)
        self._voxels = np.zeros(0, np.int64)
        self._hard_ground = np.zeros(0, np.int64)

    # ---- building ----
    def chunk_data(self, chunk: Chunk) -> ChunkCollision:
        """Collision data of one chunk (built once, then cached until the chunk with its id is
        another object: one refinement took Gaussians out of)."""
        cached = self._per_chunk.get(chunk.id)
        if cached is not None and cached[0] is chunk:
            return cached[1]
        cfg = self.config
        g = chunk.gaussians
        if len(g):
            keep = (g.opacities >= cfg.min_opacity) & (g.largest_log_scale <= math.log(cfg.max_scale))
            keep &= np.isfinite(g.means).all(axis=1)
            means, soft = g.means[keep], foliage(g.colors[keep], cfg.foliage_ratio)
        else:
            means, soft = np.zeros((0, 3), np.float32), np.zeros(0, bool)
        gx = np.floor(means[:, 0] / cfg.ground_cell)
        gz = np.floor(means[:, 2] / cfg.ground_cell)
        gy = np.round(means[:, 1] / cfg.ground_level)
        keys = pack_keys(gx, gz, gy)
        ground, hard_ground = np.unique(keys), np.unique(keys[~soft])
        means = means[~soft]  # foliage is ground to stand on, never an obstacle
        vx, vy, vz = (np.floor(means[:, i] / cfg.voxel) for i in range(3))
        vkeys = pack_keys(vx, vz, vy)
        if cfg.min_obstacle_count > 1:
            vkeys, counts = np.unique(vkeys, return_counts=True)
            vkeys = vkeys[counts >= cfg.min_obstacle_count]
        else:
            vkeys = np.unique(vkeys)
        data = ChunkCollision(ground, vkeys, hard_ground)
        self._per_chunk[chunk.id] = (chunk, data)
        return data

    def sync(self, snapshot: SceneSnapshot) -> None:
        """Bring the merged grids up to ``snapshot`` (no-op if already there, or newer)."""
        if snapshot.version <= self._version:
            return
        with self._merging:
            if snapshot.version > self._version:
                self._merge(snapshot)

    def _merge(self, snapshot: SceneSnapshot) -> None:
        chunks = snapshot.chunks
        if len(chunks) == len(self._chunks) and all(a is b for a, b in zip(chunks, self._chunks)):
            self._version = snapshot.version
            return
        parts = [self.chunk_data(c) for c in snapshot.chunks]
        def merged(name: str) -> np.ndarray:
            return np.unique(np.concatenate([getattr(p, name) for p in parts])) if parts else np.zeros(0, np.int64)

        ground, voxels, hard_ground = merged("ground_keys"), merged("voxel_keys"), merged("hard_ground_keys")
        live = {c.id for c in chunks}
        for stale in [k for k in self._per_chunk if k not in live]:
            del self._per_chunk[stale]
        with self._lock:
            self._ground, self._voxels, self._hard_ground = ground, voxels, hard_ground
            self._version, self._chunks = snapshot.version, chunks

    @property
    def num_voxels(self) -> int:
        return int(self._voxels.size)

    # ---- queries ----
    def ground_y(self, x: float, z: float, from_y: float, max_drop: float = 50.0, hard: bool = False) -> float | None:
        """The highest floor at or below height ``from_y`` in the column at ``(x, z)``.

        With +y down that is the smallest floor ``y >= from_y``; a floor is a surface with
        nothing stored within ``floor_gap`` above it in the column (the top of a wall or a
        step is one, the middle of its face is not). Returns None when no floor lies within
        ``max_drop`` metres below ``from_y`` (unexplored, or only a wall's face there).
        ``hard`` leaves foliage out (the slope limit: a bush is not a hill).
        """
        cfg = self.config
        ground = self._hard_ground if hard else self._ground
        if ground.size == 0:
            return None
        ix, iz = math.floor(x / cfg.ground_cell), math.floor(z / cfg.ground_cell)
        lo_level = math.ceil(from_y / cfg.ground_level - _EPS_LEVELS)
        hi_level = math.floor((from_y + max_drop) / cfg.ground_level)
        # numba: a walking player asks this up to six times per move step; through
        # np.searchsorted on one key each call cost ~6 us of Python overhead.
        gap = max(1, round(cfg.floor_gap / cfg.ground_level))
        level = _column_first_floor(ground, ix, iz, lo_level, hi_level, gap)
        return None if level > hi_level else level * cfg.ground_level

    def floor_across(
        self, x: float, z: float, feet_y: float, step: float, max_slope_deg: float, own: bool = True
    ) -> float | None:
        """The floor (y, +y down) that the ground columns on either side of ``(x, z)``'s
        column give it, or None.

        Along x and along z: the line between the nearest floor on each side, up to
        ``across_reach`` columns out (those within ``step`` plus a ``max_slope_deg`` rise of
        ``feet_y``); the higher of the two axes counts. Where the column has a floor of its
        ``own``, only if the ground goes on rising beyond the higher of the two: a slope, whose
        column holds a few samples at its downhill edge (sparse keyframe samples, a canopy's
        shadow). Floors are the tops of their columns, so on an evenly sampled slope that is
        the column's own floor. A kerb or a wall beside flat ground does not go on rising, and
        leaves the flat ground's floor alone. Where the column is empty: the ground across an
        empty row. Never steeper than ``max_slope_deg`` between the two, never to the top of a
        face deeper than ``step`` (a boulder's: the line from its top to the slope behind the
        player lifted the player half a metre, within a step of the top, and over it; issue 16,
        snow seed 1), and foliage is left out (a bush or a pine's lowest branches beside the
        player are no slope).
        """
        cfg = self.config
        ground = self._hard_ground  # foliage is no slope (a bush or a pine's skirt beside the player lifts nothing)
        if ground.size == 0:
            return None
        lv = cfg.ground_level
        ix, iz = math.floor(x / cfg.ground_cell), math.floor(z / cfg.ground_cell)
        feet = round(feet_y / lv)
        rise = math.ceil(math.tan(math.radians(max_slope_deg)) * cfg.ground_cell / lv)
        gap = max(1, round(cfg.floor_gap / lv))
        level = _floor_across(ground, ix, iz, feet, math.ceil(step / lv), rise, gap, cfg.across_reach, own)
        return None if math.isnan(level) else level * lv

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

    def body_contacts(
        self, x: float, z: float, y_top: float, y_bottom: float, feet_y: float, step: float, radius: float, first_only: bool = False
    ) -> tuple[float, float, int]:
        """What a walking body's cylinder runs into: ``(dx, dz, columns)``.

        Like :meth:`blocked`, but a voxel column's own floor, if it lies within ``step``
        metres of ``feet_y`` (above or below), and what is under it do not count: that is
        ground the body would step onto. ``(dx, dz)`` is the summed penetration (metres,
        pointing away from the obstacle), ``columns`` the voxel columns touched (0: free).
        """
        voxels = self._voxels
        if voxels.size == 0:
            return 0.0, 0.0, 0
        cfg = self.config
        lo = math.ceil((feet_y - step) / cfg.ground_level - _EPS_LEVELS)
        hi = math.floor((feet_y + step) / cfg.ground_level)
        gap = max(1, round(cfg.floor_gap / cfg.ground_level))
        return _body_contacts(
            voxels, self._ground, x, z, y_top, y_bottom, lo, hi, radius, cfg.voxel, cfg.ground_cell, cfg.ground_level, gap, first_only
        )

    def blocked_sphere(self, position: np.ndarray, radius: float) -> bool:
        """Does a sphere (fly mode's body) overlap an occupied voxel or any surface, foliage
        included (one flies into a bush's top, not through the grass)? (box-approximated in y)."""
        x, y, z = (float(c) for c in position)
        if self.blocked(x, z, y - radius, y + radius, radius):
            return True
        cfg = self.config
        ground = self._ground
        return bool(ground.size) and _surface_hits(ground, x, z, y - radius, y + radius, radius, cfg.ground_cell, cfg.ground_level)
