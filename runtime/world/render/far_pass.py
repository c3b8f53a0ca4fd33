"""The far field's layer: how renderers put ``snapshot.far`` behind the scene.

The far field (:mod:`..keyframes.far_field`) is drawn on its own grid of pixel centres,
finer than the sky's (:func:`far_stride`: every 2nd pixel at 640x360, where the sky is
sampled on every 4th), as premultiplied colour and alpha over nothing, and laid behind
the finished scene where the scene is see-through:

    out = scene + T * (sky + w(T) * (far - far_alpha * sky))

with ``T`` the scene's transmittance and ``w`` ramping from 0 at ``T = SEE_THROUGH_FROM``
to 1 at ``T = 1``. The far field keeps, per keyframe block, the *nearest* far surface
(:func:`..keyframes.far_field.far_gaussians`): where the scene draws a distant tree, the far
field holds a coarser copy of that same tree, not what lies behind it. Under the scene's
soft, partly transparent edges (every silhouette has them) that copy thickened the edges
into the sky: on the fidelity bench's forest views the far field cost 0.8 dB on average,
nearly all of it on pixels where the generator shows sky, from far splats within the
scene's own 200 m reach (docs/benchmarks.md). So the far field shows fully only where the
scene leaves a pixel (nearly) empty: its holes, gaps and what lies past its edge.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .raster import _sky_at
from .sky_grid import sky_stride

SEE_THROUGH_FROM = 0.8
"""Scene transmittance from which the far field starts to show (fully at 1): a pixel the
scene covers by more than 1 - this is the edge of something the scene draws itself."""

FAR_GRID_DIVISOR = 2
"""The far grid has this many times the sky grid's samples along each axis."""


def far_share(transmittance, see_through_from):
    """How much of the far field shows through a pixel the scene leaves ``transmittance`` of
    (``T`` in the module's rule): 0 at or below ``see_through_from``, rising to 1 at ``T = 1``.
    Arrays or scalars (the same function is compiled for :func:`composite_far`)."""
    return np.minimum(1.0, np.maximum(0.0, (transmittance - see_through_from) / (1.0 - see_through_from)))


_far_share = nb.njit(inline="always", fastmath=True, cache=True)(far_share)


def shown_alpha(alpha: np.ndarray, far_alpha: np.ndarray, see_through_from: float | None = SEE_THROUGH_FROM) -> np.ndarray:
    """``[...]`` the opacity of what a player is shown: the scene's ``alpha`` ``[...]`` with the
    far field's ``far_alpha`` ``[...]`` laid behind it as :func:`composite_far` lays it
    (``alpha + T x w(T) x far_alpha``); ``see_through_from`` None: behind the whole scene
    (``w = 1``), as the browser and the gsplat renderer lay it. Below one half is a hole."""
    a = np.asarray(alpha, np.float32)
    t = 1.0 - a
    share = 1.0 if see_through_from is None else far_share(t, np.float32(see_through_from))
    return a + t * share * np.asarray(far_alpha, np.float32)


def far_stride(width: int, height: int) -> int:
    """Pixels between the far grid's samples for an image size (1 = every pixel)."""
    return max(1, sky_stride(width, height) // FAR_GRID_DIVISOR)


@nb.njit(nogil=True, fastmath=True, cache=True, error_model="numpy")
def composite_far(out_rgb, out_alpha, far_rgb, far_alpha, far_stride, sky, sky_stride, see_through_from, linear):  # pragma: no cover
    """Lay the far layer behind a finished picture, in place (one thread: a few hundred µs).

    Args:
        out_rgb: ``[H, W, 3]`` uint8, the scene over the sky (``scene + T * sky``).
        out_alpha: ``[H, W]`` float32, the scene's ``1 - T``.
        far_rgb: ``[hf, wf, 3]`` uint8 far-layer colour, premultiplied (drawn over black),
            sampled every ``far_stride`` pixels (sample ``(i, j)`` on pixel ``(i*s, j*s)``).
        far_alpha: ``[hf, wf, 1]`` float32 far-layer opacity.
        sky: ``[hc, wc, 3]`` float32 coarse sky, sampled every ``sky_stride`` pixels.
        see_through_from: :data:`SEE_THROUGH_FROM`.
        linear: lay it under the whole scene as under the sky instead (``w = 1``), the
            browser's layering (it draws the background before the scene).
    """
    h, w = out_alpha.shape[0], out_alpha.shape[1]
    hf, wf = far_alpha.shape[0], far_alpha.shape[1]
    inv_far = 1.0 / far_stride
    inv_sky = 1.0 / sky_stride
    for py in range(h):
        j0 = min(int(py * inv_far), hf - 1)
        j1 = min(j0 + 1, hf - 1)
        for px in range(w):
            t = 1.0 - out_alpha[py, px]
            if t <= 0.0 or (t <= see_through_from and not linear):
                continue
            i0 = min(int(px * inv_far), wf - 1)
            i1 = min(i0 + 1, wf - 1)
            if far_alpha[j0, i0, 0] == 0.0 and far_alpha[j0, i1, 0] == 0.0 and far_alpha[j1, i0, 0] == 0.0 and far_alpha[j1, i1, 0] == 0.0:
                continue  # no far splat near: the sky stays exactly as drawn
            a = _sky_at(far_alpha, inv_far, px, py, 0)
            k = t * 255.0 if linear else t * _far_share(t, see_through_from) * 255.0
            for c in range(3):
                delta = _sky_at(far_rgb, inv_far, px, py, c) * (1.0 / 255.0) - a * _sky_at(sky, inv_sky, px, py, c)
                v = out_rgb[py, px, c] + k * delta + 0.5
                out_rgb[py, px, c] = np.uint8(min(255.0, max(0.0, v)))
