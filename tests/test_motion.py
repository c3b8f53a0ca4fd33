"""Movement with collision against Gaussian scenes built by hand (no generator needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.world.camera import Pose
from runtime.world.gaussians import Gaussians
from runtime.world.generators.procedural.biomes import BIOMES
from runtime.world.movement.collision import ColliderConfig, SceneCollider, foliage
from runtime.world.movement.motion import EYE_HEIGHT, FLY_SPEED, MAX_STEP, RUN_SPEED, WALK_SPEED, MoveInput, advance, head_step, step
from runtime.world.scene import ChunkSource, Scene


def splats(points: np.ndarray, opacity: float = 0.95, sigma: float = 0.05, color=(0.5, 0.5, 0.5)) -> Gaussians:
    """Small opaque Gaussians at ``points`` ``[P, 3]`` (grey unless ``color`` says otherwise)."""
    n = len(points)
    quats = np.zeros((n, 4), np.float32)
    quats[:, 0] = 1.0
    logit = math.log(opacity / (1 - opacity))
    colors = np.broadcast_to(np.asarray(color, np.float32), (n, 3))
    return Gaussians(points, quats, np.full((n, 3), math.log(sigma)), np.full(n, logit), colors)


def ground(x0, x1, z0, z1, y=EYE_HEIGHT, spacing=0.1) -> np.ndarray:
    xs, zs = np.meshgrid(np.arange(x0, x1, spacing), np.arange(z0, z1, spacing))
    return np.stack([xs.ravel(), np.full(xs.size, y), zs.ravel()], 1)


def wall_z(z, x0, x1, y_top, y_bottom, spacing=0.1) -> np.ndarray:
    """A vertical wall in the plane z = const from y_top (higher) to y_bottom."""
    xs, ys = np.meshgrid(np.arange(x0, x1, spacing), np.arange(y_top, y_bottom, spacing))
    return np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, z)], 1)


def box(x0, x1, z0, z1, top_y, bottom_y=EYE_HEIGHT, spacing=0.1) -> np.ndarray:
    """A solid block (top face and four sides) standing on the ground."""
    parts = [ground(x0, x1, z0, z1, y=top_y, spacing=spacing)]
    ys = np.arange(top_y, bottom_y + 1e-6, spacing)
    for z in (z0, z1):
        xs, yy = np.meshgrid(np.arange(x0, x1, spacing), ys)
        parts.append(np.stack([xs.ravel(), yy.ravel(), np.full(xs.size, z)], 1))
    for x in (x0, x1):
        zs, yy = np.meshgrid(np.arange(z0, z1, spacing), ys)
        parts.append(np.stack([np.full(zs.size, x), yy.ravel(), zs.ravel()], 1))
    return np.concatenate(parts)


def collider_for(*point_sets) -> SceneCollider:
    """A collider over grey splats at each ``[P, 3]`` point set, or ``(points, rgb)`` pairs."""
    scene = Scene()
    for pts in point_sets:
        pts, color = pts if isinstance(pts, tuple) else (pts, (0.5, 0.5, 0.5))
        scene.append(splats(pts, color=color), ChunkSource())
    c = SceneCollider()
    c.sync(scene.snapshot())
    return c


def walk(pose: Pose, move: MoveInput, seconds: float, collider, dt: float = 1 / 30) -> Pose:
    for _ in range(round(seconds / dt)):
        pose = step(pose, move, dt, collider)
    return pose


def test_flat_ground_keeps_eye_height():
    c = collider_for(ground(-5, 5, -5, 25))
    pose = walk(Pose(), MoveInput(forward=1.0), 4.0, c)
    assert pose.position[2] == pytest.approx(4 * WALK_SPEED, abs=0.05)
    feet = c.ground_y(float(pose.position[0]), float(pose.position[2]), float(pose.position[1]))
    assert feet - pose.position[1] == pytest.approx(EYE_HEIGHT, abs=0.06)
    assert pose.position[1] == pytest.approx(0.0, abs=0.06)


def test_wall_stops_the_walk_and_sliding_keeps_the_parallel_motion():
    c = collider_for(ground(-5, 5, -5, 10), wall_z(3.0, -5, 5, -1.0, EYE_HEIGHT))
    pose = walk(Pose(), MoveInput(forward=1.0, run=True), 3.0, c)
    assert 2.2 < pose.position[2] < 3.0  # stopped in front of the wall, never through it
    # Walking diagonally into the wall slides along it (x keeps changing, z does not pass).
    slid = walk(pose, MoveInput(forward=1.0, right=1.0), 2.0, c)
    assert slid.position[0] > pose.position[0] + 1.0
    assert slid.position[2] < 3.0


def test_small_steps_are_climbed_and_big_ones_are_walls():
    step_top = EYE_HEIGHT - 0.3  # a 0.3 m step, +y down
    c = collider_for(ground(-5, 5, -5, 2), box(-5, 5, 2.0, 8.0, step_top))
    pose = walk(Pose(), MoveInput(forward=1.0), 4.0, c)
    assert pose.position[2] > 4.0
    assert pose.position[1] == pytest.approx(-0.3, abs=0.06)  # eye rose by the step height

    c = collider_for(ground(-5, 5, -5, 2), box(-5, 5, 2.0, 8.0, EYE_HEIGHT - 1.0))
    pose = walk(Pose(), MoveInput(forward=1.0), 4.0, c)
    assert pose.position[2] < 2.0
    assert pose.position[1] == pytest.approx(0.0, abs=0.06)


def test_unknown_ground_keeps_height_and_falls_to_lower_ground():
    pose = walk(Pose(np.array([0.0, -3.0, 0.0])), MoveInput(forward=1.0), 1.0, collider_for())
    assert pose.position[1] == pytest.approx(-3.0)
    # Walking off a ledge onto ground 2 m lower ends at eye height above the lower ground.
    c = collider_for(ground(-5, 5, -5, 2), ground(-5, 5, 2, 10, y=EYE_HEIGHT + 2.0))
    pose = walk(Pose(), MoveInput(forward=1.0), 3.0, c)
    assert pose.position[1] == pytest.approx(2.0, abs=0.06)


def test_standing_player_settles_after_fly_mode_where_no_ground_is_right_below():
    """Fly up from a spot with no ground samples under it (like the spawn point, whose ground
    starts a few metres ahead), end fly mode, stand still: the player comes down onto the
    ground around them rather than hanging in the air until they walk."""
    c = collider_for(ground(-5, 5, 2, 8))  # known ground from z = 2 on; none under the origin
    flown = walk(Pose(), MoveInput(up=1.0, fly=True), 1.0, c)
    assert flown.position[1] == pytest.approx(-FLY_SPEED, abs=0.01)
    landed = walk(flown, MoveInput(), 1.0, c)  # fly off, no keys held
    assert landed.position[1] == pytest.approx(0.0, abs=0.01)
    assert landed.position[2] == pytest.approx(0.0)  # it came down, it did not move


def test_a_standing_player_settles_in_a_few_frames_and_then_stays_exactly_put():
    """The eye follows the ground's height with an exponential ease, which has no end: a
    player standing 3 cm above where the ground puts the eye (a chunk landed under them)
    kept moving by ever smaller amounts, and every such step drew their view again (the
    picture cache keys on the exact pose: 40 redraws seen after a chunk that moved the
    ground by 1e-16 m). Once within 0.1 mm the eye takes the ground's height."""
    c = collider_for(ground(-5, 5, -5, 5))
    pose = walk(Pose(np.array([0.0, -0.03, 0.0])), MoveInput(), 1.0, c)
    assert pose.position[1] == pytest.approx(0.0, abs=0.01)
    again = step(pose, MoveInput(), 1 / 30, c)
    assert again.position.tobytes() == pose.position.tobytes()


def test_fly_mode_moves_along_view_and_collides_with_voxels():
    pose = step(Pose(pitch=math.radians(30)), MoveInput(forward=1.0, fly=True), 0.5, None)
    expected = 0.5 * FLY_SPEED * np.array([0.0, -math.sin(math.radians(30)), math.cos(math.radians(30))])
    np.testing.assert_allclose(pose.position, expected, atol=1e-4)
    up = step(Pose(), MoveInput(up=1.0, fly=True), 0.5, None)
    assert up.position[1] == pytest.approx(-0.5 * FLY_SPEED)  # up is -y
    c = collider_for(wall_z(3.0, -5, 5, -5.0, 5.0))
    pose = walk(Pose(), MoveInput(forward=1.0, fly=True), 2.0, c)
    assert 2.0 < pose.position[2] < 3.0


def ramp(angle_deg: float, z0: float = 2.0, z1: float = 8.0, spacing: float = 0.1, z_end: float = 12.0) -> np.ndarray:
    """Ground rising along +z at ``angle_deg`` from ``z0`` (flat before it, flat after ``z1``
    up to ``z_end``)."""
    xs, zs = np.meshgrid(np.arange(-5, 5, spacing), np.arange(-5, z_end, spacing))
    rise = math.tan(math.radians(angle_deg)) * np.clip(zs - z0, 0.0, z1 - z0)
    return np.stack([xs.ravel(), (EYE_HEIGHT - rise).ravel(), zs.ravel()], 1)


def test_blocked_move_slides_along_the_wall_instead_of_stopping():
    """Walking into a wall at 30 degrees off its normal keeps the part of the move along it:
    the player slides at about sin(30 deg) of walking speed and never crosses the wall."""
    c = collider_for(ground(-10, 10, -5, 10), wall_z(3.0, -10, 10, -1.0, EYE_HEIGHT))
    at_wall = walk(Pose(), MoveInput(forward=1.0), 2.0, c)
    assert 2.5 < at_wall.position[2] < 3.0
    yaw = math.radians(30.0)  # 30 degrees to the right of +z: mostly into the wall
    moved = advance(Pose(at_wall.position, yaw), MoveInput(forward=1.0), 1 / 30, c)
    slid = walk(Pose(at_wall.position, yaw), MoveInput(forward=1.0), 2.0, c)
    along = slid.position[0] - at_wall.position[0]
    assert along == pytest.approx(2.0 * WALK_SPEED * math.sin(yaw), rel=0.15)
    assert slid.position[2] < 3.0
    assert not moved.blocked  # sliding is moving
    assert advance(at_wall, MoveInput(forward=1.0), 1 / 30, c).blocked  # head-on is blocked


def test_a_body_touching_a_wall_with_gaps_still_slides_along_it():
    """A wall of splats with holes between its voxel columns (a far wall's sparse samples):
    a player pressed into a hole still walks on along the wall."""
    wall = wall_z(3.0, -10, 10, -1.0, EYE_HEIGHT, spacing=0.1)
    wall = wall[(np.floor(wall[:, 0] / 0.25) % 3) != 0]  # every third voxel column empty
    c = collider_for(ground(-10, 10, -5, 10), wall)
    pose = walk(Pose(yaw=math.radians(10.0)), MoveInput(forward=1.0), 3.0, c)
    start_x = pose.position[0]
    pose = walk(pose, MoveInput(forward=1.0, yaw_delta=0.0), 2.0, c)
    assert pose.position[0] - start_x > 0.2
    assert pose.position[2] < 3.0


def test_walking_into_a_wall_never_climbs_it():
    """A wall's face is one run of surfaces: its middle is no floor, so pressing into it
    does not lift the player rung by rung."""
    c = collider_for(ground(-10, 10, -5, 10), box(-10, 10, 3.0, 4.0, EYE_HEIGHT - 3.0))
    pose = walk(Pose(yaw=math.radians(20.0)), MoveInput(forward=1.0, run=True), 4.0, c)
    assert pose.position[1] == pytest.approx(0.0, abs=0.06)
    assert pose.position[2] < 3.0


@pytest.mark.parametrize("angle", [20.0, 30.0, 40.0])
def test_slopes_up_to_40_degrees_are_walkable(angle):
    c = collider_for(ramp(angle, z1=5.0))
    pose = walk(Pose(), MoveInput(forward=1.0), 6.0, c)
    assert pose.position[2] > 6.0  # over the top of the ramp
    top = math.tan(math.radians(angle)) * 3.0
    assert pose.position[1] == pytest.approx(-top, abs=0.1)


@pytest.mark.parametrize("angle", [30.0, 40.0])
def test_a_long_slope_is_walkable_all_the_way_up(angle):
    """A 10 m ramp: each column's floor lands on its own quantum of height, and one sitting just
    under a voxel's edge used to leave its top samples in the voxel above -- a wall at the knee
    (30 degrees stopped 3 m up, 40 degrees 5.5 m up)."""
    c = collider_for(ramp(angle, z0=2.0, z1=12.0, z_end=20.0))
    pose = walk(Pose(), MoveInput(forward=1.0), 10.0, c)
    assert pose.position[2] > 12.0
    assert pose.position[1] == pytest.approx(-math.tan(math.radians(angle)) * 10.0, abs=0.2)


SINK_BOUND = 0.15  # m: deepest the eye may go under the ramp's surface (a dense ramp: <= 0.1, the eye trails the climb)


@pytest.mark.parametrize("period", [1.0, 1.5, 2.0])
@pytest.mark.parametrize("angle", [20.0, 30.0, 40.0])
def test_a_slope_whose_ground_has_empty_rows_is_still_walkable(angle, period):
    """A ramp whose ground splats leave one 0.5 m row of cells empty every ``period`` metres
    (sparse keyframe samples, a canopy's shadow; issue 16, forest seed 3): walkable all the
    way up, and the player never sinks into it. The cell after an empty row holds a sliver of
    samples at its downhill edge, whose floor lies up to a cell's rise under the slope; the
    player used to stand on it, sink 0.2-0.46 m, and meet the next cell's floor more than a
    step above the feet -- a wall."""
    pts = ramp(angle, z0=2.0, z1=12.0, z_end=20.0)
    c = collider_for(pts[(pts[:, 2] < 2.0) | ((pts[:, 2] - 2.0) % period >= 0.5)])
    pose, sunk = Pose(), 0.0
    for _ in range(300):
        pose = step(pose, MoveInput(forward=1.0), 1 / 30, c)
        ramp_y = -math.tan(math.radians(angle)) * min(max(float(pose.position[2]) - 2.0, 0.0), 10.0)
        sunk = max(sunk, float(pose.position[1]) - ramp_y)
    assert pose.position[2] > 12.0
    assert pose.position[1] == pytest.approx(-math.tan(math.radians(angle)) * 10.0, abs=0.2)
    assert sunk < SINK_BOUND


@pytest.mark.parametrize("height", [0.15, 0.4, 0.8])
def test_walking_along_a_kerb_or_low_wall_keeps_the_eye_on_the_flat_ground(height):
    """The ground either side of an empty or sparse row is bridged only where a slope goes on
    rising: flat ground beside a kerb, a step or a low wall keeps its own height."""
    c = collider_for(ground(-10, 10, -5, 10), box(-10, 10, 0.5, 3.0, EYE_HEIGHT - height))
    pose, highest = Pose(yaw=math.pi / 2), 0.0
    for _ in range(120):  # along +x, the kerb's face 0.2-0.45 m beside the body's axis
        pose = step(pose, MoveInput(forward=1.0), 1 / 30, c)
        highest = max(highest, -float(pose.position[1]))
    assert pose.position[0] > 5.0
    assert highest < 0.03


def rock_face(z0: float, face: float, slope_deg: float, spacing: float = 0.08) -> np.ndarray:
    """A rock across the walk on ground falling along +z at ``slope_deg``: a vertical face at
    ``z0``, ``face`` metres over the ground at its foot, whose top rises 0.4 m more over its
    first metre (a boulder's rounded top), then stays level for 2 m."""
    ground_y = EYE_HEIGHT + math.tan(math.radians(slope_deg)) * z0
    xs, zs = np.meshgrid(np.arange(-6.0, 6.0, spacing), np.arange(z0, z0 + 3.0, spacing))
    top = ground_y - face - 0.4 * np.minimum(zs - z0, 1.0)
    fx, fy = np.meshgrid(np.arange(-6.0, 6.0, spacing), np.arange(ground_y - face, ground_y, spacing))
    return np.concatenate([np.stack([xs.ravel(), top.ravel(), zs.ravel()], 1), np.stack([fx.ravel(), fy.ravel(), np.full(fx.size, z0)], 1)])


@pytest.mark.parametrize("slope, z0", [(0.0, 3.2), (15.0, 3.0), (15.0, 3.2)])
def test_a_rock_face_taller_than_a_step_on_a_slope_is_slid_along_not_climbed(slope, z0):
    """Walking down a slope into a boulder's 0.8 m face at 0.5 rad off its normal: the player
    slides along its foot. The line from the boulder's top to the slope behind the player
    lifted the player's floor by up to half a metre (``floor_across``), which put the top
    within a step: over the boulder (issue 16, snow seed 1, walk 4: 1.83 m over the terrain)."""
    t = math.tan(math.radians(slope))
    xs, zs = np.meshgrid(np.arange(-6.0, 6.0, 0.1), np.arange(-4.0, z0, 0.1))
    hill = np.stack([xs.ravel(), (EYE_HEIGHT + t * zs).ravel(), zs.ravel()], 1)
    c = collider_for(hill, (rock_face(z0, 0.8, slope), ROCK_GREY))
    pose, highest = Pose(yaw=0.5), 0.0
    for _ in range(150):
        pose = step(pose, MoveInput(forward=1.0), 1 / 30, c)
        highest = max(highest, t * min(float(pose.position[2]), z0) - float(pose.position[1]))
    assert pose.position[2] < z0  # never on or over the rock
    assert highest < 0.25  # +y down: eye height over the slope, give or take the column tops
    assert pose.position[0] > 3.0  # slid along the face (5 s at 1.5 m/s, sin(0.5) of it across)


@pytest.mark.parametrize("angle", [55.0, 70.0])
def test_steeper_slopes_stop_the_walk(angle):
    c = collider_for(ramp(angle, z1=5.0))
    pose = walk(Pose(), MoveInput(forward=1.0), 6.0, c)
    assert pose.position[2] < 2.6
    assert pose.position[1] > -0.6  # climbed at most about a step


@pytest.mark.parametrize("height, climbs", [(0.25, True), (MAX_STEP, True), (0.7, False)])
def test_steps_up_to_half_a_metre_are_climbed(height, climbs):
    c = collider_for(ground(-5, 5, -5, 2), box(-5, 5, 2.0, 8.0, EYE_HEIGHT - height))
    pose = walk(Pose(), MoveInput(forward=1.0), 4.0, c)
    if climbs:
        assert pose.position[2] > 4.0
        assert pose.position[1] == pytest.approx(-height, abs=0.06)
    else:
        assert pose.position[2] < 2.0
        assert pose.position[1] == pytest.approx(0.0, abs=0.06)


def dome(cx: float, cz: float, radius: float, height: float, spacing: float = 0.08) -> np.ndarray:
    """The surface of a half-ellipsoid standing on the ground at ``(cx, cz)`` (a bush, a boulder)."""
    th, ph = np.meshgrid(np.arange(0, 2 * math.pi, spacing / radius), np.arange(0, math.pi / 2, spacing / height))
    x = cx + radius * np.cos(ph) * np.cos(th)
    z = cz + radius * np.cos(ph) * np.sin(th)
    y = EYE_HEIGHT - height * np.sin(ph)
    return np.stack([x.ravel(), y.ravel(), z.ravel()], 1)


BUSH_GREEN = (0.22, 0.42, 0.12)  # the procedural meadow's leaves
BUSH_OLIVE = (0.50, 0.51, 0.27)  # the procedural desert's dry bushes, as lit (green no more than red)
ROCK_GREY = (0.5, 0.48, 0.45)
ROCK_RED = (0.66, 0.40, 0.26)  # the desert's rock
SAND = (0.86, 0.69, 0.45)


@pytest.mark.parametrize("leaves, rock", [(BUSH_GREEN, ROCK_GREY), (BUSH_OLIVE, ROCK_RED), (BUSH_OLIVE, SAND)])
def test_a_bush_does_not_block_but_a_boulder_of_its_shape_does(leaves, rock):
    """Walking head-on into a 1.6 m tall, 2.4 m wide bush goes through it (foliage is not an
    obstacle, and its top is no hill); the same shape in rock's colour stops the walk."""
    bush = collider_for(ground(-5, 5, -5, 10), (dome(0.0, 3.0, 1.2, 1.6), leaves))
    pose = walk(Pose(), MoveInput(forward=1.0), 5.0, bush)
    assert pose.position[2] > 5.0  # out the far side
    assert pose.position[1] == pytest.approx(0.0, abs=0.1)  # walked through, not over
    rock = collider_for(ground(-5, 5, -5, 10), (dome(0.0, 3.0, 1.2, 1.6), rock))
    pose = walk(Pose(), MoveInput(forward=1.0), 5.0, rock)
    assert pose.position[2] < 2.0


def test_foliage_is_every_biome_s_bush_leaves_and_none_of_its_ground_rock_wood_or_walls():
    """The colour rule against the procedural biomes' palettes, lit from dark to bright: the
    leaves of every biome with bushes are foliage; ground, rock, trunks, walls, roofs, roads
    and water never are (a player must not walk through them)."""
    shades = np.linspace(0.6, 1.3, 8)[:, None]
    for biome in BIOMES.values():
        if biome.mix_bush > 0:
            for name in ("leaf_a", "leaf_b"):
                lit = np.clip(np.asarray(getattr(biome, name)) * shades, 0.0, 1.0)
                assert foliage(lit, ColliderConfig().foliage_ratio).all(), (biome.name, name)
        for name in ("dirt", "rock", "sand", "snow", "trunk", "wall_a", "wall_b", "roof", "street", "water_shallow", "water_deep"):
            lit = np.clip(np.asarray(getattr(biome, name)) * shades, 0.0, 1.0)
            assert not foliage(lit, ColliderConfig().foliage_ratio).any(), (biome.name, name)


def test_a_low_bush_is_stepped_over_and_grass_on_a_slope_still_walks():
    c = collider_for((ramp(30.0, z1=5.0), BUSH_GREEN), (dome(0.0, 1.0, 0.5, 0.3), BUSH_GREEN))
    pose = walk(Pose(), MoveInput(forward=1.0), 6.0, c)
    assert pose.position[2] > 6.0
    assert pose.position[1] == pytest.approx(-math.tan(math.radians(30.0)) * 3.0, abs=0.1)


def test_flying_down_stops_at_grass_and_says_blocked():
    """Foliage is no obstacle to walking, but a flying player still lands on grass."""
    c = collider_for((ground(-5, 5, -5, 5), BUSH_GREEN))
    pose = walk(Pose(), MoveInput(up=-1.0, fly=True), 1.0, c)
    assert 1.0 < pose.position[1] < EYE_HEIGHT  # +y down: above the grass
    assert advance(pose, MoveInput(up=-1.0, fly=True), 1 / 30, c).blocked


CANOPY_GREEN = (0.08, 0.19, 0.09)  # the procedural forest's needles
CANOPY_DARK = (0.06, 0.12, 0.10)  # coarse splats of a canopy's shadowed underside: not foliage


def test_a_hole_in_the_ground_under_a_canopy_is_walked_through_level():
    """Under a tree the scene often has no ground (the canopy hid it from the keyframes) but
    has the canopy's underside 2.7-3.7 m up. Walking through such a 5 m hole keeps the eye at
    eye height over the ground around it: the canopy's floors are not taken for the ground
    (they lifted the player step by step into the canopy, where its dark splats stuck them;
    issue 16, forest seed 3)."""
    g = ground(-8, 8, -5, 14)
    hole = (np.abs(g[:, 0]) < 2.6) & (np.abs(g[:, 2] - 5.0) < 2.6)
    canopy = np.concatenate([ground(-5, 0.5, 1.0, 9.0, y=EYE_HEIGHT - h) for h in (2.7, 3.2, 3.7)])
    underside = ground(-5, 0.5, 1.0, 9.0, y=EYE_HEIGHT - 2.65, spacing=0.3)
    c = collider_for(g[~hole], (canopy, CANOPY_GREEN), (underside, CANOPY_DARK))
    pose, heights = Pose(), []
    for _ in range(round(8.0 * 30)):
        pose = step(pose, MoveInput(forward=1.0), 1 / 30, c)
        heights.append(float(pose.position[1]))
    assert pose.position[2] > 8.0 * WALK_SPEED - 0.1  # never slowed down
    assert max(abs(h) for h in heights) < 0.1  # level all the way (+y down; 0 is eye height)


def test_look_deltas_and_pitch_clamp():
    pose = step(Pose(), MoveInput(yaw_delta=math.pi / 2, pitch_delta=3.0), 0.1, None)
    assert pose.yaw == pytest.approx(math.pi / 2)
    assert pose.pitch == pytest.approx(math.radians(89.0))
    moved = step(Pose(yaw=math.pi / 2), MoveInput(forward=1.0, run=True), 1.0, None)
    np.testing.assert_allclose(moved.position, [RUN_SPEED, 0.0, 0.0], atol=1e-4)  # yaw +90 deg faces +x


@pytest.mark.parametrize("field", ["forward", "right", "up", "yaw_delta", "pitch_delta"])
def test_non_finite_input_raises_naming_the_field(field):
    with pytest.raises(ValueError, match=field):
        step(Pose(), MoveInput(**{field: float("nan")}), 0.1, None)


def test_bad_dt_and_pose_raise():
    with pytest.raises(ValueError, match="dt"):
        step(Pose(), MoveInput(), float("inf"), None)
    with pytest.raises(ValueError, match="dt"):
        step(Pose(), MoveInput(), -0.1, None)
    with pytest.raises(ValueError, match="position"):
        step(Pose(np.array([np.nan, 0, 0])), MoveInput(), 0.1, None)


def test_collider_caches_per_chunk_and_grows_incrementally():
    scene = Scene()
    scene.append(splats(ground(-2, 2, -2, 2)), ChunkSource())
    c = SceneCollider()
    c.sync(scene.snapshot())
    first = c.num_voxels
    scene.append(splats(wall_z(1.0, -2, 2, 0.0, EYE_HEIGHT)), ChunkSource())
    c.sync(scene.snapshot())
    assert c.num_voxels > first
    assert set(c._per_chunk) == {0, 1}


def test_gaussians_a_refinement_retires_no_longer_collide():
    """Refinement takes Gaussians out of a chunk, which keeps its id: the collider must drop
    them (it cached collision data by chunk id, and players walked on retired splats)."""
    scene = Scene()
    floor = ground(-3, 3, -3, 6)
    slab = ground(-3, 3, 1.0, 6.0, y=EYE_HEIGHT - 0.4)  # a 0.4 m ledge ahead, retired below
    first = scene.append(splats(np.concatenate([floor, slab])), ChunkSource())[0]
    c = SceneCollider()
    c.sync(scene.snapshot())
    pose = walk(Pose(), MoveInput(forward=1.0), 2.0, c)
    assert pose.position[1] == pytest.approx(-0.4, abs=0.06)  # up on the ledge
    retire = np.arange(len(first.gaussians)) >= len(floor)
    scene.append(splats(ground(-3, 3, 6, 7)), ChunkSource(), retire={first.id: retire})
    assert [len(ch.gaussians) for ch in scene.snapshot().chunks] == [len(floor), len(ground(-3, 3, 6, 7))]
    c.sync(scene.snapshot())
    pose = walk(pose, MoveInput(forward=1.0), 1.0, c)
    assert pose.position[1] == pytest.approx(0.0, abs=0.06)  # back on the floor: the ledge is gone


def test_vr_head_pose_is_stopped_by_walls_and_keeps_its_orientation():
    c = collider_for(ground(-5, 5, -5, 10), wall_z(3.0, -5, 5, -1.0, EYE_HEIGHT))
    start = Pose(np.array([0.0, 0.0, 1.0]))
    # A headset 4 m ahead, through the wall: the head stops in front of it, turned as asked.
    moved = head_step(start, Pose(np.array([0.5, 0.0, 5.0]), yaw=0.7, pitch=-0.2), c)
    assert moved.position[2] < 3.0 and moved.position[0] > 0.05  # slid along the wall
    assert (moved.yaw, moved.pitch) == (pytest.approx(0.7), pytest.approx(-0.2))
    # In free space it goes where the headset is, up and down too (no gravity).
    free = head_step(start, Pose(np.array([1.0, -0.5, 0.5])), c)
    assert np.allclose(free.position, (1.0, -0.5, 0.5), atol=1e-5)
    assert np.allclose(head_step(start, Pose(np.array([0.0, 0.0, 9.0])), None).position, (0, 0, 9))
