"""Gaussian activation and EWA projection to screen space (numba kernels).

Two steps, following the 3DGS / gsplat maths so the CPU and CUDA renderers agree:

1. :func:`activate_chunk` turns stored Gaussians (log scales, logits, quaternions)
   into a packed ``[G, 14]`` float32 record per Gaussian: mean, world covariance
   (upper triangle), opacity and RGB, reordered along a Morton curve and cut into
   blocks of 1024 with bounds, so a frame can skip the blocks outside the view
   (a chunk seen from inside is mostly off-screen). Chunks are immutable, so this
   runs once per chunk and the renderer caches the result.
2. :func:`project` maps packed Gaussians into one camera: 2D mean, inverse 2D
   covariance ("conic") with the 0.3 px low-pass filter, depth, and an axis-aligned
   pixel box outside which the Gaussian's alpha is below 1/255 (so it can be skipped
   exactly rather than by a 3-sigma rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from ..camera import Cameras
from ..gaussians import Gaussians, column_bounds
from ..scene import frustum_cull_boxes
from .conventions import ALPHA_MIN, EPS2D, FAR_PLANE, JACOBIAN_CLAMP, NEAR_PLANE
from .lod import Level, choose_levels, nearest_depth

# Columns of the packed per-Gaussian record made by activate_chunk.
PACKED_WIDTH = 14

# Columns of the per-camera splat record made by project (see project()).
SPLAT_WIDTH = 12
S_DEPTH = 9  # depth along +z, the sort key (the kernels address the other columns directly)

_JIT = dict(nogil=True, fastmath=True, cache=True, error_model="numpy")


@nb.njit(parallel=True, **_JIT)
def _activate_kernel(means, quats, log_scales, opacity_logits, colors, out):
    for i in nb.prange(means.shape[0]):
        w, x, y, z = quats[i, 0], quats[i, 1], quats[i, 2], quats[i, 3]
        n = math.sqrt(w * w + x * x + y * y + z * z)
        if n > 0.0:
            w, x, y, z = w / n, x / n, y / n, z / n
        else:
            w, x, y, z = 1.0, 0.0, 0.0, 0.0
        r00 = 1 - 2 * (y * y + z * z)
        r01 = 2 * (x * y - w * z)
        r02 = 2 * (x * z + w * y)
        r10 = 2 * (x * y + w * z)
        r11 = 1 - 2 * (x * x + z * z)
        r12 = 2 * (y * z - w * x)
        r20 = 2 * (x * z - w * y)
        r21 = 2 * (y * z + w * x)
        r22 = 1 - 2 * (x * x + y * y)
        s0 = math.exp(2.0 * log_scales[i, 0])  # variances along the local axes
        s1 = math.exp(2.0 * log_scales[i, 1])
        s2 = math.exp(2.0 * log_scales[i, 2])
        # Sigma = R diag(s) R^T, upper triangle.
        out[i, 0] = means[i, 0]
        out[i, 1] = means[i, 1]
        out[i, 2] = means[i, 2]
        out[i, 3] = r00 * r00 * s0 + r01 * r01 * s1 + r02 * r02 * s2
        out[i, 4] = r00 * r10 * s0 + r01 * r11 * s1 + r02 * r12 * s2
        out[i, 5] = r00 * r20 * s0 + r01 * r21 * s1 + r02 * r22 * s2
        out[i, 6] = r10 * r10 * s0 + r11 * r11 * s1 + r12 * r12 * s2
        out[i, 7] = r10 * r20 * s0 + r11 * r21 * s1 + r12 * r22 * s2
        out[i, 8] = r20 * r20 * s0 + r21 * r21 * s1 + r22 * r22 * s2
        out[i, 9] = 1.0 / (1.0 + math.exp(-opacity_logits[i]))
        out[i, 10] = colors[i, 0]
        out[i, 11] = colors[i, 1]
        out[i, 12] = colors[i, 2]
        out[i, 13] = 0.0


BLOCK = 1024
"""Gaussians per culling block (and per unit of parallel projection work)."""
EXTENT_SIGMAS = 3.4
"""Block bounds are padded by this many standard deviations of their largest
Gaussian: beyond sqrt(2 ln 255) = 3.33 sigma no splat reaches alpha 1/255."""


@dataclass(frozen=True)
class PackedChunk:
    """A chunk's Gaussians ready for projection, in spatially coherent blocks.

    Attributes:
        packed: ``[G, 14]`` float32 (see :data:`PACKED_WIDTH`), Gaussians in Morton
            order so that each run of :data:`BLOCK` rows is spatially compact.
        block_lo, block_hi: ``[B, 3]`` float32 padded bounds of each block (metres).
    """

    packed: np.ndarray
    block_lo: np.ndarray
    block_hi: np.ndarray
    levels: tuple[Level, ...] = ()
    """Coarser copies of the blocks, finest first (:mod:`.lod`); () where none were built."""

    def __len__(self) -> int:
        return self.packed.shape[0]

    @property
    def arrays(self) -> list[np.ndarray]:
        """The packed records of every level, fine first: what :func:`visible_blocks` rows index."""
        return [self.packed] + [level.packed for level in self.levels]

    @property
    def nbytes(self) -> int:
        return self.packed.nbytes + self.block_lo.nbytes + self.block_hi.nbytes + sum(v.nbytes for v in self.levels)


def _spread_bits(v: np.ndarray) -> np.ndarray:
    """Insert two zero bits between each of the low 21 bits of ``v`` (uint64)."""
    v = v & 0x1FFFFF
    v = (v | (v << 32)) & 0x1F00000000FFFF
    v = (v | (v << 16)) & 0x1F0000FF0000FF
    v = (v | (v << 8)) & 0x100F00F00F00F00F
    v = (v | (v << 4)) & 0x10C30C30C30C30C3
    v = (v | (v << 2)) & 0x1249249249249249
    return v


def morton_order(points: np.ndarray) -> np.ndarray:
    """``[G]`` int64 permutation sorting ``points [G, 3]`` along a Z-order curve (stable)."""
    if len(points) == 0:
        return np.zeros(0, np.int64)
    lo, hi = column_bounds(points)
    q = ((points - lo) / np.maximum(hi - lo, 1e-9) * 1023.0).astype(np.uint64)
    code = _spread_bits(q[:, 0]) | (_spread_bits(q[:, 1]) << np.uint64(1)) | (_spread_bits(q[:, 2]) << np.uint64(2))
    return np.argsort(code, kind="stable")


def activate_chunk(gaussians: Gaussians) -> PackedChunk:
    """Activate a chunk: packed records (mean, covariance xx xy xz yy yz zz in m^2,
    opacity, RGB, pad) in Morton order, and per-block bounds for culling."""
    n = len(gaussians)
    packed = np.empty((n, PACKED_WIDTH), np.float32)
    if n == 0:
        z = np.zeros((0, 3), np.float32)
        return PackedChunk(packed, z, z)
    order = morton_order(gaussians.means)
    _activate_kernel(
        gaussians.means[order],
        gaussians.quats[order],
        gaussians.log_scales[order],
        gaussians.opacity_logits[order],
        gaussians.colors[order],
        packed,
    )
    starts = np.arange(0, n, BLOCK)
    pad = EXTENT_SIGMAS * np.exp(gaussians.largest_log_scale[order])
    # Column by column: exact, and numpy reduces a [G, 3] array along G many times faster so.
    block_lo = np.stack([np.minimum.reduceat(packed[:, k] - pad, starts) for k in range(3)], axis=1)
    block_hi = np.stack([np.maximum.reduceat(packed[:, k] + pad, starts) for k in range(3)], axis=1)
    return PackedChunk(packed, block_lo.astype(np.float32), block_hi.astype(np.float32))


# Layout of the per-camera constants passed to the projection kernels.
_CAM_ROT, _CAM_T, _CAM_F, _CAM_C, _CAM_LIM, _CAM_SIZE = 0, 9, 12, 14, 16, 20
_CAM_LEN = 22


def camera_constants(w2c: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray:
    """``[22]`` float64: rotation (9, row-major), translation (3), fx fy, cx cy,
    Jacobian clamp limits (+x, -x, +y, -y, as tangents), width, height."""
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    slack_x = JACOBIAN_CLAMP * 0.5 * width / fx
    slack_y = JACOBIAN_CLAMP * 0.5 * height / fy
    lims = [(width - cx) / fx + slack_x, cx / fx + slack_x, (height - cy) / fy + slack_y, cy / fy + slack_y]
    w2c = np.asarray(w2c, np.float64)
    return np.array(
        list(w2c[:3, :3].ravel()) + list(w2c[:3, 3]) + [fx, fy, cx, cy] + lims + [width, height], np.float64
    )


@nb.njit(inline="always", **_JIT)
def _project_one(packed, j, cam, splats, boxes, i):
    """Project ``packed[j]`` into the camera, writing ``splats[i]`` and ``boxes[i]``."""
    boxes[i, 0] = 0
    boxes[i, 2] = 0
    mx, my, mz = packed[j, 0], packed[j, 1], packed[j, 2]
    z = cam[6] * mx + cam[7] * my + cam[8] * mz + cam[11]
    if z < NEAR_PLANE or z > FAR_PLANE:
        return
    opacity = packed[j, 9]
    if opacity < ALPHA_MIN:
        return
    x = cam[0] * mx + cam[1] * my + cam[2] * mz + cam[9]
    y = cam[3] * mx + cam[4] * my + cam[5] * mz + cam[10]
    fx, fy, cx, cy = cam[12], cam[13], cam[14], cam[15]
    width, height = cam[20], cam[21]
    inv_z = 1.0 / z
    u = fx * x * inv_z + cx
    v = fy * y * inv_z + cy
    # Cheap reject before the covariance maths: a centre more than one image size
    # off-screen reaches the image only if its extent (<= 3.33 sigma <= 3.33
    # sqrt(trace)) exceeds that distance.
    if u < -width or u > 2.0 * width or v < -height or v > 2.0 * height:
        trace = packed[j, 3] + packed[j, 6] + packed[j, 8]
        f_max = max(fx, fy)
        if 11.1 * trace * f_max * f_max * inv_z * inv_z < min(width, height) ** 2:
            return
    # EWA: Jacobian of the perspective projection at the (clamped) centre.
    tx = z * min(cam[16], max(-cam[17], x * inv_z))
    ty = z * min(cam[18], max(-cam[19], y * inv_z))
    j00 = fx * inv_z
    j02 = -fx * tx * inv_z * inv_z
    j11 = fy * inv_z
    j12 = -fy * ty * inv_z * inv_z
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = cam[0], cam[1], cam[2], cam[3], cam[4], cam[5], cam[6], cam[7], cam[8]
    s00, s01, s02 = packed[j, 3], packed[j, 4], packed[j, 5]
    s11, s12, s22 = packed[j, 6], packed[j, 7], packed[j, 8]
    # Camera-space covariance C = W Sigma W^T, via A = W Sigma.
    a00 = r00 * s00 + r01 * s01 + r02 * s02
    a01 = r00 * s01 + r01 * s11 + r02 * s12
    a02 = r00 * s02 + r01 * s12 + r02 * s22
    a10 = r10 * s00 + r11 * s01 + r12 * s02
    a11 = r10 * s01 + r11 * s11 + r12 * s12
    a12 = r10 * s02 + r11 * s12 + r12 * s22
    a20 = r20 * s00 + r21 * s01 + r22 * s02
    a21 = r20 * s01 + r21 * s11 + r22 * s12
    a22 = r20 * s02 + r21 * s12 + r22 * s22
    c00 = a00 * r00 + a01 * r01 + a02 * r02
    c01 = a00 * r10 + a01 * r11 + a02 * r12
    c02 = a00 * r20 + a01 * r21 + a02 * r22
    c11 = a10 * r10 + a11 * r11 + a12 * r12
    c12 = a10 * r20 + a11 * r21 + a12 * r22
    c22 = a20 * r20 + a21 * r21 + a22 * r22
    # 2D covariance J C J^T with J = [[j00, 0, j02], [0, j11, j12]], plus the low-pass.
    cov_a = j00 * j00 * c00 + 2.0 * j00 * j02 * c02 + j02 * j02 * c22 + EPS2D
    cov_b = j00 * j11 * c01 + j00 * j12 * c02 + j02 * j11 * c12 + j02 * j12 * c22
    cov_c = j11 * j11 * c11 + 2.0 * j11 * j12 * c12 + j12 * j12 * c22 + EPS2D
    det = cov_a * cov_c - cov_b * cov_b
    if det <= 0.0:
        return
    inv_det = 1.0 / det
    # Opacity-aware extent: alpha = o * exp(-q/2) falls below 1/255 at q = 2 ln(255 o);
    # the box holds every pixel where the splat can still contribute.
    k = math.sqrt(2.0 * math.log(opacity / ALPHA_MIN))
    ext_x = k * math.sqrt(cov_a)
    ext_y = k * math.sqrt(cov_c)
    # Pixel p (centre p + 0.5) is inside when |p + 0.5 - u| <= ext.
    x0 = max(0, int(math.ceil(u - ext_x - 0.5)))
    x1 = min(int(width), int(math.floor(u + ext_x - 0.5)) + 1)
    y0 = max(0, int(math.ceil(v - ext_y - 0.5)))
    y1 = min(int(height), int(math.floor(v + ext_y - 0.5)) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    boxes[i, 0] = x0
    boxes[i, 1] = y0
    boxes[i, 2] = x1
    boxes[i, 3] = y1
    splats[i, 0] = u
    splats[i, 1] = v
    # power(dx, dy) = -0.5 * d^T conic d = qa dx^2 + qb dx dy + qc dy^2
    splats[i, 2] = -0.5 * cov_c * inv_det
    splats[i, 3] = cov_b * inv_det
    splats[i, 4] = -0.5 * cov_a * inv_det
    splats[i, 5] = opacity
    splats[i, 6] = packed[j, 10]
    splats[i, 7] = packed[j, 11]
    splats[i, 8] = packed[j, 12]
    splats[i, 9] = z
    splats[i, 10] = -0.5 * k * k  # power below which alpha < ALPHA_MIN
    splats[i, 11] = 0.0


@nb.njit(parallel=True, **_JIT)
def _project_kernel(chunks, blocks, cam, splats, boxes):
    """Project pieces of several chunks in one parallel region.

    ``chunks``: typed list of packed ``[G, 14]`` arrays; ``blocks [B, 4]`` int64 rows
    ``(chunk, first, stop, out_first)``. One region per frame rather than one per
    chunk: every region wakes the worker threads, which on a loaded machine can cost
    a whole scheduler time slice.
    """
    for b in nb.prange(blocks.shape[0]):
        packed = chunks[blocks[b, 0]]
        out = blocks[b, 3]
        for j in range(blocks[b, 1], blocks[b, 2]):
            _project_one(packed, j, cam, splats, boxes, out + j - blocks[b, 1])


def project(
    chunks: list[PackedChunk],
    w2c: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    splats: np.ndarray,
    boxes: np.ndarray,
    blocks: np.ndarray,
) -> None:
    """Project the given blocks of ``chunks`` into one camera, filling ``splats`` and ``boxes`` in place.

    Args:
        blocks: ``[B, 4]`` int64 rows ``(array, first, stop, out_first)``: the Gaussians
            ``first:stop`` of the ``array``-th of the chunks' level arrays (each chunk's
            :attr:`PackedChunk.arrays` in turn) go to output rows
            ``out_first:out_first + stop - first`` (see :func:`visible_blocks`).
        splats: ``[M, 12]`` float32 out. Columns: pixel x, y (pixel centres at +0.5);
            ``qa, qb, qc`` with the Gaussian's exponent
            ``power = qa dx^2 + qb dx dy + qc dy^2`` (``-1/2`` the inverse 2D covariance,
            px^-2); opacity; RGB; depth (metres along +z); ``cut``, the power below
            which alpha < 1/255; padding.
        boxes: ``[M, 4]`` int32 out, ``x0, y0, x1, y1``: the half-open pixel box the
            splat can touch; ``x0 >= x1`` where the Gaussian is dropped (behind the
            near plane, off-screen, degenerate).
    """
    if len(blocks) == 0:
        return
    typed = nb.typed.List()
    for c in chunks:
        for array in c.arrays:
            typed.append(array)
    _project_kernel(typed, blocks, camera_constants(w2c, K, width, height), splats, boxes)


def visible_blocks(chunks: list[PackedChunk], cameras: Cameras, lod_px: float = 0.0) -> tuple[np.ndarray, int]:
    """Blocks of ``chunks`` whose bounds touch the (first) camera's frustum, each at the level of
    detail it is drawn at (:func:`.lod.choose_levels`; ``lod_px`` <= 0: all fine).

    Returns ``([B, 4] int64 rows (array, first, stop, out_first), total rows M)``, where
    ``array`` counts the chunks' :attr:`PackedChunk.arrays` in turn (see :func:`project`).
    """
    if not chunks:
        return np.zeros((0, 4), np.int64), 0
    lo = np.concatenate([c.block_lo for c in chunks])
    hi = np.concatenate([c.block_hi for c in chunks])
    if len(lo) == 0:
        return np.zeros((0, 4), np.int64), 0
    keep = frustum_cull_boxes(lo, hi, cameras[:1])[0]
    chunk_index = np.concatenate([np.full(len(c.block_lo), i, np.int64) for i, c in enumerate(chunks)])
    block = np.concatenate([np.arange(len(c.block_lo), dtype=np.int64) for c in chunks])
    base = np.cumsum([0] + [1 + len(c.levels) for c in chunks])[:-1].astype(np.int64)
    first = block * BLOCK
    sizes = np.array([len(c) for c in chunks], np.int64)
    stop = np.minimum(first + BLOCK, sizes[chunk_index])
    level = np.zeros(len(lo), np.int64)
    n_levels = max(len(c.levels) for c in chunks)
    if lod_px > 0.0 and n_levels and keep.any():
        kept = np.flatnonzero(keep)
        # A chunk's blocks are one run of the concatenation: slices, not masks over all blocks.
        runs = np.cumsum([0] + [len(c.block_lo) for c in chunks])
        blur = np.full((len(lo), n_levels), np.inf)
        for i, c in enumerate(chunks):
            for k, lv in enumerate(c.levels):
                blur[runs[i]:runs[i + 1], k] = lv.block_blur
        K = cameras.K[0]
        level[kept] = choose_levels(blur[kept], nearest_depth(lo[kept], hi[kept], cameras.w2c[0]), float(max(K[0, 0], K[1, 1])), lod_px)
        for i, c in enumerate(chunks):
            run = slice(runs[i], runs[i + 1])
            for k, lv in enumerate(c.levels):
                at = runs[i] + np.flatnonzero(level[run] == k + 1)
                first[at] = lv.block_start[block[at]]
                stop[at] = lv.block_start[block[at] + 1]
    array = base[chunk_index] + level
    array, first, stop = array[keep], first[keep], stop[keep]
    count = stop - first
    # Exclusive prefix sum; also right when no block is kept (a chunk's bounds can touch
    # the frustum while none of its blocks do).
    out_first = np.cumsum(count) - count
    rows = np.stack([array, first, stop, out_first], axis=1)
    return np.ascontiguousarray(rows), int(count.sum())
