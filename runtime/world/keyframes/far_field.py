"""The far field: what keyframes saw beyond where scene splats pay off, as a background layer.

Scene splats are made for walking through: one per ``reconstruct_stride`` keyframe pixels,
sized for their distance, kept only where no earlier keyframe vetoes them (revisits) and
where the geometry tests pass. Far away that leaves little: distant terrain and trees are
thin slivers a few pixels high, disoccluded as soon as the player moves, vetoed where an
earlier keyframe saw sky past the reconstruction's 200 m cut, and the horizon shows the
bare sky gradient -- an empty haze.

The far field keeps, from every keyframe, the blocks whose surface is at least
``near_m`` away (along the keyframe's axis), as isotropic splats one block wide
(:func:`far_gaussians`): nothing is vetoed or retired, and a block is added only where the
far field does not cover that keyframe pixel yet (alpha below one half), so overlapping
keyframes add only what is new. Renderers draw the far field *behind* the scene, as the
background the scene is composited over in place of the bare sky (see
:class:`.scene.SceneSnapshot`); it never occludes a scene splat and is not part of the
scene's geometry (coverage, collision, refinement and alpha ignore it).

Isotropic splats look the same from every side: a far surface is seen from nearly the same
direction by any player near the keyframe, and a background needs no surface orientation.
"""

from __future__ import annotations

import math

import numpy as np

from ..camera import Cameras
from ..gaussians import Gaussians
from .reconstruct import _block_alpha, _block_rays, _to_world, reduce_blocks

FAR_OPACITY = 0.98
"""A far splat covering its whole block is nearly opaque: the background it makes hides the
sky behind it. One on a silhouette gets the share of its block's pixels that are far surface."""

FAR_SCALE_FACTOR = 0.4
"""A far splat's standard deviation in block footprints. Wider ones blur far trees into halos
around the scene's own (0.7 lost 0.3 dB against 0.4 on a forest walk's novel views); the
0.3-pixel low-pass of the coarse grid it is drawn on still closes the gaps between blocks."""

FAR_MAX_DEPTH = 5000.0
"""Surfaces up to here count (metres); beyond, and ``inf``, is sky. The scene's 200 m sky cut
does not apply: fogged distant terrain is exactly what the far field is for."""


def far_gaussians(
    rgb: np.ndarray,
    depth: np.ndarray,
    cameras: Cameras,
    existing_alpha: np.ndarray | None,
    *,
    near_m: float,
    stride: int,
    fill_below_alpha: float = 0.5,
    max_depth: float = FAR_MAX_DEPTH,
) -> Gaussians:
    """Far-field splats of ``N`` keyframes: one per ``stride`` x ``stride`` block whose nearest
    far surface lies between ``near_m`` and ``max_depth`` metres, where the far field is thin.

    Args:
        rgb: ``[N, H, W, 3]`` uint8 keyframe colours.
        depth: ``[N, H, W]`` float32 metres along each camera's +z; ``inf`` = sky.
        cameras: the ``N`` keyframe cameras (``W`` x ``H``).
        existing_alpha: ``[N, H, W]`` float32 opacity of the far field already made, drawn at
            these cameras, or None when there is none.
        near_m: nearer pixels are left to the scene (they do not count in their block).
        stride: block size in keyframe pixels.
        fill_below_alpha: a block is added only where the existing far field's mean alpha is below this.
        max_depth: farther pixels count as sky.

    Returns:
        World-space Gaussians: isotropic, ``FAR_SCALE_FACTOR`` x the block's footprint
        (``stride * depth / focal``), opacity 0.98 x the share of the block's pixels that are far
        surface (at least 0.02), the block's mean colour of its nearest far surface.
    """
    rgb = np.asarray(rgb)
    depth = np.asarray(depth, np.float32)
    n, h, w = depth.shape
    if rgb.shape != (n, h, w, 3) or len(cameras) != n or (cameras.width, cameras.height) != (w, h):
        raise ValueError(f"far_gaussians: rgb {rgb.shape}, depth {depth.shape} and {len(cameras)} cameras of "
                         f"{cameras.width}x{cameras.height} must agree")
    if not 0.0 < near_m < max_depth:
        raise ValueError(f"far_gaussians: near_m must be in (0, {max_depth}) metres, got {near_m}")
    made = []
    for i in range(n):
        far_depth = np.where(depth[i] >= near_m, depth[i], np.float32(np.inf))
        surface = (np.isfinite(far_depth) & (far_depth < max_depth)).astype(np.float32)
        blocks = reduce_blocks(far_depth, stride, max_depth, rgb[i])
        keep = np.isfinite(blocks.depth)
        if existing_alpha is not None and keep.any():
            keep &= _block_alpha(np.asarray(existing_alpha[i], np.float32), stride, *keep.shape) < fill_below_alpha
        rows, cols = np.nonzero(keep)
        if len(rows) == 0:
            continue
        K = cameras.K[i]
        d = blocks.depth[rows, cols]
        # A block at a silhouette is partly sky: an opaque splat there would widen the far
        # land's outline by up to a block, so its opacity is the share of the block it covers.
        coverage = _block_alpha(surface, stride, *keep.shape)[rows, cols]
        opacity = np.clip(FAR_OPACITY * coverage, 0.02, FAR_OPACITY)
        logits = np.log(opacity / (1.0 - opacity)).astype(np.float32)
        means = _to_world(_block_rays(K, blocks.u[rows, cols], blocks.v[rows, cols]) * d[:, None], cameras.w2c[i])
        focal = math.sqrt(abs(float(K[0, 0]) * float(K[1, 1])))
        sigma = FAR_SCALE_FACTOR * stride * d / focal
        count = len(rows)
        made.append(
            Gaussians(
                means=means,
                quats=np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (count, 1)),
                log_scales=np.repeat(np.log(sigma)[:, None], 3, axis=1).astype(np.float32),
                opacity_logits=logits,
                colors=blocks.rgb[rows, cols],
            )
        )
    return Gaussians.concat(made)

