"""Triton kernels of the streaming path (see :mod:`.gpu_video` for the contracts).

* :func:`sky_grids_triton`: the coarse sky grids of all cameras in one launch (the torch
  version is ~25 small kernels, each a host-side launch).
* :func:`composite_i420_triton`: sky bilinear + composite + round to uint8 RGB + RGB ->
  I420, one launch. One program per (camera, run of ``ROWS`` chroma rows, block of chroma
  columns). Chroma row ``j`` filters RGB rows ``2j-1 .. 2j+2`` (edges repeated); walking
  down its rows, a program carries rows ``2j+1, 2j+2`` over as the next row's ``2j-1, 2j``,
  so each RGB row is read about once (``(2 ROWS + 2) / (2 ROWS)``), not twice. The kernel
  is bound by reading colour and alpha (16 B/pixel) and writing 1.5 B/pixel.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .i420 import CHROMA_ROW_TAPS, RGB_TO_YUV, YUV_OFFSET

BLOCK_CHROMA = 128
"""Chroma columns per program (256 pixels per row)."""
ROWS = 8
"""Chroma rows per program."""
BLOCK_SKY = 256
"""Coarse sky samples per program."""


# ------------------------------------------------------------------ sky grids
@triton.jit
def _sky_grid_kernel(rays_ptr, sky_ptr, out_ptr, HC, WC, BLOCK: tl.constexpr):
    n = tl.program_id(1).to(tl.int64)
    s = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = s < HC * WC
    u = (s % WC).to(tl.float32) + 0.5
    v = (s // WC).to(tl.float32) + 0.5
    m = rays_ptr + n * 9
    dx = tl.load(m + 0) * u + tl.load(m + 1) * v + tl.load(m + 2)
    dy = tl.load(m + 3) * u + tl.load(m + 4) * v + tl.load(m + 5)
    dz = tl.load(m + 6) * u + tl.load(m + 7) * v + tl.load(m + 8)
    inv = 1.0 / tl.sqrt(dx * dx + dy * dy + dz * dz)
    dx, dy, dz = dx * inv, dy * inv, dz * inv
    up = -dy  # world +y is down
    t = tl.minimum(tl.maximum(up, 0.0), 1.0)
    t = tl.where(t > 0.0, tl.exp2(0.6 * tl.log2(tl.maximum(t, 1e-30))), 0.0)
    k = tl.minimum(tl.maximum(-up * 4.0, 0.0), 1.0)
    glow = tl.minimum(tl.maximum(dx * tl.load(sky_ptr + 9) + dy * tl.load(sky_ptr + 10) + dz * tl.load(sky_ptr + 11), 0.0), 1.0)
    for _ in tl.static_range(6):  # glow ** 64
        glow = glow * glow
    base = out_ptr + (n * HC * WC + s) * 3
    for c in tl.static_range(3):
        zenith = tl.load(sky_ptr + c)
        horizon = tl.load(sky_ptr + 3 + c)
        ground = tl.load(sky_ptr + 6 + c)
        above = horizon * (1.0 - t) + zenith * t
        below = horizon * (1.0 - k) + ground * k
        rgb = tl.where(up >= 0.0, above, below) + glow * tl.load(sky_ptr + 12 + c)
        tl.store(base + c, tl.minimum(tl.maximum(rgb, 0.0), 1.0), mask=mask)


def sky_grids_triton(torch, sky_packed, rays, hc: int, wc: int):
    """``[N, hc, wc, 3]`` float32 coarse sky grids; same numbers as ``gpu_video.sky_grids_torch``.

    Args:
        sky_packed: ``[15]`` float32 device tensor, ``SkyConstants.packed``.
        rays: ``[N, 3, 3]`` float32 device tensor, ``coarse_sky_geometry``'s ``M``.
    """
    n = rays.shape[0]
    out = torch.empty((n, hc, wc, 3), dtype=torch.float32, device=rays.device)
    _sky_grid_kernel[(triton.cdiv(hc * wc, BLOCK_SKY), n)](rays.contiguous(), sky_packed, out, hc, wc, BLOCK=BLOCK_SKY)
    return out


# ------------------------------------------------------------------ composite + I420
@triton.jit
def _bilinear(grid_ptr, row0, row1, x0i, x1i, fx, fy, c: tl.constexpr, mask):
    """Channel ``c`` of the coarse sky grid, bilinear (as ``interpolate(align_corners=True)``)."""
    s00 = tl.load(grid_ptr + (row0 + x0i) * 3 + c, mask=mask, other=0.0)
    s01 = tl.load(grid_ptr + (row0 + x1i) * 3 + c, mask=mask, other=0.0)
    s10 = tl.load(grid_ptr + (row1 + x0i) * 3 + c, mask=mask, other=0.0)
    s11 = tl.load(grid_ptr + (row1 + x1i) * 3 + c, mask=mask, other=0.0)
    return (1.0 - fy) * ((1.0 - fx) * s00 + fx * s01) + fy * ((1.0 - fx) * s10 + fx * s11)


@triton.jit
def _pixel_rgb8(colors_ptr, alphas_ptr, grid_ptr, n, y, x, mask, H, W, HC, WC, inv_stride):
    """Composited, uint8-rounded RGB (as float) of pixels ``(y, x[...])`` of camera ``n``."""
    pix = (n * H + y) * W + x
    r = tl.load(colors_ptr + pix * 3 + 0, mask=mask, other=0.0)
    g = tl.load(colors_ptr + pix * 3 + 1, mask=mask, other=0.0)
    b = tl.load(colors_ptr + pix * 3 + 2, mask=mask, other=0.0)
    a = tl.load(alphas_ptr + pix, mask=mask, other=0.0)
    gy = y.to(tl.float32) * inv_stride
    y0 = tl.floor(gy)
    fy = gy - y0
    y0i = y0.to(tl.int64)
    y1i = tl.minimum(y0i + 1, HC - 1)
    gx = x.to(tl.float32) * inv_stride
    x0 = tl.floor(gx)
    fx = gx - x0
    x0i = x0.to(tl.int64)
    x1i = tl.minimum(x0i + 1, WC - 1)
    row0 = (n * HC + y0i) * WC
    row1 = (n * HC + y1i) * WC
    t = 1.0 - a
    sky_r = _bilinear(grid_ptr, row0, row1, x0i, x1i, fx, fy, 0, mask)
    sky_g = _bilinear(grid_ptr, row0, row1, x0i, x1i, fx, fy, 1, mask)
    sky_b = _bilinear(grid_ptr, row0, row1, x0i, x1i, fx, fy, 2, mask)
    r8 = tl.minimum(tl.maximum(tl.floor((r + t * sky_r) * 255.0 + 0.5), 0.0), 255.0)
    g8 = tl.minimum(tl.maximum(tl.floor((g + t * sky_g) * 255.0 + 0.5), 0.0), 255.0)
    b8 = tl.minimum(tl.maximum(tl.floor((b + t * sky_b) * 255.0 + 0.5), 0.0), 255.0)
    return r8, g8, b8


@triton.jit
def _quantise(v):
    return tl.minimum(tl.maximum(tl.floor(v + 0.5), 0.0), 255.0).to(tl.uint8)


@triton.jit
def _chroma_pair(r0, g0, b0, r1, g1, b1, m0, m1, m2):
    """Sum over the two pixels of a chroma column of one chroma matrix row ``(m0, m1, m2)``."""
    return m0 * (r0 + r1) + m1 * (g0 + g1) + m2 * (b0 + b1)


@triton.jit
def _composite_i420_kernel(
    colors_ptr, alphas_ptr, grid_ptr, out_ptr,
    H, W, HC, WC, inv_stride,
    m00, m01, m02, m10, m11, m12, m20, m21, m22,
    off_y, off_u, off_v, tap0, tap1, tap2, tap3,
    BLOCK: tl.constexpr, ROWS: tl.constexpr,
):
    n = tl.program_id(2).to(tl.int64)
    j0 = tl.program_id(1).to(tl.int64) * ROWS
    xc = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    wc = W // 2
    hh = H // 2
    mask = xc < wc
    xa = 2 * xc
    xb = xa + 1
    frame = n * (H * W + 2 * hh * wc)
    # Rows 2j-1 and 2j of the first chroma row; each step reads rows 2j+1, 2j+2.
    ya = tl.maximum(2 * j0 - 1, 0)
    r_a0, g_a0, b_a0 = _pixel_rgb8(colors_ptr, alphas_ptr, grid_ptr, n, ya, xa, mask, H, W, HC, WC, inv_stride)
    r_a1, g_a1, b_a1 = _pixel_rgb8(colors_ptr, alphas_ptr, grid_ptr, n, ya, xb, mask, H, W, HC, WC, inv_stride)
    r_b0, g_b0, b_b0 = _pixel_rgb8(colors_ptr, alphas_ptr, grid_ptr, n, 2 * j0, xa, mask, H, W, HC, WC, inv_stride)
    r_b1, g_b1, b_b1 = _pixel_rgb8(colors_ptr, alphas_ptr, grid_ptr, n, 2 * j0, xb, mask, H, W, HC, WC, inv_stride)
    for step in range(ROWS):
        j = j0 + step
        ok = mask & ((xc * 0 + j) < hh)  # explicit broadcast: TRITON_INTERPRET rejects a scalar mask term
        yc = tl.minimum(2 * j + 1, H - 1)
        yd = tl.minimum(2 * j + 2, H - 1)
        r_c0, g_c0, b_c0 = _pixel_rgb8(colors_ptr, alphas_ptr, grid_ptr, n, yc, xa, mask, H, W, HC, WC, inv_stride)
        r_c1, g_c1, b_c1 = _pixel_rgb8(colors_ptr, alphas_ptr, grid_ptr, n, yc, xb, mask, H, W, HC, WC, inv_stride)
        r_d0, g_d0, b_d0 = _pixel_rgb8(colors_ptr, alphas_ptr, grid_ptr, n, yd, xa, mask, H, W, HC, WC, inv_stride)
        r_d1, g_d1, b_d1 = _pixel_rgb8(colors_ptr, alphas_ptr, grid_ptr, n, yd, xb, mask, H, W, HC, WC, inv_stride)
        u = 0.5 * (
            tap0 * _chroma_pair(r_a0, g_a0, b_a0, r_a1, g_a1, b_a1, m10, m11, m12)
            + tap1 * _chroma_pair(r_b0, g_b0, b_b0, r_b1, g_b1, b_b1, m10, m11, m12)
            + tap2 * _chroma_pair(r_c0, g_c0, b_c0, r_c1, g_c1, b_c1, m10, m11, m12)
            + tap3 * _chroma_pair(r_d0, g_d0, b_d0, r_d1, g_d1, b_d1, m10, m11, m12)
        )
        v = 0.5 * (
            tap0 * _chroma_pair(r_a0, g_a0, b_a0, r_a1, g_a1, b_a1, m20, m21, m22)
            + tap1 * _chroma_pair(r_b0, g_b0, b_b0, r_b1, g_b1, b_b1, m20, m21, m22)
            + tap2 * _chroma_pair(r_c0, g_c0, b_c0, r_c1, g_c1, b_c1, m20, m21, m22)
            + tap3 * _chroma_pair(r_d0, g_d0, b_d0, r_d1, g_d1, b_d1, m20, m21, m22)
        )
        # Luma of rows 2j (carried) and 2j+1 (just read).
        row_b = out_ptr + frame + (2 * j) * W
        tl.store(row_b + xa, _quantise(m00 * r_b0 + m01 * g_b0 + m02 * b_b0 + off_y), mask=ok)
        tl.store(row_b + xb, _quantise(m00 * r_b1 + m01 * g_b1 + m02 * b_b1 + off_y), mask=ok)
        row_c = out_ptr + frame + (2 * j + 1) * W
        tl.store(row_c + xa, _quantise(m00 * r_c0 + m01 * g_c0 + m02 * b_c0 + off_y), mask=ok)
        tl.store(row_c + xb, _quantise(m00 * r_c1 + m01 * g_c1 + m02 * b_c1 + off_y), mask=ok)
        chroma = out_ptr + frame + H * W + j * wc + xc
        tl.store(chroma, _quantise(u + off_u), mask=ok)
        tl.store(chroma + hh * wc, _quantise(v + off_v), mask=ok)
        r_a0, g_a0, b_a0, r_a1, g_a1, b_a1 = r_c0, g_c0, b_c0, r_c1, g_c1, b_c1
        r_b0, g_b0, b_b0, r_b1, g_b1, b_b1 = r_d0, g_d0, b_d0, r_d1, g_d1, b_d1


def composite_i420_triton(torch, colors, alphas, grid, stride: int, out) -> None:
    """Same contract as ``gpu_video.composite_i420_torch``, one kernel launch."""
    n, h, w, _ = colors.shape
    hc, wc = grid.shape[1:3]
    colors, alphas, grid = colors.contiguous(), alphas.contiguous(), grid.contiguous()
    launch = (triton.cdiv(w // 2, BLOCK_CHROMA), triton.cdiv(h // 2, ROWS), n)
    _composite_i420_kernel[launch](colors, alphas, grid, out, h, w, hc, wc, 1.0 / stride, *_CONSTANTS, BLOCK=BLOCK_CHROMA, ROWS=ROWS)


# Converted to Python floats once: building them per launch costs host time on every frame.
_CONSTANTS = tuple(float(v) for v in (*RGB_TO_YUV.reshape(-1), *YUV_OFFSET, *CHROMA_ROW_TAPS))
