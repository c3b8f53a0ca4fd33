"""The World facade with real parts: procedural generator, CPU renderer, frame memory, reconstruction."""

from __future__ import annotations

import json
import math
import os
import threading
import time

import numpy as np
import pytest

from runtime.world import (
    ChunkAdded,
    ChunkRequested,
    JobFailed,
    MoveInput,
    PlayerState,
    Pose,
    World,
    WorldConfig,
)
from bench.compare import psnr
from runtime.world.frontier.coverage import GENERATED, VISITED
from runtime.world.gaussians import Gaussians
from runtime.world.generators.procedural import ProceduralGenerator
from runtime.world.movement.motion import EYE_HEIGHT, walk_target_eye_y
from runtime.world.render.cpu import CpuRenderer
from runtime.world.revisit.seen_masks import capped
from runtime.world.scene import ChunkSource

VIEW_FOV = math.radians(60.0)


@pytest.fixture(scope="module")
def renderer():
    return CpuRenderer()


@pytest.fixture(scope="module")
def generator():
    g = ProceduralGenerator()
    g.warmup()
    return g


def make_world(generator, renderer, **overrides) -> World:
    return World(WorldConfig("test", seed=3, **overrides), generator=generator, renderer=renderer)


@pytest.fixture(scope="module")
def booted(generator, renderer):
    """A world whose spawn ring has been generated (shared by read-only tests)."""
    world = make_world(generator, renderer)
    jobs = world.update([PlayerState("a", world.spawn_pose())])
    assert world.wait_idle(120)
    yield world, jobs
    world.close()


def walk_to(world: World, pose: Pose, target_z: float, speed: float, player: str = "a", dt: float = 0.25):
    """Scripted straight walk along z (fast-forwarded: generation finishes between steps).

    Returns the final pose and ``(job, player_z_when_requested)`` for every job scheduled.
    """
    jobs = []
    direction = 1.0 if target_z > pose.position[2] else -1.0
    velocity = np.array([0.0, 0.0, direction * speed], np.float32)
    yaw = 0.0 if direction > 0 else math.pi
    while (target_z - pose.position[2]) * direction > 0:
        pos = pose.position.copy()
        pos[2] += direction * min(speed * dt, abs(target_z - pos[2]))
        eye = walk_target_eye_y(float(pos[0]), float(pos[2]), float(pos[1]), world.collider)
        if eye is not None:  # follow the ground the scene knows (unknown: keep height)
            pos[1] = eye
        pose = Pose(pos, yaw, 0.0)
        for job in world.update([PlayerState(player, pose, velocity, VIEW_FOV)]):
            jobs.append((job, float(pos[2])))
        world.wait_idle(60)
    return pose, jobs


def test_bootstrap_ring_covers_all_round_view_direction_first(booted):
    world, jobs = booted
    assert 4 <= len(jobs) <= 6
    yaws = [Pose.from_c2w(j.cameras.c2w[0]).yaw for j in jobs]
    assert abs(yaws[0]) < 1e-4  # the player's view direction first
    headings = sorted(round(math.degrees(y)) % 360 for y in yaws)
    assert headings == [0, 90, 180, 270]
    snap = world.scene.snapshot()
    assert len(snap.chunks) >= 4 and snap.num_gaussians > 1000
    assert len(world.memory) == len(jobs)
    assert world.sky_directions.marked_fraction > 0.05
    assert world.explored.state_at(0.0, 0.0) == VISITED
    assert world.explored.state_at(6.0, 6.0) == GENERATED
    # The spawn is covered now: asking again schedules nothing.
    assert world.update([PlayerState("a", world.spawn_pose())]) == []


class _SlowToReturn(World):
    """A world whose worker pauses between landing a job and returning from ``apply``: the
    pause load gives a worker thread there."""

    def apply(self, job, result):
        chunks = super().apply(job, result)
        time.sleep(0.5)
        return chunks


def test_wait_idle_returns_with_every_landed_job_counted(generator, renderer):
    """The runner used to count ``jobs_done`` after ``apply`` returned, so ``wait_idle`` could
    return (the job off the queue) before the count rose; it is counted with the job's finish."""
    world = _SlowToReturn(WorldConfig("test", seed=3), generator=generator, renderer=renderer)
    try:
        jobs = world.update([PlayerState("a", world.spawn_pose())])
        assert jobs and world.wait_idle(120)
        stats = world.stats
        assert stats["jobs_failed"] == 0
        assert stats["jobs_done"] + stats["jobs_skipped"] == sum(j.state == "done" for j in jobs) == len(jobs), stats
    finally:
        world.close()


class _PolicyRecorder(ProceduralGenerator):
    """The procedural generator, noting the scheduling class and nice value it ran at."""

    def generate(self, request, progress, cancel):
        self.ran_at = (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return super().generate(request, progress, cancel)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="thread priorities are Linux's")
def test_a_world_that_is_waited_for_need_not_yield_the_cpu(renderer):
    """``yield_cpu=False`` (the warm-up, fast-forwarded benches): the world's workers keep the
    priority of the thread that starts them, not SCHED_IDLE, which a busy machine starves."""
    generator = _PolicyRecorder()
    config = WorldConfig("waited", seed=3, ring_yaws=(0.0,), keyframe_width=64, keyframe_height=36)
    with World(config, generator=generator, renderer=renderer, yield_cpu=False) as world:
        world.update([PlayerState("a", world.spawn_pose())])
        assert world.wait_idle(120)
    assert generator.ran_at == (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))


def test_walking_inside_explored_space_fills_near_holes_and_settles(generator, renderer):
    """Back and forth over 3 m, turning round at each end, looking around on the way: the
    first passes may fill holes the bootstrap ring left near the player (few jobs, none
    refining); walking it again soon schedules nothing (no loops)."""
    world = make_world(generator, renderer)
    world.update([PlayerState("a", world.spawn_pose())])
    assert world.wait_idle(120)

    def walk() -> list:
        made = []
        pose = world.spawn_pose()
        for leg in range(4):
            direction = 1.0 if leg % 2 == 0 else -1.0
            for k in range(12):
                pos = pose.position.copy()
                pos[2] += direction * 0.25
                pose = Pose(pos, (0.0 if direction > 0 else math.pi) + 0.3 * math.sin(k), 0.0)
                made += world.update([PlayerState("a", pose, np.array([0, 0, 1.5 * direction], np.float32), VIEW_FOV)])
        assert world.wait_idle(120)
        return made

    # Each hole job's keyframe serves views within 1 m and 40 degrees for good, so the walks
    # settle: 3 m walked both ways has room for a few, never a loop.
    made = [walk() for _ in range(3)]
    assert made[-1] == [] and sum(len(m) for m in made) <= 8
    assert not any(j.refines for m in made for j in m)
    assert all(j.fills_holes for m in made[1:] for j in m)
    world.close()


def test_walking_into_new_space_generates_ahead_of_arrival(generator, renderer):
    world = make_world(generator, renderer)
    world.update([PlayerState("a", world.spawn_pose())])
    world.wait_idle(120)
    pose, jobs = walk_to(world, world.spawn_pose(), 40.0, speed=4.0)
    assert jobs, "walking 40 m into unexplored space must generate"
    ahead = [(j, z) for j, z in jobs if j.cameras.centers[0][2] > z + 1.0]
    assert ahead, "some jobs must be placed ahead of the player when requested"
    assert max(j.region_center[2] for j, _ in jobs) > 40.0
    # The walk left a covered view behind it: the player's view at the end is mostly covered.
    cam = pose.camera(64, 36, VIEW_FOV)
    from runtime.world.frontier.coverage import uncovered_fractions

    frac = uncovered_fractions(renderer.render_alpha(world.scene.snapshot(), cam), cam, world.sky_directions)[0]
    assert frac <= world.config.uncovered_fraction
    world.close()


def test_overlapping_requests_are_one_job(generator, renderer):
    world = make_world(generator, renderer, max_concurrent_jobs=1)
    requested = []
    world.subscribe(lambda e: requested.append(e) if isinstance(e, ChunkRequested) else None)
    a = PlayerState("a", Pose(np.array([0.0, 0.0, 100.0]), 0.0, 0.0))
    b = PlayerState("b", Pose(np.array([1.0, 0.0, 100.5]), 0.2, 0.0))
    jobs = world.update([a, b])
    assert len(jobs) == 4 and len(requested) == 4
    assert all(j.requested_by == {"a", "b"} for j in jobs)
    # Asking again while they are queued or running adds nothing either.
    assert world.update([b]) == []
    world.close()


def test_revisit_renders_the_same_frame(generator, renderer):
    """A player is shown P, walks 43 m away and back: the frame at P is unchanged (>= 40 dB).

    P is remembered when the player leaves it (seen_views), and a camera back at P is drawn
    without the later Gaussians that would change its picture (seen_masks). Keyframes made
    since may change what earlier keyframes showed (``keep_keyframe_views`` is off: no player
    was shown those), never what P showed. Pixels P saw as scene (alpha >= 0.9) match to
    >= 40 dB too. See docs/world.md, "Revisits".
    """
    world = make_world(generator, renderer)
    world.update([PlayerState("a", world.spawn_pose())])
    world.wait_idle(120)
    P = Pose(np.array([0.0, 0.0, 2.0]), 0.4, -0.1)
    world.update([PlayerState("a", P, fov_y=VIEW_FOV)])  # the player stands at P and is shown it
    world.wait_idle(120)
    cam = P.camera(160, 90, VIEW_FOV)
    first = world.render(cam)
    before = first.rgb[0]
    chunks_before = len(world.scene.snapshot().chunks)
    pose, jobs = walk_to(world, P, 45.0, speed=4.0)
    pose, back = walk_to(world, pose, 2.0, speed=4.0)
    assert len(world.scene.snapshot().chunks) >= chunks_before + 3
    after = world.render(cam).rgb[0]
    seen = first.alpha[0] >= 0.9
    assert seen.mean() > 0.4
    assert psnr(before[seen], after[seen]) >= 40.0
    assert psnr(before, after) >= 40.0
    assert world.stats["gaussians_dropped"] == 0  # no keyframe's view vetoed a later chunk
    assert world.stats["seen_views_frozen"] > 0 and world.stats["masked_renders"] > 0
    world.close()


class _Wall:
    """A generator stub: a wall ``wall_depth`` metres ahead below row ``sky_rows`` and sky above it."""

    name = "wall"

    def __init__(self, sky_rows: int, wall_depth: float, sky_depth: float = math.inf) -> None:
        self.sky_rows, self.wall_depth, self.sky_depth = sky_rows, wall_depth, sky_depth

    def result(self, cameras):
        from runtime.world.generators.base import GenerationResult

        N, H, W = len(cameras), cameras.height, cameras.width
        depth = np.full((N, H, W), self.wall_depth, np.float32)
        depth[:, : self.sky_rows] = self.sky_depth
        rgb = np.full((N, H, W, 3), 90, np.uint8)
        return GenerationResult(rgb, depth)


def _job(world: World, job_id: int, position, yaw: float = 0.0) -> "GenerationJob":
    from runtime.world.camera import Cameras, intrinsics_from_fov
    from runtime.world.world import GenerationJob

    W, H = 64, 36
    cams = Cameras(Pose(np.asarray(position, np.float32), yaw).w2c[None], intrinsics_from_fov(W, H, math.radians(60))[None], W, H)
    return GenerationJob(job_id, cams, "", np.zeros(3, np.float32), 1.0)


def test_with_keep_keyframe_views_new_chunks_never_cover_what_earlier_keyframes_saw_as_sky(generator, renderer):
    world = make_world(generator, renderer, keep_keyframe_views=True)
    first = _job(world, 0, [0.0, 0.0, 0.0])
    # Job 0 sees sky above row 12 and a wall 10 m ahead: its own sky does not block its
    # own splats (its frames enter memory after the check).
    chunks = world.apply(first, _Wall(12, 10.0).result(first.cameras))
    assert world.stats["gaussians_dropped"] == 0 and len(chunks[0].gaussians) > 0
    # Job 1 stands 4 m behind and sees a screen 8 m ahead of it, 4 m ahead of job 0's
    # camera, over its whole view: where job 0 saw sky or the wall behind it, it is dropped.
    second = _job(world, 1, [0.0, 0.0, -4.0])
    sky_version = world.sky_directions.version
    chunks = world.apply(second, _Wall(0, 8.0).result(second.cameras))
    assert world.stats["gaussians_dropped"] > 0
    kept = Gaussians.concat([c.gaussians for c in chunks])
    cam = first.cameras  # what is kept lies outside job 0's view
    pc = kept.means @ cam.w2c[0, :3, :3].T + cam.w2c[0, :3, 3]
    u = cam.K[0, 0, 0] * pc[:, 0] / pc[:, 2] + cam.K[0, 0, 2]
    v = cam.K[0, 1, 1] * pc[:, 1] / pc[:, 2] + cam.K[0, 1, 2]
    assert not np.any((u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height))
    assert world.sky_directions.version > sky_version  # dropped directions count as covered
    world.close()


def test_a_keyframe_made_from_inside_the_terrain_lands_nothing(generator, renderer):
    """A keyframe camera under the procedural terrain sees its inside at ~1 cm everywhere;
    lifted, that was ~14k black splats at one point a metre underground, which walkers took
    for the floor (issue 16). Such a view lands neither splats nor a memory frame; the job's
    other view, above the ground, lands as before."""
    from runtime.world.camera import Cameras, intrinsics_from_fov
    from runtime.world.generators.base import CancelToken, GenerationRequest
    from runtime.world.generators.procedural.generator import ground_height_y
    from runtime.world.world import GenerationJob

    world = make_world(generator, renderer)
    x, z = 0.0, 6.0
    ground = float(ground_height_y(x, z, world.config.seed))  # +y down
    under = Pose(np.array([x, ground + 1.0, z], np.float32), 0.0)  # a metre under the ground
    above = Pose(np.array([x, ground - EYE_HEIGHT, z], np.float32), 0.0)
    W, H = 64, 36
    cams = Cameras(np.stack([under.w2c, above.w2c]), np.broadcast_to(intrinsics_from_fov(W, H, math.radians(60)), (2, 3, 3)), W, H)
    result = generator.generate(GenerationRequest(cams, "", (), world.config.seed), lambda *a: None, CancelToken())
    assert np.median(result.depth[0]) < 0.05 and np.median(result.depth[1]) > 1.0  # what the generator drew
    chunks = world.apply(GenerationJob(0, cams, "", np.zeros(3, np.float32), 1.0), result)
    (frame,) = world.memory.frames()
    np.testing.assert_allclose(frame.w2c, above.w2c, atol=1e-6)
    assert world.stats["keyframes_inside"] == 1
    means = Gaussians.concat([c.gaussians for c in chunks]).means
    assert len(means) > 0 and (np.linalg.norm(means - under.position, axis=1) > 0.5).all()
    world.close()


def test_generation_failure_is_reported_and_the_world_survives(generator, renderer):
    class Flaky:
        name = "flaky"

        def __init__(self):
            self.calls = 0

        def generate(self, request, progress, cancel):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("model fell over")
            return generator.generate(request, progress, cancel)

    world = World(WorldConfig("flaky", retry_after_s=0.0), generator=Flaky(), renderer=renderer)
    events = []
    world.subscribe(events.append)
    world.update([PlayerState("a", world.spawn_pose())])
    assert world.wait_idle(120)
    failed = [e for e in events if isinstance(e, JobFailed)]
    added = [e for e in events if isinstance(e, ChunkAdded)]
    assert len(failed) == 1 and "model fell over" in failed[0].error
    assert len(added) == 3
    # The failed view is asked for again and now succeeds.
    world.update([PlayerState("a", world.spawn_pose())])
    assert world.wait_idle(120)
    assert world.update([PlayerState("a", world.spawn_pose())]) == []
    world.close()


def test_state_dict_round_trip(booted, generator, renderer):
    world, _ = booted
    state = json.loads(json.dumps(world.state_dict()))  # JSON-able
    restored = make_world(generator, renderer)
    snap = world.scene.snapshot()
    restored.restore(list(snap.chunks), world.memory.frames(), state, list(snap.far))
    assert snap.far, "the bootstrap's keyframes saw far terrain: the world has a far field"
    assert restored.config == world.config
    assert restored.explored.cells_in((-50, -50, 50, 50)) == world.explored.cells_in((-50, -50, 50, 50))
    assert len(restored.memory) == len(world.memory)
    cam = Pose(np.array([0.0, 0.0, 1.0]), 0.5).camera(96, 54, VIEW_FOV)
    np.testing.assert_array_equal(restored.render(cam).rgb, world.render(cam).rgb)
    assert restored.update([PlayerState("a", restored.spawn_pose())]) == []
    restored.close()


def test_caption_goes_to_new_jobs(generator, renderer):
    world = make_world(generator, renderer, caption="a meadow")
    world.set_caption("a snowy forest")
    jobs = world.update([PlayerState("a", world.spawn_pose())])
    assert jobs and all(j.caption == "a snowy forest" for j in jobs)
    world.wait_idle(120)
    assert {c.source.caption for c in world.scene.snapshot().chunks} == {"a snowy forest"}
    assert world.state_dict()["captions"][-1][1] == "a snowy forest"
    with pytest.raises(ValueError, match="caption"):
        world.set_caption(None)
    world.close()


def wall_scene() -> Gaussians:
    """Flat ground at eye height below the origin and a wall across z = 4 (hand-made splats)."""
    xs, zs = np.meshgrid(np.arange(-20, 20, 0.1), np.arange(-20, 20, 0.1))
    ground = np.stack([xs.ravel(), np.full(xs.size, EYE_HEIGHT), zs.ravel()], 1)
    wx, wy = np.meshgrid(np.arange(-20, 20, 0.1), np.arange(-1.5, EYE_HEIGHT, 0.1))
    wall = np.stack([wx.ravel(), wy.ravel(), np.full(wx.size, 4.0)], 1)
    means = np.concatenate([ground, wall]).astype(np.float32)
    n = len(means)
    quats = np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1))
    return Gaussians(means, quats, np.full((n, 3), math.log(0.06)), np.full(n, 4.0), np.full((n, 3), 0.6))


def test_imported_scene_is_walkable_with_collision_and_needs_no_generation(generator, renderer):
    world = make_world(generator, renderer)
    world.import_gaussians(wall_scene(), ChunkSource(-1, "import"))
    assert world.explored.state_at(0.0, 0.0) == GENERATED
    pose = world.spawn_pose()
    for _ in range(60):  # 4 s at run speed toward the wall
        pose = world.move(pose, MoveInput(forward=1.0, run=True), 1 / 15)
    assert 3.0 < pose.position[2] < 4.0  # stopped at the wall
    assert pose.position[1] == pytest.approx(0.0, abs=0.05)  # eye height kept over flat ground
    # Inside the imported scene nothing is generated, whichever way the player looks.
    for yaw in np.linspace(-math.pi, math.pi, 8, endpoint=False):
        assert world.update([PlayerState("a", Pose(np.zeros(3), float(yaw), 0.0), fov_y=VIEW_FOV)]) == []
    with pytest.raises(ValueError, match="forward"):
        world.move(pose, MoveInput(forward=float("nan")), 0.1)
    world.close()


def test_render_never_waits_for_generation(generator, renderer):
    gate = threading.Event()

    class Slow:
        name = "slow"

        def generate(self, request, progress, cancel):
            gate.wait(30)
            return generator.generate(request, progress, cancel)

    world = World(WorldConfig("slow"), generator=Slow(), renderer=renderer)
    world.update([PlayerState("a", world.spawn_pose())])
    out = world.render(world.spawn_pose().camera(64, 36))  # returns while the job blocks
    assert out.scene_version == 0 and not world.wait_idle(0.05)
    gate.set()
    world.close()


# ---------------------------------------------------------------- frozen seen views


class _Stalled:
    """A generator stub whose jobs never finish until the world closes: only what a test applies lands.

    Gives up after 30 s, so a test that fails before closing its world cannot hang the run.
    """

    name = "stalled"

    def generate(self, request, progress, cancel):
        deadline = time.monotonic() + 30.0
        while not cancel.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        cancel.raise_if_cancelled()
        raise RuntimeError("stalled generator gave up")


class _Gated:
    """A generator stub that returns ``result_of(cameras)`` once ``gate`` is set."""

    name = "gated"

    def __init__(self, result_of) -> None:
        self.result_of = result_of
        self.gate = threading.Event()

    def generate(self, request, progress, cancel):
        self.gate.wait(30)
        cancel.raise_if_cancelled()
        return self.result_of(request.cameras)


def test_an_active_view_watches_its_own_chunks_land(renderer):
    world = World(WorldConfig("active", seed=3), generator=_Stalled(), renderer=renderer)
    pose = Pose(np.zeros(3), 0.0, 0.0)
    player = PlayerState("a", pose, fov_y=VIEW_FOV)
    world.update([player])
    cam = pose.camera(96, 54, VIEW_FOV)
    empty = world.render(cam)
    job = _job(world, 1000, [0.0, 0.0, 0.0])  # a chunk for the player's own view lands while it stands there
    world.apply(job, _Wall(12, 10.0).result(job.cameras))
    world.update([player])
    plain = renderer.render(world.scene.snapshot(), cam, world.sky)
    shown = world.render(cam)
    assert shown.alpha[0].mean() > empty.alpha[0].mean() + 0.5
    np.testing.assert_array_equal(shown.rgb, plain.rgb)  # active views hide nothing
    assert world.stats["seen_views"] == 1 and world.stats["seen_views_frozen"] == 0
    assert world.stats["masked_renders"] == 0
    world.update([])  # the player leaves: the view freezes as it was last shown
    (record,) = world.seen_views.records()
    assert record.frozen and record.cap_chunk_id == world.scene.snapshot().chunks[-1].id
    np.testing.assert_array_equal(world.render(cam).rgb, plain.rgb)
    assert world.stats["masked_renders"] == 0  # nothing landed since the freeze: drawn in the plain batch
    world.close()


def test_own_view_job_landing_after_the_player_left_shows_on_return(renderer):
    from runtime.world.revisit.seen_views import NO_CHUNK

    generator = _Gated(_Wall(12, 10.0).result)
    world = World(WorldConfig("pending", seed=3, keyframe_width=128, keyframe_height=72), generator=generator, renderer=renderer)
    pose = Pose(np.zeros(3), 0.0, 0.0)
    jobs = world.update([PlayerState("a", pose, fov_y=VIEW_FOV)])
    (record,) = world.seen_views.records()
    own = [j for j in jobs if j.id in record.pending_jobs]
    assert len(own) == 1 and len(jobs) == 4  # the view's own keyframe; not the other ring headings
    world.update([])  # the player leaves before anything landed
    (record,) = world.seen_views.records()
    assert record.cap_chunk_id == NO_CHUNK
    generator.gate.set()
    assert world.wait_idle(60)
    chunks = world.scene.snapshot().chunks
    own_ids = [c.id for c in chunks if c.source.job_id == own[0].id]
    assert own_ids and len(chunks) > len(own_ids)
    (record,) = world.seen_views.records()
    assert record.cap_chunk_id == max(own_ids) and not record.pending_jobs  # the others stay out
    back = world.render(pose.camera(96, 54, VIEW_FOV))  # the player returns
    assert world.stats["masked_renders"] == 0  # the other headings' chunks hide nothing here: plain batch
    assert back.alpha[0, 10:].mean() > 0.95  # its own view's wall is shown
    world.close()


def _screen(x: float) -> Gaussians:
    """A screen of hand-made splats across x = ``x``: z in [-3, 3], from 3 m above the eye to 1 m below."""
    ys, zs = np.meshgrid(np.arange(-3.0, 1.0, 0.1), np.arange(-3.0, 3.0, 0.1))
    means = np.stack([np.full(ys.size, x), ys.ravel(), zs.ravel()], 1).astype(np.float32)
    n = len(means)
    quats = np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1))
    return Gaussians(means, quats, np.full((n, 3), math.log(0.06)), np.full(n, 4.0), np.full((n, 3), 0.9))


def _frozen_view_then_a_screen(renderer) -> tuple[World, Pose, list]:
    """A frozen player's view of a wall, then a later chunk that puts a screen in front of it.

    A keyframe at the origin sees a wall 10 m out along +x under the sky; a player is shown
    that view and leaves. Then a chunk lands with a screen 9 m out, partly in front of the
    wall and partly against the sky above it.
    """
    world = World(WorldConfig("hide", seed=3), generator=_Stalled(), renderer=renderer)
    wall = _job(world, 1000, [0.0, 0.0, 0.0], yaw=math.pi / 2)
    world.apply(wall, _Wall(12, 10.0).result(wall.cameras))
    view = Pose(np.zeros(3), math.pi / 2, 0.0)
    world.update([PlayerState("a", view, fov_y=VIEW_FOV)])
    world.update([])  # the player left: its view freezes
    chunks = world.import_gaussians(_screen(9.0), ChunkSource(-1, "import"))
    return world, view, chunks


def test_a_closer_keyframe_replaces_what_no_player_was_shown_but_not_what_one_was(renderer):
    """A keyframe at the origin sees a wall 10 m out under the sky, and a player is shown that
    view. Then a keyframe 4 m on sees a screen 5 m ahead of it, in front of that wall and
    against that sky. Where no player was shown anything, the closer keyframe's screen lands
    (no earlier keyframe vetoes it); at the view the player was shown, it is hidden."""
    world = World(WorldConfig("closer", seed=3), generator=_Stalled(), renderer=renderer)
    first = _job(world, 1000, [0.0, 0.0, 0.0], yaw=math.pi / 2)
    world.apply(first, _Wall(12, 10.0).result(first.cameras))
    view = Pose(np.zeros(3), math.pi / 2, 0.0)
    at_view = view.camera(96, 54, VIEW_FOV)
    world.update([PlayerState("a", view, fov_y=VIEW_FOV)])
    shown = world.render(at_view)
    world.update([])  # the player left: its view freezes
    closer = _job(world, 1001, [4.0, 0.0, 0.0], yaw=math.pi / 2)
    (chunk,) = world.apply(closer, _Wall(0, 5.0).result(closer.cameras))
    assert world.stats["gaussians_dropped"] == 0 and len(chunk.gaussians) > 0
    assert psnr(shown.rgb[0], world.render(at_view).rgb[0]) >= 45.0  # shown: as it was
    # Never shown: 1.5 m beside the player's view, the screen 9 m out rises above the wall,
    # where the first keyframe saw sky (rows 11-13 of 54).
    beside = Pose(np.array([0.0, 0.0, 1.5]), math.pi / 2, 0.0).camera(96, 54, VIEW_FOV)
    before = renderer.render(capped(world.scene.snapshot(), chunk.id - 1), beside, world.sky)
    seen = world.render(beside)
    assert before.alpha[0, 11:14, 30:66].max() < 0.1
    assert seen.alpha[0, 11:14, 30:66].mean() > 0.7
    assert np.median(seen.depth[0, 11:14, 30:66]) == pytest.approx(9.0, abs=0.3)
    world.close()


def test_a_frozen_view_hides_later_chunks_from_itself_only(renderer):
    from runtime.world.camera import Cameras
    from runtime.world.render.video import rgb_to_i420

    world, view, chunks = _frozen_view_then_a_screen(renderer)
    assert len(chunks) == 1
    at_view = view.camera(96, 54, VIEW_FOV)
    snapshot = world.scene.snapshot()
    before = renderer.render(capped(snapshot, chunks[0].id - 1), at_view, world.sky)  # as the player saw it
    plain = renderer.render(snapshot, at_view, world.sky)
    assert psnr(before.rgb[0], plain.rgb[0]) < 30.0  # the screen is there for everyone else
    after = world.render(at_view)
    assert psnr(before.rgb[0], after.rgb[0]) >= 45.0  # but not at the frozen view
    assert world.stats["hidden_gaussians"] > 0 and world.stats["masks_computed"] == 1
    away = Pose(np.array([5.0, 0.0, 0.0]), math.pi / 2, 0.0).camera(96, 54, VIEW_FOV)  # 5 m on, 4 m from the screen
    far = world.render(away)
    np.testing.assert_array_equal(far.rgb, CpuRenderer().render(snapshot, away, world.sky).rgb)
    assert far.alpha[0, 20:34, 30:66].mean() > 0.95 and far.depth[0, 27, 48] == pytest.approx(4.0, abs=0.3)
    # Mixed batches come back in camera order, for frames and for video.
    both = world.render(Cameras.concat([away, at_view]))
    np.testing.assert_array_equal(both.rgb, np.concatenate([far.rgb, after.rgb]))
    video = world.submit_video(Cameras.concat([at_view, away])).wait()
    np.testing.assert_array_equal(video.i420, rgb_to_i420(np.concatenate([after.rgb, far.rgb])))
    world.close()


def test_seen_views_survive_state_dict_and_restore(renderer):
    world, view, _ = _frozen_view_then_a_screen(renderer)
    elsewhere = Pose(np.array([3.0, 0.0, 0.0]), 0.0, 0.0)
    world.update([PlayerState("b", elsewhere, fov_y=VIEW_FOV)])  # active while saved
    at_view = view.camera(96, 54, VIEW_FOV)
    shown = world.render(at_view)
    state = json.loads(json.dumps(world.state_dict()))
    chunks, frames, far = list(world.scene.snapshot().chunks), world.memory.frames(), list(world.scene.snapshot().far)
    restored = World(WorldConfig("hide", seed=3), generator=_Stalled(), renderer=renderer)
    restored.restore(chunks, frames, state, far)
    saved, loaded = world.seen_views.records(), restored.seen_views.records()
    assert len(loaded) == len(saved) == 2
    for a, b in zip(saved, loaded):
        np.testing.assert_array_equal(a.center, b.center)
        np.testing.assert_array_equal(a.forward, b.forward)
        assert a.fov_y == b.fov_y
    assert loaded[0].cap_chunk_id == saved[0].cap_chunk_id
    assert saved[1].cap_chunk_id is None and loaded[1].cap_chunk_id == chunks[-1].id  # its player is gone: frozen
    np.testing.assert_array_equal(restored.render(at_view).rgb, shown.rgb)
    assert restored.stats["masked_renders"] == 1
    # Worlds saved before seen views existed load with none.
    del state["seen_views"]
    older = World(WorldConfig("hide", seed=3), generator=_Stalled(), renderer=renderer)
    older.restore(chunks, frames, state)
    assert len(older.seen_views) == 0
    for w in (world, restored, older):
        w.close()


def test_a_view_frozen_while_the_world_was_loading_is_shown_plain(renderer):
    world = World(WorldConfig("loading", seed=3), generator=_Stalled(), renderer=renderer)
    view = Pose(np.zeros(3), 0.0, 0.0)
    world.update([PlayerState("a", view, fov_y=VIEW_FOV)])
    world.update([])  # frozen over an empty scene, with no job of its own pending (it stalls)
    job = _job(world, 1000, [0.0, 0.0, 0.0])
    world.apply(job, _Wall(12, 10.0).result(job.cameras))
    cam = view.camera(96, 54, VIEW_FOV)
    np.testing.assert_array_equal(world.render(cam).rgb, renderer.render(world.scene.snapshot(), cam, world.sky).rgb)
    assert world.stats["seen_views_unfinished"] == 1 and world.stats["masked_renders"] == 0
    world.close()


def test_a_pending_jobs_chunks_show_as_soon_as_they_are_in_the_scene():
    from runtime.world.scene import Scene
    from runtime.world.parts import WorldStats
    from runtime.world.revisit.seen_views import NO_CHUNK, SeenViews

    views = SeenViews(0.5, math.radians(20.0), WorldStats())
    pose = Pose(np.zeros(3), 0.0, 0.0)
    (record,) = views.observe([PlayerState("a", pose, fov_y=VIEW_FOV)], NO_CHUNK).values()
    assert views.add_pending(record, _job(None, 7, [0.0, 0.0, 0.0]))
    assert not views.add_pending(record, _job(None, 8, [0.0, 0.0, 0.0], yaw=math.pi / 2))  # another heading
    views.observe([], NO_CHUNK)  # the player left: frozen over an empty scene
    scene = Scene()
    scene.append(wall_scene(), ChunkSource(job_id=7))
    (view,) = views.match_frozen(pose.camera(64, 36, VIEW_FOV))
    # In the scene before job_landed raises the cap: the picture counts the job's chunk already.
    assert view.cap_chunk_id == NO_CHUNK and view.in_snapshot(scene.snapshot()).cap_chunk_id == 0
    views.job_landed(7, [0])
    (view,) = views.match_frozen(pose.camera(64, 36, VIEW_FOV))
    assert view.cap_chunk_id == 0 and not view.pending_jobs
    # A job that landed before it was registered as pending raises the cap at once.
    views.job_landed(9, [4])
    (record,) = views.observe([PlayerState("a", pose, fov_y=VIEW_FOV)], 4).values()
    assert views.add_pending(record, _job(None, 9, [0.0, 0.0, 0.0]))
    assert views.records()[0].cap_chunk_id == 4
    assert views.match_frozen(Pose(np.array([0.0, 0.0, 0.6]), 0.0, 0.0).camera(64, 36)) is None  # beyond the radius
    assert views.match_frozen(Pose(np.zeros(3), math.radians(25.0), 0.0).camera(64, 36)) is None  # beyond the angle


def test_random_poses_in_a_generated_world_all_cull(booted):
    """3,000 random poses within 80 m of the spawn of a generated world: every view's block
    culling works. About 1 pose in 300 sees a chunk but none of its blocks; before the fix
    ``visible_blocks`` raised there, which failed every frame of the session."""
    from runtime.world.render.projection import activate_chunk, visible_blocks

    world, _ = booted
    snapshot = world.scene.snapshot()
    packed = {}
    rng = np.random.default_rng(1)
    spawn = world.spawn_pose().position
    empty = 0
    for _ in range(3000):
        position = spawn + rng.uniform(-80.0, 80.0, 3) * np.array([1.0, 0.2, 1.0])
        pose = Pose(position.astype(np.float32), yaw=rng.uniform(-math.pi, math.pi), pitch=rng.uniform(-1.2, 1.2))
        camera = pose.camera(64, 36, VIEW_FOV)
        chunks = snapshot.visible_chunks(camera)
        parts = [packed.setdefault(c.id, activate_chunk(c.gaussians)) for c in chunks]
        blocks, rows = visible_blocks([p for p in parts if len(p)], camera)
        assert blocks.shape[1] == 4 and rows == int((blocks[:, 2] - blocks[:, 1]).sum())
        empty += bool(chunks) and rows == 0
    assert empty > 0  # the case that used to raise did come up
