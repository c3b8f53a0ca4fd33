"""Player movement: the :class:`MoveInput` contract and :func:`step`, which moves a pose with collision.

Walk mode keeps the eye :data:`EYE_HEIGHT` above the ground the scene provides,
climbs steps up to :data:`MAX_STEP` smoothly, and stops at anything taller
(sliding along it). Fly mode ignores the ground and collides with occupied
voxels only. Where the scene knows no ground yet (unexplored space), walking
keeps the current height. World ``+y`` points down, so "up" is ``-y``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from ..camera import UP, Pose

if TYPE_CHECKING:  # only for type hints; motion works without a collider
    from .collision import SceneCollider


@dataclass(frozen=True)
class MoveInput:
    """One movement sample from a player (the latest one wins).

    Axes are in [-1, 1]; look deltas in radians since the previous input.

    Attributes:
        forward: +1 walks forward (along the yaw direction), -1 backward.
        right: +1 strafes right.
        up: +1 rises, -1 sinks (fly mode only).
        yaw_delta: turn right by this many radians.
        pitch_delta: look up by this many radians.
        run: move at run speed instead of walk speed.
        fly: fly mode (no gravity, no ground) instead of walk mode.
    """

    forward: float = 0.0
    right: float = 0.0
    up: float = 0.0
    yaw_delta: float = 0.0
    pitch_delta: float = 0.0
    run: bool = False
    fly: bool = False


WALK_SPEED = 1.5  # m/s
RUN_SPEED = 4.0  # m/s
FLY_SPEED = 6.0  # m/s
EYE_HEIGHT = 1.7  # m above the ground in walk mode

MAX_STEP = 0.5  # m; taller rises are walls
BODY_RADIUS = 0.3  # m, horizontal radius of the walking body and of the flying sphere
HEAD_CLEARANCE = 0.15  # m of head above the eye
MAX_PITCH = math.radians(89.0)
MAX_DT = 1.0  # s; longer steps are rejected (the caller lost track of time)
SUBSTEP_DT = 0.04  # s; at <= 6 m/s a substep moves < BODY_RADIUS, so walls cannot be skipped
NEAR_GROUND_RADIUS = 3.0  # m; walk mode settles onto known ground this far away when none is under the player
_RING = tuple((math.cos(a * math.pi / 4), math.sin(a * math.pi / 4)) for a in range(8))
HEIGHT_RATE = 12.0  # 1/s; eye height follows the ground with this exponential rate (smooth steps)


def validate_move(move: MoveInput) -> None:
    """Raise ``ValueError`` naming the field if any number in ``move`` is NaN or infinite."""
    for f in fields(MoveInput):
        value = getattr(move, f.name)
        if isinstance(value, bool):
            continue
        if not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(float(value)):
            raise ValueError(f"MoveInput.{f.name} must be a finite number, got {value!r}")


def validate_pose(pose: Pose) -> None:
    """Raise ``ValueError`` naming the field if the pose holds NaN or infinite values."""
    if not np.isfinite(pose.position).all():
        raise ValueError(f"Pose.position must be finite, got {pose.position.tolist()}")
    for name in ("yaw", "pitch", "roll"):
        if not math.isfinite(float(getattr(pose, name))):
            raise ValueError(f"Pose.{name} must be finite, got {getattr(pose, name)!r}")


def _axis(value: float) -> float:
    """Clamp an input axis to [-1, 1] (clients may send 1.0000001)."""
    return max(-1.0, min(1.0, float(value)))


def step(pose: Pose, move: MoveInput, dt: float, collider: "SceneCollider | None" = None) -> Pose:
    """Advance ``pose`` by ``move`` over ``dt`` seconds; returns a new :class:`Pose`.

    Args:
        pose: current head pose (unchanged).
        move: the player's latest input.
        dt: seconds since the last step, in ``[0, MAX_DT]``.
        collider: the world's :class:`SceneCollider`; None moves freely (walk mode
            then keeps the current height).

    Raises:
        ValueError: a NaN/inf field in ``move`` or ``pose``, or ``dt`` out of range.
    """
    validate_move(move)
    validate_pose(pose)
    if not (isinstance(dt, (int, float, np.floating)) and math.isfinite(float(dt))) or not 0.0 <= dt <= MAX_DT:
        raise ValueError(f"dt must be a finite number of seconds in [0, {MAX_DT}], got {dt!r}")
    yaw = math.remainder(pose.yaw + float(move.yaw_delta), math.tau)
    pitch = max(-MAX_PITCH, min(MAX_PITCH, pose.pitch + float(move.pitch_delta)))
    position = pose.position.astype(np.float64)

    fwd, right, up = _axis(move.forward), _axis(move.right), _axis(move.up)
    planar = math.hypot(fwd, right)
    if planar > 1.0:  # diagonal input is not faster than straight input
        fwd, right = fwd / planar, right / planar
    n = max(1, math.ceil(dt / SUBSTEP_DT))
    h = dt / n
    if move.fly:
        forward_dir = np.array([math.sin(yaw) * math.cos(pitch), -math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
        right_dir = np.array([math.cos(yaw), 0.0, -math.sin(yaw)])
        velocity = FLY_SPEED * (fwd * forward_dir + right * right_dir + up * UP.astype(np.float64))
        for _ in range(n):
            position = _fly_substep(position, velocity * h, collider)
    else:
        speed = RUN_SPEED if move.run else WALK_SPEED
        forward_dir = np.array([math.sin(yaw), 0.0, math.cos(yaw)])
        right_dir = np.array([math.cos(yaw), 0.0, -math.sin(yaw)])
        velocity = speed * (fwd * forward_dir + right * right_dir)
        for _ in range(n):
            position = _walk_substep(position, velocity * h, h, collider)
    return Pose(position.astype(np.float32), yaw, pitch, pose.roll)


HEAD_SUBSTEP = 0.1  # m: a head pose's move is checked for collision in steps this long
MAX_HEAD_SUBSTEPS = 200  # so one head pose costs at most this many checks (a 20 m jump)


def head_step(pose: Pose, head: Pose, collider: "SceneCollider | None" = None) -> Pose:
    """A VR head pose, with collision: the head goes from ``pose`` toward ``head`` as the fly
    mode's sphere would (stopped by walls, sliding along them) and takes ``head``'s
    orientation. No gravity: a headset says how high the head is."""
    position = pose.position.astype(np.float64)
    delta = head.position.astype(np.float64) - position
    n = min(max(1, math.ceil(float(np.linalg.norm(delta)) / HEAD_SUBSTEP)), MAX_HEAD_SUBSTEPS)
    for _ in range(n):
        position = _fly_substep(position, delta / n, collider)
    return Pose(position.astype(np.float32), head.yaw, head.pitch, head.roll)


def _fly_substep(position: np.ndarray, delta: np.ndarray, collider: "SceneCollider | None") -> np.ndarray:
    """Move a sphere by ``delta``; on contact, try each axis alone (slides along surfaces)."""
    if collider is None or not delta.any():
        return position + delta
    target = position + delta
    if not collider.blocked_sphere(target, BODY_RADIUS) or collider.blocked_sphere(position, BODY_RADIUS):
        return target  # free, or already stuck inside geometry: never trap a player
    for axis in range(3):
        if delta[axis] == 0.0:
            continue
        trial = position.copy()
        trial[axis] += delta[axis]
        if not collider.blocked_sphere(trial, BODY_RADIUS):
            position = trial
    return position


def walk_target_eye_y(x: float, z: float, eye_y: float, collider: "SceneCollider") -> float | None:
    """Eye height the ground at ``(x, z)`` asks for, or None where no ground is known.

    The ground is the highest surface not more than :data:`MAX_STEP` above the
    feet (+y down: the smallest surface ``y >= feet - MAX_STEP``). If the column
    right under the player has no samples (sparse splats), the median of the four
    neighbouring columns is used; where those have none either, the ground on the nearest
    ring around the player within :data:`NEAR_GROUND_RADIUS` (see :func:`_ground_around`).
    """
    feet = eye_y + EYE_HEIGHT
    g = collider.ground_y(x, z, feet - MAX_STEP)
    if g is None:
        c = collider.config.ground_cell
        near = [collider.ground_y(x + dx, z + dz, feet - MAX_STEP) for dx, dz in ((c, 0), (-c, 0), (0, c), (0, -c))]
        near = [v for v in near if v is not None]
        if not near:
            near = _ground_around(x, z, feet - MAX_STEP, collider)
        if not near:
            return None
        g = float(np.median(near))
    return g - EYE_HEIGHT


def _ground_around(x: float, z: float, from_y: float, collider: "SceneCollider") -> list[float]:
    """Ground heights on the nearest ring (8 directions, every ``2 * ground_cell`` out to
    :data:`NEAR_GROUND_RADIUS`) that has any: where the scene holds no ground right under a
    player (the spawn point, or wherever fly mode ended), a standing player settles onto
    the ground around them instead of hanging in the air until they walk."""
    step = 2.0 * collider.config.ground_cell
    rings = max(1, int(NEAR_GROUND_RADIUS / step))
    for k in range(1, rings + 1):
        r = k * step
        found = [collider.ground_y(x + r * dx, z + r * dz, from_y) for dx, dz in _RING]
        found = [v for v in found if v is not None]
        if found:
            return found
    return []


def _walk_blocked(x: float, z: float, eye_y: float, collider: "SceneCollider") -> bool:
    """Is the body (knee to head) at ``(x, z)`` with eye height ``eye_y`` inside an obstacle?"""
    knee = eye_y + EYE_HEIGHT - MAX_STEP
    head = eye_y - HEAD_CLEARANCE
    return collider.blocked(x, z, head, knee - 1e-3, BODY_RADIUS)


def _walk_substep(position: np.ndarray, delta: np.ndarray, h: float, collider: "SceneCollider | None") -> np.ndarray:
    """Move horizontally by ``delta`` (walls stop it, slide along them), then follow the ground."""
    if collider is None:
        return position + delta
    x, y, z = position

    def try_at(nx: float, nz: float) -> float | None:
        """Eye y to use at (nx, nz), or None if the body would be inside an obstacle there."""
        target = walk_target_eye_y(nx, nz, y, collider)
        eye = y if target is None else target
        if _walk_blocked(nx, nz, eye, collider):
            return None
        return eye

    if delta[0] or delta[2]:
        stuck = _walk_blocked(x, z, y, collider)  # never trap a player inside geometry
        # Full move first; against a wall, its x and z components alone (sliding).
        for dx, dz in ((delta[0], delta[2]), (delta[0], 0.0), (0.0, delta[2])):
            if dx == 0.0 and dz == 0.0:
                continue
            if stuck or try_at(x + dx, z + dz) is not None:
                x, z = x + dx, z + dz
                break
    target = walk_target_eye_y(x, z, y, collider)
    if target is not None:
        y = y + (target - y) * (1.0 - math.exp(-HEIGHT_RATE * h))
    return np.array([x, y, z])
