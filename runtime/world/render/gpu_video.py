"""Streaming frames on the GPU: sky, compositing and RGB -> I420 after rasterisation.

Input is what ``gsplat.rasterization(render_mode="RGB")`` returns — premultiplied colour
``[N, H, W, 3]`` and alpha ``[N, H, W, 1]`` (float32, on the GPU) — plus the coarse sky
grid of each camera. Output is ``[N, H*W*3/2]`` uint8 I420 (layout: :mod:`.video`), the
same numbers the CPU path gives: composite over the bilinear sky, round to uint8 RGB
(as ``render()`` does), then BT.601 limited range with libswscale's chroma filter.

Two implementations of the composite + conversion:

* :func:`composite_i420_torch`: plain torch ops (any device; the reference);
* ``gpu_i420_triton.composite_i420_triton``: one fused Triton kernel (reads colour and
  alpha about once, writes 1.5 B/pixel).

The coarse sky grids likewise: :func:`sky_grids_torch` (reference) or
``gpu_i420_triton.sky_grids_triton`` (one launch). :func:`pick_video_kernels` takes the
Triton pair when Triton imports and both agree with the torch versions on the device,
else the torch pair.

torch is passed in (never imported here), so this module imports anywhere.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..camera import Cameras, Pose
from ..sky import Sky
from .i420 import CHROMA_ROW_TAPS, RGB_TO_YUV, YUV_OFFSET, i420_size
from .sky_grid import SKY_COARSE_COLUMNS, sky_stride

log = logging.getLogger("worldstream.render")


# ------------------------------------------------------------------ sky on the GPU
def coarse_sky_geometry(cameras: Cameras, coarse_columns: int = SKY_COARSE_COLUMNS) -> tuple[np.ndarray, int, int, int]:
    """Ray matrices of the coarse sky grids, as :func:`.sky_grid.coarse_sky` samples them.

    Returns ``(M [N,3,3] float32, stride, hc, wc)``: the world direction (unnormalised)
    of coarse sample ``(i, j)`` is ``M @ (j + 0.5, i + 0.5, 1)``; sample ``(i, j)`` lies on
    pixel ``(i*stride, j*stride)``'s centre.
    """
    w, h = cameras.width, cameras.height
    stride = sky_stride(w, h, coarse_columns)
    wc = -(-(w - 1) // stride) + 1 if stride > 1 else w
    hc = -(-(h - 1) // stride) + 1 if stride > 1 else h
    K = cameras.K.astype(np.float64).copy()
    K[:, 0, 0] /= stride
    K[:, 1, 1] /= stride
    K[:, 0, 2] = (K[:, 0, 2] - 0.5) / stride + 0.5
    K[:, 1, 2] = (K[:, 1, 2] - 0.5) / stride + 0.5
    R_c2w = np.transpose(cameras.w2c[:, :3, :3].astype(np.float64), (0, 2, 1))
    M = (R_c2w @ np.linalg.inv(K)).astype(np.float32)
    return M, stride, hc, wc


class SkyConstants:
    """A :class:`Sky`'s colours as device tensors, made once: creating a tensor from
    Python values each frame is a blocking host-to-device copy that drains the GPU queue."""

    def __init__(self, torch, sky: Sky, device) -> None:
        def vec(c):
            return torch.tensor(np.asarray(c, np.float32), device=device)

        sun = np.asarray(sky.sun_direction, np.float32)
        self.zenith, self.horizon, self.ground = vec(sky.zenith), vec(sky.horizon), vec(sky.ground)
        self.sun_direction = vec(sun / np.linalg.norm(sun))
        self.sun_glow = vec(np.asarray(sky.sun_color, np.float32) * np.float32(0.6))
        # [15]: zenith, horizon, ground, sun direction, sun glow (the Triton kernel's layout).
        self.packed = torch.cat([self.zenith, self.horizon, self.ground, self.sun_direction, self.sun_glow]).contiguous()


def sky_colors_torch(torch, sky: SkyConstants, d):
    """:meth:`Sky.colors_for_directions` in torch: ``[..., 3]`` unit directions -> RGB in [0, 1]."""
    up = -d[..., 1:2]  # world +y is down
    t = up.clamp(0.0, 1.0) ** 0.6
    above = sky.horizon * (1.0 - t) + sky.zenith * t
    k = (-up * 4.0).clamp(0.0, 1.0)
    below = sky.horizon * (1.0 - k) + sky.ground * k
    rgb = torch.where(up >= 0.0, above, below)
    glow = (d @ sky.sun_direction).clamp(0.0, 1.0)[..., None] ** 64
    return (rgb + glow * sky.sun_glow).clamp(0.0, 1.0)


def sky_is_portable(sky: Sky) -> bool:
    """True when ``sky`` colours directions with :class:`Sky`'s own formula (so the torch port applies)."""
    return type(sky).colors_for_directions is Sky.colors_for_directions


_PIXEL_CENTRES: dict[tuple, object] = {}


def coarse_pixel_centres(torch, hc: int, wc: int, device):
    """``[hc, wc, 3]`` float32 homogeneous coarse pixel centres ``(j + 0.5, i + 0.5, 1)`` (cached)."""
    key = (hc, wc, str(device))
    pixels = _PIXEL_CENTRES.get(key)
    if pixels is None:
        jj = torch.arange(wc, dtype=torch.float32, device=device) + 0.5
        ii = torch.arange(hc, dtype=torch.float32, device=device) + 0.5
        pixels = torch.stack(torch.broadcast_tensors(jj[None, :], ii[:, None], torch.ones((), device=device)), dim=-1)
        _PIXEL_CENTRES[key] = pixels
    return pixels


def sky_grids_torch(torch, sky: SkyConstants, rays, hc: int, wc: int):
    """``[N, hc, wc, 3]`` float32 coarse sky grids for all cameras at once (torch ops).

    Args:
        rays: ``[N, 3, 3]`` device tensor, :func:`coarse_sky_geometry`'s ``M``.
    """
    d = torch.einsum("nij,hwj->nhwi", rays, coarse_pixel_centres(torch, hc, wc, rays.device))
    d = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    return sky_colors_torch(torch, sky, d).contiguous()


# ------------------------------------------------------------------ composite + convert
def composite_i420_torch(torch, colors, alphas, grid, stride: int, out) -> None:
    """Sky composite and RGB -> I420 in torch ops, written into ``out [N, H*W*3/2]`` uint8.

    Args:
        colors: ``[N, H, W, 3]`` float32 premultiplied splat colour in [0, 1].
        alphas: ``[N, H, W, 1]`` float32 accumulated opacity.
        grid: ``[N, hc, wc, 3]`` float32 coarse sky, sample ``(i, j)`` on pixel ``(i*stride, j*stride)``.
    """
    n, h, w, _ = colors.shape
    coarse = grid.permute(0, 3, 1, 2)
    if stride == 1:
        sky = coarse
    else:
        hc, wc = coarse.shape[2:]
        # align_corners=True maps output pixel j to coarse position j / stride exactly.
        sky = torch.nn.functional.interpolate(
            coarse, size=((hc - 1) * stride + 1, (wc - 1) * stride + 1), mode="bilinear", align_corners=True
        )
    sky = sky[:, :, :h, :w].permute(0, 2, 3, 1)
    rgb = colors + (1.0 - alphas) * sky
    rgb8 = torch.floor(rgb * 255.0 + 0.5).clamp_(0.0, 255.0)  # what render() hands out
    yuv = rgb8 @ torch.from_numpy(RGB_TO_YUV.T.copy()).to(rgb8.device)
    luma, chroma = h * w, (h // 2) * (w // 2)
    out[:, :luma] = _quantise(torch, yuv[..., 0] + float(YUV_OFFSET[0])).reshape(n, luma)
    pair = 0.5 * (yuv[:, :, 0::2, 1:] + yuv[:, :, 1::2, 1:])  # [N,H,W/2,2]
    rows = torch.arange(h // 2, device=rgb8.device) * 2
    filtered = sum(tap * pair[:, (rows + dy).clamp(0, h - 1)] for tap, dy in zip(CHROMA_ROW_TAPS, (-1, 0, 1, 2)))
    out[:, luma : luma + chroma] = _quantise(torch, filtered[..., 0] + float(YUV_OFFSET[1])).reshape(n, chroma)
    out[:, luma + chroma :] = _quantise(torch, filtered[..., 1] + float(YUV_OFFSET[2])).reshape(n, chroma)


def _quantise(torch, x):
    return torch.floor(x + 0.5).clamp_(0.0, 255.0).to(torch.uint8)


def _self_check(torch, fn, device) -> float:
    """Largest difference (code values) between ``fn`` and the torch version on random input."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    n, h, w, hc, wc, stride = 2, 38, 100, 11, 26, 4
    colors = torch.rand((n, h, w, 3), generator=gen).to(device)
    alphas = torch.rand((n, h, w, 1), generator=gen).to(device)
    colors *= alphas  # premultiplied
    grid = torch.rand((n, hc, wc, 3), generator=gen).to(device)
    want = torch.empty((n, i420_size(w, h)), dtype=torch.uint8, device=device)
    got = torch.empty_like(want)
    composite_i420_torch(torch, colors, alphas, grid, stride, want)
    fn(torch, colors, alphas, grid, stride, got)
    return float((want.int() - got.int()).abs().max().item())


def _sky_self_check(torch, fn, device) -> float:
    """Largest difference between ``fn``'s sky grids and the torch version's, over all directions."""
    cams = Cameras.concat(
        [Pose(np.zeros(3, np.float32), yaw=0.7 * i, pitch=p).camera(64, 36, math.radians(100)) for i, p in enumerate((-1.2, -0.3, 0.0, 0.4, 1.3))]
    )
    rays_np, _, hc, wc = coarse_sky_geometry(cams, coarse_columns=32)
    sky = SkyConstants(torch, Sky(sun_direction=(0.3, -0.2, 0.9)), device)
    rays = torch.from_numpy(rays_np).to(device)
    want = sky_grids_torch(torch, sky, rays, hc, wc)
    got = fn(torch, sky, rays, hc, wc)
    return float((want - got).abs().max().item())


@dataclass(frozen=True)
class VideoKernels:
    """The streaming path's two GPU steps after rasterisation.

    Attributes:
        name: ``"triton"`` or ``"torch"``.
        sky_grids: ``(torch, SkyConstants, rays [N,3,3], hc, wc) -> [N, hc, wc, 3]``.
        composite: ``(torch, colors, alphas, grid, stride, out) -> None`` (I420 into ``out``).
    """

    name: str
    sky_grids: Callable
    composite: Callable


TORCH_KERNELS = VideoKernels("torch", sky_grids_torch, composite_i420_torch)


def pick_video_kernels(torch, device) -> VideoKernels:
    """The Triton kernels when they import and agree with the torch references on ``device``
    (composite within 1 code value, sky within 1e-4), else the torch versions."""
    try:
        from .gpu_i420_triton import composite_i420_triton, sky_grids_triton

        def sky_grids(torch, sky, rays, hc, wc):
            return sky_grids_triton(torch, sky.packed, rays, hc, wc)

        err = _self_check(torch, composite_i420_triton, device)
        sky_err = _sky_self_check(torch, sky_grids, device)
        if err <= 1.0 and sky_err <= 1e-4:
            return VideoKernels("triton", sky_grids, composite_i420_triton)
        log.warning("Triton video kernels differ from the torch reference (I420 %g, sky %g): using torch ops", err, sky_err)
    except Exception as exc:  # no triton, no compiler, unsupported device
        log.info("Triton video kernels unavailable (%s): using torch ops", exc)
    return TORCH_KERNELS
