"""Image -> world: the start image becomes keyframe 0 at the spawn camera.

As in Lyra 2, the first frame of a world *is* the user's image. It is resized to the
size players view the world at, given depth (a depth map that came with it, or the
depth estimator's), lifted into pixel-aligned splats and kept in frame memory, so the
first picture a player sees at the spawn pose is the image, and everything else grows
outward from it.

Two things differ from a generated keyframe's reconstruction, both so that the spawn
view reproduces the image (PSNR >= 30 dB at the view size):

* one splat per pixel (stride 1), with a narrower footprint (``START_SCALE_FACTOR``):
  wide splats blur the picture;
* nothing is left out. Sky pixels are lifted onto a far dome (``SKY_DOME_DEPTH``)
  instead of showing the renderer's sky, and "flying pixels" on depth edges, which a
  keyframe drops, are moved back onto the farther surface beside them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from ..camera import Cameras, intrinsics_from_fov
from ..gaussians import Gaussians
from .reconstruct import reconstruct, shown_depth

log = logging.getLogger(__name__)

DEFAULT_START_FOV_Y = math.radians(50.0)
"""Vertical field of view assumed for a start image when none is given (radians): a
typical landscape photo; Lyra's example images are 47 degrees."""

SKY_DOME_DEPTH = 150.0
"""Metres at which the start image's sky pixels are lifted (inside reconstruction's 200 m sky cut)."""

START_SCALE_FACTOR = 0.25
"""Splat standard deviation as a fraction of a pixel's footprint (keyframes use 0.7)."""

EYE_HEIGHT_M = 1.7
"""Metres from a walking player's eye to the ground (``movement.motion.EYE_HEIGHT``): a photo is
taken from about there, which fixes the scale a relative depth model leaves open."""

GROUND_ROWS = 0.25
"""The bottom fraction of the image whose surfaces are taken as the ground for that scale."""

EDGE_PASSES = 2
"""Rounds of moving flying pixels onto the farther surface next to them."""

KEPT_START_IMAGE_SIDE = 1024
"""Longest side (pixels) of the start image a world keeps while it is open. Generators read
it for its colours (the procedural one takes medians of about 10k pixels); the spawn view
is keyframe 0, made at the view size when the world is created. Kept whole, a 4096 x 4096
image held 50 MB per open world; at this size it is 3 MB at most."""

START_IMAGE_SOURCE = "start-image"
"""The generator name in the start frame's chunk source (how a reopened world finds it)."""

NO_DEPTH_NOTICE = (
    "no depth for the start image (no --depth-model and no depth map given): "
    "the image only tints the world instead of becoming its first frame"
)


@dataclass(frozen=True)
class StartFrame:
    """The start image as a keyframe.

    Attributes:
        rgb: ``[H, W, 3]`` uint8, the image at the view size.
        depth: ``[H, W]`` float32 z-depth in metres, ``inf`` for sky.
        camera: the one spawn camera (``w2c [1,4,4]``, ``K [1,3,3]``, ``W`` x ``H``).
    """

    rgb: np.ndarray
    depth: np.ndarray
    camera: Cameras


def make_start_frame(
    image: np.ndarray,
    width: int,
    height: int,
    *,
    fov_y: float | None = None,
    w2c: np.ndarray | None = None,
    K: np.ndarray | None = None,
    depth: np.ndarray | None = None,
    estimator=None,
) -> StartFrame | None:
    """The start image as keyframe 0, or None when there is no depth source.

    Args:
        image: ``[h, w, 3]`` uint8, any size; resized to ``width`` x ``height``.
        width, height: the size players view the world at (pixels).
        fov_y: vertical field of view of the image (radians); None: ``DEFAULT_START_FOV_Y``.
            Ignored when ``K`` is given.
        w2c: ``[4, 4]`` spawn camera (world-to-camera); None: the origin facing +z.
        K: ``[3, 3]`` intrinsics for ``width`` x ``height`` (e.g. a trajectory's first).
        depth: ``[h', w']`` metres given with the image (``inf`` = sky), any size.
        estimator: a :class:`..generators.base.DepthEstimator`, used when ``depth`` is None;
            a relative one (``metric`` False) is rescaled by :func:`eye_height_scale`.
    """
    from ..depth.files import resize_depth
    from ..formats.media import resize_image

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be [H, W, 3] uint8, got {image.shape} {image.dtype}")
    if depth is None and estimator is None:
        return None
    rgb = resize_image(image, width, height)
    if K is None:
        K = intrinsics_from_fov(width, height, DEFAULT_START_FOV_Y if fov_y is None else fov_y)
    w2c = np.eye(4, dtype=np.float32) if w2c is None else np.asarray(w2c, np.float32)
    camera = Cameras(w2c[None], np.asarray(K, np.float32)[None], width, height)
    if depth is not None:
        z = resize_depth(np.asarray(depth, np.float32), width, height)
    else:
        z = np.asarray(estimator.estimate(rgb[None], camera, ()), np.float32)[0]
    z = np.where(np.isfinite(z) & (z > 0), z, np.inf).astype(np.float32)
    if depth is None and getattr(estimator, "metric", True) is False:
        z *= np.float32(eye_height_scale(z, camera.K[0]))
    return StartFrame(rgb, _edges_to_background(z), camera)


def kept_start_image(image: np.ndarray) -> np.ndarray:
    """What of ``image`` ``[H, W, 3]`` uint8 a world keeps: itself when its longest side is at
    most :data:`KEPT_START_IMAGE_SIDE`, else a copy shrunk to that (area averaging, aspect kept)."""
    from ..formats.media import resize_image

    h, w = image.shape[:2]
    if max(h, w) <= KEPT_START_IMAGE_SIDE:
        return image
    scale = KEPT_START_IMAGE_SIDE / max(h, w)
    return resize_image(image, max(1, round(w * scale)), max(1, round(h * scale)))


def eye_height_scale(depth: np.ndarray, K: np.ndarray, eye_height: float = EYE_HEIGHT_M) -> float:
    """The factor that puts the ground at ``eye_height`` below a level camera.

    A relative depth model's metres are a guess; a photo is taken from about eye height, so
    the surfaces in the bottom ``GROUND_ROWS`` of the image (the 75th percentile of their
    height below the camera: obstacles there stand above the ground) are scaled to lie
    ``eye_height`` down, and a player's first step does not jump. 1 when too little of that
    band has depth.

    Args:
        depth: ``[H, W]`` z-depth (any scale), ``inf`` for sky.
        K: ``[3, 3]`` intrinsics of a camera looking level (the start camera).
    """
    H = depth.shape[0]
    band = depth[int((1.0 - GROUND_ROWS) * H) :]
    rows = np.arange(H - len(band), H, dtype=np.float64) + 0.5
    below = ((rows - float(K[1, 2])) / float(K[1, 1]))[:, None] * band  # metres below the camera
    below = below[np.isfinite(below) & (below > 0)]
    if below.size < 0.05 * band.size:
        return 1.0
    return float(np.clip(eye_height / np.percentile(below, 75), 0.05, 20.0))


def lift_start_frame(frame: StartFrame) -> Gaussians:
    """One splat per pixel of ``frame``; sky pixels on the far dome (see the module docstring)."""
    depth = np.where(np.isfinite(frame.depth), np.minimum(frame.depth, SKY_DOME_DEPTH), SKY_DOME_DEPTH)
    return reconstruct(
        frame.rgb[None], depth[None].astype(np.float32), frame.camera, None,
        stride=1, scale_factor=START_SCALE_FACTOR, floater_min_neighbors=0, sharpen=0.0,
    )


def _edges_to_background(depth: np.ndarray) -> np.ndarray:
    """``depth`` with flying pixels (finite, but bridging two surfaces) moved to the farthest
    solid depth among their 8 neighbours, so lifting keeps them on the background surface."""
    depth = depth.copy()
    for _ in range(EDGE_PASSES):
        shown = shown_depth(depth, stride=1, floater_min_neighbors=0)
        flying = np.isfinite(depth) & ~np.isfinite(shown)
        if not flying.any():
            break
        solid = np.where(np.isfinite(shown), shown, -np.inf)
        padded = np.pad(solid, 1, constant_values=-np.inf)
        H, W = depth.shape
        farthest = np.max([padded[r : r + H, c : c + W] for r in range(3) for c in range(3)], axis=0)
        move = flying & np.isfinite(farthest)
        depth[move] = farthest[move]
    return depth


def seed_world(world, image: np.ndarray, width: int, height: int, **options) -> str | None:
    """Place ``image`` as keyframe 0 of the new ``world``.

    ``options`` are :func:`make_start_frame`'s keywords; its ``estimator`` defaults to the
    world's own ``depth_estimator``. Returns None when the image was placed, else the
    one-line notice (also logged) that there was no depth source: the world then starts
    as it always did, the image only tinting it.
    """
    if options.get("estimator") is None:
        options["estimator"] = getattr(world, "depth_estimator", None)
    frame = make_start_frame(image, width, height, **options)
    if frame is None:
        log.warning("world %s: %s", world.config.name, NO_DEPTH_NOTICE)
        return NO_DEPTH_NOTICE
    world.place_start_frame(frame)
    return None
