"""Comparing pictures: the one PSNR, SSIM and sharpness measure that tests and benchmarks use."""

from __future__ import annotations

import math

import numpy as np

SSIM_SIGMA = 1.5
"""Gaussian window of SSIM (pixels), as in Wang et al. 2004."""


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 pictures (any equal shapes);
    ``inf`` when they are identical."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def luma(rgb: np.ndarray) -> np.ndarray:
    """``[..., H, W, 3]`` uint8 RGB -> ``[..., H, W]`` float64 BT.601 luma in [0, 255]."""
    x = np.asarray(rgb, np.float64)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``[H, W]`` float64 (edges replicated), radius 3.5 sigma."""
    radius = max(1, int(3.5 * sigma + 0.5))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(x, pad, mode="edge")
        n = x.shape[axis]
        x = sum(w * np.take(padded, np.arange(k, k + n), axis=axis) for k, w in enumerate(taps))
    return x


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity of two ``[H, W, 3]`` uint8 pictures, on luma (Gaussian
    window of sigma 1.5, K1 = 0.01, K2 = 0.03); 1.0 for identical pictures."""
    x, y = luma(a), luma(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = _gaussian_blur(x, SSIM_SIGMA), _gaussian_blur(y, SSIM_SIGMA)
    vx = _gaussian_blur(x * x, SSIM_SIGMA) - mx * mx
    vy = _gaussian_blur(y * y, SSIM_SIGMA) - my * my
    cxy = _gaussian_blur(x * y, SSIM_SIGMA) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def sharpness(rgb: np.ndarray) -> float:
    """Mean luma gradient magnitude of an ``[H, W, 3]`` uint8 picture (levels per pixel):
    how much fine detail it shows. Compare two pictures of one view by their ratio."""
    y = luma(rgb)
    gx = np.diff(y, axis=1)[:-1, :]
    gy = np.diff(y, axis=0)[:, :-1]
    return float(np.sqrt(gx * gx + gy * gy).mean())
