"""The CPU renderer: tile-based 3D Gaussian splatting in numba, for laptops and CI.

Per camera and frame:

1. frustum-cull chunks (``snapshot.visible_chunks``); only visible chunks are touched;
2. cull the visible chunks' blocks of 1024 Gaussians, project the Gaussians of the
   visible blocks from the cached, activated copies (:mod:`.projection`);
3. sort the kept splats by depth, bin them into 16x16 tiles, blend each tile front to
   back with early termination (:mod:`.raster`);
4. composite over the sky (sampled on a coarse grid) and quantise; then lay the snapshot's
   far field (``snapshot.far``, drawn on its own grid: :meth:`CpuRenderer._far_layer`)
   behind the scene where the scene is see-through (:mod:`.far_pass`; nothing when the
   snapshot has none).

The maths matches 3DGS / gsplat "classic" mode (EWA projection, 0.3 px low-pass,
alpha clamped to 0.99, splats under 1/255 skipped, stop at T < 1e-4), so CPU and
gsplat frames agree. Depth is the *expected* z-depth ``sum_i w_i z_i / alpha``
(gsplat's "ED"), ``inf`` where alpha < 1/255.

Thread safety: all per-frame buffers are thread-local; caches are locked. numba's
``workqueue`` threading layer must not run parallel kernels from two threads at
once, so when it is the active layer, kernel calls are serialised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Sequence

import numba
import numpy as np

from ..camera import Cameras
from ..scene import Chunk, SceneSnapshot
from ..sky import Sky
from .base import Backdrop, RenderOutput
from .chunk_cache import ChunkCache
from .far_pass import SEE_THROUGH_FROM, composite_far, far_stride
from .sky_grid import SkyGridCache, coarse_camera
from .conventions import ALPHA_MIN
from .lod import build_levels
from .projection import BLOCK, S_DEPTH, SPLAT_WIDTH, PackedChunk, activate_chunk, project, visible_blocks
from .conventions import T_MIN
from .raster import (
    TILE,
    count_tiles,
    depth_order,
    fill_tiles,
    interleaved_tile_order,
    rasterize_alpha_tiles,
    rasterize_tiles,
)

DEFAULT_CACHE_BYTES = 1 << 30
"""Budget for activated chunk data (56 B per Gaussian and ~1/3 more for its coarse levels:
~14M Gaussians)."""

DEFAULT_LOD_PX = 6.0
"""Level of detail: a block draws its coarsest level whose merged Gaussians are at most this
many pixels wider than what they merge, at the block's nearest point (:mod:`.lod`; only
patches of nearly one colour merge, so this bounds how far a colour edge can soften).
Measured on a walked world (docs/benchmarks.md): the picture within 50 dB of LOD off,
sharpness within 0.01, the worst view's CPU time -27 %."""


@dataclasses.dataclass(frozen=True)
class DrawCounts:
    """What one scene pass drew for one camera (:attr:`CpuRenderer.last_counts`)."""

    projected: int = 0  # Gaussians projected: those of the visible blocks, at their levels
    drawn: int = 0  # splats on screen
    tile_entries: int = 0  # splat x tile pairs blended
    coarse_blocks: int = 0  # blocks drawn at a coarse level (:mod:`.lod`)


class _Scratch(threading.local):
    """Per-thread reusable buffers (fresh multi-MB arrays each frame cost page faults), and
    what this thread's last scene pass drew."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.counts = DrawCounts()

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        size = int(np.prod(shape))
        buf = self.arrays.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            # Grow with headroom so slowly growing scenes do not reallocate every frame.
            buf = np.empty(max(size, int(size * 1.25)) if size else 1, dtype)
            self.arrays[name] = buf
        return buf[:size].reshape(shape)


def _parallel_lock() -> contextlib.AbstractContextManager:
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet: be safe
        layer = "workqueue"
    return _WORKQUEUE_LOCK if layer == "workqueue" else contextlib.nullcontext()


_WORKQUEUE_LOCK = threading.Lock()

_BLACK = np.zeros((1, 1, 3), np.float32)
"""The far layer's background: it is drawn premultiplied, over nothing."""


def _unit(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 -> float32 in [0, 1]."""
    return rgb.astype(np.float32) * np.float32(1 / 255)


def _activate(chunk: Chunk) -> PackedChunk:
    """The chunk's packed Gaussians with their coarse levels (:mod:`.lod`)."""
    with _parallel_lock():
        packed = activate_chunk(chunk.gaussians)
    return dataclasses.replace(packed, levels=build_levels(packed.packed, BLOCK))


def _coarse_blocks(packed: list[PackedChunk], blocks: np.ndarray) -> int:
    """How many of ``blocks`` (rows of :func:`.projection.visible_blocks`) draw a coarse level."""
    fine = np.cumsum([0] + [len(p.arrays) for p in packed])[:-1]
    return int(np.count_nonzero(~np.isin(blocks[:, 0], fine)))


class CpuRenderer:
    """3DGS rasteriser on the CPU (numba, all cores).

    Args:
        cache_bytes: budget for per-chunk activated data (coarse levels included).
        t_min: a pixel stops taking splats before its transmittance would drop below
            this (3DGS and gsplat: 1e-4).
        lod_px: level of detail (:mod:`.lod`): a block of Gaussians draws a merged, coarser
            copy of itself where merging moves its picture by at most this many pixels;
            0 draws every block fine.
        far_see_through_from: scene transmittance from which the far field shows
            (:data:`.far_pass.SEE_THROUGH_FROM`); None lays it under the whole scene as under
            the sky, as the browser's local rendering does (for comparing with it).
    """

    name = "cpu"

    def __init__(
        self,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        t_min: float = T_MIN,
        far_see_through_from: float | None = SEE_THROUGH_FROM,
        lod_px: float = DEFAULT_LOD_PX,
    ) -> None:
        if not 0.0 < t_min < 1.0:
            raise ValueError(f"CpuRenderer.t_min must be in (0, 1), got {t_min}")
        if far_see_through_from is not None and not 0.0 <= far_see_through_from < 1.0:
            raise ValueError(f"CpuRenderer.far_see_through_from must be None or in [0, 1), got {far_see_through_from}")
        if not (0.0 <= lod_px <= 16.0):
            raise ValueError(f"CpuRenderer.lod_px must be in [0, 16] pixels, got {lod_px}")
        self.t_min = t_min
        self.far_see_through_from = far_see_through_from
        self.lod_px = float(lod_px)
        self._chunks: ChunkCache[PackedChunk] = ChunkCache(_activate, lambda packed: packed.nbytes, cache_bytes)
        self._scratch = _Scratch()
        self._skies = SkyGridCache()

    # ---- public API ----
    def render(self, snapshot: SceneSnapshot, cameras: Cameras, sky: Sky) -> RenderOutput:
        """Draw ``snapshot`` from every camera; see :class:`~.base.RenderOutput` for shapes."""
        n, h, w = len(cameras), cameras.height, cameras.width
        rgb = np.empty((n, h, w, 3), np.uint8)
        depth = np.empty((n, h, w), np.float32)
        alpha = np.empty((n, h, w), np.float32)
        for i in range(n):
            cam = cameras[i]
            coarse, stride = self._skies.get(sky, cam)
            far = snapshot.visible_far(cam)
            self._scratch.counts = self._draw(snapshot, cam, True, coarse, stride, rgb[i], depth[i], alpha[i])
            if far:
                self._lay_far(far, cam, coarse, stride, rgb[i], alpha[i])
        return RenderOutput(rgb=rgb, depth=depth, alpha=alpha, scene_version=snapshot.version)

    def render_alpha(self, snapshot: SceneSnapshot, cameras: Cameras) -> np.ndarray:
        """``[N, H, W]`` float32 accumulated opacity (no colour, no sky): for coverage tests."""
        n, h, w = len(cameras), cameras.height, cameras.width
        alpha = np.empty((n, h, w), np.float32)
        for i in range(n):
            self._scratch.counts = self._draw(snapshot, cameras[i], False, None, 1, None, None, alpha[i])
        return alpha

    def backdrop(self, snapshot: SceneSnapshot, camera: Cameras, sky: Sky) -> Backdrop:
        """What :meth:`render` lays behind ``snapshot``'s chunks at one camera (they are not
        drawn): the sky, and over it the far field, which shows from transmittance
        ``far_see_through_from`` on (see :class:`~.base.Backdrop`). The sky is drawn once and
        the far layer composited over a copy of it, as :meth:`render` does for an empty scene."""
        h, w = camera.height, camera.width
        coarse, stride = self._skies.get(sky, camera)
        bare = np.empty((h, w, 3), np.uint8)
        alpha = np.empty((h, w), np.float32)
        self._draw(SceneSnapshot(snapshot.version, ()), camera, True, coarse, stride, bare, np.empty((h, w), np.float32), alpha)
        far = snapshot.visible_far(camera)
        if not far:
            return Backdrop(_unit(bare), None, self.far_see_through_from)
        background = bare.copy()
        self._lay_far(far, camera, coarse, stride, background, alpha)
        return Backdrop(_unit(background), _unit(bare), self.far_see_through_from)

    def _lay_far(
        self, far: tuple[Chunk, ...], camera: Cameras, coarse: np.ndarray, stride: int, rgb: np.ndarray, alpha: np.ndarray
    ) -> None:
        """Draw the ``far`` chunks' layer at ``camera`` and lay it behind the scene already in
        ``rgb [H,W,3]`` uint8 / ``alpha [H,W]`` (in place; ``coarse``, ``stride``: the sky grid
        it was drawn over), by :attr:`far_see_through_from`. What :meth:`render` and
        :meth:`backdrop` both do."""
        far_rgb, far_alpha, fstride = self._far_layer(far, camera)
        see_through = self.far_see_through_from
        composite_far(rgb, alpha, far_rgb, far_alpha[..., None], fstride, coarse, stride,
                      np.float32(see_through or 0.0), see_through is None)

    def prepare(self, chunks: Sequence[Chunk]) -> None:
        """Activate ``chunks`` and build their coarse levels now (where a chunk lands, on the
        generation worker), so the frames that first draw them need not."""
        for chunk in chunks:
            self._chunks.get(chunk)

    def packed_chunks(self, chunk: Chunk) -> PackedChunk:
        """``chunk`` activated, with its coarse levels (cached: what frames drawing it use)."""
        return self._chunks.get(chunk)

    @property
    def chunks_derived(self) -> int:
        """Chunks activated (with their levels) so far, wherever it ran."""
        return self._chunks.derived

    @property
    def last_counts(self) -> DrawCounts:
        """What this thread's last camera drew in its scene pass (the far layer's pass aside)."""
        return self._scratch.counts

    def cached_chunk_ids(self) -> list[int]:
        """Ids of chunks whose activated data is cached (those some frame has touched)."""
        return self._chunks.chunk_ids()

    # ---- one camera ----
    def _far_layer(self, far: tuple[Chunk, ...], camera: Cameras) -> tuple[np.ndarray, np.ndarray, int]:
        """The far-field chunks drawn over nothing on the far grid (:func:`.far_pass.far_stride`):
        ``([hf, wf, 3] uint8 premultiplied colour, [hf, wf] float32 alpha, stride)``, its samples
        the pixel centres of a coarse camera (:func:`.sky_grid.coarse_camera`)."""
        stride = far_stride(camera.width, camera.height)
        cam = coarse_camera(camera, stride)
        scratch = self._scratch
        rgb = scratch.get("far_rgb", (cam.height, cam.width, 3), np.uint8)
        depth = scratch.get("far_depth", (cam.height, cam.width), np.float32)
        alpha = scratch.get("far_alpha", (cam.height, cam.width), np.float32)
        # One thread: the far pass is small (a coarse grid, a few thousand splats), and a
        # parallel launch waits for every worker; on a loaded machine that wait cost 5-30x the
        # pass itself (measured; docs/benchmarks.md).
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            self._draw(SceneSnapshot(0, far), cam, True, _BLACK, 1, rgb, depth, alpha)
        finally:
            numba.set_num_threads(threads)
        return rgb, alpha, stride

    def _draw(
        self,
        snapshot: SceneSnapshot,
        camera: Cameras,
        with_color: bool,
        sky: np.ndarray | None,
        sky_stride: int,
        out_rgb: np.ndarray | None,
        out_depth: np.ndarray | None,
        out_alpha: np.ndarray,
    ) -> DrawCounts:
        """Rasterise one camera into ``out_rgb [H,W,3]``, ``out_depth [H,W]``, ``out_alpha [H,W]``
        (alpha only when ``with_color`` is False); returns what it drew."""
        h, w = camera.height, camera.width
        scratch = self._scratch
        chunks: tuple[Chunk, ...] = snapshot.visible_chunks(camera)
        packed = [p for p in (self._chunks.get(c) for c in chunks) if len(p)]
        blocks, m = visible_blocks(packed, camera, self.lod_px)
        splats = scratch.get("splats", (m, SPLAT_WIDTH), np.float32)
        boxes = scratch.get("boxes", (m, 4), np.int32)
        tiles_x, tiles_y = (w + TILE - 1) // TILE, (h + TILE - 1) // TILE
        n_tiles = tiles_x * tiles_y
        offsets = scratch.get("offsets", (n_tiles + 1,), np.int64)
        with _parallel_lock():
            project(packed, camera.w2c[0], camera.K[0], w, h, splats, boxes, blocks)
            order, ranges = depth_order(
                boxes,
                splats.view(np.uint32)[:, S_DEPTH],
                scratch.get("idx", (m,), np.int32),
                scratch.get("keys", (m,), np.uint32),
                scratch.get("ranges", (m,), np.int64),
                scratch.get("idx2", (m,), np.int32),
                scratch.get("keys2", (m,), np.uint32),
                scratch.get("ranges2", (m,), np.int64),
            )
            total = int(count_tiles(boxes, tiles_x, tiles_y, offsets))
            ids = scratch.get("ids", (total,), np.int32)
            fill_tiles(order, ranges, tiles_x, offsets, ids)
            tile_order = self._tile_order(n_tiles)
            if with_color:
                rasterize_tiles(
                    splats, boxes, offsets, ids, tile_order, w, h, np.float32(self.t_min),
                    sky, sky_stride, np.float32(ALPHA_MIN), out_rgb, out_depth, out_alpha,
                )
            else:
                rasterize_alpha_tiles(splats, boxes, offsets, ids, tile_order, w, h, np.float32(self.t_min), out_alpha)
        return DrawCounts(projected=m, drawn=len(order), tile_entries=total, coarse_blocks=_coarse_blocks(packed, blocks))

    def _tile_order(self, n_tiles: int) -> np.ndarray:
        threads = numba.get_num_threads()
        key = f"tile_order_{n_tiles}_{threads}"
        order = self._scratch.arrays.get(key)
        if order is None:
            order = interleaved_tile_order(n_tiles, threads)
            self._scratch.arrays[key] = order
        return order
