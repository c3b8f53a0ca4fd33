"""Running generation jobs: queue -> executor -> generator -> the world's ``apply``.

:class:`JobRunner` submits the best queued jobs to the executor while fewer than
``max_concurrent_jobs`` run, and runs each on a worker: skip it if other jobs have
covered its views meanwhile, else generate with frame-memory context and hand the
result to ``apply``. Failures and cancellations become events; the world keeps going.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import Executor
from typing import Callable

import numpy as np

from ..events import ChunkAdded, JobFailed, JobProgress
from ..generators.base import CancelToken, GenerationCancelled, GenerationRequest, GenerationResult
from ..parts import WorldParts
from .jobs import GenerationJob
from .planner import FrontierPlanner
from .scene_view import SceneView

log = logging.getLogger(__name__)


class JobRunner:
    """Starts queued jobs on an executor and carries each to its end.

    Args:
        parts: the world's shared state: settings (``max_concurrent_jobs``,
            ``max_retrieved_frames``, seed), the job queue, the generator, the memory that
            gives context frames, the start image, the event bus; it counts ``jobs_done``,
            ``jobs_failed`` and ``jobs_skipped``.
        planner: asked whether a job is still needed; told which views are done or failed.
        executor: runs :meth:`_run` on worker threads.
        apply: lands a result (``World.apply``); finishes the job with :meth:`landed`.
        max_running: jobs running at once; None: ``config.max_concurrent_jobs``.
    """

    def __init__(
        self,
        parts: WorldParts,
        planner: FrontierPlanner,
        executor: Executor,
        apply: Callable[[GenerationJob, GenerationResult], object],
        max_running: int | None = None,
    ) -> None:
        self.config, self.queue, self.generator, self.memory = parts.config, parts.jobs, parts.generator, parts.memory
        self.stats, self.start_image, self._clock = parts.stats, parts.start_image, parts.clock
        self._lock = parts.lock  # the queue's
        # What generators that condition on known content draw (GenerationRequest.scene).
        self._scene_view = SceneView(parts.scene, parts.sky, parts.renderer)
        self.planner = planner
        self.executor = executor
        self._apply = apply
        self.max_running = max_running or parts.config.max_concurrent_jobs
        self._emit = parts.events.emit
        self.average_job_s: float | None = None  # running average of one job's generation time
        self.average_wait_s: float | None = None  # running average of a fill job's time queued

    def pump(self) -> None:
        """Submit the best queued jobs while fewer than ``max_running`` run (after cancelling
        a running refining or look-around job if a frontier job waits for its slot)."""
        if self.queue.preempt_for_frontier(self.max_running) is not None:
            self.stats.jobs_preempted += 1
        while True:
            started = self.queue.start_next(self.max_running)
            if started is None:
                return
            job, token = started
            try:
                self.executor.submit(self._run, job, token)
            except RuntimeError as e:  # executor shut down under us
                self.finish(job, "failed", f"could not submit: {e}")
                return

    def finish(self, job: GenerationJob, state: str, error: str | None = None) -> None:
        """Take ``job`` off the queue as ``state``; announce ``error`` if it was still on it."""
        if not self.queue.finish(job, state):
            return
        if error is not None:
            self._emit(JobFailed(job.id, error))

    def landed(self, job: GenerationJob) -> None:
        """Finish ``job`` as done, its result landed, and count it in ``jobs_done`` under the
        queue's lock: whoever :meth:`.jobs.JobQueue.wait_idle` wakes sees it counted."""
        with self._lock:
            if job in self.queue:
                self.stats.jobs_done += 1
            self.finish(job, "done")

    def _run(self, job: GenerationJob, token: CancelToken) -> None:
        cfg = self.config
        job.started_at = self._clock()
        if not (job.refines or job.looks_around):  # these wait for the frontier by design: their queueing says nothing of lag
            waited = max(0.0, job.started_at - job.created_at)
            self.average_wait_s = waited if self.average_wait_s is None else 0.7 * self.average_wait_s + 0.3 * waited
        try:
            if self.planner.already_covered(job):
                self.stats.jobs_skipped += 1
                self.planner.record_done(job.cameras)
                self.finish(job, "done")
                self._emit(ChunkAdded(job.id, (), (), ()))
                return
            first = job.cameras[0]
            memory = tuple(self.memory.retrieve(first, k=cfg.max_retrieved_frames)) if cfg.max_retrieved_frames and len(self.memory) else ()
            request = GenerationRequest(job.cameras, job.caption, memory, cfg.seed, self.start_image, self._scene_view)

            def progress(fraction: float, message: str = "") -> None:
                job.progress = float(fraction)
                self._emit(JobProgress(job.id, float(fraction), message))

            progress(0.0, "started")
            if job.scale < 1.0:
                result = self._generate_coarse(job, request, progress, token)
            else:
                result = self.generator.generate(request, progress, token)
            token.raise_if_cancelled()
            self._apply(job, result)
            seconds = self._clock() - job.started_at
            self.average_job_s = seconds if self.average_job_s is None else 0.7 * self.average_job_s + 0.3 * seconds
        except GenerationCancelled:
            self.finish(job, "cancelled")
            self._emit(JobFailed(job.id, "cancelled", cancelled=True))
        except Exception as e:  # the world survives a failing generator
            log.exception("world %s: job %d failed", cfg.name, job.id)
            self.stats.jobs_failed += 1
            self.planner.record_failed(job.cameras, self._clock())
            self.finish(job, "failed")
            self._emit(JobFailed(job.id, f"{type(e).__name__}: {e}"))
        finally:
            if job in self.queue:  # apply() normally finishes it
                self.finish(job, job.state if job.state != "running" else "failed")
            self.pump()


    def _generate_coarse(self, job: GenerationJob, request: GenerationRequest, progress, token: CancelToken) -> GenerationResult:
        """Generate ``job`` at ``job.scale`` x its cameras' resolution and upsample the pictures
        back (nearest pixel), so the chunk builder, frame memory and revisit checks see keyframes
        of the usual size; their Gaussians are laid out as usual, with the colour and depth of
        the coarser trace (fill coarse first)."""
        cams = job.cameras
        w, h = max(8, round(cams.width * job.scale)), max(8, round(cams.height * job.scale))
        small = self.generator.generate(dataclasses.replace(request, cameras=cams.resized(w, h)), progress, token)
        rows = np.minimum((np.arange(cams.height) * h) // cams.height, h - 1)
        cols = np.minimum((np.arange(cams.width) * w) // cams.width, w - 1)
        rgb = np.asarray(small.rgb)[:, rows][:, :, cols]
        depth = None if small.depth is None else np.asarray(small.depth)[:, rows][:, :, cols]
        own = None if small.cameras is None else small.cameras.resized(cams.width, cams.height)
        return dataclasses.replace(small, rgb=rgb, depth=depth, cameras=own)
