"""Blending the seam where a new keyframe's splats meet the scene's: a feathered colour match.

A keyframe fills only where the scene is thin, so its splats meet earlier keyframes' splats
along the edge of what those covered (``bench/seams.py`` measures how much more the picture
is wrong there). The two sides saw the same surfaces from different places: distance fog,
water reflections, a generator's own colour drift between calls differ, and the edge shows
as a colour step. Where the keyframe overlaps what the scene already shows (the scene is
opaque there and its depth agrees with the keyframe's), the difference between the
keyframe and the scene's picture is known. Smoothed and carried a short way into the area
the keyframe fills (``reach_px``, fading with the share of overlap nearby), it is taken off
the keyframe's colours before reconstruction and colour fitting read them: at the seam the
new splats match the scene, a little further in they are the keyframe's own. Earlier splats
never change (a place once seen looks the same); only the new chunk's colours move, never by
more than ``MAX_SHIFT``; frame memory keeps the keyframes as generated.

Tried and left out (``bench/seams.py`` on forest walks showed no gain, within run-to-run
noise): filling earlier chunks' soft edges (alpha 0.5-0.99) with splats made just
transparent enough to close them, and cross-fading new splats over three blocks of the old
surface. The procedural generator's keyframes agree in colour within ~2 codes where they
overlap; its seams are steps in sharpness between a coarse chunk and a finer one.
"""

from __future__ import annotations

import math

import numpy as np


CELL_PX = 4
"""The colour difference is smoothed on a grid of cells this many keyframe pixels wide."""

SOLID_ALPHA = 0.9
"""The scene shows a surface at a pixel when its alpha reaches this."""

SAME_SURFACE = 0.05
"""Keyframe and scene see the same surface when their depths agree within this fraction."""

MAX_SHIFT = 0.25
"""The largest colour change (RGB in [0, 1]) blending may make to a new splat."""


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``[H, W, ...]`` along the first two axes (edges padded with zeros)."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    for axis in (0, 1):
        x = np.apply_along_axis(lambda v: np.convolve(v, taps, mode="same"), axis, x)
    return x


def _cells(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """``[H, W, ...]`` summed over ``CELL_PX`` x ``CELL_PX`` cells (``[h, w, ...]``, the image cropped to whole cells)."""
    x = x[: h * CELL_PX, : w * CELL_PX]
    return x.reshape(h, CELL_PX, w, CELL_PX, *x.shape[2:]).sum(axis=(1, 3))


def colour_shift(
    rgb: np.ndarray, depth: np.ndarray, scene_rgb: np.ndarray, scene_alpha: np.ndarray, scene_depth: np.ndarray, reach_px: float
) -> np.ndarray:
    """``[h, w, 3]`` float32 per cell: what to take off a new splat's colour there.

    Args:
        rgb, depth: ``[H, W, 3]`` uint8 and ``[H, W]`` metres, one keyframe.
        scene_rgb, scene_alpha, scene_depth: the scene drawn at that keyframe before it lands.
        reach_px: smoothing scale and reach (keyframe pixels).
    """
    h, w = depth.shape[0] // CELL_PX, depth.shape[1] // CELL_PX
    with np.errstate(invalid="ignore"):  # inf - inf where both see sky: not the same surface
        same = (scene_alpha >= SOLID_ALPHA) & np.isfinite(depth) & (np.abs(scene_depth - depth) <= SAME_SURFACE * depth)
    diff = (rgb.astype(np.float32) - scene_rgb.astype(np.float32)) / 255.0 * same[..., None]
    count = _cells(same.astype(np.float32), h, w)  # [h, w]
    total = _cells(diff, h, w)  # [h, w, 3]
    sigma = max(reach_px / CELL_PX / 2.0, 0.5)
    count_s, total_s = _blur(count, sigma), _blur(total, sigma)
    full = _blur(np.full((h, w), float(CELL_PX * CELL_PX), np.float32), sigma)  # what all-overlap would give
    mean = total_s / np.maximum(count_s, 1e-6)[..., None]
    # Full strength where at least half the neighbourhood overlaps (the seam), fading to none inside.
    weight = np.clip(2.0 * count_s / full, 0.0, 1.0)
    return np.clip(mean * weight[..., None], -MAX_SHIFT, MAX_SHIFT).astype(np.float32)


def _upsample(field: np.ndarray, h: int, w: int) -> np.ndarray:
    """``[hc, wc, 3]`` cell values -> ``[h, w, 3]`` per pixel, bilinear between cell centres
    (clamped at the edges, so pixels past the last whole cell take its value)."""
    def axis(n: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.clip((np.arange(n) + 0.5) / CELL_PX - 0.5, 0.0, cells - 1.0)
        i0 = np.floor(t).astype(np.int64)
        return i0, np.minimum(i0 + 1, cells - 1), (t - i0).astype(np.float32)

    y0, y1, fy = axis(h, field.shape[0])
    x0, x1, fx = axis(w, field.shape[1])
    fx = fx[None, :, None]
    top = field[y0][:, x0] * (1 - fx) + field[y0][:, x1] * fx
    bottom = field[y1][:, x0] * (1 - fx) + field[y1][:, x1] * fx
    return top * (1 - fy[:, None, None]) + bottom * fy[:, None, None]


def blend_keyframes(
    rgb: np.ndarray, depth: np.ndarray, scene_rgb: np.ndarray, scene_alpha: np.ndarray, scene_depth: np.ndarray, reach_px: float
) -> np.ndarray:
    """``rgb`` ``[N, H, W, 3]`` uint8 keyframes with :func:`colour_shift` taken off, for the
    splats they make: ``scene_*`` ``[N, H, W(, 3)]`` are the scene drawn at the keyframes
    before they land. Reconstruction (and colour fitting) read this; memory keeps the
    keyframes as generated."""
    if reach_px <= 0 or not (scene_alpha >= SOLID_ALPHA).any():
        return rgb
    out = np.empty_like(rgb)
    n, h, w = depth.shape
    for k in range(n):
        field = colour_shift(rgb[k], depth[k], scene_rgb[k], scene_alpha[k], scene_depth[k], reach_px)
        shift = _upsample(field, h, w)
        out[k] = np.clip(np.rint(rgb[k].astype(np.float32) - 255.0 * shift), 0, 255).astype(np.uint8)
    return out
