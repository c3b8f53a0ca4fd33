"""The fused sky-composite + RGB -> I420 kernel in Triton (see :mod:`.gpu_video`).

One program per (camera, chroma row j, block of chroma columns). It evaluates RGB rows
2j-1 .. 2j+2 (the chroma filter's taps, edges repeated) for both pixels of each chroma
column: sky bilinear from the coarse grid, composite, round to uint8 RGB; writes luma
of rows 2j and 2j+1 and the U and V samples. Rows 2j-1 and 2j+2 are evaluated again by
the neighbouring programs; that costs arithmetic, which is free here, not memory.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .video import CHROMA_ROW_TAPS, RGB_TO_YUV, YUV_OFFSET

BLOCK_CHROMA = 128
"""Chroma columns per program (256 pixels per row)."""


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
def _composite_i420_kernel(
    colors_ptr, alphas_ptr, grid_ptr, out_ptr,
    H, W, HC, WC, inv_stride,
    m00, m01, m02, m10, m11, m12, m20, m21, m22,
    off_y, off_u, off_v, tap0, tap1, tap2, tap3,
    BLOCK: tl.constexpr,
):
    n = tl.program_id(2).to(tl.int64)
    j = tl.program_id(1).to(tl.int64)
    xc = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    wc = W // 2
    mask = xc < wc
    frame = n * (H * W + 2 * (H // 2) * wc)
    acc_u = tl.zeros((BLOCK,), tl.float32)
    acc_v = tl.zeros((BLOCK,), tl.float32)
    for t in tl.static_range(4):
        y = tl.minimum(tl.maximum(2 * j - 1 + t, 0), H - 1)
        tap = tap0 if t == 0 else (tap1 if t == 1 else (tap2 if t == 2 else tap3))
        for dx in tl.static_range(2):
            x = 2 * xc + dx
            r8, g8, b8 = _pixel_rgb8(colors_ptr, alphas_ptr, grid_ptr, n, y, x, mask, H, W, HC, WC, inv_stride)
            acc_u += (0.5 * tap) * (m10 * r8 + m11 * g8 + m12 * b8)
            acc_v += (0.5 * tap) * (m20 * r8 + m21 * g8 + m22 * b8)
            if t == 1 or t == 2:
                luma = m00 * r8 + m01 * g8 + m02 * b8 + off_y
                tl.store(out_ptr + frame + y * W + x, _quantise(luma), mask=mask)
    chroma = frame + H * W + j * wc + xc
    tl.store(out_ptr + chroma, _quantise(acc_u + off_u), mask=mask)
    tl.store(out_ptr + chroma + (H // 2) * wc, _quantise(acc_v + off_v), mask=mask)


def composite_i420_triton(torch, colors, alphas, grid, stride: int, out) -> None:
    """Same contract as ``gpu_video.composite_i420_torch``, one kernel launch."""
    n, h, w, _ = colors.shape
    hc, wc = grid.shape[1:3]
    colors, alphas, grid = colors.contiguous(), alphas.contiguous(), grid.contiguous()
    m = RGB_TO_YUV.astype(float)
    launch = (triton.cdiv(w // 2, BLOCK_CHROMA), h // 2, n)
    _composite_i420_kernel[launch](
        colors, alphas, grid, out,
        h, w, hc, wc, 1.0 / stride,
        *(float(v) for v in m.reshape(-1)),
        *(float(v) for v in YUV_OFFSET), *(float(v) for v in CHROMA_ROW_TAPS),
        BLOCK=BLOCK_CHROMA,
    )
