"""What a walk's holes are: where, how far, and why nothing covers them (``bench.fidelity --causes``).

A hole pixel (the world's alpha < 0.5 where the generator shows a surface, see
:func:`bench.fidelity.holes`) is classified per walk sample by:

* **band**: the generator's depth there -- ``near`` (< 15 m, ``NEAR_M``), ``mid``
  (15-40 m, up to the far field's ``far_field_near_m``) or ``far`` (>= 40 m);
* **far-covered**: whether the far field the player is shown covers it (the scene's alpha
  and the far field's, laid as the renderer lays them, reach 0.5): the player then sees distant terrain there,
  not the sky, so it is not a visible hole;
* **cause**: the generator's surface point there, tested against every keyframe that had
  landed by then -- ``seen`` (a keyframe saw that very surface: reconstruction or the
  revisit check left it out), ``occluded`` (inside some keyframe's view but always behind
  something nearer: revealed by the player's motion) or ``unseen`` (inside no keyframe's
  view: planning never asked for it);
* **where**: below or above the image's middle row (the ground ahead / the horizon and up).

All fractions are of the sample's pixels, so they add up to its hole fraction.
"""

from __future__ import annotations

import numpy as np

from runtime.world.camera import Cameras
from runtime.world.keyframes.frames import Frame
from runtime.world.render.far_pass import SEE_THROUGH_FROM, shown_alpha
from runtime.world.scene import SceneSnapshot
from runtime.world.sky import pixel_directions

MID_M = 40.0
"""Generator depths from here on are ``far`` (the far field's default ``far_field_near_m``)."""
SEEN_TOLERANCE = 0.05
"""A keyframe saw a surface point when its depth there is within this fraction (+ 0.3 m)."""
BANDS = ("near", "mid", "far")
CAUSES = ("seen", "occluded", "unseen")


def far_alpha(renderer, snapshot: SceneSnapshot, camera: Cameras) -> np.ndarray:
    """``[H, W]`` opacity of ``snapshot``'s far field alone at ``camera`` (one camera)."""
    far = snapshot.visible_far(camera)
    if not far:
        return np.zeros((camera.height, camera.width), np.float32)
    return renderer.render_alpha(SceneSnapshot(0, far), camera)[0]


def surface_points(camera: Cameras, depth: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` world points at z-depth ``depth`` ``[H, W]`` along ``camera``'s pixel rays."""
    rays = pixel_directions(camera)[0]  # unit, world space
    z_per_metre = rays @ camera.w2c[0, 2, :3]  # camera z per metre along the ray
    return camera.centers[0] + rays * (depth / np.maximum(z_per_metre, 1e-6))[..., None]


def keyframe_view(points: np.ndarray, frames: list[Frame]) -> tuple[np.ndarray, np.ndarray]:
    """For world ``points`` ``[P, 3]``: ``(seen, inside)`` ``[P]`` bool -- some frame's depth
    there matches the point (it saw that surface), or the point is inside some frame's view
    in front of its camera at all."""
    seen = np.zeros(len(points), bool)
    inside = np.zeros(len(points), bool)
    for f in frames:
        cam = points @ f.w2c[:3, :3].T + f.w2c[:3, 3]
        z = cam[:, 2]
        front = z > 0.1
        u = np.full(len(points), -1.0)
        v = np.full(len(points), -1.0)
        u[front] = f.K[0, 0] * cam[front, 0] / z[front] + f.K[0, 2]
        v[front] = f.K[1, 1] * cam[front, 1] / z[front] + f.K[1, 2]
        ok = front & (u >= 0) & (u < f.width) & (v >= 0) & (v < f.height)
        if not ok.any():
            continue
        inside |= ok
        d = f.depth[v[ok].astype(int), u[ok].astype(int)]
        seen[np.flatnonzero(ok)[np.abs(d - z[ok]) <= SEEN_TOLERANCE * z[ok] + 0.3]] = True
    return seen, inside


def classify(alpha: np.ndarray, far: np.ndarray, depth: np.ndarray, camera: Cameras, frames: list[Frame],
             sky_depth: float, near_m: float, see_through_from: float | None = SEE_THROUGH_FROM) -> dict:
    """One sample's hole pixels broken down (fractions of all its pixels; see the module doc).

    Args:
        alpha, far, depth: ``[H, W]`` the world's alpha, its far field's alpha and the
            generator's z-depth at ``camera`` (one camera of ``W`` x ``H``).
        frames: the keyframes landed by then.
        see_through_from: how the renderer lays the far field behind the scene (:func:`shown_alpha`).
    """
    hole = (alpha < 0.5) & np.isfinite(depth) & (depth < sky_depth)
    n = hole.size
    out: dict = {"holes": hole.sum() / n}
    band = np.where(depth < near_m, 0, np.where(depth < MID_M, 1, 2))
    for k, name in enumerate(BANDS):
        out[name] = (hole & (band == k)).sum() / n
    covered = hole & (shown_alpha(alpha, far, see_through_from) >= 0.5)  # as bench.fidelity.holes composites them
    out["far_covered"] = covered.sum() / n
    out["visible"] = (hole & ~covered).sum() / n
    rows = np.arange(hole.shape[0])[:, None] >= hole.shape[0] // 2
    out["lower"] = (hole & rows).sum() / n
    ys, xs = np.nonzero(hole)
    for name in CAUSES:
        out[name] = 0.0
    if len(ys):
        points = surface_points(camera, depth)[ys, xs]
        seen, inside = keyframe_view(points, frames)
        out["seen"] = seen.sum() / n
        out["occluded"] = (inside & ~seen).sum() / n
        out["unseen"] = (~inside).sum() / n
        for k, name in enumerate(BANDS):
            sel = band[ys, xs] == k
            out[f"{name}_seen"] = (seen & sel).sum() / n
            out[f"{name}_occluded"] = (inside & ~seen & sel).sum() / n
            out[f"{name}_unseen"] = (~inside & sel).sum() / n
            out[f"{name}_visible"] = (sel & ~covered[ys, xs]).sum() / n
    return out


def summarise(rows: list[dict]) -> dict:
    """Mean of every key over a walk's samples."""
    keys = sorted({k for r in rows for k in r if isinstance(r[k], (int, float))})
    return {k: float(np.mean([r.get(k, 0.0) for r in rows])) for k in keys}
