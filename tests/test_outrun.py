"""Outrunning generation (issue 16, item 5): fill coarse first, and detail never holds the
generator while a fill waits (the fast-walk hole bound is in test_fidelity.py). Real parts
throughout: procedural generator, CPU renderer, the world's own job queue and worker."""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from runtime.world import PlayerState, World, WorldConfig
from runtime.world.camera import Cameras, Pose, intrinsics_from_fov
from runtime.world.frontier.jobs import GenerationJob, JobQueue
from runtime.world.frontier.planner import REFINE_PRIORITY
from runtime.world.generators.procedural import ProceduralGenerator
from runtime.world.generators.procedural.generator import ground_height_y
from runtime.world.render.cpu import CpuRenderer

VIEW_FOV = math.radians(60.0)


def _job(job_id: int, refines: bool) -> GenerationJob:
    K = intrinsics_from_fov(32, 18, 1.0)
    cams = Cameras(np.eye(4, dtype=np.float32)[None], K[None], 32, 18)
    priority = REFINE_PRIORITY if refines else 0.0  # as the planner ranks them
    return GenerationJob(job_id, cams, "", np.zeros(3, np.float32), 1.0, refines=refines, priority=priority)


def test_a_running_refining_job_yields_its_slot_to_a_fill_job():
    queue = JobQueue(threading.RLock())
    queue.add(_job(0, refines=True))
    detail, token = queue.start_next(max_running=1)
    assert queue.preempt_for_frontier(1) is None  # nothing waits
    queue.add(_job(1, refines=True))
    assert queue.preempt_for_frontier(1) is None  # only more detail waits
    queue.add(_job(2, refines=False))
    assert queue.preempt_for_frontier(1) is detail and token.cancelled
    assert queue.preempt_for_frontier(1) is None  # cancelled once; its worker ends it
    queue.finish(detail, "cancelled")
    started, _ = queue.start_next(max_running=1)
    assert started.id == 2  # the fill job runs before the waiting detail


def test_a_fast_player_gets_coarse_fill_of_the_usual_size():
    """At 6 m/s the first fill jobs are traced at half resolution and upsampled: frame memory
    keeps keyframes of the configured size, and the chunk is as dense as a full one's. A
    player standing in a fresh world gets a full-resolution first keyframe."""
    generator, renderer = ProceduralGenerator(), CpuRenderer()
    cfg = dict(seed=3, ring_yaws=(0.0,))
    # Waited for, with no frame clock: the workers need not yield the CPU (a busy machine starves them).
    with World(WorldConfig("still", **cfg), generator=generator, renderer=renderer, yield_cpu=False) as still:
        (first,) = still.update([PlayerState("a", still.spawn_pose(), fov_y=VIEW_FOV)])
        assert first.scale == 1.0
        assert still.wait_idle(120)
        full = still.scene.snapshot().num_gaussians
    with World(WorldConfig("fast", **cfg), generator=generator, renderer=renderer, yield_cpu=False) as fast:
        jobs = fast.update([PlayerState("a", fast.spawn_pose(), np.array([0, 0, 6.0], np.float32), VIEW_FOV)])
        assert jobs and all(j.scale == 0.5 for j in jobs)
        assert fast.wait_idle(120)
        assert fast.stats["coarse_jobs"] == len(jobs)
        frames = fast.memory.frames()
        assert frames and all(f.rgb.shape == (180, 320, 3) for f in frames)
        # As dense as a full keyframe's chunk (one Gaussian per 2x2 block of the upsampled picture).
        assert fast.scene.snapshot().num_gaussians / len(jobs) > 0.5 * full


def test_views_ahead_follow_the_ground_up_a_slope():
    """A fast player far ahead of generation (an 8 s lookahead at 6 m/s) heading uphill from
    the spawn (forest seed 7 rises ~4 m over 40 m): the views ahead stand at eye height over
    the ground along the way, never under the generator's terrain (a keyframe there sees
    nothing and lands nothing), nearest first; those far past the known ground wait."""
    from bench.fidelity import eye_pose, make_path, walk_velocity
    from runtime.world.frontier.coverage import probe_views
    from runtime.world.generators.procedural.generator import ground_height_y

    with World(WorldConfig("slope", seed=7, caption="a pine forest"), generator=ProceduralGenerator(), renderer=CpuRenderer()) as world:
        spawn = eye_pose(0.0, 0.0, 0.0, 0.0, 7)
        world.update([PlayerState("a", spawn, fov_y=VIEW_FOV)])
        assert world.wait_idle(300)
        velocity = walk_velocity(make_path("straight", 60.0, 7), 0.0, 6.0, 7)
        cfg = world.config
        predicted = [p for p in probe_views("a", spawn, velocity, VIEW_FOV, lookahead_s=8.0, keyframe_fov_y=cfg.keyframe_fov_y,
                                            ring_yaws=(), ahead_step_m=cfg.ahead_step_m) if p.kind == "ahead"]
        ahead = world._planner._ahead_on_ground(spawn, predicted)

    def above_ground(p) -> float:  # metres from the eye down to the generator's ground (+y down)
        return ground_height_y(float(p.position[0]), float(p.position[2]), 7) - float(p.position[1])

    assert len(predicted) == 4 and above_ground(predicted[-1]) < 0  # a straight line ends 48 m ahead underground
    assert 1 <= len(ahead) < len(predicted)  # the known ground ends well before 48 m
    assert [p.position[2] for p in ahead] == sorted(p.position[2] for p in ahead)
    for p in ahead:
        assert 1.0 < above_ground(p) < 2.5, f"view ahead at z={p.position[2]:.1f} m: eye {above_ground(p):.2f} m above the ground"


def test_a_keyframe_inside_the_terrain_is_not_a_done_view():
    """A keyframe whose camera ended up under the ground (a guess of the terrain ahead was
    off) lands nothing; its view is recorded as failed -- asked again after retry_after_s --
    not as done, which would keep every keyframe near it from being made for good."""
    from runtime.world.generators.base import CancelToken, GenerationRequest

    generator = ProceduralGenerator()
    with World(WorldConfig("under", seed=7, caption="a pine forest"), generator=generator, renderer=CpuRenderer()) as world:
        K = intrinsics_from_fov(64, 36, world.config.keyframe_fov_y)
        w2c = np.eye(4, dtype=np.float32)
        w2c[1, 3] = -6.0  # camera centre 6 m below the spawn's eye (+y down): under the ground
        cams = Cameras(w2c[None], K[None], 64, 36)
        job = GenerationJob(0, cams, world.caption, np.zeros(3, np.float32), 1.0)
        result = generator.generate(GenerationRequest(cams, world.caption, (), 7), lambda f, m: None, CancelToken())
        assert world.apply(job, result) == []
        assert world.stats["keyframes_inside"] == 1
        planner = world._planner
        assert len(planner.done_views) == 0 and len(planner.failed_views) == 1


def _world_with_a_detail_job(name: str):
    """A world whose spawn view is generated (ring_yaws: only ahead) and a refining job 5 m
    ahead waiting in the queue, as planning makes one while nothing fills."""
    import dataclasses

    from runtime.world.frontier.coverage import ProbeView

    world = World(WorldConfig(name, seed=3, ring_yaws=(0.0,)), generator=ProceduralGenerator(), renderer=CpuRenderer())
    spawn = world.spawn_pose()
    world.update([PlayerState("a", spawn, fov_y=VIEW_FOV)])
    assert world.wait_idle(120)
    planner = world._planner
    ahead = spawn.position + np.array([0.0, 0.0, 5.0], np.float32)
    probe = ProbeView("a", "view", ahead, spawn.yaw, spawn.pitch, VIEW_FOV, 0.0)
    made: list[GenerationJob] = []
    with planner._lock:
        planner._schedule(dataclasses.replace(planner._keyframe_view(probe), detail=True), time.monotonic(), world.caption, made)
    (detail,) = made
    assert detail.refines and detail.state == "queued"
    return world, detail


def _turn_around(world: World) -> list[GenerationJob]:
    """The player turns to face where nothing was generated: its view is a hole."""
    spawn = world.spawn_pose()
    return world.update([PlayerState("a", Pose(spawn.position, spawn.yaw + math.pi, 0.0), fov_y=VIEW_FOV)])


def test_a_hole_in_the_view_is_filled_before_a_waiting_detail_job():
    """A refining job waits in the queue when the player turns to a view with a hole: the
    fill job for that view starts at once, traced coarse (a hole is shown: fill coarse
    first); the detail job yields its place (cancelled, planned again once nothing fills)
    and no refining job is planned while the hole is shown."""
    world, detail = _world_with_a_detail_job("yield")
    with world:
        jobs = _turn_around(world)
        assert jobs and not any(j.refines for j in jobs)
        fill = jobs[0]
        assert fill.state in ("running", "done") and fill.scale < 1.0
        assert detail.state == "cancelled" and world.stats["jobs_yielded"] == 1
        assert world.wait_idle(120)
        assert fill.state == "done"


def test_a_running_detail_job_is_cut_short_for_a_hole():
    """The refining job already runs (640x360, the generator's longest job) when the player
    turns to a hole: it is cancelled -- the generator polls for that every eighth of the
    picture -- and the fill job runs next."""
    world, detail = _world_with_a_detail_job("preempt")
    with world:
        world._runner.pump()
        assert detail.state == "running" and detail.cameras.width > world.config.keyframe_width
        jobs = _turn_around(world)
        assert world.wait_idle(120)
        assert detail.state == "cancelled" and world.stats["jobs_preempted"] == 1
        fill = jobs[0]
        assert not fill.refines and fill.state == "done" and fill.started_at >= detail.finished_at - 1e-3


def test_a_look_around_job_waits_for_refining_and_yields_to_the_frontier():
    """A look-around fill (a ring heading's holes) is not frontier work: a running refining
    job keeps its slot while one waits, and a running one is cut short for a frontier job."""
    queue = JobQueue(threading.RLock())
    queue.add(_job(0, refines=True))
    detail, token = queue.start_next(max_running=1)
    around = _job(1, refines=False)
    around.looks_around = around.fills_holes = True
    queue.add(around)
    assert queue.preempt_for_frontier(1) is None and not token.cancelled
    queue.finish(detail, "done")
    around, token = queue.start_next(max_running=1)
    assert around.looks_around and queue.preempt_for_frontier(1) is None
    queue.add(_job(2, refines=False))  # the frontier's: the look-around yields its slot
    assert queue.preempt_for_frontier(1) is around and token.cancelled


def test_the_look_around_is_filled_after_the_frontier_and_refining_still_happens():
    """Keyframes at the spawn face ahead and back (a ring of two); the player steps 4 m ahead
    and stands there, with the usual ring of four. Ahead and back, the spawn's keyframes are
    4 m off, too coarse: refining jobs are asked for (they fill those headings' holes too).
    Sideways no keyframe looked; the look-around where the player stands shows holes there
    and asks for a fill job -- one at a time, ranked after the frontier's and before
    refining, and not frontier work, so refining is planned in the same update and no
    running refining job is cut short for it. The other side's comes next; then nothing."""
    cfg = WorldConfig("look", seed=7, caption="a pine forest", ring_yaws=(0.0, math.pi), detail_max_px=0)
    with World(cfg, generator=ProceduralGenerator(), renderer=CpuRenderer()) as world:
        spawn = world.spawn_pose()
        world.update([PlayerState("a", spawn, fov_y=VIEW_FOV)])
        assert world.wait_idle(120)
        x, z = float(spawn.position[0]), float(spawn.position[2]) + 4.0
        here = Pose(np.array([x, ground_height_y(x, z, 7) - 1.7, z], np.float32), 0.0, 0.0)
        world.config.ring_yaws, world.config.detail_max_px = (0.0, math.pi / 2, -math.pi / 2, math.pi), 7.5
        jobs = world.update([PlayerState("a", here, fov_y=VIEW_FOV)])
        around = [j for j in jobs if j.looks_around]
        refining = [j for j in jobs if j.refines]
        assert len(around) == 1 and refining and len(jobs) == len(around) + len(refining)
        (side,) = around
        assert side.fills_holes and abs(float(side.cameras.forwards[0][0])) > 0.9  # facing sideways
        assert 2.0 <= side.priority < 3.0 < REFINE_PRIORITY <= min(j.priority for j in refining)
        assert world.wait_idle(240)
        assert all(j.state == "done" for j in jobs) and world.stats["jobs_preempted"] == 0
        assert side.started_at <= min(j.started_at for j in refining)
        (other,) = world.update([PlayerState("a", here, fov_y=VIEW_FOV)])
        assert other.looks_around and float(other.cameras.forwards[0][0] * side.cameras.forwards[0][0]) < -0.8
        assert world.wait_idle(120) and other.state == "done"
        assert world.update([PlayerState("a", here, fov_y=VIEW_FOV)]) == []
        assert world.stats["look_around_jobs"] == 2 and world.stats["detail_jobs"] == len(refining)
