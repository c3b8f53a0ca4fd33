"""Level of detail for the CPU renderer: coarser copies of a chunk's blocks, and which one a frame draws.

A chunk's packed Gaussians (:func:`.projection.activate_chunk`) lie in Morton order, cut into
blocks of :data:`.projection.BLOCK`. A coarser level merges runs of up to :data:`FAN`
neighbouring Gaussians of one block into one Gaussian with their weighted mean and colour,
the opacity of the most opaque and a covariance (members' covariances plus the spread of
their means) grown until it holds their alpha mass (:func:`_write_merged`), so level ``l``
has about ``FAN**-l`` of the Gaussians (fewer merge in practice), block by block: level
``l``'s rows for fine block ``b`` stand for exactly that block's Gaussians, and a frame can
draw any block at any level without gaps or double cover.

Only runs of nearly one colour merge (:data:`COLOUR_TOL`): what a merge changes is then the
shape of a patch of one colour, not its texture. What it changes in a picture is the width
it adds: a merged Gaussian is wider than
its members (its *blur*: ``sqrt`` of its covariance trace minus theirs, metres). Each level
keeps, per block, the largest blur of the Gaussians it merged (the widest tenth stay
unmerged, :data:`KEEP`), summed over the levels below it. A frame draws a block at the
coarsest level whose blur, projected at the block's nearest point, stays under ``lod_px``
pixels (:func:`choose_levels`): far blocks, whose members are sub-pixel, draw coarse; near
ones fine. With ``lod_px`` <= 0 every block draws fine.

Runs are broken where neighbours in Morton order are not neighbours in space (the curve
jumps): a Gaussian joins a run only within :data:`REACH` of its size from the run's first
member, so no merged Gaussian bridges a gap (a floater between two trees).

Levels are built once per chunk, with its activation (chunks are immutable); the renderer
builds them off the frame path when a chunk lands (``CpuRenderer.prepare``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from .conventions import ALPHA_MAX

FAN = 4
"""Gaussians merged into one, at most, per level (4: about a 2x2 pixel group of a keyframe)."""
MAX_LEVELS = 3
"""Coarse levels built per chunk at most (the coarsest has ~1/64 of the Gaussians)."""
MIN_SHRINK = 1.5
"""A level is kept only if it has at most 1/this of the Gaussians of the level below it."""
REACH = 3.0
"""A Gaussian joins a run when its mean is within this many times the larger of its and the
run's first member's size (sqrt of the covariance trace, metres) from that first member:
neighbours on a surface are about 2 sizes apart, diagonally."""

KEEP = 0.9
"""Per block and level, runs up to this quantile of their spread merge; the wider ones stay
as they are (and may merge at the next level)."""

COLOUR_TOL = 0.015
"""A run merges only if its colours lie within this RMS distance (RGB in [0, 1], ~4/255) of
their mean: averaging texture the stream can show loses it (a start image's picture drawn
at its own camera lost 2.3 dB when 2x2 patches of distinct pixels merged, 0.85 dB with a
tolerance of 0.03, nothing with this one)."""

_JIT = dict(nogil=True, fastmath=True, cache=True, error_model="numpy")


@dataclass(frozen=True)
class Level:
    """One coarse copy of a chunk's Gaussians.

    Attributes:
        packed: ``[G_l, 14]`` float32 records laid out like the fine ones
            (:data:`.projection.PACKED_WIDTH`).
        block_start: ``[B + 1]`` int64: rows ``block_start[b]:block_start[b + 1]`` stand for
            fine block ``b``.
        block_blur: ``[B]`` float32 metres: the largest blur (RMS spread of the merged fine
            Gaussians' means around the merged mean, summed over levels) in each block.
    """

    packed: np.ndarray
    block_start: np.ndarray
    block_blur: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.packed.nbytes + self.block_start.nbytes + self.block_blur.nbytes


@nb.njit(inline="always", **_JIT)
def _size(src, i):
    """A Gaussian's size: the square root of its covariance's trace (metres)."""
    return math.sqrt(max(src[i, 3] + src[i, 6] + src[i, 8], 0.0))


@nb.njit(inline="always", **_JIT)
def _weight(src, i):
    """A Gaussian's weight in a merge: its alpha mass, opacity times the trace (an area for
    flat surfels)."""
    return src[i, 9] * (src[i, 3] + src[i, 6] + src[i, 8]) + 1e-20


@nb.njit(**_JIT)
def _run_end(src, i, stop, reach, fan):
    """End (exclusive) of the run starting at row ``i``: up to ``fan`` rows, each within
    ``reach`` sizes of row ``i``."""
    size_i = _size(src, i)
    j = i + 1
    while j < stop and j - i < fan:
        dx = src[j, 0] - src[i, 0]
        dy = src[j, 1] - src[i, 1]
        dz = src[j, 2] - src[i, 2]
        if dx * dx + dy * dy + dz * dz > (reach * max(size_i, _size(src, j))) ** 2:
            break
        j += 1
    return j


@nb.njit(**_JIT)
def _write_merged(src, i, j, out, r):
    """Write the merge of rows ``i:j`` of ``src`` to ``out[r]``; returns its blur (metres).

    Weighted mean, colour and covariance (the members' plus their means' spread), then the
    covariance grown until the merged Gaussian, as opaque as its most opaque member, holds
    the members' alpha mass (opacity x trace): a moment-matched Gaussian alone is narrower
    than the patch it stands for, and a surface drawn with them shows gaps between them.
    The blur is how much wider than its members it is: ``sqrt(trace - members' mean trace)``.
    """
    wsum = mx = my = mz = top = 0.0
    for k in range(i, j):
        w = _weight(src, k)
        wsum += w
        mx += w * src[k, 0]
        my += w * src[k, 1]
        mz += w * src[k, 2]
        top = max(top, src[k, 9])
    mx, my, mz = mx / wsum, my / wsum, mz / wsum
    for c in range(3, 13):
        out[r, c] = 0.0
    member_trace = 0.0
    for k in range(i, j):
        w = _weight(src, k) / wsum
        ex, ey, ez = src[k, 0] - mx, src[k, 1] - my, src[k, 2] - mz
        out[r, 3] += w * (src[k, 3] + ex * ex)
        out[r, 4] += w * (src[k, 4] + ex * ey)
        out[r, 5] += w * (src[k, 5] + ex * ez)
        out[r, 6] += w * (src[k, 6] + ey * ey)
        out[r, 7] += w * (src[k, 7] + ey * ez)
        out[r, 8] += w * (src[k, 8] + ez * ez)
        member_trace += w * (src[k, 3] + src[k, 6] + src[k, 8])
        for c in range(10, 13):
            out[r, c] += w * src[k, c]
    trace = out[r, 3] + out[r, 6] + out[r, 8]
    opacity = min(top, ALPHA_MAX)
    grow = wsum / (opacity * trace) if trace > 0.0 and opacity > 0.0 else 1.0
    if grow > 1.0:
        for c in range(3, 9):
            out[r, c] *= grow
        trace *= grow
    out[r, 0] = mx
    out[r, 1] = my
    out[r, 2] = mz
    out[r, 9] = opacity
    out[r, 13] = 0.0
    return math.sqrt(max(trace - member_trace, 0.0))


@nb.njit(**_JIT)
def _colour_spread(src, i, j):
    """RMS distance of rows ``i:j``'s colours from their weighted mean (RGB in [0, 1])."""
    wsum = 0.0
    mean = np.zeros(3)
    for k in range(i, j):
        w = _weight(src, k)
        wsum += w
        for c in range(3):
            mean[c] += w * src[k, 10 + c]
    var = 0.0
    for k in range(i, j):
        w = _weight(src, k) / wsum
        for c in range(3):
            d = src[k, 10 + c] - mean[c] / wsum
            var += w * d * d
    return math.sqrt(var)


@nb.njit(**_JIT)
def _merge_level(src, src_start, src_blur, reach, fan, keep, colour_tol, out, out_start, out_blur):
    """Merge runs of ``src`` rows block by block into ``out``; returns the rows written.

    ``src [G, 14]`` with blocks ``src_start [B + 1]`` and their blur ``src_blur [B]``;
    ``out`` must have room for ``G`` rows. In each block the runs whose blur is above the
    ``keep`` quantile of the block's runs stay unmerged, so a few wide runs (large splats)
    do not set the block's blur for all the others.
    """
    n_out = 0
    n_blocks = src_start.shape[0] - 1
    ends = np.empty(src.shape[0], np.int64)
    spreads = np.empty(src.shape[0], np.float64)
    ranked = np.empty(src.shape[0], np.float64)
    for b in range(n_blocks):
        out_start[b] = n_out
        stop = src_start[b + 1]
        runs = 0
        i = src_start[b]
        mergeable = 0
        while i < stop:
            j = _run_end(src, i, stop, reach, fan)
            ends[runs] = j
            # Runs of one, or of colours too different to average (texture the stream can
            # show), never merge.
            if j > i + 1 and _colour_spread(src, i, j) <= colour_tol:
                spreads[runs] = _write_merged(src, i, j, out, n_out)
                ranked[mergeable] = spreads[runs]
                mergeable += 1
            else:
                spreads[runs] = np.inf
            runs += 1
            i = j
        limit = 0.0
        if mergeable:
            ranked[:mergeable].sort()
            limit = ranked[min(mergeable - 1, int(keep * mergeable))]
        i = src_start[b]
        for r in range(runs):
            j = ends[r]
            if spreads[r] <= limit:
                _write_merged(src, i, j, out, n_out)
                n_out += 1
            else:
                for k in range(i, j):
                    for c in range(14):
                        out[n_out, c] = src[k, c]
                    n_out += 1
            i = j
        out_blur[b] = src_blur[b] + limit
    out_start[n_blocks] = n_out
    return n_out


def build_levels(packed: np.ndarray, block: int) -> tuple[Level, ...]:
    """Coarse levels of a chunk's packed Gaussians ``[G, 14]`` (Morton order, blocks of
    ``block`` rows), coarsest last; () when merging would not shrink the chunk."""
    g = packed.shape[0]
    start = np.minimum(np.arange(0, g + block, block, dtype=np.int64), g)
    if g == 0:
        return ()
    start = np.unique(start)
    blur = np.zeros(len(start) - 1, np.float32)
    levels: list[Level] = []
    src = packed
    for _ in range(MAX_LEVELS):
        out = np.empty_like(src)
        out_start = np.empty_like(start)
        out_blur = np.empty_like(blur)
        n = _merge_level(src, start, blur, REACH, FAN, KEEP, COLOUR_TOL, out, out_start, out_blur)
        if n * MIN_SHRINK > len(src):
            break
        level = Level(np.ascontiguousarray(out[:n]), out_start, out_blur)
        levels.append(level)
        src, start, blur = level.packed, level.block_start, level.block_blur
    return tuple(levels)


def nearest_depth(lo: np.ndarray, hi: np.ndarray, w2c: np.ndarray) -> np.ndarray:
    """``[B]`` float64: the smallest camera-space z of each box ``lo``/``hi`` ``[B, 3]`` (metres;
    <= 0 where the box reaches behind the camera)."""
    r = np.asarray(w2c, np.float64)[2, :3]
    t = float(np.asarray(w2c, np.float64)[2, 3])
    # min over corners of r . p = sum_k min(r_k lo_k, r_k hi_k)
    return np.minimum(r * np.asarray(lo, np.float64), r * np.asarray(hi, np.float64)).sum(axis=1) + t


def choose_levels(blur: np.ndarray, depth: np.ndarray, focal_px: float, lod_px: float) -> np.ndarray:
    """``[B]`` int: per block, the coarsest level to draw (0 = fine).

    Args:
        blur: ``[B, L]`` float metres, each coarse level's block blur (``inf`` where a chunk
            has fewer levels).
        depth: ``[B]`` nearest camera-space z of each block (metres).
        focal_px: the camera's larger focal length (pixels).
        lod_px: largest blur, in pixels at the block's nearest point, a frame accepts.
    """
    if lod_px <= 0.0 or blur.shape[1] == 0:
        return np.zeros(len(depth), np.int64)
    # Blur in pixels at the nearest point: blur * f / z (a box reaching the camera: never coarse).
    ok = (blur * focal_px <= lod_px * depth[:, None]) & (depth[:, None] > 0.0)
    # Levels grow blur monotonically, so the count of acceptable levels is the coarsest one.
    return ok.sum(axis=1)
