"""Frame memory: every kept generated frame, and retrieval of the ones that see a view.

This is Lyra 2's spatial memory ("information routing"), made cheap enough to run
per query as the memory grows:

1. **Cache.** Each added frame keeps its RGB, depth, ``w2c`` and ``K`` plus a sparse
   point cloud: one world point per ``point_stride`` x ``point_stride`` block of its
   depth map (sky skipped) with its footprint in metres, grouped into 4 x 4 image
   tiles that each keep the axis-aligned bounds of their points.
2. **Candidates.** A uniform grid over the ground plane ``(x, z)`` (cells of
   ``cell_size`` metres) indexes frames by camera centre. A query visits only the cells
   within ``max_distance`` of the target camera, keeps frames whose centre is truly
   within ``max_distance``, and drops frames, then tiles, whose point bounds miss the
   target frustum (:func:`~runtime.world.scene.frustum_cull_boxes`). The grid never changes results,
   only cost: a brute-force scan (``use_index=False``) returns the same frames.
3. **Visibility.** All candidates' points are projected into the target view at a
   reduced resolution, each splatted over its footprint, into one z-buffer; a point
   sees a pixel when it is within ``depth_margin`` (relative) of the nearest depth there.
4. **Greedy set cover.** Frames are picked one at a time, each the one that newly covers
   the most target pixels, until ``k`` are chosen or none adds coverage. Ties go to the
   frame added first.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numba
import numpy as np

from ..camera import Cameras
from ..scene import frustum_cull_boxes
from .frames import Frame
from .reconstruct import unproject_depth

NEAR = 0.05
"""Points closer than this to the target camera (metres) are ignored."""

TILES_PER_SIDE = 4
"""Each frame's points are grouped into 4 x 4 image tiles with their own bounds, so a
query projects only the parts of a frame that can land in the view.
"""


class FrameMemory:
    """The world's generated frames, with spatial retrieval. Thread-safe.

    Args:
        point_stride: one cached point per ``point_stride`` x ``point_stride`` pixels.
        cell_size: ground-plane grid cell size of the spatial index (metres).
        depth_margin: z-buffer tolerance, relative to the nearest depth at a pixel.
        max_point_depth: depths at or beyond this many metres are not cached (sky-like).
        query_width: the z-buffer is at most this many pixels wide; the target is
            reduced by ``max(point_stride, ceil(W / query_width))`` (1/4 for a 320-wide view).
    """

    def __init__(
        self,
        point_stride: int = 4,
        cell_size: float = 8.0,
        *,
        depth_margin: float = 0.04,
        max_point_depth: float = 200.0,
        query_width: int = 96,
    ) -> None:
        if int(point_stride) != point_stride or not 1 <= point_stride <= 64:
            raise ValueError(f"point_stride must be an integer in [1, 64], got {point_stride}")
        if not cell_size > 0:
            raise ValueError(f"cell_size must be > 0 metres, got {cell_size}")
        if not 0 <= depth_margin < 1:
            raise ValueError(f"depth_margin must be in [0, 1), got {depth_margin}")
        if not query_width >= 8:
            raise ValueError(f"query_width must be >= 8 pixels, got {query_width}")
        self.point_stride = int(point_stride)
        self.cell_size = float(cell_size)
        self.depth_margin = float(depth_margin)
        self.max_point_depth = float(max_point_depth)
        self.query_width = int(query_width)

        self._lock = threading.Lock()
        self._frames: list[Frame] = []  # by slot (insertion order)
        # Every frame's points live in one pool (so a query hands the kernel one array, no
        # copies); a frame's points are rows [start, start + count).
        self._pool_points = np.zeros((1 << 16, 3), np.float32)  # world points, metres
        self._pool_sizes = np.zeros(1 << 16, np.float32)  # point footprints, metres
        self._pool_used = 0
        self._slot_of: dict[int, int] = {}  # frame id -> slot
        self._sorted: list[Frame] | None = []  # frames in id order (cache, rebuilt lazily)
        # Per-slot arrays, grown by doubling; readers take the reference and a count under
        # the lock and may keep reading it after: rows below the count never change.
        self._centers = np.zeros((64, 3), np.float64)
        self._lo = np.zeros((64, 3), np.float32)
        self._hi = np.zeros((64, 3), np.float32)
        self._has_points = np.zeros(64, bool)
        self._start = np.zeros(64, np.int64)
        self._count = np.zeros(64, np.int64)
        self._first_tile = np.zeros(64, np.int64)
        self._n_tiles = np.zeros(64, np.int64)
        # Tile table (same growth rule): point bounds and pool rows of every frame's tiles.
        self._tile_lo = np.zeros((256, 3), np.float32)
        self._tile_hi = np.zeros((256, 3), np.float32)
        self._tile_start = np.zeros(256, np.int64)
        self._tile_count = np.zeros(256, np.int64)
        self._tiles_used = 0
        self._grid: dict[tuple[int, int], list[int]] = {}

    # ------------------------------------------------------------------ storage

    def add(self, frame: Frame) -> None:
        """Keep ``frame`` and cache its points. Raises ValueError on a duplicate id or bad shapes."""
        _check_frame(frame)
        points, blocks = unproject_depth(frame.depth, frame.K, frame.w2c, self.point_stride, self.max_point_depth)
        # Group the points by image tile (stable sort keeps row-major order inside a tile).
        Hb, Wb = -(-frame.height // self.point_stride), -(-frame.width // self.point_stride)
        tile = (blocks[:, 0] * TILES_PER_SIDE // Hb) * TILES_PER_SIDE + blocks[:, 1] * TILES_PER_SIDE // Wb
        order = np.argsort(tile, kind="stable")
        points, tile = points[order], tile[order]
        tile_sizes = np.bincount(tile, minlength=TILES_PER_SIDE**2)
        tile_sizes = tile_sizes[tile_sizes > 0]
        tile_offsets = np.concatenate([[0], np.cumsum(tile_sizes)[:-1]]).astype(np.int64)
        if len(points):
            tile_lo = np.minimum.reduceat(points, tile_offsets, axis=0)
            tile_hi = np.maximum.reduceat(points, tile_offsets, axis=0)
        else:
            tile_lo = tile_hi = np.zeros((0, 3), np.float32)
        # Each point stands for a block of stride x stride pixels: its width on a camera-facing
        # surface is stride * depth / focal. Queries splat points over that footprint.
        focal = math.sqrt(abs(float(frame.K[0, 0]) * float(frame.K[1, 1])))
        depth_cam = points @ np.asarray(frame.w2c[2, :3], np.float32) + np.float32(frame.w2c[2, 3])
        sizes = (self.point_stride / focal * depth_cam).astype(np.float32)
        center = np.asarray(frame.center, np.float64)
        with self._lock:
            if frame.id in self._slot_of:
                raise ValueError(f"frame.id {frame.id} is already in memory")
            slot = len(self._frames)
            if slot == len(self._centers):
                self._grow()
            self._centers[slot] = center
            if len(points):
                self._lo[slot] = points.min(axis=0)
                self._hi[slot] = points.max(axis=0)
                self._has_points[slot] = True
            start = self._pool_append(points, sizes)
            self._start[slot], self._count[slot] = start, len(points)
            first = self._tiles_used
            if first + len(tile_sizes) > len(self._tile_count):
                cap = max(2 * len(self._tile_count), first + len(tile_sizes))
                for name in ("_tile_lo", "_tile_hi", "_tile_start", "_tile_count"):
                    _grow_array(self, name, cap)
            end = first + len(tile_sizes)
            self._tile_lo[first:end], self._tile_hi[first:end] = tile_lo, tile_hi
            self._tile_start[first:end] = start + tile_offsets
            self._tile_count[first:end] = tile_sizes
            self._first_tile[slot], self._n_tiles[slot] = first, len(tile_sizes)
            self._tiles_used = end
            self._frames.append(frame)
            self._slot_of[frame.id] = slot
            self._grid.setdefault(self._cell(center), []).append(slot)
            if self._sorted is not None and self._sorted and self._sorted[-1].id > frame.id:
                self._sorted = None  # out-of-order id (restores): re-sort on next read
            elif self._sorted is not None:
                self._sorted.append(frame)

    def _grow(self) -> None:
        cap = 2 * len(self._centers)
        for name in ("_centers", "_lo", "_hi", "_has_points", "_start", "_count", "_first_tile", "_n_tiles"):
            _grow_array(self, name, cap)

    def _pool_append(self, points: np.ndarray, sizes: np.ndarray) -> int:
        """Copy a frame's points into the pool; returns the first row. Call under the lock."""
        start, end = self._pool_used, self._pool_used + len(points)
        if end > len(self._pool_sizes):
            cap = max(2 * len(self._pool_sizes), end)
            _grow_array(self, "_pool_points", cap)
            _grow_array(self, "_pool_sizes", cap)
        self._pool_points[start:end] = points
        self._pool_sizes[start:end] = sizes
        self._pool_used = end
        return start

    def _cell(self, center: np.ndarray) -> tuple[int, int]:
        return (math.floor(center[0] / self.cell_size), math.floor(center[2] / self.cell_size))

    def __len__(self) -> int:
        return len(self._frames)

    def frames(self) -> list[Frame]:
        """All frames, in id order (a new list)."""
        with self._lock:
            if self._sorted is None:
                self._sorted = sorted(self._frames, key=lambda f: f.id)
            return list(self._sorted)

    def get(self, frame_id: int) -> Frame:
        """The frame with this id; KeyError if absent."""
        with self._lock:
            slot = self._slot_of.get(frame_id)
            if slot is None:
                raise KeyError(f"no frame with id {frame_id} in memory")
            return self._frames[slot]

    def points(self, frame_id: int) -> np.ndarray:
        """``[M, 3]`` float32 cached world points of one frame (metres)."""
        with self._lock:
            slot = self._slot_of.get(frame_id)
            if slot is None:
                raise KeyError(f"no frame with id {frame_id} in memory")
            start, count = self._start[slot], self._count[slot]
            return self._pool_points[start : start + count].copy()

    # ------------------------------------------------------------------ retrieval

    def retrieve(self, camera: Cameras, k: int = 5, max_distance: float = 60.0) -> list[Frame]:
        """Up to ``k`` frames that together see most of ``camera``'s view, best first.

        Args:
            camera: exactly one camera.
            k: most frames to return (>= 1).
            max_distance: only frames whose camera centre is within this many metres.
        """
        return self.retrieve_with_coverage(camera, k, max_distance)[0]

    def retrieve_with_coverage(
        self, camera: Cameras, k: int = 5, max_distance: float = 60.0, *, use_index: bool = True, cull: bool = True
    ) -> tuple[list[Frame], np.ndarray]:
        """Like :meth:`retrieve`, also saying which chosen frame covers each pixel.

        Returns:
            ``frames`` in greedy order (most newly covered pixels first), and ``owner``
            ``[H, W]`` int32 at the camera's resolution: the position in ``frames`` of the
            first chosen frame that sees the pixel, ``-1`` where none does. It is computed
            on the reduced grid (see ``query_width``) and upsampled by nearest neighbour.
            ``use_index=False`` scans every frame instead of the spatial grid (same result).
            ``cull=False`` also skips the distance and frustum tests and projects every
            point of every frame, as Lyra 2 does (``bench/retrieval.py``'s baseline).
        """
        if not isinstance(camera, Cameras) or len(camera) != 1:
            raise ValueError(f"camera must be Cameras with exactly 1 camera, got {camera!r:.80}")
        if int(k) != k or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k}")
        if not max_distance > 0:
            raise ValueError(f"max_distance must be > 0 metres, got {max_distance}")
        H, W = camera.height, camera.width
        cand = self._candidates(camera, max_distance, use_index and cull, cull)
        if len(cand.frames) == 0:
            return [], np.full((H, W), -1, np.int32)

        scale = max(self.point_stride, math.ceil(W / self.query_width))
        Wr, Hr = max(1, math.ceil(W / scale)), max(1, math.ceil(H / scale))
        small = camera.resized(Wr, Hr)
        cover = _visibility(
            cand.pool_points, cand.pool_sizes, cand.run_starts, cand.run_counts, cand.run_labels, len(cand.frames),
            small.w2c[0], small.K[0], Wr, Hr, self.depth_margin,
        )  # [C, Hr*Wr] bool
        order, owner = _greedy_cover(cover, int(k))
        chosen = [cand.frames[c] for c in order]

        # Nearest-neighbour upsampling of the reduced owner map to H x W.
        rows = np.minimum(np.arange(H) * Hr // H, Hr - 1)
        cols = np.minimum(np.arange(W) * Wr // W, Wr - 1)
        return chosen, owner.reshape(Hr, Wr)[rows[:, None], cols[None, :]].astype(np.int32)

    def frames_viewing(self, lo: np.ndarray, hi: np.ndarray, max_distance: float) -> list[Frame]:
        """Frames whose camera is within ``max_distance`` metres of a box and whose frustum touches it.

        For "which earlier keyframes may see these points" (revisit consistency): cheap, it
        reads only camera centres and poses through the spatial grid.

        Args:
            lo, hi: ``[3]`` world-space corners of the box (metres).
            max_distance: largest distance from a camera centre to the box (metres).

        Returns:
            The frames, in id order.
        """
        lo = np.asarray(lo, np.float64).reshape(3)
        hi = np.asarray(hi, np.float64).reshape(3)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()) or not max_distance >= 0:
            return []
        middle = 0.5 * (lo + hi)
        half_diagonal = 0.5 * float(np.linalg.norm(hi - lo))
        with self._lock:
            slots = self._grid_slots(middle, max_distance + half_diagonal)
            centers = self._centers
            frames = self._frames  # append-only: the prefix we use stays valid
        if len(slots) == 0:
            return []
        c = centers[slots]
        gap = np.maximum(np.maximum(lo - c, c - hi), 0.0)  # per-axis distance outside the box
        slots = slots[np.linalg.norm(gap, axis=1) <= max_distance]
        near = [frames[s] for s in slots]
        out: list[Frame] = []
        by_size: dict[tuple[int, int], list[Frame]] = {}
        for f in near:
            by_size.setdefault((f.width, f.height), []).append(f)
        for (w, h), group in by_size.items():
            cams = Cameras(np.stack([f.w2c for f in group]), np.stack([f.K for f in group]), w, h)
            touches = frustum_cull_boxes(lo[None].astype(np.float32), hi[None].astype(np.float32), cams)[:, 0]
            out.extend(f for f, t in zip(group, touches) if t)
        return sorted(out, key=lambda f: f.id)

    def _candidates(self, camera: Cameras, max_distance: float, use_index: bool = True, cull: bool = True) -> "_Candidates":
        """Frames within ``max_distance`` whose points can land in ``camera``'s view, and their tiles in view
        (every frame and tile when not ``cull``).

        Takes a consistent snapshot under the lock (cheap: references and the grid lookup);
        the culling runs outside it.
        """
        center = camera.centers[0].astype(np.float64)
        with self._lock:
            slots = self._grid_slots(center, max_distance) if use_index else np.arange(len(self._frames))
            centers, lo, hi, has_points = self._centers, self._lo, self._hi, self._has_points
            first_tile, n_tiles = self._first_tile, self._n_tiles
            tile_lo, tile_hi, tile_start, tile_count = self._tile_lo, self._tile_hi, self._tile_start, self._tile_count
            pool_points, pool_sizes = self._pool_points, self._pool_sizes
            frames = self._frames  # append-only: the prefix we use stays valid
        if cull and len(slots):
            near = np.linalg.norm(centers[slots] - center, axis=1) <= max_distance
            slots = slots[near & has_points[slots]]
        if cull and len(slots):
            slots = slots[frustum_cull_boxes(lo[slots], hi[slots], camera)[0]]
        slots = np.sort(slots)  # candidate order = slot order: deterministic tie-breaks
        # The candidates' tiles, labelled with their candidate index; keep those in view.
        per = n_tiles[slots]
        labels = np.repeat(np.arange(len(slots)), per)
        tiles = np.repeat(first_tile[slots] - np.cumsum(per) + per, per) + np.arange(int(per.sum()))
        if cull and len(tiles):
            in_view = frustum_cull_boxes(tile_lo[tiles], tile_hi[tiles], camera)[0]
            tiles, labels = tiles[in_view], labels[in_view]
        return _Candidates(
            [frames[s] for s in slots], tile_start[tiles], tile_count[tiles], labels, pool_points, pool_sizes
        )

    def _grid_slots(self, center: np.ndarray, radius: float) -> np.ndarray:
        """Slots of frames in grid cells touching the ground-plane disc around ``center``. Call under the lock."""
        cs = self.cell_size
        i0, i1 = math.floor((center[0] - radius) / cs), math.floor((center[0] + radius) / cs)
        j0, j1 = math.floor((center[2] - radius) / cs), math.floor((center[2] + radius) / cs)
        if (i1 - i0 + 1) * (j1 - j0 + 1) > len(self._grid):
            # A huge radius: walking the occupied cells is cheaper than walking the range.
            cells = [c for c in self._grid if i0 <= c[0] <= i1 and j0 <= c[1] <= j1]
        else:
            cells = [(i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1)]
        out: list[int] = []
        for cell in cells:
            bucket = self._grid.get(cell)
            if bucket:
                out.extend(bucket)
        return np.asarray(out, np.int64)


@dataclass(frozen=True)
class _Candidates:
    """What a query projects: candidate frames and their point runs (tiles) in view."""

    frames: list[Frame]  # [C], slot order
    run_starts: np.ndarray  # [T] int64 first pool row of each run
    run_counts: np.ndarray  # [T] int64 rows in each run
    run_labels: np.ndarray  # [T] int64 candidate index of each run
    pool_points: np.ndarray  # [P, 3] float32 (snapshot reference)
    pool_sizes: np.ndarray  # [P] float32


def _grow_array(owner: object, name: str, capacity: int) -> None:
    """Replace ``owner.name`` by a zero-padded copy with ``capacity`` rows.

    Readers that took the old array keep valid rows: it is never written again.
    """
    old = getattr(owner, name)
    new = np.zeros((capacity,) + old.shape[1:], old.dtype)
    new[: len(old)] = old
    setattr(owner, name, new)


def _check_frame(frame: Frame) -> None:
    if not isinstance(frame, Frame):
        raise ValueError(f"frame must be a Frame, got {type(frame).__name__}")
    rgb, depth = np.asarray(frame.rgb), np.asarray(frame.depth)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"frame.rgb must be [H, W, 3] uint8, got {rgb.shape} {rgb.dtype}")
    if depth.shape != rgb.shape[:2]:
        raise ValueError(f"frame.depth must be [H, W] = {rgb.shape[:2]}, got {depth.shape}")
    if np.asarray(frame.w2c).shape != (4, 4) or np.asarray(frame.K).shape != (3, 3):
        raise ValueError(
            f"frame.w2c must be [4, 4] and frame.K [3, 3], got {np.shape(frame.w2c)} and {np.shape(frame.K)}"
        )


MAX_SPLAT = 4
"""A cached point covers at most this many target pixels per side (closer points leave holes)."""


def _visibility(
    points: np.ndarray,
    sizes: np.ndarray,
    starts: np.ndarray,
    counts: np.ndarray,
    labels: np.ndarray,
    num_candidates: int,
    w2c: np.ndarray,
    K: np.ndarray,
    W: int,
    H: int,
    margin: float,
) -> np.ndarray:
    """Which target pixels each candidate frame's points are visible in.

    Every point is splatted over the square of pixels its footprint covers in the
    target (1 to ``MAX_SPLAT`` pixels per side), so a frame's cloud covers its surfaces
    without holes and hides what lies behind it.

    Args:
        points: ``[P, 3]`` float32 world points (the pool); ``sizes`` ``[P]`` their footprints (metres).
        starts, counts: ``[T]`` int64 point runs (tiles): run ``r`` is rows ``[starts[r], starts[r] + counts[r])``.
        labels: ``[T]`` int: the candidate (row of the result) each run belongs to.
        num_candidates: ``C``.
        w2c, K: the target camera at ``W`` x ``H``.
        margin: a point is visible when its depth is within this fraction of the
            nearest depth splatted onto its pixel (one z-buffer over all candidates).

    Returns:
        ``[C, H * W]`` bool.
    """
    cover = np.zeros((num_candidates, H * W), np.bool_)
    zbuf = np.full(H * W, np.inf, np.float32)
    _visibility_kernel(
        points, sizes, np.ascontiguousarray(starts, np.int64), np.ascontiguousarray(counts, np.int64),
        np.ascontiguousarray(labels, np.int64),
        np.asarray(w2c, np.float64), np.asarray(K, np.float64), W, H, float(margin), MAX_SPLAT, zbuf, cover,
    )
    return cover


@numba.njit(cache=True, nogil=True, fastmath=True)
def _visibility_kernel(points, sizes, starts, counts, labels, w2c, K, W, H, margin, max_splat, zbuf, cover):  # pragma: no cover
    fx, skew, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    limit = 0.5 * max_splat
    total = 0
    for r in range(starts.shape[0]):
        total += counts[r]
    # Pass 1 projects every point once, fills the z-buffer and remembers the splat
    # (depth, pixel box, candidate) of those that land in view for pass 2.
    splat_z = np.empty(total, np.float32)
    splat_box = np.empty((total, 4), np.int32)
    splat_label = np.empty(total, np.int64)
    n = 0
    for r in range(starts.shape[0]):
        c = labels[r]
        for i in range(starts[r], starts[r] + counts[r]):
            x, y, z = points[i, 0], points[i, 1], points[i, 2]
            zc = w2c[2, 0] * x + w2c[2, 1] * y + w2c[2, 2] * z + w2c[2, 3]
            if zc <= NEAR:
                continue
            xc = w2c[0, 0] * x + w2c[0, 1] * y + w2c[0, 2] * z + w2c[0, 3]
            yc = w2c[1, 0] * x + w2c[1, 1] * y + w2c[1, 2] * z + w2c[1, 3]
            u = (fx * xc + skew * yc) / zc + cx
            v = fy * yc / zc + cy
            half = min(0.5 * sizes[i] * fx / zc, limit)
            u0 = int(np.floor(u - half))
            v0 = int(np.floor(v - half))
            u1 = min(int(np.floor(u + half)), u0 + max_splat - 1, W - 1)
            v1 = min(int(np.floor(v + half)), v0 + max_splat - 1, H - 1)
            u0 = max(u0, 0)
            v0 = max(v0, 0)
            if u1 < u0 or v1 < v0:
                continue
            splat_z[n] = zc
            splat_box[n, 0], splat_box[n, 1], splat_box[n, 2], splat_box[n, 3] = u0, v0, u1, v1
            splat_label[n] = c
            n += 1
            for py in range(v0, v1 + 1):
                for px in range(u0, u1 + 1):
                    p = py * W + px
                    if zc < zbuf[p]:
                        zbuf[p] = zc
    # Pass 2: a splat covers the pixels where it is within the margin of the nearest depth.
    for j in range(n):
        zc = splat_z[j]
        c = splat_label[j]
        for py in range(splat_box[j, 1], splat_box[j, 3] + 1):
            for px in range(splat_box[j, 0], splat_box[j, 2] + 1):
                p = py * W + px
                if zc <= zbuf[p] * (1.0 + margin):
                    cover[c, p] = True


def _greedy_cover(cover: np.ndarray, k: int) -> tuple[list[int], np.ndarray]:
    """Greedy set cover over ``cover`` ``[C, P]`` bool.

    Returns the chosen rows (at most ``k``, each adding > 0 new pixels, most first; ties
    to the lower row) and ``owner`` ``[P]`` int32: position in the chosen list of the
    first chosen row covering each pixel, -1 for none.
    """
    owner = np.full(cover.shape[1], -1, np.int32)
    live = np.flatnonzero(cover.any(axis=1))  # rows that can ever add coverage
    sets = cover[live]
    uncovered = np.ones(cover.shape[1], bool)
    chosen: list[int] = []
    for position in range(min(k, len(live))):
        gains = np.count_nonzero(sets & uncovered, axis=1)
        best = int(np.argmax(gains))
        if gains[best] == 0:
            break
        new = sets[best] & uncovered
        owner[new] = position
        uncovered &= ~new
        chosen.append(int(live[best]))
    return chosen, owner
