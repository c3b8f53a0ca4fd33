"""A new chunk's colours by least squares over the views that see it (the CPU's refinement).

With geometry fixed, a drawn pixel is linear in the new splats' colours (front-to-back
blending, 3DGS rules):

    drawn_p = base_p + sum_i w_pi c_i,     w_pi = alpha_i(p) T_i(p)

where ``T_i(p)`` is the transmittance left in front of new splat ``i`` at pixel ``p`` (old
splats in front included) and ``base_p`` is what everything else adds: the old splats'
colours and the background (sky, far field) times the transmittance left at the end. One
pass per view records ``base_p`` and the pairs ``(i, w_pi)`` -- a sparse matrix ``A`` of a few
new splats per pixel -- and the colours then solve

    min_c  sum_p m_p |target_p - base_p - (A c)_p|^2  +  ridge sum_i |c_i - c0_i|^2

by conjugate gradients on the normal equations (Jacobi preconditioner, a few iterations),
clipped to [0, 1]. The views are the chunk's keyframes and, optionally, earlier keyframes
from frame memory that see the same surfaces (the new splats drawn into their cameras):
a colour must then agree with more than one picture, the multi-view consistency a novel
view needs. ``m_p`` keeps a pixel where the view shows sky (a splat spilling over it must
fade there: most of what fitting gains, measured) or where the drawn picture's depth agrees
with the view's surface (a silhouette's blend of two surfaces fits nothing a novel view
keeps); ``ridge`` (in units of squared blending weight: a fully visible splat has about
1-4) holds a splat seen only faintly near its reconstructed colour ``c0``.

Unlike :mod:`.fit` (block-mean Jacobi steps, one full render per step), the matrix is built
once and every iteration is a sparse product, and the residual is exact per pixel rather
than per block. Everything is deterministic (serial sums in a fixed order) and single
threaded, so ``time.thread_time`` around it measures its whole cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numba as nb
import numpy as np

from ..camera import Cameras
from ..gaussians import Gaussians
from ..render.chunk_cache import ChunkCache
from ..render.conventions import ALPHA_MAX, T_MIN
from ..render.far_pass import far_share
from ..render.projection import S_DEPTH, SPLAT_WIDTH, PackedChunk, activate_chunk, morton_order, project, visible_blocks
from ..render.raster import TILE, count_tiles, depth_order, fill_tiles
from ..scene import Chunk, SceneSnapshot

SOLVE_ITERATIONS = 6
"""Conjugate-gradient iterations (`WorldConfig.fit_solve_iterations` defaults to the same)."""

RIDGE = 0.1
"""Pull towards the reconstructed colour, in squared blending weight (see the module docstring)."""

SAME_SURFACE = 0.05
"""A pixel counts where the drawn depth is within this fraction of the view's depth."""

MIN_WEIGHT = 1.0 / 512.0
"""A new splat's weight at a pixel below this is not a variable there: its initial colour
is added to the constant part (keeps the matrix to the splats that matter)."""

PACKED_CACHE_BYTES = 256 << 20
"""Activated old chunks kept between fits (56 B per Gaussian: ~4.8M Gaussians)."""

_JIT = dict(nogil=True, fastmath=True, cache=True, error_model="numpy")


@dataclass(frozen=True)
class FitView:
    """One picture the new splats should show.

    Attributes:
        camera: one camera (``W`` x ``H``).
        rgb: ``[H, W, 3]`` uint8 the picture.
        depth: ``[H, W]`` float32 metres along +z of what it shows; ``inf`` = sky.
        background: ``[H, W, 3]`` float32 in [0, 1], what the renderer shows where no splat
            covers a pixel (the sky with the far field over it).
        sky: ``[H, W, 3]`` float32 in [0, 1], the sky alone, or None (no far field: the same).
        far_from: the renderer lays the far field only behind what is see-through, fully at
            transmittance 1, not at all at or below this (``CpuRenderer.far_see_through_from``);
            None: behind everything, as a background.
        weight: how much this view's pixels count (the chunk's own keyframes: 1).
    """

    camera: Cameras
    rgb: np.ndarray
    depth: np.ndarray
    background: np.ndarray
    sky: np.ndarray | None = None
    far_from: float | None = None
    weight: float = 1.0

    def behind(self, transmit: np.ndarray) -> np.ndarray:
        """``[P, 3]``: what shows through a pixel's remaining transmittance ``transmit [P]``
        (fixed with the geometry, so the drawn picture stays linear in the colours)."""
        background = self.background.reshape(-1, 3)
        if self.sky is None:
            return transmit[:, None] * background
        sky = self.sky.reshape(-1, 3)
        share = np.ones_like(transmit) if self.far_from is None else far_share(transmit, self.far_from)
        return transmit[:, None] * (sky + share[:, None] * (background - sky))


@dataclass(frozen=True)
class SolveReport:
    """What one solve did: views and pixels used, matrix entries (new splat x pixel pairs), the
    share of colour channels the solution put outside [0, 1] (clipped)."""

    views: int
    pixels: int
    entries: int
    clipped: float


_entries_per_pixel = 4.0
"""Room for this many matrix entries per pixel is made before a trace; it grows to 1.25 x
the most seen (640x360 forest keyframes: ~10), so a list seldom fills."""

_PACKED: ChunkCache[PackedChunk] = ChunkCache(lambda chunk: activate_chunk(chunk.gaussians), lambda p: p.nbytes, PACKED_CACHE_BYTES)
"""Old chunks activated for tracing, shared by every world of the process (keyed by identity)."""


# --------------------------------------------------------------------------- tracing


@nb.njit(**_JIT)
def _trace(splats, boxes, offsets, ids, local, c0, width, height, t_min, first_tile, entry_pixel, entry_index, entry_weight,
           n, base, transmit, depth_sum):
    """Blend one view front to back, recording each new splat's weight per pixel.

    One pass: the entries go to a list in the order they are met (tile by tile), and
    :func:`_rows_by_pixel` then sorts them by pixel, keeping each pixel's order, so the
    result is what counting them first and filling them in a second pass gave, at half the
    blending. Tiles are independent: when the list is full, the tile in progress is given
    up and its index returned, and the caller grows the list and goes on from that tile.

    Args:
        splats, boxes: ``[M, 12]`` / ``[M, 4]`` projected splats (:func:`..render.projection.project`).
        offsets, ids: tile lists (:func:`..render.raster.count_tiles` / ``fill_tiles``), depth order.
        local: ``[M]`` int32, the new splat each record is (index into ``c0``), -1 for old splats.
        c0: ``[G, 3]`` float32 the new splats' initial colours (for weights below ``MIN_WEIGHT``).
        first_tile: the tile to start from (tiles before it are done).
        entry_pixel, entry_index, entry_weight: ``[capacity]`` int32 / int32 / float32, the
            list: (pixel, new splat, weight) per entry; its first ``n`` rows are kept.
        base: ``[H*W, 3]`` float32 out, colour of everything but the recorded entries (no background).
        transmit: ``[H*W]`` float32 out, transmittance left at the end.
        depth_sum: ``[H*W]`` float32 out, ``sum w z`` over every splat (expected depth x alpha).

    Returns:
        ``(tile, n)``: the number of tiles (all done) or the tile given up on a full list, and
        the entries listed before it.
    """
    tiles_x = (width + TILE - 1) // TILE
    n_tiles = tiles_x * ((height + TILE - 1) // TILE)
    amax = np.float32(ALPHA_MAX)
    T = np.empty((TILE, TILE), np.float32)
    live = np.empty((TILE, TILE), np.bool_)
    capacity = entry_pixel.shape[0]
    for t in range(first_tile, n_tiles):
        tile_n = n
        px0 = (t % tiles_x) * TILE
        py0 = (t // tiles_x) * TILE
        tw = min(px0 + TILE, width) - px0
        th = min(py0 + TILE, height) - py0
        for ry in range(th):
            for rx in range(tw):
                p = (py0 + ry) * width + px0 + rx
                T[ry, rx] = 1.0
                live[ry, rx] = True
                base[p, 0] = 0.0
                base[p, 1] = 0.0
                base[p, 2] = 0.0
                depth_sum[p] = 0.0
        active = tw * th
        for k in range(offsets[t], offsets[t + 1]):
            g = ids[k]
            x0, x1 = max(boxes[g, 0], px0), min(boxes[g, 2], px0 + tw)
            y0, y1 = max(boxes[g, 1], py0), min(boxes[g, 3], py0 + th)
            mx, my = splats[g, 0], splats[g, 1]
            qa, qb, qc = splats[g, 2], splats[g, 3], splats[g, 4]
            opacity, cut, z = splats[g, 5], splats[g, 10], splats[g, 9]
            i = local[g]
            for py in range(y0, y1):
                ry = py - py0
                dy = my - (np.float32(py) + np.float32(0.5))
                for px in range(x0, x1):
                    rx = px - px0
                    if not live[ry, rx]:
                        continue
                    dx = mx - (np.float32(px) + np.float32(0.5))
                    power = qa * dx * dx + qb * dx * dy + qc * dy * dy
                    if power > 0.0 or power < cut:
                        continue
                    alpha = min(amax, opacity * math.exp(power))
                    t_old = T[ry, rx]
                    if t_old * (np.float32(1.0) - alpha) < t_min:
                        live[ry, rx] = False
                        active -= 1
                        continue
                    w = alpha * t_old
                    T[ry, rx] = t_old - w
                    p = py * width + px
                    depth_sum[p] += w * z
                    if i >= 0 and w >= MIN_WEIGHT:
                        if n == capacity:
                            return t, tile_n
                        entry_pixel[n] = p
                        entry_index[n] = i
                        entry_weight[n] = w
                        n += 1
                    elif i >= 0:
                        base[p, 0] += w * c0[i, 0]
                        base[p, 1] += w * c0[i, 1]
                        base[p, 2] += w * c0[i, 2]
                    else:
                        base[p, 0] += w * splats[g, 6]
                        base[p, 1] += w * splats[g, 7]
                        base[p, 2] += w * splats[g, 8]
            if active <= 0:
                break
        for ry in range(th):
            for rx in range(tw):
                transmit[(py0 + ry) * width + px0 + rx] = T[ry, rx]
    return n_tiles, n


@nb.njit(**_JIT)
def _rows_by_pixel(entry_pixel, entry_index, entry_weight, n, pixels):
    """The first ``n`` trace-order entries as CSR rows over ``pixels`` pixels (a stable
    counting sort: each pixel keeps its entries' trace order). Returns ``(count [P] int64,
    start [P + 1] int64, index [n] int32, weight [n] float32)``."""
    count = np.zeros(pixels, np.int64)
    for e in range(n):
        count[entry_pixel[e]] += 1
    start = np.zeros(pixels + 1, np.int64)
    for p in range(pixels):
        start[p + 1] = start[p] + count[p]
    cursor = start[:pixels].copy()
    index = np.empty(n, np.int32)
    weight = np.empty(n, np.float32)
    for e in range(n):
        p = entry_pixel[e]
        index[cursor[p]] = entry_index[e]
        weight[cursor[p]] = entry_weight[e]
        cursor[p] += 1
    return count, start, index, weight


@dataclass(frozen=True)
class _Rows:
    """One view's part of the least-squares system: ``P`` pixels in row-major order.

    ``start [P + 1]`` int64 CSR offsets into ``index [E]`` int32 / ``weight [E]`` float32;
    ``target [P, 3]`` float32 what the variable part must add (picture minus constant);
    ``mask [P]`` float32 the pixel's weight (0 = not used)."""

    start: np.ndarray
    index: np.ndarray
    weight: np.ndarray
    target: np.ndarray
    mask: np.ndarray


def _view_rows(new: Gaussians, packed_new: PackedChunk, order: np.ndarray, old: list[PackedChunk], view: FitView,
               max_depth: float) -> _Rows:
    """Trace ``view`` with the old chunks and the new splats; see :class:`_Rows`."""
    cam = view.camera
    H, W = cam.height, cam.width
    chunks = old + [packed_new]
    blocks, m = visible_blocks(chunks, cam)
    splats = np.zeros((m, SPLAT_WIDTH), np.float32)
    boxes = np.zeros((m, 4), np.int32)
    project(chunks, cam.w2c[0], cam.K[0], W, H, splats, boxes, blocks)
    # Which output rows are the new chunk's, and which of its Gaussians (activation reorders them).
    # Rows name packed arrays (an old chunk's coarse levels count too, though none is drawn).
    new_array = sum(len(p.arrays) for p in old)
    local = np.full(m, -1, np.int32)
    for c, first, stop, out_first in blocks:
        if c == new_array:
            local[out_first : out_first + stop - first] = order[first:stop]
    sort_order, ranges = depth_order(
        boxes, splats.view(np.uint32)[:, S_DEPTH], np.empty(m, np.int32), np.empty(m, np.uint32), np.empty(m, np.int64),
        np.empty(m, np.int32), np.empty(m, np.uint32), np.empty(m, np.int64),
    )
    tiles_x, tiles_y = (W + TILE - 1) // TILE, (H + TILE - 1) // TILE
    offsets = np.empty(tiles_x * tiles_y + 1, np.int64)
    ids = np.empty(int(count_tiles(boxes, tiles_x, tiles_y, offsets)), np.int32)
    fill_tiles(sort_order, ranges, tiles_x, offsets, ids)
    P = H * W
    base = np.empty((P, 3), np.float32)
    transmit = np.empty(P, np.float32)
    depth_sum = np.empty(P, np.float32)
    global _entries_per_pixel
    entries = [np.empty(int(_entries_per_pixel * P) + 1024, dtype) for dtype in (np.int32, np.int32, np.float32)]
    tile, n = 0, 0
    while True:
        tile, n = _trace(splats, boxes, offsets, ids, local, new.colors, W, H, np.float32(T_MIN), tile, *entries, n,
                         base, transmit, depth_sum)
        if tile == tiles_x * tiles_y:
            break
        entries = [np.concatenate([e[:n], np.empty(len(e), e.dtype)]) for e in entries]  # full: twice the room
    _entries_per_pixel = max(_entries_per_pixel, 1.25 * n / P)
    count, start, index, weight = _rows_by_pixel(*entries, n, P)
    picture = view.rgb.reshape(P, 3).astype(np.float32) * np.float32(1 / 255)
    constant = base + view.behind(transmit)
    depth = view.depth.reshape(P)
    alpha = 1.0 - transmit
    with np.errstate(invalid="ignore", divide="ignore"):
        drawn_depth = depth_sum / alpha
        # The view's sky counts everywhere (a splat spilling over it must fade there); a
        # surface only where the drawn one agrees with it: fitting a silhouette's blend of
        # two surfaces moved the old picture of a refined place (tests/test_refine.py)
        # without making novel views better.
        sky = ~(np.isfinite(depth) & (depth < max_depth))
        same = sky | ((alpha > 0.5) & (np.abs(drawn_depth - depth) <= SAME_SURFACE * depth))
    mask = (same & (count > 0)).astype(np.float32) * np.float32(view.weight)
    return _Rows(start, index, weight, (picture - constant).astype(np.float32), mask)


# --------------------------------------------------------------------------- solving


@nb.njit(**_JIT)
def _apply(start, index, weight, mask, x, out_pixels, out):
    """``out [G, 3] = A^T M A x`` (``out_pixels [P, 3]`` holds ``A x``); serial, fixed order."""
    P = start.shape[0] - 1
    out[:] = 0.0
    for p in range(P):
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        if mask[p] > 0.0:
            for e in range(start[p], start[p + 1]):
                i, w = index[e], weight[e]
                s0 += w * x[i, 0]
                s1 += w * x[i, 1]
                s2 += w * x[i, 2]
            for e in range(start[p], start[p + 1]):
                i, w = index[e], weight[e] * mask[p]
                out[i, 0] += w * s0
                out[i, 1] += w * s1
                out[i, 2] += w * s2
        out_pixels[p, 0] = s0
        out_pixels[p, 1] = s1
        out_pixels[p, 2] = s2


@nb.njit(**_JIT)
def _normal_terms(start, index, weight, mask, target, n, diag, rhs):
    """``diag [n] = diag(A^T M A)``, ``rhs [n, 3] = A^T M target``."""
    P = start.shape[0] - 1
    diag[:] = 0.0
    rhs[:] = 0.0
    for p in range(P):
        m = mask[p]
        if m <= 0.0:
            continue
        for e in range(start[p], start[p + 1]):
            i, w = index[e], weight[e]
            diag[i] += m * w * w
            rhs[i, 0] += m * w * target[p, 0]
            rhs[i, 1] += m * w * target[p, 1]
            rhs[i, 2] += m * w * target[p, 2]


@nb.njit(**_JIT)
def _conjugate_gradients(start, index, weight, mask, target, c0, ridge, iterations):
    """``[G, 3]`` colours minimising ``|M^(1/2) (A c - target)|^2 + ridge |c - c0|^2`` (three
    channels as three systems sharing ``A``), ``iterations`` Jacobi-preconditioned CG steps
    from ``c0``, not clipped."""
    n = c0.shape[0]
    P = start.shape[0] - 1
    diag = np.empty(n, np.float32)
    rhs = np.empty((n, 3), np.float32)
    _normal_terms(start, index, weight, mask, target, n, diag, rhs)
    x = c0.copy()
    hx = np.empty((n, 3), np.float32)
    pixels = np.empty((P, 3), np.float32)
    _apply(start, index, weight, mask, x, pixels, hx)
    # r = rhs + ridge c0 - (A^T M A + ridge) x, with x = c0: rhs - A^T M A c0
    r = rhs - hx
    inv = 1.0 / (diag + ridge)
    z = r * inv[:, None]
    d = z.copy()
    rz = np.zeros(3, np.float64)
    for c in range(3):
        rz[c] = np.sum(r[:, c].astype(np.float64) * z[:, c])
    hd = np.empty((n, 3), np.float32)
    for _ in range(iterations):
        _apply(start, index, weight, mask, d, pixels, hd)
        for c in range(3):
            dhd = 0.0
            for i in range(n):
                hd[i, c] += ridge * d[i, c]
                dhd += d[i, c] * hd[i, c]
            if dhd <= 0.0 or rz[c] <= 0.0:
                continue
            step = rz[c] / dhd
            for i in range(n):
                x[i, c] += step * d[i, c]
                r[i, c] -= step * hd[i, c]
            rz_new = 0.0
            for i in range(n):
                z[i, c] = r[i, c] * inv[i]
                rz_new += r[i, c] * z[i, c]
            beta = rz_new / rz[c]
            rz[c] = rz_new
            for i in range(n):
                d[i, c] = z[i, c] + beta * d[i, c]
    return x


def _stack(rows: list[_Rows]) -> _Rows:
    """All views' rows as one system (pixels concatenated)."""
    if len(rows) == 1:
        return rows[0]
    starts, total = [np.zeros(1, np.int64)], 0
    for r in rows:
        starts.append(r.start[1:] + total)
        total += int(r.start[-1])
    return _Rows(
        np.concatenate(starts), np.concatenate([r.index for r in rows]), np.concatenate([r.weight for r in rows]),
        np.concatenate([r.target for r in rows]), np.concatenate([r.mask for r in rows]),
    )


def solve_colours(
    new: Gaussians,
    old: SceneSnapshot,
    views: list[FitView],
    *,
    iterations: int = SOLVE_ITERATIONS,
    ridge: float = RIDGE,
    max_depth: float = 200.0,
    packed: Callable[[Chunk], PackedChunk] | None = None,
) -> tuple[Gaussians, SolveReport]:
    """``new`` with colours solved so that the scene ``old`` drawn with it shows ``views``
    (see the module docstring), and a :class:`SolveReport`.

    Args:
        new: ``G`` new Gaussians (world coordinates); their colours start the solve.
        old: the scene they join (its chunks drawn with them, fixed; its far field is the
            views' ``background``'s business).
        views: the pictures to show (the chunk's keyframes first).
        iterations: conjugate-gradient iterations (0 returns ``new`` unchanged).
        ridge: pull towards the initial colours (squared blending weight).
        max_depth: view depths at or beyond this are sky (nothing to fit there).
        packed: an old chunk's activated Gaussians (the renderer's cache, shared with the
            frames that draw it: :attr:`.render.base.Renderer.packed_chunks`); None: this module's
            own cache. Only the fine records are read (coarse levels are ignored).
    """
    if iterations <= 0 or len(new) == 0 or not views:
        return new, SolveReport(len(views), 0, 0, 0.0)
    order = morton_order(new.means).astype(np.int32)
    packed_new = activate_chunk(new)
    rows = []
    for view in views:
        old_packed = [p for p in map(packed or _PACKED.get, old.visible_chunks(view.camera)) if len(p)]
        rows.append(_view_rows(new, packed_new, order, old_packed, view, max_depth))
    system = _stack(rows)
    c0 = np.ascontiguousarray(new.colors, np.float32)
    solved = _conjugate_gradients(system.start, system.index, system.weight, system.mask, system.target, c0,
                                  np.float32(ridge), int(iterations))
    clipped = float(np.mean((solved < 0.0) | (solved > 1.0)))
    colours = np.clip(solved, 0.0, 1.0).astype(np.float32)
    fitted = Gaussians(new.means, new.quats, new.log_scales, new.opacity_logits, colours, new.sh_rest)
    report = SolveReport(len(views), int((system.mask > 0).sum()), int(system.start[-1]), clipped)
    return fitted, report
