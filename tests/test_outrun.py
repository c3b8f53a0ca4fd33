"""Outrunning generation (issue 16, item 5): fill coarse first, and detail never holds the
generator while a fill waits (the fast-walk hole bound is in test_fidelity.py). Real parts
throughout: procedural generator, CPU renderer, the world's own job queue and worker."""

from __future__ import annotations

import math
import threading

import numpy as np

from runtime.world import PlayerState, World, WorldConfig
from runtime.world.camera import Cameras, intrinsics_from_fov
from runtime.world.frontier.jobs import GenerationJob, JobQueue
from runtime.world.frontier.planner import REFINE_PRIORITY
from runtime.world.generators.procedural import ProceduralGenerator
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
    assert queue.preempt_refining(1) is None  # nothing waits
    queue.add(_job(1, refines=True))
    assert queue.preempt_refining(1) is None  # only more detail waits
    queue.add(_job(2, refines=False))
    assert queue.preempt_refining(1) is detail and token.cancelled
    assert queue.preempt_refining(1) is None  # cancelled once; its worker ends it
    queue.finish(detail, "cancelled")
    started, _ = queue.start_next(max_running=1)
    assert started.id == 2  # the fill job runs before the waiting detail


def test_a_fast_player_gets_coarse_fill_of_the_usual_size():
    """At 6 m/s the first fill jobs are traced at half resolution and upsampled: frame memory
    keeps keyframes of the configured size, and the chunk is as dense as a full one's. A
    player standing in a fresh world gets a full-resolution first keyframe."""
    generator, renderer = ProceduralGenerator(), CpuRenderer()
    cfg = dict(seed=3, ring_yaws=(0.0,))
    with World(WorldConfig("still", **cfg), generator=generator, renderer=renderer) as still:
        (first,) = still.update([PlayerState("a", still.spawn_pose(), fov_y=VIEW_FOV)])
        assert first.scale == 1.0
        assert still.wait_idle(120)
        full = still.scene.snapshot().num_gaussians
    with World(WorldConfig("fast", **cfg), generator=generator, renderer=renderer) as fast:
        jobs = fast.update([PlayerState("a", fast.spawn_pose(), np.array([0, 0, 6.0], np.float32), VIEW_FOV)])
        assert jobs and all(j.scale == 0.5 for j in jobs)
        assert fast.wait_idle(120)
        assert fast.stats["coarse_jobs"] == len(jobs)
        frames = fast.memory.frames()
        assert frames and all(f.rgb.shape == (180, 320, 3) for f in frames)
        # As dense as a full keyframe's chunk (one Gaussian per 2x2 block of the upsampled picture).
        assert fast.scene.snapshot().num_gaussians / len(jobs) > 0.5 * full
