"""The procedural generator: a seeded, ray-marched signed-distance world. No weights, CPU only.

Each target view is traced independently by the numba kernels in :mod:`.kernels`; what a
ray meets is a pure function of world position + seed (+ the biome's colours), so any two
views of one place agree, and generating a place twice gives the same pixels.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

import numba
import numpy as np

from ...camera import Cameras
from ...sky import Sky
from ..base import CancelToken, GenerationRequest, GenerationResult, ProgressCallback
from . import kernels
from .biomes import Biome, biome_for_caption, pack_sky
from .palette import tint_biome

MAX_IMAGE_SIDE = 8192
"""Largest accepted image width or height (pixels)."""
MAX_GRID_NODES = 2_000_000
CONE_TILE = 8
"""Side (pixels) of the tiles whose rays march together as one cone before each goes on alone."""
LIT_STEP = 2
"""Sun shadows and occlusion are traced at every LIT_STEP-th pixel both ways, interpolated between."""
RELAX = 1.6
"""Over-relaxation of each ray's march steps (kernels.march_ray)."""
"""Largest height lattice assembled per request (16 MB of float64)."""

# parallel=True kernels share one numba thread pool; launching them from two Python threads
# at once only oversubscribes the cores (and some threading layers forbid it), so launches
# are serialised. The lock is taken outside the GIL-free kernel, per block of rows.
_LAUNCH_LOCK = threading.Lock()


class ProceduralRequestError(ValueError):
    """A generation request the procedural generator cannot serve (names the field and limit)."""


def _seed32(seed: int) -> int:
    # Kernels hash with int64 arithmetic; keep the seed in a range where that never overflows.
    return int(seed) % (2**31)


def ground_height_y(x, z, seed: int = 0) -> np.ndarray:
    """World ``y`` (metres, +y down) of the ground at world ``(x, z)``; any broadcastable shapes.

    ``ground_height_y(0, 0) == 1.7`` for every seed: the spawn eye at the origin stands
    1.7 m above flat ground. The ground is flat within 5 m of the origin.
    """
    xb, zb = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(z, np.float64))
    xf = np.ascontiguousarray(xb).ravel()
    zf = np.ascontiguousarray(zb).ravel()
    out = np.empty_like(xf)
    kernels.ground_y_array(xf, zf, _seed32(seed), out)
    return out.reshape(xb.shape)


class ProceduralGenerator:
    """Default generator, registered as ``procedural``.

    Args:
        max_distance: rays travel at most this far (metres); beyond it is sky. Distance fog
            reaches the sky colour exactly there, so the cut is invisible.
        rows_per_block: rows traced between two ``cancel`` polls / ``progress`` reports
            (0 = about an eighth of the image).
        threads: numba threads a generation uses (0 = all numba has); fewer leaves cores to
            the renderer and encoder. Applies to the thread that calls ``generate``.
        exact: trace every ray from the camera and every pixel's shadow and occlusion (the
            reference picture; ~3x slower at 640x360). Off, tiles of rays first march as one
            cone and shadows are interpolated where their samples agree: the same world,
            within ~45 dB of the reference (docs/world.md, "Generator speed").
    """

    name = "procedural"
    reads_scene = False  # never calls GenerationRequest.scene: a remote runner need not send the scene
    traces_any_size = True  # any camera size works: coarse fill jobs trace at a fraction of it, detail jobs at a multiple

    def __init__(self, max_distance: float = 250.0, rows_per_block: int = 0, threads: int = 0, exact: bool = False) -> None:
        if not (10.0 <= float(max_distance) <= 5000.0):
            raise ProceduralRequestError(f"max_distance must be in [10, 5000] metres, got {max_distance}")
        if int(rows_per_block) < 0:
            raise ProceduralRequestError(f"rows_per_block must be >= 0, got {rows_per_block}")
        if int(threads) < 0:
            raise ProceduralRequestError(f"threads must be >= 0, got {threads}")
        self.threads = int(threads)
        self.max_distance = float(max_distance)
        self.rows_per_block = int(rows_per_block)
        self.exact = bool(exact)
        self._tiles = HeightTiles()

    # ---- world facts other parts rely on ----
    @staticmethod
    def ground_height_y(x, z, seed: int = 0) -> np.ndarray:
        """See :func:`ground_height_y`."""
        return ground_height_y(x, z, seed)

    @staticmethod
    def biome(caption: str = "", start_image: np.ndarray | None = None) -> Biome:
        """The biome a caption picks, tinted by ``start_image`` ``[H,W,3]`` uint8 when given."""
        biome = biome_for_caption(caption or "")
        if start_image is not None:
            biome = tint_biome(biome, start_image)
        return biome

    def sky(self, caption: str = "", seed: int = 0, start_image: np.ndarray | None = None) -> Sky:
        """The :class:`Sky` this generator paints for ``caption`` (the seed does not change it)."""
        return self.biome(caption, start_image).sky

    def warmup(self) -> float:
        """Compile (or load from cache) every kernel by tracing a tiny view; returns seconds taken."""
        t0 = time.perf_counter()
        K = np.array([[8.0, 0, 4.0], [0, 8.0, 4.0], [0, 0, 1]], np.float32)
        cams = Cameras(np.eye(4, dtype=np.float32)[None], K[None], 8, 8)
        self.generate(GenerationRequest(cameras=cams), lambda f, m: None, CancelToken())
        ground_height_y(np.zeros(1), np.zeros(1))
        return time.perf_counter() - t0

    # ---- the Generator protocol ----
    def generate(
        self, request: GenerationRequest, progress: ProgressCallback, cancel: CancelToken, shade_from: np.ndarray | None = None
    ) -> GenerationResult:
        """Trace ``request.cameras``: ``rgb [N,H,W,3]`` uint8 and ``depth [N,H,W]`` float32.

        Depth is metres along each camera's +z; ``inf`` where the ray reaches the sky.
        Raises :class:`GenerationCancelled` (polled between blocks of rows).

        ``shade_from`` ``[N, 3]`` (metres, optional) evaluates the view-dependent terms --
        distance fog and water reflections -- as seen from those points instead of the
        cameras: the colours a keyframe taken there gave these surfaces, i.e. the best a
        reconstruction from that keyframe can show (the fidelity benchmark's ceiling).
        """
        t_start = time.perf_counter()
        cams = self._validate(request)
        shades = np.zeros((len(cams), 4), np.float64)
        if shade_from is not None:
            points = np.asarray(shade_from, np.float64)
            if points.shape != (len(cams), 3) or not np.isfinite(points).all():
                raise ProceduralRequestError(f"shade_from must be finite [{len(cams)}, 3], got {points.shape}")
            shades[:, :3], shades[:, 3] = points, 1.0
        if self.threads:
            # numba's thread count is per calling thread, so this only limits our worker.
            numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
        N, H, W = len(cams), cams.height, cams.width
        seed = _seed32(request.seed)
        biome = self.biome(request.caption, request.start_image)
        bp = biome.pack()
        sp = pack_sky(biome.sky)
        e0 = float(kernels.lattice_height(0, 0, seed))
        sky_rgb = biome.sky.colors(cams).astype(np.float32)  # [N,H,W,3], the exact renderer sky

        rgb = np.empty((N, H, W, 3), np.float32)
        depth = np.empty((N, H, W), np.float32)
        tile, lit_step, relax = (1, 1, 1.0) if self.exact else (CONE_TILE, LIT_STEP, RELAX)
        # Blocks of whole tiles: a tile cut by a block border is smaller (its cone is narrower).
        block = self.rows_per_block or CONE_TILE * math.ceil(H / (8 * CONE_TILE))
        blocks_per_view = math.ceil(H / block)
        total = N * blocks_per_view
        done = 0
        c2w = cams.c2w
        hg, hm = self._height_grid(c2w[:, :3, 3].astype(np.float64), seed)
        progress(0.0, f"procedural: {N} view(s) of {W}x{H}, biome {biome.name}")
        for n in range(N):
            cancel.raise_if_cancelled()
            origin = c2w[n, :3, 3].astype(np.float64)
            ray_matrix = (c2w[n, :3, :3].astype(np.float64) @ np.linalg.inv(cams.K[n].astype(np.float64)))
            forward = cams.w2c[n, 2, :3].astype(np.float64)
            fx, fy = float(cams.K[n, 0, 0]), float(cams.K[n, 1, 1])
            pix_angle = 1.0 / max(abs(fx), abs(fy), 1e-6)
            trees, tmeta, rocks, rmeta, hm = self._view_scene(origin, biome, seed, e0, hg, hm, bp)
            out_rgb = rgb[n]
            out_depth = depth[n]
            for row0 in range(0, H, block):
                cancel.raise_if_cancelled()
                row1 = min(H, row0 + block)
                with _LAUNCH_LOCK:
                    kernels.render_rows(
                        row0, row1, origin, ray_matrix, forward, pix_angle, self.max_distance, seed, e0, hg, hm,
                        trees, tmeta, rocks, rmeta, bp, sp, sky_rgb[n], out_rgb, out_depth, shades[n], tile, lit_step, relax,
                    )
                done += 1
                progress(done / total, f"procedural: view {n + 1}/{N}")
        cancel.raise_if_cancelled()
        rgb_u8 = to_uint8(rgb)
        elapsed = time.perf_counter() - t_start
        return GenerationResult(
            rgb=rgb_u8,
            depth=depth,
            info={
                "generator": self.name, "biome": biome.name, "seconds": elapsed, "views": N, "size": [W, H],
                "trace": "exact" if self.exact else f"cone{CONE_TILE}+lit{LIT_STEP}+relax{RELAX}",
            },
        )

    # ---- helpers ----
    def _height_grid(self, centers: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Lattice heights covering every camera's reach (+ shadow rays): ``([ni, nj] float64, [3] meta)``.

        A cache only: the kernels compute nodes outside it on the spot, with the same result.
        ``meta`` holds the first node (i, j); its third entry (scene top) is filled per view.
        """
        reach = self.max_distance + kernels.SHADOW_RANGE + 2.0
        lo = np.floor((centers[:, [0, 2]].min(axis=0) - reach) / kernels.GRID_STEP).astype(np.int64)
        hi = np.ceil((centers[:, [0, 2]].max(axis=0) + reach) / kernels.GRID_STEP).astype(np.int64) + 1
        if np.prod(hi - lo) > MAX_GRID_NODES:  # cameras spread far apart: cache around the first only
            c = centers[0, [0, 2]]
            lo = np.floor((c - reach) / kernels.GRID_STEP).astype(np.int64)
            hi = np.ceil((c + reach) / kernels.GRID_STEP).astype(np.int64) + 1
        grid, first = self._tiles.assemble(seed, (int(lo[0]), int(lo[1])), (int(hi[0]), int(hi[1])))
        return grid, np.array([first[0], first[1], 0.0], np.float64)

    def _view_scene(self, origin, biome: Biome, seed: int, e0: float, hg, hm, bp: np.ndarray):
        """What the kernels meet within reach of a camera at ``origin`` ``[3]``: the tree and rock
        tables with their meta, and ``hm`` with the scene top (entry 2) filled in."""
        trees, tmeta = self._object_table(origin, biome.tree_cell, seed, e0, hg, hm, bp, rocks=False)
        rocks, rmeta = self._object_table(origin, biome.rock_cell, seed, e0, hg, hm, bp, rocks=True)
        # Highest point within reach: the flattened terrain never exceeds max(lattice - e0, 0).
        terrain_top = kernels.EYE_HEIGHT - max(float(hg.max()) - e0, 0.0) - 0.1
        hm = hm.copy()
        hm[2] = min(terrain_top, tmeta[kernels.M_TOP], rmeta[kernels.M_TOP]) - 0.5
        return trees, tmeta, rocks, rmeta, hm

    def _object_table(self, origin, cell: float, seed: int, e0: float, hg, hm, bp: np.ndarray, rocks: bool):
        """Objects of every cell within ``max_distance`` (+1 cell) of ``origin`` (x, z)."""
        reach = self.max_distance + cell
        ix0 = int(math.floor((origin[0] - reach) / cell))
        iz0 = int(math.floor((origin[2] - reach) / cell))
        n = int(math.ceil(2.0 * reach / cell)) + 2
        table = np.empty((n, n, kernels.OBJ_FIELDS), np.float64)
        meta = np.empty(4, np.float64)
        kernels.build_object_table(ix0, iz0, n, n, float(cell), seed, e0, hg, hm, bp, rocks, table, meta)
        return table, meta

    @staticmethod
    def _validate(request: GenerationRequest) -> Cameras:
        cams = request.cameras
        if not isinstance(cams, Cameras):
            raise ProceduralRequestError(f"request.cameras must be Cameras, got {type(cams).__name__}")
        if len(cams) < 1:
            raise ProceduralRequestError("request.cameras must hold at least 1 camera, got 0")
        if cams.width > MAX_IMAGE_SIDE or cams.height > MAX_IMAGE_SIDE:
            raise ProceduralRequestError(
                f"request.cameras image size must be at most {MAX_IMAGE_SIDE} per side, got {cams.width}x{cams.height}"
            )
        if not np.all(np.isfinite(cams.w2c)) or not np.all(np.isfinite(cams.K)):
            raise ProceduralRequestError("request.cameras.w2c and .K must be finite")
        if np.any(np.abs(np.linalg.det(cams.K.astype(np.float64))) < 1e-12):
            raise ProceduralRequestError("request.cameras.K must be invertible")
        if not isinstance(request.caption, str):
            raise ProceduralRequestError(f"request.caption must be str, got {type(request.caption).__name__}")
        if not isinstance(request.seed, (int, np.integer)):
            raise ProceduralRequestError(f"request.seed must be an int, got {type(request.seed).__name__}")
        return cams


class HeightTiles:
    """LRU cache of lattice-height tiles, so a player walking on costs only the new frontier.

    Tile ``(ti, tj)`` holds the ``TILE x TILE`` lattice nodes from ``(ti, tj) * TILE``. Thread-safe.
    """

    TILE = 128

    def __init__(self, max_tiles: int = 96) -> None:
        self.max_tiles = max_tiles
        self._tiles: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _tile(self, seed: int, ti: int, tj: int) -> np.ndarray:
        key = (seed, ti, tj)
        with self._lock:
            tile = self._tiles.get(key)
            if tile is not None:
                self._tiles.move_to_end(key)
                return tile
        tile = np.empty((self.TILE, self.TILE), np.float64)
        with _LAUNCH_LOCK:
            kernels.fill_height_grid(ti * self.TILE, tj * self.TILE, seed, tile)
        with self._lock:
            self._tiles[key] = tile
            while len(self._tiles) > self.max_tiles:
                self._tiles.popitem(last=False)
        return tile

    def assemble(self, seed: int, lo: tuple[int, int], hi: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
        """Lattice heights of nodes ``lo..hi`` (or a little more): ``([ni, nj] float64, first node)``."""
        T = self.TILE
        ti0, tj0 = lo[0] // T, lo[1] // T
        ti1, tj1 = (hi[0] - 1) // T, (hi[1] - 1) // T
        grid = np.empty(((ti1 - ti0 + 1) * T, (tj1 - tj0 + 1) * T), np.float64)
        for ti in range(ti0, ti1 + 1):
            for tj in range(tj0, tj1 + 1):
                a, b = (ti - ti0) * T, (tj - tj0) * T
                grid[a : a + T, b : b + T] = self._tile(seed, ti, tj)
        return grid, (ti0 * T, tj0 * T)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` float RGB in [0, 1] -> uint8, rounding to nearest (how sky pixels are quantised too)."""
    return np.clip(np.rint(np.asarray(rgb, np.float32) * 255.0), 0, 255).astype(np.uint8)
