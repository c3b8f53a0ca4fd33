"""Colour fitting: new Gaussians' colours corrected so that, drawn, they show their keyframes.

Reconstruction gives each Gaussian its block's mean colour, but neighbouring Gaussians
overlap (a standard deviation of ``scale_factor`` blocks), so every drawn pixel mixes its
neighbours' colours: the picture is the keyframe convolved with the splat kernel, blurred.
:func:`fit_colors` undoes most of that with a few Jacobi steps on the colours alone:

    c_i  <-  clip(c_i + step x mean over block(i) of (keyframe - render), 0, 1)

where ``render`` draws the scene *with* the new Gaussians (and the sky) at the keyframe,
so the residual also sees what earlier chunks show there. For a kernel whose spectrum lies
in (0, 1] (a Gaussian), each step brings every spatial frequency closer to the keyframe,
the low ones fastest: two steps restore most of the texture the overlap blurred, without
moving a single Gaussian. Colours are clipped to [0, 1], which also bounds the ringing at
sharp edges. It is the CPU's stand-in for an optimiser: no geometry, no gradients, one
render of the keyframe per step.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..camera import Cameras
from ..gaussians import Gaussians
from .reconstruct import reduce_blocks

FIT_ITERATIONS = 3
"""Jacobi steps per new chunk (each costs one render of its keyframes); `WorldConfig.fit_iterations`
defaults to the same."""

FIT_STEP = 1.0
"""Fraction of the block residual added per step."""

VISIBLE_MARGIN = 0.05
"""A Gaussian takes a keyframe's residual only where it lies on that keyframe's surface
(within this fraction of the block's depth): a Gaussian the keyframe does not show, or
one hidden behind an earlier chunk's splats, barely changes those pixels, and pushing its
colour after their residual would only saturate it."""

DRAWN_MARGIN = 0.05
"""... and not more than this fraction behind the drawn (nearest) surface of that block. A
Gaussian half hidden behind a translucent edge in front would be pushed to an extreme
colour to correct the few per cent it shows, and leak that colour into other views --
the revisit test (``tests/test_world.py``) caught it at 15 %."""


FREE_ALPHA = 0.05
"""A block is the new chunk's alone (its Gaussians are fitted there) while the scene without
it covers less than this. Scaling the step by ``1 - alpha`` instead still changed a revisited
view by 0.4 dB more than the revisit test allows."""


def fit_colors(
    gaussians: Gaussians,
    rgb: np.ndarray,
    depth: np.ndarray,
    cameras: Cameras,
    render: Callable[[Gaussians], tuple[np.ndarray, np.ndarray]],
    *,
    stride: int,
    iterations: int = FIT_ITERATIONS,
    step: float = FIT_STEP,
    max_depth: float = 200.0,
    base_alpha: np.ndarray | None = None,
) -> Gaussians:
    """``gaussians`` with colours fitted to the keyframes (see the module docstring).

    Args:
        gaussians: ``G`` new Gaussians made from these keyframes (world coordinates).
        rgb: ``[N, H, W, 3]`` uint8 keyframes; ``depth``: ``[N, H, W]`` metres (``inf`` = sky).
        cameras: the ``N`` keyframe cameras (``W`` x ``H``).
        render: draws the scene with the given Gaussians added at ``cameras``: ``(rgb [N, H, W, 3]``
            uint8 or float in [0, 255], ``depth [N, H, W]`` metres, ``inf`` where empty``)``.
        stride: reconstruction's block size (pixels); residuals are averaged per block.
        iterations: Jacobi steps (0 returns ``gaussians`` unchanged).
        step: fraction of the residual applied per step.
        max_depth: depths at or beyond this are sky (no Gaussian lies there).
        base_alpha: ``[N, H, W]`` opacity of the scene *without* the new Gaussians at the
            keyframes, or None (an empty scene). Only Gaussians whose block it leaves free
            (mean below :data:`FREE_ALPHA`) are fitted: where earlier splats cover the place
            even a little, the new ones blend with them, and other views (revisits) see
            that blend, not the keyframe.
    """
    if iterations <= 0 or len(gaussians) == 0:
        return gaussians
    N = depth.shape[0]
    colors = gaussians.colors.astype(np.float32).copy()
    target = np.asarray(rgb, np.float32)
    targets = None
    for _ in range(iterations):
        drawn, drawn_depth = render(_with_colors(gaussians, colors))
        drawn = np.asarray(drawn, np.float32)
        if targets is None:  # geometry never changes: which block each Gaussian shows, once
            targets = [_shown_blocks(gaussians.means, depth[n], drawn_depth[n], cameras[n], stride, max_depth) for n in range(N)]
        total = np.zeros_like(colors)
        count = np.zeros(len(colors), np.float32)
        for n, (index, block, Hb, Wb) in enumerate(targets):
            residual = _block_mean((target[n] - drawn[n]) * np.float32(1 / 255), stride, Hb, Wb).reshape(-1, 3)
            if base_alpha is not None:
                covered = _block_mean(np.asarray(base_alpha[n], np.float32)[..., None], stride, Hb, Wb).reshape(-1, 1)
                residual = residual * (covered < FREE_ALPHA)
            total[index] += residual[block]
            count[index] += 1.0
        seen = count > 0
        colors[seen] = np.clip(colors[seen] + step * total[seen] / count[seen, None], 0.0, 1.0)
    return _with_colors(gaussians, colors)


def _shown_blocks(
    means: np.ndarray, depth: np.ndarray, drawn_depth: np.ndarray, camera: Cameras, stride: int, max_depth: float
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """In one keyframe: ``(indices [M] of the Gaussians it shows, their flat block index [M],
    Hb, Wb)`` -- a Gaussian is shown where it lies on both the keyframe's and the drawn
    nearest surface of the block its centre projects to."""
    blocks = reduce_blocks(depth, stride, max_depth).depth
    drawn = reduce_blocks(drawn_depth, stride, max_depth).depth
    Hb, Wb = blocks.shape
    w2c, K = camera.w2c[0].astype(np.float32), camera.K[0].astype(np.float32)
    pc = means @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    safe = np.where(z > 1e-3, z, 1.0)
    u = (K[0, 0] * pc[:, 0] + K[0, 1] * pc[:, 1]) / safe + K[0, 2]
    v = K[1, 1] * pc[:, 1] / safe + K[1, 2]
    r, c = np.floor(v / stride).astype(np.int64), np.floor(u / stride).astype(np.int64)
    ok = (z > 1e-3) & (r >= 0) & (r < Hb) & (c >= 0) & (c < Wb)
    rr, cc = np.where(ok, r, 0), np.where(ok, c, 0)
    ok &= np.abs(z - blocks[rr, cc]) <= VISIBLE_MARGIN * blocks[rr, cc]  # inf (sky) fails
    ok &= z <= (1.0 + DRAWN_MARGIN) * drawn[rr, cc]  # not hidden behind what is drawn
    index = np.flatnonzero(ok)
    return index, rr[index] * Wb + cc[index], Hb, Wb


def _with_colors(gaussians: Gaussians, colors: np.ndarray) -> Gaussians:
    return Gaussians(gaussians.means, gaussians.quats, gaussians.log_scales, gaussians.opacity_logits, colors, gaussians.sh_rest)


def _block_mean(image: np.ndarray, stride: int, Hb: int, Wb: int) -> np.ndarray:
    """``[Hb, Wb, C]`` mean of ``image [H, W, C]`` per ``stride`` block (edge-replicated padding)."""
    H, W = image.shape[:2]
    padded = np.pad(image, ((0, Hb * stride - H), (0, Wb * stride - W), (0, 0)), mode="edge")
    return padded.reshape(Hb, stride, Wb, stride, image.shape[-1]).mean(axis=(1, 3))
