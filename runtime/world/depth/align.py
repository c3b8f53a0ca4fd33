"""Aligning a monocular depth map to depth the world already knows.

A monocular model's depth is right up to an unknown affine map of its inverse
(disparity). Where the scene already has content in view, we fit that map by least
squares in inverse depth over the pixels both maps know: ``1/ref ~ s * (1/pred) + b``.
"""

from __future__ import annotations

import numpy as np

MIN_ALIGN_PIXELS = 32
"""Fewer shared pixels than this: keep the prediction as it is (too little to fit)."""


def align_inverse_depth(
    depth: np.ndarray, reference: np.ndarray, valid: np.ndarray | None = None, min_pixels: int = MIN_ALIGN_PIXELS
) -> tuple[np.ndarray, float, float]:
    """Fit ``1/reference ~ scale / depth + shift`` and apply it to ``depth``.

    Args:
        depth: ``[H, W]`` predicted depth, metres along camera +z; ``inf`` = sky.
        reference: ``[H, W]`` known depth (e.g. the scene rendered at this camera);
            ``inf``/NaN/<= 0 where unknown.
        valid: optional ``[H, W]`` bool, further restricting the pixels used (e.g.
            where the rendered opacity is high).
        min_pixels: below this many shared pixels nothing is fitted.

    Returns:
        ``(aligned [H, W] float32, scale, shift)``. Sky stays ``inf``; pixels whose
        aligned disparity would be <= 0 become ``inf`` too. With too few shared pixels,
        or a fit that would flip depth order (scale <= 0), the result is a scale-only fit
        (median ratio), or ``depth`` unchanged when nothing is shared: ``(depth, 1, 0)``.
    """
    depth = np.asarray(depth, np.float32)
    reference = np.asarray(reference, np.float32)
    if depth.shape != reference.shape or depth.ndim != 2:
        raise ValueError(f"depth and reference must be [H, W] of one shape, got {depth.shape} and {reference.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        pred_disp = np.where(np.isfinite(depth) & (depth > 0), 1.0 / depth, np.nan)
        ref_disp = np.where(np.isfinite(reference) & (reference > 0), 1.0 / reference, np.nan)
    shared = np.isfinite(pred_disp) & np.isfinite(ref_disp)
    if valid is not None:
        shared &= np.asarray(valid, bool)
    n = int(shared.sum())
    if n == 0:
        return depth.copy(), 1.0, 0.0
    x = pred_disp[shared].astype(np.float64)
    y = ref_disp[shared].astype(np.float64)
    scale, shift = float(np.median(y / x)), 0.0  # scale only: robust with few pixels
    if n >= min_pixels and float(np.ptp(x)) > 1e-9:
        A = np.stack([x, np.ones_like(x)], axis=1)
        (s, b), *_ = np.linalg.lstsq(A, y, rcond=None)
        if s > 0:
            scale, shift = float(s), float(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = scale * pred_disp + shift
        aligned = np.where(np.isfinite(disp) & (disp > 0), 1.0 / disp, np.inf)
    return aligned.astype(np.float32), scale, shift


def align_to_known(
    depth: np.ndarray, reference: np.ndarray, weight: np.ndarray | None = None, min_weight: float = 0.9
) -> np.ndarray:
    """Per frame, :func:`align_inverse_depth` of ``depth [N,H,W]`` to ``reference [N,H,W]``.

    ``weight [N,H,W]`` (e.g. the scene's rendered opacity) restricts each fit to the
    pixels where it is at least ``min_weight``. Frames with nothing known are returned
    unchanged.
    """
    depth = np.asarray(depth, np.float32)
    out = np.empty_like(depth)
    for i in range(len(depth)):
        valid = None if weight is None else np.asarray(weight[i]) >= min_weight
        out[i] = align_inverse_depth(depth[i], reference[i], valid)[0]
    return out
