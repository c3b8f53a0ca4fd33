"""Frames with depth -> pixel-aligned 3D Gaussians, and the shared depth unprojection.

Pixel convention (the same as gsplat and as ``intrinsics_from_fov``'s ``cx = W / 2``):
pixel ``(row v, col u)`` covers ``[u, u + 1) x [v, v + 1)``, so its centre sits at
``(u + 0.5, v + 0.5)``.

Every image is first reduced to blocks of ``stride x stride`` pixels
(:func:`reduce_blocks`). A block stands for the **nearest surface** in it: its depth
is the mean depth of the pixels within 5 % of the block's minimum depth, its
colour the mean colour of those same pixels, and its point sits at their mean
pixel position. Taking the nearest surface (rather
than the median, or the mean of all pixels) means a block that straddles a
silhouette lies on the foreground and is coloured by it; a plain mean would put a
floater half-way between the two surfaces with a blended colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numba
import numpy as np

from ..camera import Cameras
from ..gaussians import Gaussians
from .frames import Frame

OPACITY_LOGIT = math.log(0.95 / 0.05)
"""New Gaussians are nearly opaque: the logit of 0.95."""

EDGE_OPACITY = 0.95
"""Opacity of the per-pixel Gaussians at sky edges (``reconstruct(sky_edge_opacity=...)``)."""

NEAREST_SURFACE_MARGIN = 0.05
"""Pixels within this relative margin of a block's minimum depth belong to its nearest surface."""

EDGE_RELATIVE_THRESHOLD = 0.10
"""Depth discontinuity test: allowed second difference of disparity, relative to the disparity."""

NORMAL_SCALE_RATIO = 0.15
"""The axis along the surface normal is this fraction of the pixel footprint (flat surfels)."""

MAX_STRETCH = 4.0
"""A tangent axis is at most this many pixel footprints long (grazing surfaces)."""

SHARPEN = 0.5
"""Default unsharp-mask amount on block colours (see :func:`_sharpened`)."""

EDGE_REACH = 0.5
"""A surfel with a neighbour on its surface on one side only reaches this fraction of the step
to it (see :func:`_supported_extent`)."""

DEDUPE_DEPTH_MARGIN = 0.05
"""An earlier view's Gaussian covers a later view's block when it is no more than 5 % behind it."""


# --------------------------------------------------------------------------- blocks


def _check_stride(stride: int) -> int:
    if int(stride) != stride or stride < 1 or stride > 64:
        raise ValueError(f"stride must be an integer in [1, 64], got {stride}")
    return int(stride)


@dataclass(frozen=True)
class Blocks:
    """An image reduced to ``Hb`` x ``Wb`` blocks of ``stride`` x ``stride`` pixels.

    Attributes:
        depth: ``[Hb, Wb]`` float32 metres, the block's nearest surface; ``inf`` = no valid pixel.
        u, v: ``[Hb, Wb]`` float32 continuous pixel coordinates of that surface's point: the
            mean centre of the pixels on it (the block centre for full blocks), so a block
            only partly covered by a surface still unprojects onto it.
        rgb: ``[Hb, Wb, 3]`` float32 mean colour of those pixels in [0, 1], or None.
    """

    depth: np.ndarray
    u: np.ndarray
    v: np.ndarray
    rgb: np.ndarray | None


def reduce_blocks(
    depth: np.ndarray, stride: int, max_depth: float = math.inf, rgb: np.ndarray | None = None
) -> Blocks:
    """Reduce one depth map (and optionally its colours) to ``stride`` x ``stride`` blocks.

    Args:
        depth: ``[H, W]`` float metres along camera +z; ``inf``/NaN/<= 0 are invalid (sky).
        stride: block size in pixels; the image is padded (as sky) to a multiple of it,
            so ``Hb = ceil(H / stride)``, ``Wb = ceil(W / stride)``.
        max_depth: depths ``>= max_depth`` count as sky.
        rgb: optional ``[H, W, 3]`` uint8 colours.
    """
    stride = _check_stride(stride)
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W], got shape {depth.shape}")
    H, W = depth.shape
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (H, W, 3):
            raise ValueError(f"rgb must be [H, W, 3] matching depth {depth.shape}, got {rgb.shape}")
    Hb, Wb = -(-H // stride), -(-W // stride)
    d = np.where((depth > 0) & (depth < max_depth), depth, np.float32(np.inf))  # NaN compares False -> inf
    if stride == 1:
        v, u = np.mgrid[0:H, 0:W].astype(np.float32) + np.float32(0.5)
        colour = None
        if rgb is not None:
            colour = np.where(np.isfinite(d)[..., None], rgb.astype(np.float32) * np.float32(1 / 255), 0.0)
        return Blocks(d, u, v, None if colour is None else colour.astype(np.float32))
    with_rgb = rgb is not None
    src_rgb = np.ascontiguousarray(rgb, dtype=np.uint8) if with_rgb else np.zeros((1, 1, 3), np.uint8)
    out_d = np.empty((Hb, Wb), np.float32)
    out_u = np.empty((Hb, Wb), np.float32)
    out_v = np.empty((Hb, Wb), np.float32)
    out_rgb = np.zeros((Hb, Wb, 3) if with_rgb else (1, 1, 3), np.float32)
    _reduce_blocks_kernel(
        np.ascontiguousarray(d), src_rgb, with_rgb, stride, np.float32(1 + NEAREST_SURFACE_MARGIN),
        out_d, out_u, out_v, out_rgb,
    )
    return Blocks(out_d, out_u, out_v, out_rgb if with_rgb else None)


@numba.njit(cache=True, nogil=True)
def _reduce_blocks_kernel(depth, rgb, with_rgb, stride, near_factor, out_d, out_u, out_v, out_rgb):  # pragma: no cover
    """Per block: nearest-surface depth, mean pixel position and colour (see :func:`reduce_blocks`)."""
    H, W = depth.shape
    Hb, Wb = out_d.shape
    for bi in range(Hb):
        r0, r1 = bi * stride, min(bi * stride + stride, H)
        for bj in range(Wb):
            c0, c1 = bj * stride, min(bj * stride + stride, W)
            dmin = np.inf
            for r in range(r0, r1):
                for c in range(c0, c1):
                    if depth[r, c] < dmin:
                        dmin = depth[r, c]
            if dmin == np.inf:
                out_d[bi, bj] = np.inf
                out_u[bi, bj] = c0 + 0.5 * stride
                out_v[bi, bj] = r0 + 0.5 * stride
                continue
            limit = dmin * near_factor
            n = 0
            sd = su = sv = sr = sg = sb = 0.0
            for r in range(r0, r1):
                for c in range(c0, c1):
                    z = depth[r, c]
                    if z <= limit:
                        n += 1
                        sd += z
                        su += c + 0.5
                        sv += r + 0.5
                        if with_rgb:
                            sr += rgb[r, c, 0]
                            sg += rgb[r, c, 1]
                            sb += rgb[r, c, 2]
            out_d[bi, bj] = sd / n
            out_u[bi, bj] = su / n
            out_v[bi, bj] = sv / n
            if with_rgb:
                out_rgb[bi, bj, 0] = sr / (255.0 * n)
                out_rgb[bi, bj, 1] = sg / (255.0 * n)
                out_rgb[bi, bj, 2] = sb / (255.0 * n)


def _block_rays(K: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``[..., 3]`` float32 rays ``K^-1 [u, v, 1]`` (z = 1) through pixel coordinates ``u``, ``v``."""
    K = np.asarray(K, np.float64)
    fx, fy, cx, cy, s = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    y = (v - cy) / fy
    x = (u - cx - s * y) / fx
    return np.stack([x, y, np.ones_like(x)], axis=-1).astype(np.float32)


def _to_world(points_cam: np.ndarray, w2c: np.ndarray) -> np.ndarray:
    """``[..., 3]`` camera-space points to world space: ``R^T (X - t)``."""
    R = np.asarray(w2c[:3, :3], np.float32)
    t = np.asarray(w2c[:3, 3], np.float32)
    return ((points_cam - t) @ R).astype(np.float32)


def unproject_depth(
    depth: np.ndarray, K: np.ndarray, w2c: np.ndarray, stride: int = 1, max_depth: float = math.inf
) -> tuple[np.ndarray, np.ndarray]:
    """Back-project a depth map's valid blocks to world points: ``X = R^T (d K^-1 [u, v, 1] - t)``.

    Args:
        depth: ``[H, W]`` float metres along camera +z (``inf`` = sky, skipped).
        K: ``[3, 3]`` intrinsics for ``H`` x ``W``.
        w2c: ``[4, 4]`` world-to-camera (OpenCV).
        stride: unproject one point per ``stride`` x ``stride`` block (its nearest surface,
            at the mean position of its pixels; see :func:`reduce_blocks`).
        max_depth: depths at or beyond this are skipped like sky.

    Returns:
        ``points`` ``[M, 3]`` float32 world coordinates (metres) and ``blocks`` ``[M, 2]``
        int32 ``(row, col)`` of each point in the ``[ceil(H/stride), ceil(W/stride)]`` grid,
        in row-major order.
    """
    blocks = reduce_blocks(depth, stride, max_depth)
    d = blocks.depth
    K = np.asarray(K, np.float32)
    w2c = np.asarray(w2c, np.float32)
    if K.shape != (3, 3) or w2c.shape != (4, 4):
        raise ValueError(f"K must be [3, 3] and w2c [4, 4], got {K.shape} and {w2c.shape}")
    rows, cols = np.nonzero(np.isfinite(d))
    rays = _block_rays(K, blocks.u[rows, cols], blocks.v[rows, cols])
    points = _to_world(rays * d[rows, cols, None], w2c)
    return points, np.stack([rows, cols], axis=1).astype(np.int32)


# --------------------------------------------------------------------------- geometry checks


@dataclass(frozen=True)
class AxisSupport:
    """Along one image axis of the block grid: which neighbours lie on a block's own surface.

    A plane's disparity (1/depth) is an affine function of the pixel position, so three
    consecutive blocks of one smooth surface have a second difference near zero, however
    grazing the view; a jump onto another surface breaks it. A neighbour is on the block's
    surface when a linear triple joins them -- ``(i-2, i-1, i)`` / ``(i, i+1, i+2)``, or the
    centred ``(i-1, i, i+1)`` for a block on such a run -- or when its disparity is within the
    tolerance (a crease, the other half of a structure two blocks wide).

    Attributes (all ``[Hb, Wb]`` bool):
        prev, next: block ``i-1`` resp. ``i+1`` is on block ``i``'s surface.
        solid: not a "flying pixel": on a smooth run, or not *between* its neighbours.
            A block bridging two surfaces (a blurred depth edge) has a nearer neighbour on one
            side and a farther one (or sky) on the other; a block seen through a slit (both
            neighbours nearer) or a thin foreground structure (both farther) is a real surface.
    """

    prev: np.ndarray
    next: np.ndarray
    solid: np.ndarray


def _axis_support(disp: np.ndarray, axis: int, rel: float) -> AxisSupport:
    """:class:`AxisSupport` of disparity ``disp`` ``[Hb, Wb]`` (NaN = sky) along ``axis`` (0 rows,
    1 columns), with tolerance ``rel`` x the block's disparity."""
    d = np.moveaxis(disp, axis, 0)
    n = d.shape[0]
    pad = np.full((n + 4,) + d.shape[1:], np.nan, np.float32)
    pad[2:-2] = d
    m2, m1, c, p1, p2 = pad[:-4], pad[1:-3], pad[2:-2], pad[3:-1], pad[4:]
    # For "between": sky is the farthest surface (disparity 0); beyond the image is unknown (NaN).
    far = np.full_like(pad, np.nan)
    far[2:-2] = np.nan_to_num(d, nan=0.0)
    fm1, fp1 = far[1:-3], far[3:-1]
    tol = rel * c
    with np.errstate(invalid="ignore"):  # NaN (sky / outside) compares False
        before = np.abs(m2 - 2 * m1 + c) <= tol
        after = np.abs(c - 2 * p1 + p2) <= tol
        centred = np.abs(m1 - 2 * c + p1) <= tol
        run = before | after
        # The centred triple only extends a block already on a smooth run: a flying pixel half-way
        # between two surfaces is centred-linear too.
        prev = before | (centred & run) | (np.abs(m1 - c) <= tol)
        nxt = after | (centred & run) | (np.abs(p1 - c) <= tol)
        between = ((fm1 - c > tol) & (c - fp1 > tol)) | ((fp1 - c > tol) & (c - fm1 > tol))
    solid = run | ~between
    return AxisSupport(*(np.moveaxis(x, 0, axis) for x in (prev, nxt, solid)))


def _steps(points: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``[Hb, Wb, 3]`` steps to the next and from the previous block along ``axis`` (NaN at the border)."""
    fwd = np.full_like(points, np.nan)
    bwd = np.full_like(points, np.nan)
    if axis == 0:
        fwd[:-1] = points[1:] - points[:-1]
        bwd[1:] = points[1:] - points[:-1]
    else:
        fwd[:, :-1] = points[:, 1:] - points[:, :-1]
        bwd[:, 1:] = points[:, 1:] - points[:, :-1]
    return fwd, bwd


def _tangent(fwd: np.ndarray, bwd: np.ndarray, support: AxisSupport) -> np.ndarray:
    """``[..., 3]`` step along the surface: the central difference where both neighbours are on
    the block's surface (robust to a neighbour's noise), else the one-sided step to the one that
    is; NaN where neither is (a tangent is never measured across a discontinuity)."""
    both = (support.prev & support.next)[..., None]
    return np.where(both, 0.5 * (fwd + bwd), np.where(support.next[..., None], fwd, np.where(support.prev[..., None], bwd, np.nan)))


def _supported_extent(
    fwd: np.ndarray, bwd: np.ndarray, support: AxisSupport, axis: np.ndarray, footprint: np.ndarray, has_normal: np.ndarray
) -> np.ndarray:
    """``[M]`` metres a surfel may reach along its tangent ``axis`` ``[M, 3]`` (unit).

    Where both neighbours along the grid axis are on its surface: the shorter of the two steps,
    measured along ``axis`` (a Gaussian is symmetric: stretched to the farther neighbour it
    overshoots the nearer one). Where only one is (a depth edge or a skyline on the other side):
    :data:`EDGE_REACH` x that step -- it still closes the gap to that neighbour (a grazing
    ground's last row before a brow), and sticks out past the edge only that far. Neither, or no
    normal: one ``footprint``. Clamped to [1, :data:`MAX_STRETCH`] footprints.
    """
    f = np.abs((np.nan_to_num(fwd) * axis).sum(1))
    b = np.abs((np.nan_to_num(bwd) * axis).sum(1))
    reach = np.where(
        support.prev & support.next, np.minimum(f, b),
        EDGE_REACH * np.where(support.next, f, np.where(support.prev, b, 0.0)),
    )
    return np.clip(np.where(has_normal, reach, footprint), footprint, MAX_STRETCH * footprint)


def _perpendicular(n: np.ndarray) -> np.ndarray:
    """``[M, 3]`` unit vectors perpendicular to the unit vectors ``n`` ``[M, 3]``."""
    helper = np.where(np.abs(n[:, :1]) < 0.9, np.array([1.0, 0.0, 0.0], np.float32), np.array([0.0, 1.0, 0.0], np.float32))
    p = np.cross(n, helper)
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def _support_count(solid: np.ndarray, x: AxisSupport, y: AxisSupport) -> np.ndarray:
    """``[Hb, Wb]`` int: how many of the 4 neighbours are solid and on the block's own surface.
    A neighbour beyond the image counts (nothing is known against it there)."""
    s = np.pad(solid, 1, constant_values=False)
    count = _border_neighbours(solid.shape)
    for same, neighbour in ((y.prev, s[:-2, 1:-1]), (y.next, s[2:, 1:-1]), (x.prev, s[1:-1, :-2]), (x.next, s[1:-1, 2:])):
        count += same & neighbour
    return count


def _border_neighbours(shape: tuple[int, int]) -> np.ndarray:
    """``[Hb, Wb]`` int8: how many of a block's 4 neighbours lie beyond the image."""
    count = np.zeros(shape, np.int8)
    count[0] += 1
    count[-1] += 1
    count[:, 0] += 1
    count[:, -1] += 1
    return count


def matrix_to_quat_wxyz(R: np.ndarray) -> np.ndarray:
    """``[..., 3, 3]`` rotation matrices to ``[..., 4]`` unit quaternions, w first, w >= 0."""
    R = np.asarray(R, np.float64)
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    # Each of the four candidates is accurate where its denominator is largest (Shepperd).
    cand = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = np.argmax(cand, axis=-1)
    r = np.sqrt(np.maximum(np.take_along_axis(cand, best[..., None], -1)[..., 0], 1e-12))
    s = 0.5 / r
    a21, a12 = R[..., 2, 1], R[..., 1, 2]
    a02, a20 = R[..., 0, 2], R[..., 2, 0]
    a10, a01 = R[..., 1, 0], R[..., 0, 1]
    options = [
        (0.5 * r, (a21 - a12) * s, (a02 - a20) * s, (a10 - a01) * s),
        ((a21 - a12) * s, 0.5 * r, (a01 + a10) * s, (a02 + a20) * s),
        ((a02 - a20) * s, (a01 + a10) * s, 0.5 * r, (a12 + a21) * s),
        ((a10 - a01) * s, (a02 + a20) * s, (a12 + a21) * s, 0.5 * r),
    ]
    which = [best == i for i in range(4)]
    q = np.stack([np.select(which, [opt[c] for opt in options]) for c in range(4)], axis=-1)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    q *= np.where(q[..., :1] < 0, -1.0, 1.0)
    return q.astype(np.float32)


# --------------------------------------------------------------------------- reconstruction


def reconstruct(
    rgb: np.ndarray,
    depth: np.ndarray,
    cameras: Cameras,
    existing_alpha: np.ndarray | None,
    *,
    stride: int = 2,
    fill_below_alpha: float = 0.5,
    scale_factor: float = 0.7,
    floater_min_neighbors: int = 2,
    max_depth: float = 200.0,
    sharpen: float = SHARPEN,
    split_sky_edges: bool = True,
    sky_edge_opacity: float = EDGE_OPACITY,
) -> Gaussians:
    """Turn ``N`` views with depth into new pixel-aligned Gaussians where the scene is empty.

    One Gaussian per ``stride`` x ``stride`` block (its nearest surface, see
    :func:`reduce_blocks`), placed at ``X = R^T (d K^-1 [u, v, 1] - t)``. A block gets a
    Gaussian only when all of these hold:

    * it is not sky: some pixel has finite depth below ``max_depth``;
    * the existing scene is thin there: the block's mean ``existing_alpha`` is below
      ``fill_below_alpha`` (so revisits never duplicate or overwrite content);
    * it is not a "flying pixel" at a depth discontinuity: along each image axis, it lies on a
      smooth run (the disparity of the block and its two neighbours on one side is linear
      within 10 %), or it is not *between* its neighbours (nearer than one, farther than the
      other; see :class:`AxisSupport`): smooth surfaces pass at any viewing angle, silhouettes,
      thin foreground structures and background seen through a slit are kept, blocks bridging
      two surfaces are dropped;
    * it is supported: at least ``floater_min_neighbors`` of its 4 neighbours are solid and on
      its own surface (beyond the image counts): a lone block hovering in front of a wall is a
      floater;
    * no Gaussian made from an earlier view of the same call already covers it (earlier
      views' new Gaussians are projected into later views with a depth test and splatted
      over their projected footprint).

    Shape: each Gaussian is a flat surfel. Its normal comes from the depth grid's tangents
    (central differences where both neighbours are on its surface, else the one-sided step);
    each tangent axis reaches ``scale_factor`` x as far as the neighbours support it: the
    shorter of the two steps, half the step where only one side is on its surface (a depth
    edge, a skyline), clamped to [1, ``MAX_STRETCH``] x the pixel footprint
    ``stride * depth / focal`` (:func:`_supported_extent`: a surface seen at a grazing angle
    stays closed, and no needle sticks out past an edge); the normal axis is
    ``NORMAL_SCALE_RATIO`` x the footprint. Blocks without a usable neighbour on an axis fall
    back to a camera-facing surfel. Colours are the block means pre-sharpened within the
    surface (``sharpen``, :func:`_sharpened`); opacity is 0.95; colours RGB in [0, 1].

    Sky edges (``split_sky_edges``): a kept block that is partly sky (its other pixels all sky)
    or has an all-sky 4-neighbour is drawn by one Gaussian per pixel of its surface instead, at
    the pixel's centre and depth, with the block's orientation and colour, its tangent axes
    ``1 / stride`` as long (the normal axis keeps the block's thickness, which tells
    refinement the footprint it was made at). A block's Gaussian reaches past the block (alpha ~0.35 half a block beyond it), so
    against the sky every silhouette was drawn about a third of a block fat and soft, and a
    block only partly covered drew its whole block; per pixel, the silhouette is the
    keyframe's own to a pixel (docs/benchmarks.md, "Silhouettes against the sky"). Edges
    against a farther surface keep their one Gaussian: it also covers that surface's pixels in
    the block, which no other splat does.

    Args:
        rgb: ``[N, H, W, 3]`` uint8.
        depth: ``[N, H, W]`` float32 metres along camera +z; ``inf`` = sky.
        cameras: ``N`` cameras of ``W`` x ``H`` pixels.
        existing_alpha: ``[N, H, W]`` float32 rendered opacity of the current scene at
            these views, or None for an empty scene.
        stride: block size in pixels (output resolution is 1/``stride``).
        fill_below_alpha: add only where the existing opacity is below this.
        scale_factor: Gaussian standard deviation as a fraction of the block footprint.
        floater_min_neighbors: minimum number of valid 4-neighbours (0..4).
        max_depth: depths at or beyond this many metres are sky.
        sharpen: unsharp-mask amount on the block colours (0: plain block means).
        split_sky_edges: per-pixel Gaussians on blocks at the sky's edge (see above).
        sky_edge_opacity: those per-pixel Gaussians' opacity (the others' is 0.95).

    Returns:
        The new Gaussians (world coordinates), possibly empty.
    """
    stride = _check_stride(stride)
    rgb = np.asarray(rgb)
    depth = np.asarray(depth, np.float32)
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must be [N, H, W, 3] uint8, got shape {rgb.shape}")
    N, H, W = rgb.shape[:3]
    if depth.shape != (N, H, W):
        raise ValueError(f"depth must be [N, H, W] = {(N, H, W)}, got {depth.shape}")
    if len(cameras) != N or (cameras.width, cameras.height) != (W, H):
        raise ValueError(
            f"cameras must be {N} cameras of {W}x{H}, got {len(cameras)} of {cameras.width}x{cameras.height}"
        )
    if existing_alpha is not None:
        existing_alpha = np.asarray(existing_alpha, np.float32)
        if existing_alpha.shape != (N, H, W):
            raise ValueError(f"existing_alpha must be [N, H, W] = {(N, H, W)}, got {existing_alpha.shape}")
    if not 0.0 < fill_below_alpha <= 1.0:
        raise ValueError(f"fill_below_alpha must be in (0, 1], got {fill_below_alpha}")
    if not scale_factor > 0:
        raise ValueError(f"scale_factor must be > 0, got {scale_factor}")
    if not 0 <= floater_min_neighbors <= 4:
        raise ValueError(f"floater_min_neighbors must be in [0, 4], got {floater_min_neighbors}")
    if not max_depth > 0:
        raise ValueError(f"max_depth must be > 0, got {max_depth}")
    if not 0.0 <= sharpen <= 4.0:
        raise ValueError(f"sharpen must be in [0, 4], got {sharpen}")
    if not 0.05 <= sky_edge_opacity <= 0.99:
        raise ValueError(f"sky_edge_opacity must be in [0.05, 0.99], got {sky_edge_opacity}")

    made: list[Gaussians] = []
    for n in range(N):
        g = _reconstruct_view(
            rgb[n],
            depth[n],
            cameras.K[n],
            cameras.w2c[n],
            None if existing_alpha is None else existing_alpha[n],
            made,
            stride,
            fill_below_alpha,
            scale_factor,
            floater_min_neighbors,
            max_depth,
            sharpen,
            split_sky_edges,
            sky_edge_opacity,
        )
        made.append(g)
    return Gaussians.concat(made)


def _block_alpha(alpha: np.ndarray, stride: int, Hb: int, Wb: int) -> np.ndarray:
    """``[Hb, Wb]`` mean opacity per block (edge-replicated padding)."""
    H, W = alpha.shape
    padded = np.pad(alpha, ((0, Hb * stride - H), (0, Wb * stride - W)), mode="edge")
    return padded.reshape(Hb, stride, Wb, stride).mean(axis=(1, 3))


def _covered_by(earlier: list[Gaussians], K: np.ndarray, w2c: np.ndarray, d: np.ndarray, stride: int) -> np.ndarray:
    """``[Hb, Wb]`` bool: blocks already covered by Gaussians made from earlier views of this call.

    Each earlier Gaussian is projected into this view and marks the blocks within
    ``round(projected sigma)`` blocks (at most 2) of where it lands, provided it is not
    more than ``DEDUPE_DEPTH_MARGIN`` behind this view's surface there (a Gaussian in front
    covers the block too: it would occlude it in a render).
    """
    covered = np.zeros(d.shape, np.bool_)
    g = Gaussians.concat(earlier)
    if len(g) == 0:
        return covered
    sigma = np.exp(g.largest_log_scale).astype(np.float32)
    _cover_kernel(
        g.means, sigma, np.asarray(w2c, np.float32), np.asarray(K, np.float32), stride,
        np.float32(1 + DEDUPE_DEPTH_MARGIN), np.ascontiguousarray(d), covered,
    )
    return covered


@numba.njit(cache=True, nogil=True)
def _cover_kernel(means, sigma, w2c, K, stride, behind_factor, d, covered):  # pragma: no cover
    Hb, Wb = d.shape
    for i in range(means.shape[0]):
        x, y, z = means[i, 0], means[i, 1], means[i, 2]
        xc = w2c[0, 0] * x + w2c[0, 1] * y + w2c[0, 2] * z + w2c[0, 3]
        yc = w2c[1, 0] * x + w2c[1, 1] * y + w2c[1, 2] * z + w2c[1, 3]
        zc = w2c[2, 0] * x + w2c[2, 1] * y + w2c[2, 2] * z + w2c[2, 3]
        if zc <= 1e-3:
            continue
        u = (K[0, 0] * xc + K[0, 1] * yc) / zc + K[0, 2]
        v = K[1, 1] * yc / zc + K[1, 2]
        col = int(np.floor(u / stride))
        row = int(np.floor(v / stride))
        radius = min(2, int(np.rint(sigma[i] * K[0, 0] / zc / stride)))
        for r in range(max(row - radius, 0), min(row + radius + 1, Hb)):
            for c in range(max(col - radius, 0), min(col + radius + 1, Wb)):
                if zc <= d[r, c] * behind_factor:
                    covered[r, c] = True


def _solid_blocks(d: np.ndarray, floater_min_neighbors: int) -> tuple[np.ndarray, tuple[AxisSupport, AxisSupport]]:
    """The geometric tests of :func:`reconstruct`: which blocks of one view may become Gaussians.

    Args:
        d: ``[Hb, Wb]`` float32 block depths (``inf`` = sky), from :func:`reduce_blocks`.
        floater_min_neighbors: minimum number of solid 4-neighbours on the block's own surface.

    Returns:
        ``keep`` ``[Hb, Wb]`` bool (valid, not a flying pixel, supported) and the
        :class:`AxisSupport` ``(x, y)`` along columns and rows that tangents are measured on.
    """
    valid = np.isfinite(d)
    disp = np.where(valid, 1.0 / d, np.nan).astype(np.float32)
    y = _axis_support(disp, 0, EDGE_RELATIVE_THRESHOLD)
    x = _axis_support(disp, 1, EDGE_RELATIVE_THRESHOLD)
    solid = valid & y.solid & x.solid
    keep = solid & (_support_count(solid, x, y) >= floater_min_neighbors)
    return keep, (x, y)


def _reconstruct_view(
    rgb: np.ndarray,
    depth: np.ndarray,
    K: np.ndarray,
    w2c: np.ndarray,
    alpha: np.ndarray | None,
    earlier: list[Gaussians],
    stride: int,
    fill_below_alpha: float,
    scale_factor: float,
    floater_min_neighbors: int,
    max_depth: float,
    sharpen: float,
    split_sky_edges: bool,
    sky_edge_opacity: float,
) -> Gaussians:
    blocks = reduce_blocks(depth, stride, max_depth, rgb)
    d, colour = blocks.depth, blocks.rgb
    Hb, Wb = d.shape
    valid = np.isfinite(d)
    if not valid.any():
        return Gaussians.empty()
    keep, (support_x, support_y) = _solid_blocks(d, floater_min_neighbors)
    if alpha is not None:
        keep &= _block_alpha(alpha, stride, Hb, Wb) < fill_below_alpha
    if earlier and keep.any():
        keep &= ~_covered_by(earlier, K, w2c, d, stride)
    if not keep.any():
        return Gaussians.empty()

    rays = _block_rays(K, blocks.u, blocks.v)
    pcam = rays * np.where(valid, d, np.nan)[..., None]  # [Hb, Wb, 3] camera space
    rows, cols = np.nonzero(keep)
    p = pcam[rows, cols]
    focal = math.sqrt(abs(float(K[0, 0]) * float(K[1, 1])))
    footprint = stride * d[rows, cols] / focal  # [M] metres: one block's width on a camera-facing surface
    steps_u = [x[rows, cols] for x in _steps(pcam, axis=1)]  # (fwd, bwd) [M, 3]
    steps_v = [x[rows, cols] for x in _steps(pcam, axis=0)]
    sup_u = AxisSupport(*(x[rows, cols] for x in (support_x.prev, support_x.next, support_x.solid)))
    sup_v = AxisSupport(*(x[rows, cols] for x in (support_y.prev, support_y.next, support_y.solid)))
    tu, tv = _tangent(*steps_u, sup_u), _tangent(*steps_v, sup_v)
    has_both = ~np.isnan(tu[:, 0]) & ~np.isnan(tv[:, 0])

    # Surface normal from the two grid tangents, turned to face the camera; camera-facing
    # where the grid gives no second direction (thin structures, silhouettes).
    view = -p / np.linalg.norm(p, axis=1, keepdims=True)
    normal = np.cross(np.nan_to_num(tu), np.nan_to_num(tv))
    nlen = np.linalg.norm(normal, axis=1, keepdims=True)
    has_normal = has_both & (nlen[:, 0] > 1e-12)
    normal = np.where(has_normal[:, None], normal / np.maximum(nlen, 1e-12), view)
    normal *= np.where((normal * view).sum(1, keepdims=True) < 0, -1.0, 1.0)
    # First tangent: the u step (or the camera's x axis) made orthogonal to the normal.
    a = np.where(has_normal[:, None], np.nan_to_num(tu), np.array([1.0, 0.0, 0.0], np.float32))
    a = a - (a * normal).sum(1, keepdims=True) * normal
    alen = np.linalg.norm(a, axis=1, keepdims=True)
    a = np.where(alen > 1e-9, a / np.maximum(alen, 1e-12), _perpendicular(normal))
    b = np.cross(normal, a)
    # Extent along each tangent: only as far as the neighbours support it (no needles past an edge).
    s_a = scale_factor * _supported_extent(*steps_u, sup_u, a, footprint, has_normal)
    s_b = scale_factor * _supported_extent(*steps_v, sup_v, b, footprint, has_normal)
    s_n = scale_factor * NORMAL_SCALE_RATIO * footprint
    log_scales = np.log(np.stack([s_a, s_b, s_n], axis=1))

    R_c2w = np.asarray(w2c[:3, :3], np.float32).T
    rot_cam = np.stack([a, b, normal], axis=2)  # columns: local axes in camera space
    quats = matrix_to_quat_wxyz(np.matmul(R_c2w, rot_cam))
    colours = _sharpened(colour, support_x, support_y, sharpen)[rows, cols]
    opacity_logits = np.full(len(p), OPACITY_LOGIT, np.float32)
    if split_sky_edges and stride > 1:
        pixels = _block_pixels(depth, stride, max_depth)
        edge, near = _sky_edge_blocks(pixels, d)
        if edge[rows, cols].any():
            p, log_scales, quats, colours = _split_sky_edges(
                edge[rows, cols], near, pixels, K, stride, p, log_scales, quats, colours, rows, cols
            )
            whole = len(rows) - int(edge[rows, cols].sum())  # the per-pixel splats come after the blocks' own
            opacity_logits = np.full(len(p), OPACITY_LOGIT, np.float32)
            opacity_logits[whole:] = math.log(sky_edge_opacity / (1.0 - sky_edge_opacity))
    means = _to_world(p, w2c)
    return Gaussians(
        means=means,
        quats=quats,
        log_scales=log_scales,
        opacity_logits=opacity_logits,
        colors=colours,
    )


def _block_pixels(depth: np.ndarray, stride: int, max_depth: float) -> np.ndarray:
    """``[Hb, Wb, stride, stride]`` float32: each block's pixel depths (sky, invalid and padding ``inf``)."""
    H, W = depth.shape
    Hb, Wb = -(-H // stride), -(-W // stride)
    d = np.full((Hb * stride, Wb * stride), np.inf, np.float32)
    d[:H, :W] = np.where((depth > 0) & (depth < max_depth), depth, np.inf)
    return d.reshape(Hb, stride, Wb, stride).transpose(0, 2, 1, 3)


def _sky_edge_blocks(pixels: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which blocks border the sky, and their pixels on the block's surface.

    Args:
        pixels: ``[Hb, Wb, s, s]`` pixel depths (:func:`_block_pixels`).
        d: ``[Hb, Wb]`` block depths (:func:`reduce_blocks`), ``inf`` = sky.

    Returns:
        ``edge`` ``[Hb, Wb]`` bool -- a block with a surface whose other pixels are all sky, or
        whose 4-neighbour is all sky -- and ``near`` ``[Hb, Wb, s, s]`` bool, the pixels of each
        block's nearest surface. Blocks meeting a farther *surface* are not edges: their one
        Gaussian also covers the farther surface's pixels in the block, which no other splat does.
    """
    dmin = pixels.min(axis=(2, 3))
    near = pixels <= (dmin * np.float32(1 + NEAREST_SURFACE_MARGIN))[..., None, None]
    sky = ~np.isfinite(pixels)
    partial = np.isfinite(dmin) & ~near.all(axis=(2, 3)) & (near | sky).all(axis=(2, 3))
    open_sky = ~np.isfinite(d)
    beside = np.zeros(d.shape, bool)
    beside[1:] |= open_sky[:-1]
    beside[:-1] |= open_sky[1:]
    beside[:, 1:] |= open_sky[:, :-1]
    beside[:, :-1] |= open_sky[:, 1:]
    return partial | (beside & ~open_sky), near


def _split_sky_edges(
    edge: np.ndarray, near: np.ndarray, pixels: np.ndarray, K: np.ndarray, stride: int, p: np.ndarray,
    log_scales: np.ndarray, quats: np.ndarray, colours: np.ndarray, rows: np.ndarray, cols: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The kept blocks' Gaussians with those on a sky edge (``edge`` ``[M]`` of the kept blocks
    ``rows``, ``cols``) replaced by one per pixel of the block's surface: at that pixel's centre
    and depth, the block's orientation, shape and colour, its tangent axes ``1 / stride`` as
    long. The normal axis keeps the block's thickness (invisible face-on): it tells refinement
    the footprint the splat was made at (:func:`.refine.coarse_mask`), so a finer keyframe
    later remakes these edges as it remakes their blocks.

    Returns ``(p [M', 3] camera-space means, log_scales [M', 3], quats [M', 4], colours [M', 3])``.
    """
    sel = np.flatnonzero(edge)
    r, c = rows[sel], cols[sel]
    e, i, j = np.nonzero(near[r, c])
    v, u = r[e] * stride + i, c[e] * stride + j
    rays = _block_rays(K, u.astype(np.float32) + 0.5, v.astype(np.float32) + 0.5)
    src = sel[e]
    keep = np.ones(len(p), bool)
    keep[sel] = False

    def joined(whole: np.ndarray, parts: np.ndarray) -> np.ndarray:
        return np.concatenate([whole[keep], parts]).astype(np.float32)

    return (
        joined(p, rays * pixels[r[e], c[e], i, j][:, None]),
        joined(log_scales, log_scales[src] - np.array([math.log(stride), math.log(stride), 0.0], np.float32)),
        joined(quats, quats[src]),
        joined(colours, colours[src]),
    )


def _sharpened(colour: np.ndarray, x: AxisSupport, y: AxisSupport, amount: float) -> np.ndarray:
    """``[Hb, Wb, 3]`` block colours with an unsharp mask over each block's 4-neighbours on its
    own surface: ``clip(c + amount x (c - their mean), 0, 1)``.

    Drawn, neighbouring splats overlap, so every pixel mixes its neighbours' colours (the
    keyframe convolved with the splat kernel); pre-sharpening undoes part of that where no
    colour fitting runs (coarse jobs, blocks shared with older chunks) and gives fitting a
    better start. Only same-surface neighbours take part: a silhouette does not ring against
    the background. Blocks without any such neighbour keep their colour.
    """
    if amount == 0:
        return colour
    pad = np.pad(colour, ((1, 1), (1, 1), (0, 0)), mode="edge")
    total = np.zeros_like(colour)
    count = np.zeros(colour.shape[:2] + (1,), np.float32)
    for same, neighbour in ((y.prev, pad[:-2, 1:-1]), (y.next, pad[2:, 1:-1]), (x.prev, pad[1:-1, :-2]), (x.next, pad[1:-1, 2:])):
        w = same[..., None].astype(np.float32)
        total += w * neighbour
        count += w
    blurred = np.where(count > 0, total / np.maximum(count, 1.0), colour)
    return np.clip(colour + np.float32(amount) * (colour - blurred), 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- revisit consistency
#
# A place once seen must look the same when revisited. Per block, a keyframe's reconstruction
# shows either a surface (at the block's depth) or nothing (sky, a flying-pixel edge, an
# unsupported floater: the rendered sky shows through). A Gaussian added later changes that
# view when it lies in front of the shown surface, or on a block that shows nothing -- also
# through its footprint spilling onto such a block, or, when it is hidden behind the surface,
# spilling past the silhouette onto a farther one. :func:`occluder_mask` finds those.

OCCLUSION_MARGIN = 0.08
"""A new Gaussian is in front of a shown surface when nearer than ``(1 - margin) x`` its depth."""

OCCLUSION_FOOTPRINT_SIGMAS = 2.0
"""A new Gaussian's footprint reaches this many projected standard deviations (alpha 0.13 at
the edge)."""

OCCLUSION_DILATION = 1
"""Footprints are widened by this many blocks when looking for blocks that show nothing: old
splats fade over about a block at a skyline, so the sky shows through a little inside it.
(Not for the hidden-behind test: widening it there vetoes most of the ground behind every
brow, which later keyframes must fill.)"""

OCCLUSION_MAX_RADIUS = 4
"""A footprint reaches at most this many blocks from its centre (stretched far splats)."""

AUTHORITY_RATIO = 3.0
"""An earlier keyframe decides about a point only when it saw it from at most this many times
the distance of the new keyframes: a view from afar has too coarse a footprint to veto detail
made close up (walking up to a distant tree must add the tree)."""


def shown_depth(
    depth: np.ndarray, *, stride: int = 2, max_depth: float = 200.0, floater_min_neighbors: int = 2
) -> np.ndarray:
    """What a keyframe's reconstruction shows, per block: surface depth, or ``inf`` for nothing.

    Mirrors :func:`reconstruct`'s geometric tests: a block shows its nearest surface when it
    passes them (not sky, not a flying pixel, supported), and nothing otherwise. Blocks left
    out only because the scene already covered them count as shown (other splats show
    about that surface there).

    Args:
        depth: ``[H, W]`` float metres along camera +z; ``inf`` = sky.
        stride, max_depth, floater_min_neighbors: as given to :func:`reconstruct`.

    Returns:
        ``[ceil(H / stride), ceil(W / stride)]`` float32 metres; ``inf`` where nothing is shown.
    """
    d = reduce_blocks(depth, stride, max_depth).depth
    keep, _ = _solid_blocks(d, floater_min_neighbors)
    return np.where(keep, d, np.float32(np.inf)).astype(np.float32)


class PinholeView(Protocol):
    """Anything :func:`occluder_mask` can test against: a :class:`.frames.Frame`, or a view a
    player was shown (:mod:`.seen_masks`). ``depth`` is read only when no ``shown`` map is given."""

    w2c: np.ndarray  # [4, 4] world-to-camera (OpenCV)
    K: np.ndarray  # [3, 3] intrinsics in pixels


def occluder_mask(
    gaussians: Gaussians,
    frames: Sequence[Frame | PinholeView],
    *,
    new_centers: np.ndarray | None = None,
    shown: Sequence[np.ndarray] | None = None,
    stride: int = 2,
    max_depth: float = 200.0,
    margin: float = OCCLUSION_MARGIN,
    footprint_sigmas: float = OCCLUSION_FOOTPRINT_SIGMAS,
    dilation: int = OCCLUSION_DILATION,
    authority_ratio: float = AUTHORITY_RATIO,
    max_radius: int = OCCLUSION_MAX_RADIUS,
    keep_on_surface: bool = True,
) -> np.ndarray:
    """``[G]`` bool: the Gaussians that would change what an earlier frame's reconstruction shows.

    For frame ``f``, with ``z`` a Gaussian's depth in ``f`` (``z > 0``), ``sigma`` its standard
    deviation along the ray (metres), ``S`` the block its centre projects to and ``T`` the
    blocks within its footprint -- ``footprint_sigmas`` standard deviations of its projected
    covariance per image axis (EWA, as the renderer splats it; a ground surfel seen at a
    grazing angle is a thin ellipse), at most ``max_radius`` blocks -- it is an
    occluder when any of these holds:

    * ``S`` shows nothing (see :func:`shown_depth`), or ``z + sigma < (1 - margin) x`` its
      depth: in front of what was seen (``sigma`` lets a surfel lying on the surface pass);
    * a block of ``T`` widened by ``dilation`` blocks shows nothing: it spills into sky or a hole;
    * it is hidden (``(1 - margin) z`` beyond ``S``'s depth) and in front of a block of ``T``
      as above: it peeks past a silhouette onto a farther surface. (Not tested for Gaussians
      on the surface: on ground seen at a grazing angle the next block up is much farther,
      and a surfel on that ground covers it without changing the view.)

    With ``keep_on_surface=False`` a Gaussian lying on the shown surface (neither in front nor
    ``(1 - margin) z`` beyond it) is an occluder too: it blends with the surface's own splats
    and changes its colour. Frozen views a player was shown use that (they still draw the
    splats that made their surface); keyframe checks keep such surfels, which later keyframes
    need to remake a surface.

    Only frames with authority decide: with ``new_centers``, ``f`` decides about a Gaussian
    only when its distance to ``f``'s camera is at most ``authority_ratio`` x its distance to
    the nearest new camera.

    Any pinhole view with a ``shown`` map works as a frame: the frozen views players were
    shown (:mod:`.seen_masks`) pass their rendered picture, per pixel (``stride=1``).

    Args:
        gaussians: ``G`` new Gaussians (world coordinates).
        frames: earlier keyframes to protect (never the keyframes the Gaussians came from),
            or other :class:`PinholeView` s with ``shown`` maps.
        new_centers: ``[C, 3]`` camera centres the Gaussians were made from (metres), or
            None (every frame decides about every Gaussian in its view).
        shown: per frame, its :func:`shown_depth` map (a cache); None computes them.
        stride, max_depth: as given to :func:`reconstruct` for ``frames``.
        margin: relative depth tolerance of the in-front tests.
        footprint_sigmas: footprint radius, in standard deviations.
        dilation: blocks added to the footprint when looking for blocks that show nothing.
        authority_ratio: see above.
        max_radius: a footprint reaches at most this many blocks from its centre.
        keep_on_surface: see above.
    """
    stride = _check_stride(stride)
    G = len(gaussians)
    occluder = np.zeros(G, np.bool_)
    if G == 0 or not frames:
        return occluder
    if shown is not None and len(shown) != len(frames):
        raise ValueError(f"shown must hold one map per frame ({len(frames)}), got {len(shown)}")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    if int(dilation) != dilation or dilation < 0:
        raise ValueError(f"dilation must be an integer >= 0, got {dilation}")
    if int(max_radius) != max_radius or max_radius < 0:
        raise ValueError(f"max_radius must be an integer >= 0, got {max_radius}")
    means = np.ascontiguousarray(gaussians.means, np.float32)
    covariances = _covariances(gaussians)
    if new_centers is None:
        reach = np.full(G, np.inf, np.float32)
    else:
        centers = np.asarray(new_centers, np.float32).reshape(-1, 3)
        nearest = np.sqrt(((means[:, None, :] - centers[None, :, :]) ** 2).sum(-1).min(axis=1))
        reach = (authority_ratio * nearest).astype(np.float32)
    for i, frame in enumerate(frames):
        block_depth = shown[i] if shown is not None else shown_depth(frame.depth, stride=stride, max_depth=max_depth)
        _occluder_kernel(
            means, covariances, reach,
            np.asarray(frame.w2c, np.float32), np.asarray(frame.K, np.float32),
            np.ascontiguousarray(block_depth, np.float32), stride, np.float32(1.0 - margin),
            np.float32(footprint_sigmas), int(dilation), int(max_radius), bool(keep_on_surface), occluder,
        )
    return occluder


def _covariances(gaussians: Gaussians) -> np.ndarray:
    """``[G, 3, 3]`` float32 world-space covariances ``R diag(scale^2) R^T`` (square metres)."""
    w, x, y, z = (gaussians.quats[:, k].astype(np.float64) for k in range(4))
    R = np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )  # [G, 3, 3]
    variances = np.exp(2.0 * gaussians.log_scales.astype(np.float64))  # [G, 3]
    return np.ascontiguousarray(np.einsum("gij,gj,gkj->gik", R, variances, R), dtype=np.float32)


def drop_occluders(gaussians: Gaussians, frames: Sequence[Frame], margin: float = OCCLUSION_MARGIN, **options) -> Gaussians:
    """``gaussians`` without those that would change what ``frames`` show (see :func:`occluder_mask`).

    ``options`` are :func:`occluder_mask`'s other keywords (``new_centers``, ``shown``, ``stride``, ...).
    """
    occluder = occluder_mask(gaussians, frames, margin=margin, **options)
    return gaussians.subset(np.flatnonzero(~occluder)) if occluder.any() else gaussians


@numba.njit(cache=True, nogil=True)
def _occluder_kernel(means, covariances, reach, w2c, K, shown, stride, front_factor, footprint_sigmas, dilation, max_radius, keep_on_surface, occluder):  # pragma: no cover
    """Marks in ``occluder`` the Gaussians that change what one frame shows (see :func:`occluder_mask`)."""
    Hb, Wb = shown.shape
    # Camera centre R^T (-t), for the authority test.
    ox = -(w2c[0, 0] * w2c[0, 3] + w2c[1, 0] * w2c[1, 3] + w2c[2, 0] * w2c[2, 3])
    oy = -(w2c[0, 1] * w2c[0, 3] + w2c[1, 1] * w2c[1, 3] + w2c[2, 1] * w2c[2, 3])
    oz = -(w2c[0, 2] * w2c[0, 3] + w2c[1, 2] * w2c[1, 3] + w2c[2, 2] * w2c[2, 3])
    for i in range(means.shape[0]):
        if occluder[i]:
            continue
        x, y, z = means[i, 0], means[i, 1], means[i, 2]
        dx, dy, dz = x - ox, y - oy, z - oz
        if dx * dx + dy * dy + dz * dz > reach[i] * reach[i]:
            continue  # seen from too far to decide
        zc = w2c[2, 0] * x + w2c[2, 1] * y + w2c[2, 2] * z + w2c[2, 3]
        if zc <= 1e-3:
            continue
        xc = w2c[0, 0] * x + w2c[0, 1] * y + w2c[0, 2] * z + w2c[0, 3]
        yc = w2c[1, 0] * x + w2c[1, 1] * y + w2c[1, 2] * z + w2c[1, 3]
        u = (K[0, 0] * xc + K[0, 1] * yc) / zc + K[0, 2]
        v = K[1, 1] * yc / zc + K[1, 2]
        col = int(np.floor(u / stride))
        row = int(np.floor(v / stride))
        # The footprint as the renderer splats it: the covariance in camera space, projected
        # with the pinhole Jacobian (EWA). A ground surfel seen at a grazing angle is a thin
        # ellipse: its extent across the horizon is small however long it is.
        cov_cam = np.zeros((3, 3), np.float32)
        for a in range(3):
            for b in range(3):
                acc = 0.0
                for m in range(3):
                    for n in range(3):
                        acc += w2c[a, m] * covariances[i, m, n] * w2c[b, n]
                cov_cam[a, b] = acc
        j00, j02 = K[0, 0] / zc, -K[0, 0] * xc / (zc * zc)
        j11, j12 = K[1, 1] / zc, -K[1, 1] * yc / (zc * zc)
        var_u = j00 * j00 * cov_cam[0, 0] + 2 * j00 * j02 * cov_cam[0, 2] + j02 * j02 * cov_cam[2, 2]
        var_v = j11 * j11 * cov_cam[1, 1] + 2 * j11 * j12 * cov_cam[1, 2] + j12 * j12 * cov_cam[2, 2]
        tail_cols = min(max_radius, int(footprint_sigmas * np.sqrt(max(var_u, 0.0)) / stride + 0.5))
        tail_rows = min(max_radius, int(footprint_sigmas * np.sqrt(max(var_v, 0.0)) / stride + 0.5))
        reach_cols = min(max_radius, tail_cols + dilation)
        reach_rows = min(max_radius, tail_rows + dilation)
        if col < -reach_cols or col >= Wb + reach_cols or row < -reach_rows or row >= Hb + reach_rows:
            continue  # not in this frame's view, footprint included
        near = zc + np.sqrt(max(cov_cam[2, 2], 0.0))  # one sigma along the ray: surfels on a surface pass
        hidden = False
        if 0 <= row < Hb and 0 <= col < Wb:
            surface = shown[row, col]
            if near < surface * front_factor:  # also true where nothing is shown (inf)
                occluder[i] = True
                continue
            hidden = zc * front_factor > surface
            if not hidden and not keep_on_surface:
                occluder[i] = True  # on the surface: blends with its splats
                continue
        hit = False
        for r in range(max(row - reach_rows, 0), min(row + reach_rows + 1, Hb)):
            for c in range(max(col - reach_cols, 0), min(col + reach_cols + 1, Wb)):
                t = shown[r, c]
                if t == np.inf:
                    hit = True
                    break
                if hidden and abs(r - row) <= tail_rows and abs(c - col) <= tail_cols and near < t * front_factor:
                    hit = True
                    break
            if hit:
                break
        occluder[i] = hit
