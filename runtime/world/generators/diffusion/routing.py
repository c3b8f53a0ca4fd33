"""Routing known content into the views to generate, as Lyra 2 does: for every target camera,
the current scene is rendered and the retrieved memory frames are forward-warped with their
depth (z-buffered), giving a conditioning video and a keep/generate mask.

A pixel is *known* (keep) where the scene is opaque there, or a memory frame's surface lands
on it; sky pixels of memory frames are warped as directions (they are infinitely far) and are
known too. Where a memory frame's surface lies clearly in front of the scene's (it holds
something reconstruction left out), the memory frame wins. Everything else is *generate*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numba
import numpy as np

from ...camera import Cameras
from ...keyframes.frames import Frame

KNOWN_ALPHA = 0.9
"""The scene knows a pixel where its rendered opacity is at least this."""

FRONT_MARGIN = 0.1
"""A warped memory pixel replaces the scene's when nearer than ``(1 - margin) x`` its depth."""

MAX_SPLAT = 3
"""A warped pixel reaches at most this many target pixels from where it lands."""

SPLAT_REACH = 0.75
"""A warped pixel covers target pixels within this many of its own (projected) widths: a bit
more than half, so surfaces seen at an angle or closer stay closed."""

SKY_FAR = np.float32(1e30)
"""Depth a sky pixel gets in the z-buffer: behind every surface."""


@dataclass(frozen=True)
class Conditioning:
    """What the world knows at ``F`` target cameras.

    Attributes:
        rgb: ``[F, H, W, 3]`` uint8 known colours; unknown pixels are mid-grey (128).
        known: ``[F, H, W]`` bool, True = keep, False = generate.
        depth: ``[F, H, W]`` float32 metres of the known surfaces; ``inf`` for sky and unknown.
    """

    rgb: np.ndarray
    known: np.ndarray
    depth: np.ndarray

    @property
    def known_fraction(self) -> np.ndarray:
        """``[F]`` fraction of each view that is known."""
        return self.known.reshape(len(self.known), -1).mean(axis=1)


def forward_warp(frames: Sequence[Frame], cameras: Cameras) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp ``frames`` into every camera with a z-buffer.

    Each frame pixel is unprojected with its depth, projected into the target and splatted
    over its footprint there (at most ``MAX_SPLAT`` pixels out), nearest surface winning;
    sky pixels (``inf`` depth) are warped as directions, behind every surface.

    Returns:
        ``rgb [F,H,W,3]`` uint8, ``depth [F,H,W]`` float32 (``inf`` = sky or nothing),
        ``hit [F,H,W]`` bool (some frame's pixel, surface or sky, landed there).
    """
    F, H, W = len(cameras), cameras.height, cameras.width
    rgb = np.zeros((F, H, W, 3), np.uint8)
    zbuf = np.full((F, H, W), np.inf, np.float32)
    Ks = np.ascontiguousarray(cameras.K, np.float64)
    w2cs = np.ascontiguousarray(cameras.w2c, np.float64)
    for f in frames:
        depth = np.ascontiguousarray(f.depth, np.float32)
        src = np.ascontiguousarray(f.rgb, np.uint8)
        _warp_all(src, depth, np.asarray(f.K, np.float64), np.asarray(f.w2c, np.float64), Ks, w2cs, zbuf, rgb)
    hit = np.isfinite(zbuf)
    depth = np.where(zbuf < SKY_FAR, zbuf, np.float32(np.inf)).astype(np.float32)
    return rgb, depth, hit


@numba.njit(cache=True, nogil=True, parallel=True)
def _warp_all(src, depth, K_src, w2c_src, Ks, w2cs, zbuf, out):  # pragma: no cover
    """One memory frame into every target camera, the targets in parallel (each owns its buffers)."""
    for i in numba.prange(Ks.shape[0]):
        _warp_kernel(src, depth, K_src, w2c_src, Ks[i], w2cs[i], zbuf[i], out[i])


@numba.njit(cache=True, nogil=True)
def _warp_kernel(src, depth, K_src, w2c_src, K_dst, w2c_dst, zbuf, out):  # pragma: no cover
    Hs, Ws = depth.shape
    H, W = zbuf.shape
    fx, fy, cx, cy = K_src[0, 0], K_src[1, 1], K_src[0, 2], K_src[1, 2]
    gx, gy, dx0, dy0 = K_dst[0, 0], K_dst[1, 1], K_dst[0, 2], K_dst[1, 2]
    # Source camera -> target camera: R = R_d R_s^T, t = t_d - R t_s.
    R = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            acc = 0.0
            for k in range(3):
                acc += w2c_dst[a, k] * w2c_src[b, k]
            R[a, b] = acc
    t = np.zeros(3)
    for a in range(3):
        acc = w2c_dst[a, 3]
        for k in range(3):
            acc -= R[a, k] * w2c_src[k, 3]
        t[a] = acc
    scale = SPLAT_REACH * (gx / fx)  # a source pixel's half-width in target pixels, at equal depth
    for v in range(Hs):
        for u in range(Ws):
            d = depth[v, u]
            rx = (u + 0.5 - cx) / fx
            ry = (v + 0.5 - cy) / fy
            sky = not (d > 0.0 and d < np.inf)
            if sky:  # a direction: rotation only
                x = R[0, 0] * rx + R[0, 1] * ry + R[0, 2]
                y = R[1, 0] * rx + R[1, 1] * ry + R[1, 2]
                z = R[2, 0] * rx + R[2, 1] * ry + R[2, 2]
                if z <= 1e-6:
                    continue
                zt = SKY_FAR
                reach = SPLAT_REACH * (gx / fx) * z  # a direction's pixel scales by the view's z
            else:
                px, py, pz = rx * d, ry * d, d
                x = R[0, 0] * px + R[0, 1] * py + R[0, 2] * pz + t[0]
                y = R[1, 0] * px + R[1, 1] * py + R[1, 2] * pz + t[1]
                z = R[2, 0] * px + R[2, 1] * py + R[2, 2] * pz + t[2]
                if z <= 1e-3:
                    continue
                zt = z
                reach = scale * d / z
            reach = min(float(MAX_SPLAT), max(reach, 0.5))
            # Cover every target pixel whose centre lies within ``reach`` of the projection.
            ut = gx * x / z + dx0
            vt = gy * y / z + dy0
            c0, c1 = int(np.ceil(ut - reach - 0.5)), int(np.floor(ut + reach - 0.5))
            r0, r1 = int(np.ceil(vt - reach - 0.5)), int(np.floor(vt + reach - 0.5))
            for r in range(max(r0, 0), min(r1 + 1, H)):
                for c in range(max(c0, 0), min(c1 + 1, W)):
                    if zt < zbuf[r, c]:
                        zbuf[r, c] = zt
                        out[r, c, 0] = src[v, u, 0]
                        out[r, c, 1] = src[v, u, 1]
                        out[r, c, 2] = src[v, u, 2]


def route(
    cameras: Cameras,
    memory: Sequence[Frame] = (),
    scene: Callable[[Cameras], object] | None = None,
    *,
    known_alpha: float = KNOWN_ALPHA,
    front_margin: float = FRONT_MARGIN,
) -> Conditioning:
    """The conditioning video and keep/generate mask for ``cameras`` (see the module docstring).

    Args:
        cameras: the ``F`` target views.
        memory: retrieved frames (:class:`...keyframes.frames.Frame`), any sizes.
        scene: draws the current scene (``GenerationRequest.scene``), or None.
        known_alpha: the scene knows a pixel where its opacity is at least this.
        front_margin: see :data:`FRONT_MARGIN`.
    """
    F, H, W = len(cameras), cameras.height, cameras.width
    rgb = np.full((F, H, W, 3), 128, np.uint8)
    depth = np.full((F, H, W), np.inf, np.float32)
    known = np.zeros((F, H, W), bool)
    if scene is not None:
        drawn = scene(cameras)
        solid = np.asarray(drawn.alpha) >= known_alpha
        rgb[solid] = np.asarray(drawn.rgb)[solid]
        depth[solid] = np.asarray(drawn.depth, np.float32)[solid]
        known |= solid
    if memory:
        w_rgb, w_depth, hit = forward_warp(memory, cameras)
        with np.errstate(invalid="ignore"):
            in_front = hit & np.isfinite(w_depth) & (w_depth < (1.0 - front_margin) * depth)
        take = (hit & ~known) | in_front
        rgb[take] = w_rgb[take]
        depth[take] = w_depth[take]
        known |= hit
    return Conditioning(rgb, known, depth)
