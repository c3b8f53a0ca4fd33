"""Optimising a new chunk against the keyframes it was made from (optional; CUDA + gsplat).

Reconstruction places one Gaussian per pixel block from the keyframe's colour and depth
in a single pass (:mod:`.reconstruct`). About a hundred steps of gradient descent on the
photometric error of the keyframes re-rendered through a differentiable rasteriser
(gsplat's ``rasterization`` on CUDA) tighten colours, sizes, orientations and opacities
so the chunk reproduces its keyframes more closely.

What is optimised and what is held, so the place keeps its content:

* Only the **new** chunk's Gaussians change, and only before the chunk lands (it has
  never been shown). The scene's existing Gaussians that the keyframes see (less those
  refinement retires with this chunk) are drawn with it, fixed: the loss is on what a
  player will see, and gradients reach only the new ones.
* Pictures are composited over the world's sky exactly as renderers composite them
  (premultiplied colour + ``(1 - alpha) * sky``), so keyframe sky pixels ask for
  transparency, not for sky-coloured splats.
* Each centre stays within ``max_shift`` of its own largest standard deviation from
  where reconstruction put it (the surface does not move); each scale may grow by at
  most ``max_grow`` (log) and shrink by ``max_shrink``; colours stay in [0, 1].
* The result is kept only when it reproduces the keyframes better than the chunk it
  started from (PSNR over all keyframe pixels); the chunk builder then runs its
  revisit check again, so no optimised Gaussian may change what an earlier keyframe
  shows (:meth:`.frontier.chunk_builder.ChunkBuilder._keep_earlier_views`).

The maths is separate from the rasteriser: :class:`ChunkOptimiser` takes any function
with the :data:`Rasterise` signature. :func:`gsplat_rasteriser` is the CUDA one;
:mod:`.torch_raster` has the same forward model in plain torch (slow, but on any
machine), which lets the loop run on a CPU in tests and in ``bench.chunk_optimise``.

``torch`` and ``gsplat`` are imported only when an optimiser is built or run: the
default install (no torch) imports this module.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..camera import Cameras
from ..gaussians import Gaussians
from ..render.conventions import EPS2D, NEAR_PLANE
from ..render.cuda import require_cuda_and_gsplat

DEFAULT_STEPS = 100
"""Steps per chunk by default: on the H100 (docs/benchmarks.md) 100 steps gained more on
held-out views than 300 at a third of the time; with rotations turning slowly (``lr_quat``)
more steps no longer overfit, but gain nothing either."""
MAX_STEPS = 10_000
REPORTS_KEPT = 1024
"""Per-chunk reports an optimiser keeps (the latest; older ones are dropped)."""

Rasterise = Callable[..., tuple]
"""``(means [G,3], quats [G,4] unit w-first, scales [G,3] metres, opacities [G], colors [G,3],
viewmats [N,4,4] world-to-camera, Ks [N,3,3], width, height) -> (rgb [N,H,W,3] premultiplied
by alpha, alpha [N,H,W])``: torch tensors on one device, differentiable in the Gaussians."""


@dataclass(frozen=True)
class OptimiseSettings:
    """How a chunk is optimised.

    Attributes:
        steps: Adam steps per chunk (1 .. ``MAX_STEPS``).
        max_seconds: stop early once a fit has taken this long (the chunk lands under the
            world's apply lock: a slow fit holds up the frontier); 0: no limit.
        ssim_weight: loss = ``(1 - w) * L1 + w * (1 - SSIM)`` (3DGS uses 0.2); 0 = L1 only.
        max_shift: a centre moves at most this many of its own largest standard deviations.
        max_grow, max_shrink: a scale's log may rise by at most ``max_grow`` and fall by
            at most ``max_shrink`` (natural log units).
        lr_shift: Adam step for centres, in standard deviations per step.
        lr_log_scale, lr_quat, lr_opacity, lr_color: Adam steps for log scales, raw
            quaternions, opacity logits and RGB colours (3DGS's values, but rotations turn
            at a fifth of 3DGS's 1e-3: turning splats to face the one keyframe is what
            overfits it, see docs/benchmarks.md).
    """

    steps: int = DEFAULT_STEPS
    max_seconds: float = 10.0
    ssim_weight: float = 0.2
    max_shift: float = 1.0
    max_grow: float = math.log(1.5)
    max_shrink: float = math.log(4.0)
    lr_shift: float = 0.02
    lr_log_scale: float = 5e-3
    lr_quat: float = 2e-4
    lr_opacity: float = 0.05
    lr_color: float = 5e-3

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or int(self.steps) != self.steps or not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"OptimiseSettings.steps must be an integer in [1, {MAX_STEPS}], got {self.steps!r}")
        if not 0.0 <= self.max_seconds <= 3600.0:
            raise ValueError(f"OptimiseSettings.max_seconds must be in [0, 3600] (0 = no limit), got {self.max_seconds!r}")
        if not 0.0 <= self.ssim_weight <= 1.0:
            raise ValueError(f"OptimiseSettings.ssim_weight must be in [0, 1], got {self.ssim_weight!r}")
        for name in ("max_shift", "max_grow", "max_shrink", "lr_shift", "lr_log_scale", "lr_quat", "lr_opacity", "lr_color"):
            value = getattr(self, name)
            if not 0.0 <= value <= 100.0:
                raise ValueError(f"OptimiseSettings.{name} must be in [0, 100], got {value!r}")
        object.__setattr__(self, "steps", int(self.steps))


@dataclass(frozen=True)
class OptimiseReport:
    """One chunk's optimisation.

    Attributes:
        gaussians: the chunk's Gaussians optimised; ``fixed``: the scene's drawn with them.
        keyframes: keyframes (pictures) it was fitted to, ``width`` x ``height`` each.
        steps: Adam steps taken (fewer than asked when ``max_seconds`` ran out); ``ms``: wall
            time of the whole call (milliseconds).
        psnr_before, psnr_after: PSNR (dB) of the keyframes as rendered before and after.
        kept: the optimised Gaussians were returned (they reproduce the keyframes better).
    """

    gaussians: int
    fixed: int
    keyframes: int
    width: int
    height: int
    steps: int
    ms: float
    psnr_before: float
    psnr_after: float
    kept: bool

    @property
    def gain_db(self) -> float:
        """PSNR gained on the keyframes by what was returned (0 when not kept)."""
        return self.psnr_after - self.psnr_before if self.kept else 0.0


# --------------------------------------------------------------------------- rasterisers
def gsplat_rasteriser(gsplat) -> Rasterise:
    """gsplat's CUDA rasteriser with the renderers' conventions (near plane, low-pass, classic mode)."""

    def rasterise(means, quats, scales, opacities, colors, viewmats, Ks, width: int, height: int):
        rgb, alpha, _ = gsplat.rasterization(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            near_plane=NEAR_PLANE, eps2d=EPS2D, packed=False, render_mode="RGB", rasterize_mode="classic",
        )
        return rgb, alpha[..., 0]

    return rasterise


# --------------------------------------------------------------------------- loss
def composite(rgb, alpha, sky):
    """``[N,H,W,3]`` picture: premultiplied ``rgb`` over ``sky`` (as the renderers composite)."""
    return rgb + (1.0 - alpha)[..., None] * sky


def ssim(a, b, window: int = 11, sigma: float = 1.5):
    """Mean SSIM of ``[N,H,W,C]`` pictures in [0, 1] (Gaussian window, per channel, valid region)."""
    import torch

    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)
    C = x.shape[1]
    window = min(window, x.shape[2], x.shape[3])
    t = torch.arange(window, dtype=x.dtype, device=x.device) - (window - 1) / 2
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(C, 1, window, window).contiguous()

    def blur(z):
        return torch.nn.functional.conv2d(z, kernel, groups=C)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean()


def photometric_loss(picture, target, ssim_weight: float):
    """``(1 - w) * L1 + w * (1 - SSIM)`` of ``[N,H,W,3]`` pictures in [0, 1]."""
    l1 = (picture - target).abs().mean()
    if ssim_weight <= 0:
        return l1
    return (1.0 - ssim_weight) * l1 + ssim_weight * (1.0 - ssim(picture, target))


def psnr_db(picture, target) -> float:
    """PSNR (dB) of pictures in [0, 1], as 8-bit pictures would score (clamped, rounded)."""
    a = (picture.clamp(0.0, 1.0) * 255.0).round()
    b = (target * 255.0).round()
    mse = float(((a - b) ** 2).mean())
    return 99.0 if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


# --------------------------------------------------------------------------- the optimiser
class ChunkOptimiser:
    """Fits a new chunk's Gaussians to its keyframes (see the module docstring).

    Args:
        settings: steps, loss and limits.
        rasterise: a :data:`Rasterise` (:func:`gsplat_rasteriser` on CUDA, or one of
            :mod:`.torch_raster`'s on any machine).
        device: torch device the tensors live on.

    Thread-safe: one chunk at a time (a lock), on the caller's thread -- the world's
    generation worker, never the event loop. :attr:`reports` keeps the latest
    ``REPORTS_KEPT`` per-chunk reports.
    """

    def __init__(self, settings: OptimiseSettings, rasterise: Rasterise, device: str = "cpu") -> None:
        import torch

        self.settings = settings
        self._torch = torch
        self._rasterise = rasterise
        self.device = torch.device(device)
        self._lock = threading.Lock()
        self._stream = torch.cuda.Stream(device=self.device) if self.device.type == "cuda" else None
        self.reports: deque[OptimiseReport] = deque(maxlen=REPORTS_KEPT)

    @staticmethod
    def for_cuda(steps: int = DEFAULT_STEPS, device: str = "cuda", **settings) -> "ChunkOptimiser":
        """The gsplat optimiser; RuntimeError where CUDA or gsplat is missing (naming which)."""
        options = OptimiseSettings(steps=steps, **settings)
        _, gsplat = require_cuda_and_gsplat("chunk optimisation")
        return ChunkOptimiser(options, gsplat_rasteriser(gsplat), device)

    def optimise(
        self, new: Gaussians, fixed: Gaussians, cameras: Cameras, rgb: np.ndarray, sky: np.ndarray
    ) -> tuple[Gaussians, OptimiseReport]:
        """``(Gaussians, report)``: ``new`` fitted to the keyframes, or ``new`` itself when fitting
        did not reproduce them better.

        Args:
            new: the chunk's ``G`` Gaussians (reconstruction's output).
            fixed: the scene's Gaussians the keyframes also see, drawn but never changed.
            cameras: the ``N`` keyframe cameras (``W`` x ``H``).
            rgb: ``[N, H, W, 3]`` uint8 keyframe pictures.
            sky: ``[N, H, W, 3]`` float RGB in [0, 1], the sky behind every pixel
                (:meth:`.sky.Sky.colors` of ``cameras``).
        """
        N, H, W = len(cameras), cameras.height, cameras.width
        if rgb.shape != (N, H, W, 3) or sky.shape != (N, H, W, 3):
            raise ValueError(f"optimise: rgb and sky must be [{N},{H},{W},3], got {rgb.shape} and {sky.shape}")
        torch = self._torch
        with self._lock:
            started = time.perf_counter()
            if len(new) == 0:
                report = OptimiseReport(0, len(fixed), N, W, H, 0, 0.0, 0.0, 0.0, False)
                self.reports.append(report)
                return new, report
            if self._stream is not None:
                # Its own CUDA stream: the renderer's frames need not queue behind a whole step.
                self._stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(self._stream):
                    out, before, after, steps = self._fit(new, fixed, cameras, rgb, sky)
                self._stream.synchronize()
            else:
                out, before, after, steps = self._fit(new, fixed, cameras, rgb, sky)
            kept = after > before
            ms = (time.perf_counter() - started) * 1e3
            report = OptimiseReport(len(new), len(fixed), N, W, H, steps, ms, before, after, kept)
            self.reports.append(report)
            return (out if kept else new), report

    def _fit(self, new: Gaussians, fixed: Gaussians, cameras: Cameras, rgb: np.ndarray, sky: np.ndarray):
        """``(fitted Gaussians, PSNR before, PSNR after, steps)``."""
        torch, s = self._torch, self.settings
        dev = self.device

        def put(array) -> "torch.Tensor":  # a copy: parameters are updated in place
            return torch.tensor(np.asarray(array, dtype=np.float32), device=dev)

        target = put(rgb) / 255.0
        sky_t = put(sky)
        viewmats, Ks = put(cameras.w2c), put(cameras.K)
        W, H = cameras.width, cameras.height
        f_means, f_quats = put(fixed.means), torch.nn.functional.normalize(put(fixed.quats), dim=1)
        f_scales, f_opac, f_colors = put(fixed.scales), put(fixed.opacities), put(fixed.colors)

        means0 = put(new.means)
        log_scales0 = put(new.log_scales)
        sigma = torch.exp(log_scales0.max(dim=1).values)[:, None]  # [G,1] metres: the shift unit
        shift = torch.zeros_like(means0, requires_grad=True)
        log_scales = log_scales0.clone().requires_grad_(True)
        quats = put(new.quats).requires_grad_(True)
        logits = put(new.opacity_logits).requires_grad_(True)
        colors = put(new.colors).requires_grad_(True)
        adam = torch.optim.Adam([
            {"params": [shift], "lr": s.lr_shift},
            {"params": [log_scales], "lr": s.lr_log_scale},
            {"params": [quats], "lr": s.lr_quat},
            {"params": [logits], "lr": s.lr_opacity},
            {"params": [colors], "lr": s.lr_color},
        ], eps=1e-15)

        def picture():
            rgb_p, alpha = self._rasterise(
                torch.cat([means0 + shift * sigma, f_means]),
                torch.cat([torch.nn.functional.normalize(quats, dim=1), f_quats]),
                torch.cat([torch.exp(log_scales), f_scales]),
                torch.cat([torch.sigmoid(logits), f_opac]),
                torch.cat([colors, f_colors]),
                viewmats, Ks, W, H,
            )
            return composite(rgb_p, alpha, sky_t)

        before = None
        deadline = time.perf_counter() + s.max_seconds if s.max_seconds > 0 else math.inf
        steps = 0
        while steps < s.steps and (steps == 0 or time.perf_counter() < deadline):
            steps += 1
            adam.zero_grad(set_to_none=True)
            current = picture()
            if before is None:
                before = psnr_db(current.detach(), target)
            loss = photometric_loss(current, target, s.ssim_weight)
            loss.backward()
            adam.step()
            with torch.no_grad():  # keep every Gaussian near where reconstruction put it
                norm = shift.norm(dim=1, keepdim=True)
                shift.mul_(torch.clamp(s.max_shift / torch.clamp(norm, min=1e-12), max=1.0))
                log_scales.copy_(torch.minimum(torch.maximum(log_scales, log_scales0 - s.max_shrink), log_scales0 + s.max_grow))
                colors.clamp_(0.0, 1.0)
                logits.clamp_(-12.0, 12.0)
        with torch.no_grad():
            after = psnr_db(picture(), target)
            fitted = Gaussians(
                (means0 + shift * sigma).cpu().numpy(),
                torch.nn.functional.normalize(quats, dim=1).cpu().numpy(),
                log_scales.cpu().numpy(),
                logits.cpu().numpy(),
                colors.cpu().numpy(),
                new.sh_rest,
            )
        return fitted, float(before), float(after), steps
