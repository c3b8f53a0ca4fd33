"""Cameras and player poses.

Conventions, used everywhere in worldstream (the same as Lyra 2 and gsplat):

* OpenCV pinhole cameras: +x right, +y down, +z forward; pixel
  ``u = fx * x / z + cx``.
* ``w2c`` is the world-to-camera 4x4 matrix; ``K`` the 3x3 intrinsics in pixels.
* The world frame is the first camera's frame (as in Lyra 2): world ``+y`` points
  **down**, so "up" is ``(0, -1, 0)`` and gravity pulls along ``+y``.
* Units: metres and radians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

UP = np.array([0.0, -1.0, 0.0], dtype=np.float32)
"""The world's up direction (world +y points down)."""


@dataclass(frozen=True)
class Cameras:
    """A batch of ``N`` pinhole cameras sharing one image size.

    Attributes:
        w2c: ``[N, 4, 4]`` float32 world-to-camera matrices (OpenCV).
        K: ``[N, 3, 3]`` float32 intrinsics in pixels, for ``width`` x ``height``.
        width: image width in pixels.
        height: image height in pixels.
    """

    w2c: np.ndarray
    K: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        w2c = np.asarray(self.w2c, dtype=np.float32)
        K = np.asarray(self.K, dtype=np.float32)
        if w2c.ndim == 2:
            w2c = w2c[None]
        if K.ndim == 2:
            K = np.broadcast_to(K, (w2c.shape[0], 3, 3))
        if w2c.shape[1:] != (4, 4) or K.shape != (w2c.shape[0], 3, 3):
            raise ValueError(f"Cameras: w2c must be [N,4,4] and K [N,3,3], got {w2c.shape} and {K.shape}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Cameras: image size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "w2c", np.ascontiguousarray(w2c))
        object.__setattr__(self, "K", np.ascontiguousarray(K))

    def __len__(self) -> int:
        return self.w2c.shape[0]

    def __getitem__(self, index) -> "Cameras":
        index = np.atleast_1d(np.arange(len(self))[index])
        return Cameras(self.w2c[index], self.K[index], self.width, self.height)

    @property
    def c2w(self) -> np.ndarray:
        """``[N, 4, 4]`` camera-to-world matrices."""
        return np.linalg.inv(self.w2c).astype(np.float32)

    @property
    def centers(self) -> np.ndarray:
        """``[N, 3]`` camera centres in world coordinates (metres)."""
        R = self.w2c[:, :3, :3]
        t = self.w2c[:, :3, 3]
        return -np.einsum("nji,nj->ni", R, t)

    @property
    def forwards(self) -> np.ndarray:
        """``[N, 3]`` unit viewing directions (camera +z) in world coordinates."""
        return self.w2c[:, 2, :3].copy()

    def resized(self, width: int, height: int) -> "Cameras":
        """The same cameras rendered at another image size (intrinsics rescaled)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[:, 0, :] *= sx
        K[:, 1, :] *= sy
        return Cameras(self.w2c, K, width, height)

    @staticmethod
    def concat(batches: "list[Cameras]") -> "Cameras":
        """Join batches with equal image sizes into one."""
        sizes = {(b.width, b.height) for b in batches}
        if len(sizes) != 1:
            raise ValueError(f"Cameras.concat: image sizes differ: {sorted(sizes)}")
        return Cameras(
            np.concatenate([b.w2c for b in batches]),
            np.concatenate([b.K for b in batches]),
            batches[0].width,
            batches[0].height,
        )


def intrinsics_from_fov(width: int, height: int, fov_y: float) -> np.ndarray:
    """``[3, 3]`` intrinsics for a vertical field of view ``fov_y`` (radians), square pixels."""
    f = 0.5 * height / math.tan(0.5 * fov_y)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=np.float32)


def rotation_from_yaw_pitch_roll(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """``[3, 3]`` camera-to-world rotation; columns are the camera's right, down, forward axes.

    ``yaw`` turns right about the world up axis (0 faces world +z, +pi/2 faces +x),
    ``pitch`` > 0 looks up, ``roll`` > 0 tilts the head clockwise as seen by the viewer.
    """
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    forward = np.array([sy * cp, -sp, cy * cp])
    right = np.array([cy, 0.0, -sy])
    down = np.cross(forward, right)
    if roll:
        cr, sr = math.cos(roll), math.sin(roll)
        right, down = cr * right - sr * down, sr * right + cr * down
    return np.stack([right, down, forward], axis=1).astype(np.float32)


def yaw_pitch_roll_from_rotation(R_c2w: np.ndarray) -> tuple[float, float, float]:
    """Inverse of :func:`rotation_from_yaw_pitch_roll` (radians)."""
    R = np.asarray(R_c2w, dtype=np.float64)
    forward = R[:, 2]
    pitch = math.asin(float(np.clip(-forward[1], -1.0, 1.0)))
    yaw = math.atan2(float(forward[0]), float(forward[2]))
    level = rotation_from_yaw_pitch_roll(yaw, pitch, 0.0).astype(np.float64)
    # Roll is the angle from the level right axis to the actual right axis about forward.
    roll = math.atan2(float(np.dot(R[:, 0], -level[:, 1])), float(np.dot(R[:, 0], level[:, 0])))
    return yaw, pitch, -roll


def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    """``[..., 4]`` unit quaternions (w first) to ``[..., 3, 3]`` rotation matrices."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    ).astype(np.float32)


@dataclass
class Pose:
    """Where a player's head is and where it looks.

    Attributes:
        position: ``[3]`` eye position in world coordinates (metres).
        yaw: radians about the world up axis; 0 faces world +z, positive turns right.
        pitch: radians; positive looks up. Clamped to about +-89 degrees by movement.
        roll: radians (VR heads only).
    """

    position: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.float32))
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0

    def __post_init__(self) -> None:
        self.position = np.asarray(self.position, dtype=np.float32).reshape(3)

    def copy(self) -> "Pose":
        return Pose(self.position.copy(), self.yaw, self.pitch, self.roll)

    @property
    def c2w(self) -> np.ndarray:
        """``[4, 4]`` camera-to-world matrix."""
        M = np.eye(4, dtype=np.float32)
        M[:3, :3] = rotation_from_yaw_pitch_roll(self.yaw, self.pitch, self.roll)
        M[:3, 3] = self.position
        return M

    @property
    def w2c(self) -> np.ndarray:
        """``[4, 4]`` world-to-camera matrix (OpenCV)."""
        R = rotation_from_yaw_pitch_roll(self.yaw, self.pitch, self.roll)
        M = np.eye(4, dtype=np.float32)
        M[:3, :3] = R.T
        M[:3, 3] = -R.T @ self.position
        return M

    @staticmethod
    def from_c2w(c2w: np.ndarray) -> "Pose":
        c2w = np.asarray(c2w, dtype=np.float32)
        yaw, pitch, roll = yaw_pitch_roll_from_rotation(c2w[:3, :3])
        return Pose(c2w[:3, 3].copy(), yaw, pitch, roll)

    def camera(self, width: int, height: int, fov_y: float = math.radians(60.0)) -> Cameras:
        """This pose as one camera of ``width`` x ``height`` pixels and vertical FOV ``fov_y``."""
        return Cameras(self.w2c[None], intrinsics_from_fov(width, height, fov_y)[None], width, height)

    def stereo_cameras(self, width: int, height: int, fov_y: float, ipd: float = 0.063) -> Cameras:
        """Left and right eye cameras ``[2]``, eyes ``ipd`` metres apart along the head's right axis."""
        c2w = self.c2w
        out = []
        for side in (-0.5, 0.5):
            eye = c2w.copy()
            eye[:3, 3] += side * ipd * c2w[:3, 0]
            out.append(np.linalg.inv(eye))
        K = intrinsics_from_fov(width, height, fov_y)
        return Cameras(np.stack(out), np.stack([K, K]), width, height)
