"""RGB -> I420 on the CPU in numba: the same numbers as ``video.rgb_to_i420_reference``.

One parallel loop over (camera, chroma row): each iteration writes luma rows 2j and
2j+1 and chroma row j, reading RGB rows 2j-1 .. 2j+2 (the chroma filter's taps), so
no iteration writes what another reads. Imported lazily: it needs numba.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .i420 import CHROMA_ROW_TAPS, RGB_TO_YUV, YUV_OFFSET, i420_size

_M = RGB_TO_YUV
_TAPS = np.array(CHROMA_ROW_TAPS, np.float32)


@nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _convert(rgb, out, m, offset, taps):
    n, h, w, _ = rgb.shape
    hc, wc = h // 2, w // 2
    luma = h * w
    for job in nb.prange(n * hc):
        i, j = job // hc, job % hc
        for dy in range(2):
            y = 2 * j + dy
            for x in range(w):
                r, g, b = np.float32(rgb[i, y, x, 0]), np.float32(rgb[i, y, x, 1]), np.float32(rgb[i, y, x, 2])
                v = m[0, 0] * r + m[0, 1] * g + m[0, 2] * b + offset[0] + np.float32(0.5)
                out[i, y * w + x] = np.uint8(min(max(v, np.float32(0.0)), np.float32(255.0)))
        for xc in range(wc):
            su = np.float32(0.0)
            sv = np.float32(0.0)
            for t in range(4):
                y = min(max(2 * j - 1 + t, 0), h - 1)
                r = np.float32(rgb[i, y, 2 * xc, 0]) + np.float32(rgb[i, y, 2 * xc + 1, 0])
                g = np.float32(rgb[i, y, 2 * xc, 1]) + np.float32(rgb[i, y, 2 * xc + 1, 1])
                b = np.float32(rgb[i, y, 2 * xc, 2]) + np.float32(rgb[i, y, 2 * xc + 1, 2])
                k = taps[t] * np.float32(0.5)
                su += k * (m[1, 0] * r + m[1, 1] * g + m[1, 2] * b)
                sv += k * (m[2, 0] * r + m[2, 1] * g + m[2, 2] * b)
            u = su + offset[1] + np.float32(0.5)
            v = sv + offset[2] + np.float32(0.5)
            out[i, luma + j * wc + xc] = np.uint8(min(max(u, np.float32(0.0)), np.float32(255.0)))
            out[i, luma + hc * wc + j * wc + xc] = np.uint8(min(max(v, np.float32(0.0)), np.float32(255.0)))


def rgb_to_i420_numba(rgb: np.ndarray) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 RGB -> ``[N, H*W*3/2]`` uint8 I420 (all cores)."""
    n, h, w, _ = rgb.shape
    if h % 2 or w % 2:
        raise ValueError(f"rgb_to_i420: size must be even, got {w}x{h}")
    out = np.empty((n, i420_size(w, h)), np.uint8)
    _convert(np.ascontiguousarray(rgb), out, _M, YUV_OFFSET, _TAPS)
    return out
