"""Player movement: the :class:`MoveInput` contract and :func:`step`, which moves a pose with collision.

Walk mode keeps the eye :data:`EYE_HEIGHT` above the ground the scene provides,
climbs steps up to :data:`MAX_STEP` smoothly and slopes up to about
:data:`MAX_SLOPE_DEG`, and stops at anything taller or steeper -- sliding along it:
a blocked move keeps its part along the obstacle's surface. Fly mode ignores the
ground and collides with occupied voxels only. Where the scene knows no ground yet
(unexplored space), walking keeps the current height. World ``+y`` points down, so
"up" is ``-y``. :func:`advance` also says whether a move was blocked (the client's cue).
"""

from __future__ import annotations

import functools
import itertools
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
_PLANE_POINTS = 5  # floors around a player without ground under them: the rings stop once this many are found
_RING = tuple((math.cos(a * math.pi / 4), math.sin(a * math.pi / 4)) for a in range(8))
HEIGHT_RATE = 12.0  # 1/s; eye height follows the ground with this exponential rate (smooth steps)
HEIGHT_SNAP = 1e-4  # m; ...and takes it once this near: an ease has no end, and every step of it redraws the player's view
MAX_HEIGHT_LAG = 0.2  # m; ...but never trails it by more (running up a slope must not sink into it)
MAX_SLOPE_DEG = 40.0  # steepest walkable ground, give or take the probe's slack below
SLOPE_PROBE = 1.0  # m ahead of a move where the ground's rise is compared with the slope limit
SLOPE_SLACK = 0.1  # m of rise forgiven over the probe (ground heights are quantised); 40 deg passes, 45 deg does not
NORMAL_REACH = 0.25  # m beyond the body over which an obstacle's normal is averaged (a wall, not its sample gaps)
PUSH_SKIN = 1e-3  # m a push-out goes beyond touching, so float32 rounding of the pose cannot put the body back inside
BLOCKED_FRACTION = 0.25  # a walk step covering less than this share of the asked distance was blocked (stopped, or all but)


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


@dataclass(frozen=True)
class Moved:
    """What one move step did.

    Attributes:
        pose: the new head pose.
        blocked: the player asked to walk or fly but collision kept them from covering
            at least :data:`BLOCKED_FRACTION` of the distance (sliding along a wall at a
            shallow angle is not blocked; walking into it head-on is).
    """

    pose: Pose
    blocked: bool = False


def step(pose: Pose, move: MoveInput, dt: float, collider: "SceneCollider | None" = None) -> Pose:
    """Advance ``pose`` by ``move`` over ``dt`` seconds; returns a new :class:`Pose` (see :func:`advance`)."""
    return advance(pose, move, dt, collider).pose


def advance(pose: Pose, move: MoveInput, dt: float, collider: "SceneCollider | None" = None) -> Moved:
    """Advance ``pose`` by ``move`` over ``dt`` seconds, with collision.

    Args:
        pose: current head pose (unchanged).
        move: the player's latest input.
        dt: seconds since the last step, in ``[0, MAX_DT]``.
        collider: the world's :class:`SceneCollider`; None moves freely (walk mode
            then keeps the current height).

    Returns:
        The new pose and whether the move was blocked.

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
    start = position.copy()

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
        asked, covered = np.linalg.norm(velocity) * dt, float(np.linalg.norm(position - start))
    else:
        speed = RUN_SPEED if move.run else WALK_SPEED
        forward_dir = np.array([math.sin(yaw), 0.0, math.cos(yaw)])
        right_dir = np.array([math.cos(yaw), 0.0, -math.sin(yaw)])
        velocity = speed * (fwd * forward_dir + right * right_dir)
        for _ in range(n):
            position = _walk_substep(position, velocity * h, h, collider)
        asked, covered = np.linalg.norm(velocity) * dt, math.hypot(position[0] - start[0], position[2] - start[2])
    blocked = bool(asked > 1e-9 and covered < BLOCKED_FRACTION * asked)
    return Moved(Pose(position.astype(np.float32), yaw, pitch, pose.roll), blocked)


HEAD_SUBSTEP = 0.1  # m: a head pose's move is checked for collision in steps this long
STUCK_RADIUS = 0.9 * BODY_RADIUS  # m: a body overlapping geometry this deep is inside it (moves freely out)
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
    # Free, or already stuck inside geometry: never trap a player. "Stuck" is tested a little
    # inside the body: a sphere stopped against a wall touches it, and storing the position
    # as float32 can round it into the wall, which must not make the next push go through.
    if not collider.blocked_sphere(target, BODY_RADIUS) or collider.blocked_sphere(position, STUCK_RADIUS):
        return target
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

    The ground is the highest floor not more than :data:`MAX_STEP` above the
    feet (+y down: the smallest floor ``y >= feet - MAX_STEP``; see
    :meth:`SceneCollider.ground_y`). If the column right under the player has none
    (sparse splats), the median of the four neighbouring columns is used; where those
    have none either, the ground around the player within :data:`NEAR_GROUND_RADIUS`
    (see :func:`_ground_around`).
    """
    feet = eye_y + EYE_HEIGHT
    g = collider.ground_y(x, z, feet - MAX_STEP)
    # A slope through the columns on either side lifts a floor that lies low (its column's
    # samples sit at its downhill edge) or stands in for a missing one: else the player
    # sinks into the slope, and the next column's floor rises more than a step above the
    # feet -- a wall (issue 16: a ramp with empty rows of ground cells stopped the walk).
    across = collider.floor_across(x, z, feet, MAX_STEP, MAX_SLOPE_DEG, own=g is not None)
    if across is not None and across >= feet - MAX_STEP - 1e-6 and (g is None or across < g):
        g = across
    if g is None:
        c = collider.config.ground_cell
        near = [collider.ground_y(x + dx, z + dz, feet - MAX_STEP) for dx, dz in ((c, 0), (-c, 0), (0, c), (0, -c))]
        near = [v for v in near if v is not None]
        if near:
            g = float(np.median(near))
        else:
            g = _ground_around(x, z, feet, collider)
            if g is None:
                return None
    return g - EYE_HEIGHT


def _ground_around(x: float, z: float, feet: float, collider: "SceneCollider") -> float | None:
    """The ground under ``(x, z)`` guessed from floors around it (every ``2 * ground_cell``
    in 8 directions out to :data:`NEAR_GROUND_RADIUS`), or None where none will do.

    Where the scene holds no ground right under a player (the spawn point, wherever fly
    mode ended, a stretch whose ground splats are sparse), a standing player settles onto
    the ground around them instead of hanging in the air, and a walking one follows it. A
    walkable plane through the floors found gives the height (a slope goes on rising under
    the player, so they do not sink into it; floors known only uphill of a player crossing a
    slope say how far it falls towards them). With fewer than three floors, or none on a
    walkable plane, the floor nearest the feet of those not more than a step above them: a
    single ledge or roof 3 m away is no ground to climb towards (issue 16, city seed 1: the
    median of a building's ledge and the street lifted the player half a metre a tick, from
    one ledge in reach to the next, 4 m up the building). The result rises at most
    :data:`MAX_STEP` above ``feet``.

    Which floors: a ring ``r`` metres out is searched from as high as a
    :data:`MAX_SLOPE_DEG` slope would rise there, but of a column's floors the one nearest
    the feet is taken, and the plane is the one most floors agree with
    (:func:`_ground_plane`). Under a tree the ground is often missing from the scene
    (the canopy hid it from the keyframes) while the canopy's underside is there, 2-4 m up:
    taking those floors lifted the guess by a step, and as each guess starts from the feet
    the last one raised, the player climbed into the canopy step by step and got stuck in
    it (issue 16, forest seed 3).
    """
    cell = collider.config.ground_cell
    step = 2.0 * cell
    rings = max(1, int(NEAR_GROUND_RADIUS / step))
    rise = math.tan(math.radians(MAX_SLOPE_DEG))
    points = []
    for k in range(1, rings + 1):
        r = k * step
        for dx, dz in _RING:
            px, pz = x + r * dx, z + r * dz
            g = collider.ground_y(px, pz, feet - MAX_STEP - rise * r)  # the highest a slope reaches
            if g is not None and g < feet - MAX_STEP:  # above a step: is a floor at the feet nearer?
                level = collider.ground_y(px, pz, feet - MAX_STEP)
                if level is not None and abs(level - feet) < abs(g - feet):
                    g = level
            if g is not None:  # at its column's centre: a floor is the column's top, wherever in it the ring fell
                points.append(((math.floor(px / cell) + 0.5) * cell - x, (math.floor(pz / cell) + 0.5) * cell - z, g))
        if len(points) >= _PLANE_POINTS:
            break
    if not points:
        return None
    floors = np.asarray(points)
    g = _ground_plane(floors, feet)
    if g is None:
        reach = floors[floors[:, 2] >= feet - MAX_STEP - 1e-6, 2]  # +y down: not above a step
        if not reach.size:
            return None
        g = float(reach[np.argmin(np.abs(reach - feet))])
    return max(g, feet - MAX_STEP)


def _ground_plane(points: np.ndarray, feet: float) -> float | None:
    """Height (+y down) at the origin of the ground through ``points`` ``[P, 3]`` of
    ``(dx, dz, y)`` floors around it, or None.

    The walkable plane most floors agree with: of the planes through every three of them no
    steeper than :data:`MAX_SLOPE_DEG`, the one with the most floors within
    :data:`MAX_STEP` of it (ties: the one nearest ``feet`` at the origin), refitted by least
    squares through those. A plain least-squares fit through all of them tilts towards a few
    floors of another surface on one side (a canopy over the ground, a roof beside a street)
    and reads them as a slope. None with fewer than three floors, or where no three span a
    walkable plane (a ledge and the ground below it).
    """
    if len(points) < 3:
        return None
    i, j, k = _triples(len(points)).T
    # The plane through three points: its normal is the cross product of two edges.
    n = np.cross(points[j] - points[i], points[k] - points[i])  # [T, 3] over (dx, dz, y)
    ok = np.abs(n[:, 2]) > 1e-6  # three floors on one line (seen from above) span no plane
    n, p0 = n[ok], points[i[ok]]
    # y = y0 - (nx (dx - dx0) + nz (dz - dz0)) / ny, as height at the origin + slopes
    slope = -n[:, :2] / n[:, 2:3]  # [T, 2]
    walkable = np.hypot(slope[:, 0], slope[:, 1]) <= math.tan(math.radians(MAX_SLOPE_DEG))
    if not walkable.any():
        return None
    slope, p0 = slope[walkable], p0[walkable]
    height = p0[:, 2] - (slope * p0[:, :2]).sum(axis=1)  # [T]: at the origin
    agree = np.abs(height[:, None] + slope @ points[:, :2].T - points[:, 2]) <= MAX_STEP  # [T, P]
    count = agree.sum(axis=1)
    best = np.flatnonzero(count == count.max())
    inliers = agree[best[np.argmin(np.abs(height[best] - feet))]]
    A = np.column_stack([np.ones(int(inliers.sum())), points[inliers, 0], points[inliers, 1]])
    fit, _, rank, _ = np.linalg.lstsq(A, points[inliers, 2], rcond=None)
    return float(fit[0]) if rank == 3 else float(np.median(points[inliers, 2]))


@functools.lru_cache(maxsize=None)
def _triples(n: int) -> np.ndarray:
    """``[C(n, 3), 3]`` indices of every three of ``n`` points (at most 12: rings stop once 5 floors are found)."""
    return np.array(list(itertools.combinations(range(n), 3)), np.intp).reshape(-1, 3)


def _walk_blocked(x: float, z: float, eye_y: float, collider: "SceneCollider") -> bool:
    """Is the body (knee to head) at ``(x, z)`` with eye height ``eye_y`` inside an obstacle?"""
    return collider.body_contacts(x, z, *_body_span(eye_y), eye_y + EYE_HEIGHT, MAX_STEP, BODY_RADIUS, True)[2] > 0


def _overlap(x: float, z: float, eye_y: float, collider: "SceneCollider") -> float:
    """How deep (metres, summed over the voxel columns touched) the body at ``(x, z)`` with
    eye height ``eye_y`` is inside obstacles; 0 when free."""
    px, pz, n = collider.body_contacts(x, z, *_body_span(eye_y), eye_y + EYE_HEIGHT, MAX_STEP, BODY_RADIUS)
    return math.hypot(px, pz) + 1e-6 * n  # + n: pushes from both sides may cancel out


def _body_span(eye_y: float) -> tuple[float, float]:
    """``(y_top, y_bottom)`` of the part of the body obstacles stop: head to knee (+y down).
    Below the knee is what a step climbs."""
    return eye_y - HEAD_CLEARANCE, eye_y + EYE_HEIGHT - MAX_STEP - 1e-3


def _too_steep(x: float, z: float, ux: float, uz: float, eye_y: float, collider: "SceneCollider") -> bool:
    """Does the ground :data:`SLOPE_PROBE` metres on from ``(x, z)`` along the unit direction
    ``(ux, uz)`` rise more steeply than :data:`MAX_SLOPE_DEG` above the feet at ``eye_y``
    (which stand on the floor of the ground cell at ``(x, z)``)?

    Floors are the tops of their ground cells, so the rise is measured between the two
    cells' centres (on an even slope both tops sit on the same side of their cells). A rise
    of up to :data:`MAX_STEP` is a step and always passes; unknown ground ahead passes, and so
    does foliage (a bush is no hill: the player walks through it).
    """
    feet = eye_y + EYE_HEIGHT
    cell = collider.config.ground_cell
    px, pz = x + ux * SLOPE_PROBE, z + uz * SLOPE_PROBE
    run = cell * math.hypot(math.floor(px / cell) - math.floor(x / cell), math.floor(pz / cell) - math.floor(z / cell))
    limit = max(MAX_STEP, math.tan(math.radians(MAX_SLOPE_DEG)) * run + SLOPE_SLACK)
    ahead = collider.ground_y(px, pz, feet - limit - MAX_STEP, hard=True)
    return ahead is not None and feet - ahead > limit + 1e-6


def _walk_substep(position: np.ndarray, delta: np.ndarray, h: float, collider: "SceneCollider | None") -> np.ndarray:
    """Move horizontally by ``delta`` (sliding along what blocks it), then follow the ground."""
    if collider is None:
        return position + delta
    x, y, z = position
    # Collide from the ground stood on, not from the smoothed eye (which trails it on slopes).
    here = walk_target_eye_y(x, z, y, collider)
    ref = y if here is None else here
    length = math.hypot(delta[0], delta[2])

    def try_at(nx: float, nz: float) -> bool:
        """Can the body get to (nx, nz)? Free of obstacles at the higher of the ground here
        and there (it steps up first, or moves over and then drops), and the ground on in the
        direction walked no steeper than the limit."""
        target = walk_target_eye_y(nx, nz, ref, collider)
        eye = ref if target is None else min(target, ref)
        if _walk_blocked(nx, nz, eye, collider):
            return False
        mx, mz = nx - x, nz - z
        m = math.hypot(mx, mz)
        return m < 1e-9 or not _too_steep(nx, nz, mx / m, mz / m, eye, collider)

    depth = _overlap(x, z, ref, collider)
    if depth > 0.0:
        # Sunk into the ground (it rose where the scene had no samples yet)? Stand on the
        # floor within a step above the one the body is caught at, if the body is free there.
        up = walk_target_eye_y(x, z, ref - MAX_STEP, collider)
        if up is not None and up < ref and _overlap(x, z, up, collider) == 0.0:
            ref, depth = up, 0.0
    if length > 0.0:
        if depth > 0.0:  # inside geometry (a chunk landed on the player): never trap them, but
            # let no move go deeper -- walking out, or along, is fine; walking through is not
            for tx, tz in _out_and_along(x, z, delta[0], delta[2], ref, collider):
                if _overlap(tx, tz, ref, collider) <= depth + 1e-9:
                    x, z = tx, tz
                    break
        elif try_at(x + delta[0], z + delta[2]):
            x, z = x + delta[0], z + delta[2]
        else:
            x, z = _slide(x, z, delta[0], delta[2], ref, collider, try_at)
    target = walk_target_eye_y(x, z, min(y, ref), collider)
    if target is not None:
        y = target if abs(target - y) <= HEIGHT_SNAP else y + (target - y) * (1.0 - math.exp(-HEIGHT_RATE * h))
        y = min(max(y, target - MAX_HEIGHT_LAG), target + MAX_HEIGHT_LAG)
    return np.array([x, y, z])


def _out_and_along(x: float, z: float, dx: float, dz: float, eye_y: float, collider: "SceneCollider") -> list[tuple[float, float]]:
    """Where a body at ``(x, z)`` that overlaps an obstacle may go on a move by ``(dx, dz)``:
    the move itself, then the move less its part into the obstacle and pushed out of what
    the body overlaps now (by the overlap, and :data:`PUSH_SKIN`).

    The move alone keeps a body that a landing chunk put a few millimetres into a wall in
    place when it walks along the wall at any angle into it: each step is a little deeper, so
    none is taken (issue 16, city seed 3: stuck 6.5 mm inside a row of voxels at head height).
    """
    out = [(x + dx, z + dz)]
    px, pz, n = collider.body_contacts(x, z, *_body_span(eye_y), eye_y + EYE_HEIGHT, MAX_STEP, BODY_RADIUS)
    p = math.hypot(px, pz)
    if n and p > 1e-12:
        nx, nz = px / p, pz / p  # out of the obstacle
        into = min(dx * nx + dz * nz, 0.0)
        out.append((x + dx - into * nx + px + nx * PUSH_SKIN, z + dz - into * nz + pz + nz * PUSH_SKIN))
    return out


def _slide(x: float, z: float, dx: float, dz: float, eye_y: float, collider: "SceneCollider", free) -> tuple[float, float]:
    """Where a body at ``(x, z)`` whose move by ``(dx, dz)`` is blocked goes instead.

    The obstacle's outward normal ``n`` is the direction of the push that gets the body out
    of it at the blocked target, averaged over :data:`NORMAL_REACH` beyond the body.
    Candidates: the move projected onto the obstacle's tangent (``d - (d.n) n``), and it
    pushed out of what it overlaps; the full move pushed out (it slides around corners and
    out of notches in a wall of sparse samples); each axis alone; half the move. Of those
    ``free(x, z)`` accepts, the one that gets furthest along the tangent wins (along the
    move when it runs head-on); none: stay.
    """
    top, bottom = _body_span(eye_y)
    feet = eye_y + EYE_HEIGHT

    def push(px: float, pz: float) -> tuple[float, float, int]:
        return collider.body_contacts(px, pz, top, bottom, feet, MAX_STEP, BODY_RADIUS)

    length = math.hypot(dx, dz)
    ux, uz = dx / length, dz / length  # progress is measured along the move, or the slide
    candidates = []
    # The normal from a wider ring than the body: the wall's mean direction, not one corner's.
    wx, wz, near = collider.body_contacts(x + dx, z + dz, top, bottom, feet, MAX_STEP, BODY_RADIUS + NORMAL_REACH)
    w = math.hypot(wx, wz)
    if near and w > 1e-9:
        nx, nz = wx / w, wz / w
        into = dx * nx + dz * nz
        if into < 0.0:  # moving into the obstacle: keep only the tangential part
            tx, tz = dx - into * nx, dz - into * nz
            t = math.hypot(tx, tz)
            if t > 1e-3 * length:  # else head-on: progress stays measured along the move
                ux, uz = tx / t, tz / t
                candidates.append((x + tx, z + tz))
                candidates += _pushed_out(x + tx, z + tz, push)
    candidates += _pushed_out(x + dx, z + dz, push)
    candidates += [(x + dx, z), (x, z + dz), (x + 0.5 * dx, z + 0.5 * dz)]
    best, best_gain = (x, z), 1e-6 * length
    for cx, cz in candidates:
        gain = (cx - x) * ux + (cz - z) * uz
        if gain > best_gain and free(cx, cz):
            best, best_gain = (cx, cz), gain
    return best


def _pushed_out(x: float, z: float, push) -> list[tuple[float, float]]:
    """``(x, z)`` moved out of what the body overlaps there, up to three times (each push
    may touch something new); every stage is a candidate."""
    out = []
    for _ in range(3):
        qx, qz, touched = push(x, z)
        if not touched:
            break
        q = math.hypot(qx, qz)
        if q < 1e-12:
            break
        x, z = x + qx + qx / q * PUSH_SKIN, z + qz + qz / q * PUSH_SKIN
        out.append((x, z))
    return out
