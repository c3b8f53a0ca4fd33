"""Refinement: a closer keyframe remakes what far keyframes made coarsely.

A surface first seen from afar gets Gaussians sized for that distance: up close they
span many screen pixels and smear. When a new keyframe sees such Gaussians from much
nearer, they are *coarse* for it (:func:`coarse_mask`): reconstruction treats their
pixels as empty, so the keyframe makes fine Gaussians there, and the coarse ones it has
remade (or that it shows to be spill onto its sky) are retired from the scene in the same
version (:func:`retire_mask`, :meth:`.scene.Scene.append`). The place keeps its content --
same surfaces, same colours, seen by the same generator -- only sharper.

Sizes: a new Gaussian's tangent standard deviation is ``scale_factor`` x its block
footprint ``stride * z / f`` (metres at depth ``z``, focal ``f`` pixels); an existing
Gaussian is coarse for a camera when its largest axis -- or, for a surfel, the tangent size
its thickness says it was made at (reconstruction's per-pixel splats on a skyline are
thinner across than their block, not thinner through) -- exceeds ``ratio`` times that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..camera import Cameras
from ..gaussians import Gaussians
from .reconstruct import NORMAL_SCALE_RATIO, reduce_blocks

REFINE_RATIO = 2.0
"""An existing Gaussian is coarse for a keyframe when it is this many times wider than the
keyframe's own Gaussians would be at its depth."""

SCALE_FACTOR = 0.7
"""Reconstruction's Gaussian size per block footprint (``reconstruct(scale_factor=...)``)."""

SURFACE_MARGIN = 0.10
"""A coarse Gaussian is on (or in front of) a remade surface when not more than this
fraction, plus two of its standard deviations, behind it."""


def _project(means: np.ndarray, w2c: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[G, 3]`` world points -> pixel ``u``, ``v`` and depth ``z`` (``[G]`` each) in one camera."""
    pc = means @ np.asarray(w2c[:3, :3], np.float32).T + np.asarray(w2c[:3, 3], np.float32)
    z = pc[:, 2]
    safe = np.where(z > 1e-6, z, 1.0)
    u = (K[0, 0] * pc[:, 0] + K[0, 1] * pc[:, 1]) / safe + K[0, 2]
    v = K[1, 1] * pc[:, 1] / safe + K[1, 2]
    return u, v, z


def _largest_scale(gaussians: Gaussians) -> np.ndarray:
    """``[G]`` each Gaussian's largest standard deviation (metres). A surfel made at a grazing
    angle is long along the view that made it; seen from above, that length is what smears."""
    return np.exp(gaussians.largest_log_scale)


FLAT = 0.35
"""A Gaussian is a surfel when its thinnest axis is at most this fraction of its middle one."""


def _made_width(gaussians: Gaussians) -> np.ndarray:
    """``[G]`` the width a Gaussian stands for (metres): its largest standard deviation, or for
    a surfel, if larger, the tangent size its thickness says it was made at (reconstruction
    makes the normal axis ``NORMAL_SCALE_RATIO`` x the tangent one). Per-pixel splats on a
    skyline keep their block's thickness (:func:`.reconstruct.reconstruct`), so they count as
    coarse exactly when their block would (stride 2); capped at twice the largest axis, so
    a surfel an optimiser thickened counts at most twice as wide as it is."""
    # In log space, column by column (no sort: this runs over every visible chunk per job).
    s = gaussians.log_scales
    largest = gaussians.largest_log_scale
    thin = np.minimum(np.minimum(s[:, 0], s[:, 1]), s[:, 2])
    middle = s[:, 0] + s[:, 1] + s[:, 2] - thin - largest
    made = np.minimum(thin - np.float32(math.log(NORMAL_SCALE_RATIO)), largest + np.float32(math.log(2.0)))
    return np.exp(np.where(thin - middle <= np.float32(math.log(FLAT)), np.maximum(largest, made), largest))


def coarse_mask(gaussians: Gaussians, cameras: Cameras, stride: int, ratio: float = REFINE_RATIO) -> np.ndarray:
    """``[G]`` bool: in some camera's view and wider than ``ratio`` x what that camera's
    reconstruction would make at the Gaussian's depth."""
    G = len(gaussians)
    out = np.zeros(G, bool)
    if G == 0 or ratio <= 0:
        return out
    width = _made_width(gaussians)
    for n in range(len(cameras)):
        K = cameras.K[n]
        u, v, z = _project(gaussians.means, cameras.w2c[n], K)
        focal = math.sqrt(abs(float(K[0, 0]) * float(K[1, 1])))
        # In view when any of it is: the centre may lie just outside while it spills in.
        reach = 2.0 * width * focal / np.maximum(z, 0.05)
        inside = (z > 0.05) & (u >= -reach) & (u < cameras.width + reach) & (v >= -reach) & (v < cameras.height + reach)
        own = SCALE_FACTOR * stride * np.maximum(z, 0.0) / focal
        out |= inside & (width > ratio * own)
    return out


@dataclass(frozen=True)
class RemadeBlocks:
    """What one keyframe remade, block by block (the same for every chunk it refines).

    ``depth``: ``[Hb, Wb]`` the keyframe's block depth (``inf`` = sky); ``remade``: blocks the
    new Gaussians lie on; ``covered``: blocks that stay covered without the coarse Gaussians
    (remade, sky, or opaque in the scene less them)."""

    depth: np.ndarray
    remade: np.ndarray
    covered: np.ndarray


def remade_blocks(
    added: Gaussians, depth: np.ndarray, cameras: Cameras, stride: int, max_depth: float = 200.0,
    fine_alpha: np.ndarray | None = None,
) -> list[RemadeBlocks]:
    """Per keyframe, its :class:`RemadeBlocks` (arguments as :func:`retire_mask`'s): computed
    once per job and passed to :func:`retire_mask` for each chunk it refines."""
    out = []
    for n in range(len(cameras)):
        blocks = reduce_blocks(depth[n], stride, max_depth).depth  # [Hb, Wb], inf = sky
        Hb, Wb = blocks.shape
        remade = np.zeros((Hb, Wb), bool)
        if len(added):
            u, v, z = _project(added.means, cameras.w2c[n], cameras.K[n])
            r, c = np.floor(v / stride).astype(np.int64), np.floor(u / stride).astype(np.int64)
            ok = (z > 0) & (r >= 0) & (r < Hb) & (c >= 0) & (c < Wb)
            r, c, z = r[ok], c[ok], z[ok]
            on_surface = np.abs(z - blocks[r, c]) <= 0.05 * blocks[r, c]
            remade[r[on_surface], c[on_surface]] = True
        covered = remade | ~np.isfinite(blocks)  # sky needs nothing
        if fine_alpha is not None:
            a = fine_alpha[n]
            pad = np.pad(a, ((0, Hb * stride - a.shape[0]), (0, Wb * stride - a.shape[1])), mode="edge")
            covered |= pad.reshape(Hb, stride, Wb, stride).mean(axis=(1, 3)) >= 0.5
        out.append(RemadeBlocks(blocks, remade, covered))
    return out


def retire_mask(
    gaussians: Gaussians,
    coarse: np.ndarray,
    added: Gaussians,
    depth: np.ndarray,
    cameras: Cameras,
    stride: int,
    max_depth: float = 200.0,
    fine_alpha: np.ndarray | None = None,
    remade: list[RemadeBlocks] | None = None,
) -> np.ndarray:
    """``[G]`` bool: the ``coarse`` Gaussians the new keyframes replace.

    A coarse Gaussian is retired when (in some keyframe) its centre's block was remade by
    the new Gaussians ``added``, every block its footprint covers is remade or still covered
    without the coarse ones (``fine_alpha``), and it lies on or in front of that surface
    (behind it, the keyframe did not see it; partly outside the keyframe or over blocks
    nothing new replaced, retiring it would open a hole: it stays), or when its centre
    lands on a block the keyframe shows as sky (a coarse splat spilling past a silhouette).

    Args:
        gaussians: ``G`` existing Gaussians of one chunk; ``coarse`` ``[G]`` bool from
            :func:`coarse_mask`.
        added: the new Gaussians made from the keyframes (after revisit checks).
        depth: ``[N, H, W]`` the keyframes' depth (metres; ``inf`` = sky).
        cameras: the ``N`` keyframe cameras.
        stride, max_depth: reconstruction's block size and sky cut.
        fine_alpha: ``[N, H, W]`` opacity of the scene less the coarse Gaussians at the
            keyframes: blocks it covers (>= 0.5) stay covered when the coarse ones go.
        remade: :func:`remade_blocks` of these arguments, made once for every chunk of a
            job (None: made here).
    """
    out = np.zeros(len(gaussians), bool)
    candidates = np.flatnonzero(coarse)
    if candidates.size == 0:
        return out
    if remade is None:
        remade = remade_blocks(added, depth, cameras, stride, max_depth, fine_alpha)
    means = gaussians.means[candidates]
    width = _largest_scale(gaussians)[candidates]
    # Footprints on screen: a long grazing splat is foreshortened along its length, so its
    # reach is judged by its width across (the middle axis).
    across = np.exp(np.sort(gaussians.log_scales[candidates], axis=1)[:, 1])
    for n in range(len(cameras)):
        blocks, covered = remade[n].depth, remade[n].covered
        Hb, Wb = blocks.shape
        u, v, z = _project(means, cameras.w2c[n], cameras.K[n])
        r, c = np.floor(v / stride).astype(np.int64), np.floor(u / stride).astype(np.int64)
        ok = (z > 0.05) & (r >= 0) & (r < Hb) & (c >= 0) & (c < Wb)
        rr, cc = np.where(ok, r, 0), np.where(ok, c, 0)
        surface = blocks[rr, cc]
        front = z <= surface * (1.0 + SURFACE_MARGIN) + 2.0 * width
        # Only where it leaves no hole: every block its footprint (two standard deviations)
        # covers is remade or still covered by fine Gaussians, none outside the keyframe.
        focal = math.sqrt(abs(float(cameras.K[n][0, 0]) * float(cameras.K[n][1, 1])))
        radius = np.ceil(2.0 * across * focal / np.maximum(z, 0.05) / stride).astype(np.int64)
        whole = _all_set(covered, rr, cc, radius)
        out[candidates[ok & ((remade[n].remade[rr, cc] & front & whole) | ~np.isfinite(surface))]] = True
    return out


def _all_set(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """``[P]`` bool: is ``mask`` ``[H, W]`` set in the whole square of ``radius`` around each
    ``(row, col)``? False where the square leaves the image."""
    H, W = mask.shape
    table = np.zeros((H + 1, W + 1), np.int64)  # summed-area table
    table[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    r0, r1, c0, c1 = rows - radius, rows + radius + 1, cols - radius, cols + radius + 1
    inside = (r0 >= 0) & (c0 >= 0) & (r1 <= H) & (c1 <= W)
    r0, r1, c0, c1 = (np.clip(a, 0, lim) for a, lim in ((r0, H), (r1, H), (c0, W), (c1, W)))
    count = table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]
    return inside & (count == (r1 - r0) * (c1 - c0))
