"""The camera path a video job follows: from a view the world already knows into the frontier.

A video model continues what it is shown, so each job starts where the scene is known and
moves to the views the planner asked for: ``4k + 1`` frames (Wan's VAE packs 4 frames per
latent after the first), poses interpolated (positions linearly, rotations by slerp).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...camera import Cameras, quat_wxyz_to_matrix
from ...keyframes.frames import Frame
from ...keyframes.reconstruct import matrix_to_quat_wxyz

APPROACH_M = 1.5
"""Without a nearby memory frame, the path starts this many metres behind the first target."""

MAX_START_DISTANCE_M = 8.0
"""A memory frame's camera may start the path when it is at most this far from the first target."""


def video_frames(k: int) -> int:
    """Frames in a path of ``k`` latent steps: ``4k + 1``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return 4 * k + 1


def frames_for_budget(budget_s: float | None, seconds_per_frame: float | None, max_frames: int) -> int:
    """The longest ``4k + 1`` path (at most ``max_frames``, at least 5) that generates within
    ``budget_s`` at ``seconds_per_frame``; ``max_frames`` when either is unknown."""
    top = max(1, (max_frames - 1) // 4)
    if not budget_s or not seconds_per_frame:
        return video_frames(top)
    k = int((budget_s / seconds_per_frame - 1) // 4)
    return video_frames(max(1, min(top, k)))


@dataclass(frozen=True)
class CameraPath:
    """``cameras`` (``F = 4k + 1`` views); ``targets[i]`` is the frame index of target ``i``."""

    cameras: Cameras
    targets: tuple[int, ...]


def start_pose(targets: Cameras, memory: Sequence[Frame]) -> np.ndarray:
    """``[4, 4]`` w2c the path starts from: the camera of the retrieved memory frame nearest the
    first target (within :data:`MAX_START_DISTANCE_M`), else the first target moved back
    :data:`APPROACH_M` along its horizontal viewing direction."""
    goal = targets.centers[0]
    near = [f for f in memory if np.linalg.norm(f.center - goal) <= MAX_START_DISTANCE_M]
    if near:
        return np.asarray(min(near, key=lambda f: float(np.linalg.norm(f.center - goal))).w2c, np.float32)
    forward = targets.forwards[0].astype(np.float64)
    forward[1] = 0.0  # +y is down: step back on the ground plane
    norm = np.linalg.norm(forward)
    forward = forward / norm if norm > 1e-6 else np.array([0.0, 0.0, 1.0])
    w2c = np.asarray(targets.w2c[0], np.float64).copy()
    center = goal - APPROACH_M * forward
    w2c[:3, 3] = -w2c[:3, :3] @ center
    return w2c.astype(np.float32)


def camera_path(start_w2c: np.ndarray, targets: Cameras, frames: int) -> CameraPath:
    """``frames`` (``4k + 1``) views from ``start_w2c`` through every target in order, the last
    frame on the last target; intrinsics follow the targets' (the start uses the first's)."""
    if frames < 5 or (frames - 1) % 4:
        raise ValueError(f"frames must be 4k + 1 >= 5, got {frames}")
    n = len(targets)
    if n >= frames:
        raise ValueError(f"{n} targets do not fit a path of {frames} frames")
    keys_w2c = np.concatenate([np.asarray(start_w2c, np.float64)[None], targets.w2c.astype(np.float64)])
    keys_K = np.concatenate([targets.K[:1], targets.K]).astype(np.float64)
    # Target i lands on frame round((i + 1) * (frames - 1) / n), the last one on the last frame.
    marks = [0] + [round((i + 1) * (frames - 1) / n) for i in range(n)]
    c2w = np.linalg.inv(keys_w2c)
    quats = matrix_to_quat_wxyz(c2w[:, :3, :3]).astype(np.float64)
    w2c = np.empty((frames, 4, 4), np.float64)
    K = np.empty((frames, 3, 3), np.float64)
    for seg in range(n):
        a, b = marks[seg], marks[seg + 1]
        for j in range(a, b + 1):
            s = (j - a) / max(b - a, 1)
            pose = np.eye(4)
            pose[:3, :3] = quat_wxyz_to_matrix(_slerp(quats[seg], quats[seg + 1], s))
            pose[:3, 3] = (1 - s) * c2w[seg, :3, 3] + s * c2w[seg + 1, :3, 3]
            w2c[j] = np.linalg.inv(pose)
            K[j] = (1 - s) * keys_K[seg] + s * keys_K[seg + 1]
    cams = Cameras(w2c.astype(np.float32), K.astype(np.float32), targets.width, targets.height)
    return CameraPath(cams, tuple(marks[1:]))


def _slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions (w first), the short way round."""
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: linear is exact enough and stable
        q = q0 + s * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(1.0, dot))
    return (math.sin((1 - s) * theta) * q0 + math.sin(s * theta) * q1) / math.sin(theta)
