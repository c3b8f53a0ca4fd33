"""The random-walk stuck test (issue 16): scripted players holding W in procedural worlds
never stop where the generator's own terrain is walkable.

The CI version of ``bench/walk.py`` (which runs 50 walks of 60 s): 10 shorter walks across
biomes and seeds, in simulated time (no real-time waits; generation fast-forwarded).
"""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest

from bench import walk as bench_walk
from runtime.world import Pose, World, WorldConfig
from runtime.world.generators.procedural import ProceduralGenerator
from runtime.world.generators.procedural import kernels as K
from runtime.world.movement.motion import EYE_HEIGHT, MAX_STEP, WALK_SPEED, MoveInput, step
from tests.test_motion import collider_for, ground, wall_z

pytestmark = pytest.mark.timeout(900)

# Known stuck cases, kept visible (not dropped from the list) until fixed. Generation's timing
# changes the scene (job order, lookahead), so they come and go with the machine's load.
# Forest seed 3 was one (2026-12-07: a ground guess that climbed into a canopy, keyframes from
# under the terrain, then a ~25 degree climb over rows of ground cells without a floor that sank
# the player 0.46 m): all three fixed, 0 stuck in 19 replays at midday and again on the walk4
# branch, so it is a plain case now.
KNOWN_STUCK: dict[tuple[str, int], str] = {}
WALKS = [
    pytest.param(biome, seed, marks=[pytest.mark.xfail(reason=KNOWN_STUCK[biome, seed], strict=False)])
    if (biome, seed) in KNOWN_STUCK
    else (biome, seed)
    for seed in (3, 4)
    for biome in ("forest", "meadow", "city", "desert", "snow")
]
SECONDS = 15.0


@pytest.mark.parametrize("biome, seed", WALKS)
def test_a_random_walk_never_gets_stuck_where_the_terrain_is_walkable(biome, seed):
    rng = np.random.default_rng(1000 * seed + len(biome))
    result = bench_walk.scripted_walk(biome, seed, 0, SECONDS, rng)
    assert not result.stuck_events, f"{biome} seed {seed}: stuck at (t, x, z, yaw) {result.stuck_events}"
    assert result.distance_m > 0.5 * SECONDS * bench_walk.WALK_SPEED  # it walked, mostly unhindered


def test_a_walk_leaves_no_world_behind():
    """Each walk's world is closed and collected before the walk returns: one process of
    ``bench.walk`` runs walk after walk, and closed worlds, garbage only for the cyclic
    collector, piled up until it held 8 GB (2026-12-07)."""
    def worlds() -> int:
        return sum(type(o) is World for o in gc.get_objects())

    before = worlds()
    result = bench_walk.scripted_walk("meadow", 1, 0, 1.0, np.random.default_rng(0))
    assert result.jobs > 0 and result.rss_mb > 0 and result.peak_rss_mb >= result.rss_mb
    assert worlds() == before


def test_the_truth_sees_trees_as_obstacles_and_bushes_as_none():
    """The judge itself: open ground at the spawn is walkable; walking into a tree trunk is
    not; a bush's footprint is (bushes do not block)."""
    truth = bench_walk.GeneratorTruth(bench_walk.CAPTIONS["forest"], 7)
    assert truth.walkable_ahead(0.0, 0.0, 0.0)
    kinds = {}
    for x in np.arange(-60.0, 60.0, 9.0):
        for z in np.arange(-60.0, 60.0, 9.0):
            for rocks in (False, True):
                for rec in truth._objects(float(x), float(z), rocks):
                    kinds.setdefault(int(rec[K.O_KIND]), rec)
    tree = kinds[K.KIND_ROUND_TREE] if K.KIND_ROUND_TREE in kinds else kinds[K.KIND_CONIFER]
    tx, tz = float(tree[K.O_X]), float(tree[K.O_Z])
    assert truth.body_blocked(tx, tz)
    assert not truth.walkable_ahead(tx, tz - 0.6, 0.0)  # facing +z, the trunk 0.6 m ahead
    assert K.KIND_BUSH not in kinds  # bushes are never returned as objects
    assert math.isfinite(truth.ground_y(tx, tz))


# A generated bush of each colour: the forest's leaf green and the desert's olive (green no
# more than red), which the collider took for an obstacle until its dry-foliage rule.
BUSHES = [("forest", 1), ("desert", 1)]


@pytest.mark.parametrize("biome, seed", BUSHES)
def test_a_generated_bush_is_walked_through(biome, seed):
    """Straight at the nearest of the generator's bushes (whose way is otherwise walkable, by
    the generator's truth) from 4 m away, generation fast-forwarded: the player walks through
    its middle at walking speed -- the bush is in the scene, and it is no obstacle."""
    truth = bench_walk.GeneratorTruth(bench_walk.CAPTIONS[biome], seed)
    for bx, bz, crown, height in truth.bushes_near(0.0, 0.0, 70.0):
        yaw = math.atan2(bx, bz)  # walking away from the origin, through the bush
        sx, sz = bx - 4.0 * math.sin(yaw), bz - 4.0 * math.cos(yaw)
        # the generator's terrain is walkable from 4 m before the bush to 4 m past it (bushes aside)
        if all(truth.walkable_ahead(sx + math.sin(yaw) * d, sz + math.cos(yaw) * d, yaw, 1.0) for d in range(8)):
            break
    else:
        pytest.fail(f"{biome} seed {seed}: no bush with a walkable way through it within 70 m")
    start = Pose(np.array([sx, truth.ground_y(sx, sz) - EYE_HEIGHT, sz], np.float32), yaw, 0.0)
    world = World(
        WorldConfig(f"bush-{biome}", seed=seed, caption=bench_walk.CAPTIONS[biome]), generator=ProceduralGenerator(), yield_cpu=False
    )
    try:
        path = bench_walk.walk_straight(world, start, 8.0 / WALK_SPEED)
        snap = world.scene.snapshot()
    finally:
        world.close()
    in_bush = sum(  # the bush's splats, from knee to its top
        int(((np.hypot(c.gaussians.means[:, 0] - bx, c.gaussians.means[:, 2] - bz) < 0.8 * crown)
             & (c.gaussians.means[:, 1] < truth.ground_y(bx, bz) - MAX_STEP)).sum())
        for c in snap.chunks
    )
    assert in_bush > 100, f"the bush at ({bx:.1f}, {bz:.1f}) is not in the scene"
    closest = min(float(np.hypot(p[0] - bx, p[2] - bz)) for p in path)
    walked = float(np.hypot(path[-1][0] - sx, path[-1][2] - sz))
    assert closest < 0.2  # through its middle, not round it
    assert walked > 8.0 - 0.2, f"stopped {walked:.2f} m on, at the bush ({bx:.1f}, {bz:.1f}), crown {crown:.2f} m"


# City seed 1, walk 2 of the 50 (2026-12-07): where the scene held no ground within a few
# metres of the player (a street no keyframe saw), the ground was guessed from the few floors
# further out -- their median. Crossing a slope with floors known only uphill, that put the
# feet 0.6 m over the street, then held there as the street fell away (1.75 m); beside a
# building, the median of a ledge 3 m up and the street lifted the feet half a metre a tick
# from one ledge in reach to the next, 4 m up its face.


def _walk_x(c, pose: Pose, seconds: float) -> list[np.ndarray]:
    """Hold forward for ``seconds`` at 30 Hz; the positions after each step."""
    path = []
    for _ in range(round(seconds * 30)):
        pose = step(pose, MoveInput(forward=1.0), 1 / 30, c)
        path.append(pose.position.copy())
    return path


@pytest.mark.parametrize("angle", [10.0, 20.0, 30.0])
def test_crossing_a_slope_whose_ground_is_known_only_uphill_keeps_the_feet_on_it(angle):
    """A slope rising towards -z whose splats start 1.75 m uphill of the player's line: walking
    along +x (the slope's contour), the ground is guessed from those floors alone, and the
    feet stay on the slope's surface, not at the uphill floors' height."""
    rise = math.tan(math.radians(angle))
    pts = ground(-3.0, 12.0, -4.0, -1.75)
    pts[:, 1] = EYE_HEIGHT + rise * pts[:, 2]  # +y down: higher towards -z
    c = collider_for(pts)
    path = _walk_x(c, Pose(np.zeros(3, np.float32), math.pi / 2, 0.0), 4.0)
    # the surface under the line z = 0 is at eye height 0; the eye goes no more than a little above it
    assert min(float(p[1]) for p in path) > -0.25, f"{angle} deg: the eye rose {-min(p[1] for p in path):.2f} m"
    assert path[-1][0] > 4.0 * WALK_SPEED - 0.1


def test_a_ledge_beside_a_street_with_no_ground_known_is_not_climbed():
    """No ground near the player; 3 m to one side a ledge 3.4 m up a building's face (its top
    and a sparse face below it), 3 m to the other the street's floor. Walking on along the
    street, the feet keep to the street's height."""
    ledge = ground(-3.0, 12.0, -3.4, -3.0, y=EYE_HEIGHT - 3.4)
    face = np.concatenate([ground(-3.0, 12.0, -3.1, -3.0, y=EYE_HEIGHT - h) for h in np.arange(0.5, 3.4, 0.5)])
    street = ground(-3.0, 12.0, 3.0, 3.4)
    c = collider_for(ledge, face, street)
    path = _walk_x(c, Pose(np.zeros(3, np.float32), math.pi / 2, 0.0), 4.0)
    assert min(float(p[1]) for p in path) > -0.25, f"the eye rose {-min(p[1] for p in path):.2f} m"


@pytest.mark.parametrize("into_deg", [0.0, 6.0, 30.0])
def test_a_body_a_few_millimetres_into_a_wall_walks_along_it(into_deg):
    """City seed 3, walk 12 of the 50 (2026-12-07): a chunk landed 6.5 mm into the body, and
    the player, walking along the wall at 6 degrees into it, stayed put for good -- inside
    geometry a move may not go deeper, and every step along it was a little deeper. Now it
    walks on along the wall, and not through it."""
    c = collider_for(ground(-2.0, 12.0, -3.0, 3.0), wall_z(1.0, -2.0, 12.0, EYE_HEIGHT - 2.2, EYE_HEIGHT))
    start = Pose(np.array([0.0, 0.0, 1.0 - 0.3 + 0.005], np.float32), math.pi / 2 - math.radians(into_deg), 0.0)
    path = _walk_x(c, start, 2.0)
    assert path[-1][0] > 2.0 * WALK_SPEED * math.cos(math.radians(into_deg)) - 0.3
    assert max(float(p[2]) for p in path) < 1.0 - 0.25  # still on its side of the wall
