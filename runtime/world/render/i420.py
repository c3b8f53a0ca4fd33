"""The I420 (yuv420p) picture: its size, and the BT.601 limited-range conversion constants that
every RGB -> I420 path (numpy, numba, torch, Triton) shares; see :mod:`.video` for the layout."""

from __future__ import annotations

import numpy as np

# BT.601 limited range, for RGB in [0, 255]: rows Y, U, V.
RGB_TO_YUV = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ],
    np.float32,
) / np.float32(255.0)
YUV_OFFSET = np.array([16.0, 128.0, 128.0], np.float32)
CHROMA_ROW_TAPS = (0.125, 0.375, 0.375, 0.125)
"""Vertical chroma filter over rows 2j-1, 2j, 2j+1, 2j+2 (libswscale's, fitted)."""


def i420_size(width: int, height: int) -> int:
    """Bytes of one I420 picture (width, height even)."""
    return width * height * 3 // 2
