"""Running generation jobs: queue -> executor -> generator -> the world's ``apply``.

:class:`JobRunner` submits the best queued jobs to the executor while fewer than
``max_concurrent_jobs`` run, and runs each on a worker: skip it if other jobs have
covered its views meanwhile, else generate with frame-memory context and hand the
result to ``apply``. Failures and cancellations become events; the world keeps going.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor
from typing import Callable

import numpy as np

from ..config import WorldConfig
from ..events import ChunkAdded, GenerationFailed, GenerationProgress, WorldEvent
from ..generators.base import CancelToken, GenerationCancelled, GenerationRequest, GenerationResult, Generator
from ..keyframes.memory import FrameMemory
from .jobs import GenerationJob, JobQueue
from .planner import FrontierPlanner

log = logging.getLogger(__name__)


class JobRunner:
    """Starts queued jobs on an executor and carries each to its end.

    Args:
        config: ``max_concurrent_jobs``, ``max_retrieved_frames``, seed, world name.
        queue: the world's jobs.
        executor: runs :meth:`_run` on worker threads.
        generator: makes keyframes for a job.
        memory: frames retrieved as context for the generator.
        planner: asked whether a job is still needed; told which views are done or failed.
        apply: lands a result (``World.apply``); finishes the job as done.
        emit: delivers events.
        stats: the world's counters (``jobs_done``, ``jobs_failed``, ``jobs_skipped``).
        start_image: ``[H, W, 3]`` uint8 image the world started from, or None.
    """

    def __init__(
        self,
        config: WorldConfig,
        queue: JobQueue,
        executor: Executor,
        generator: Generator,
        memory: FrameMemory,
        planner: FrontierPlanner,
        apply: Callable[[GenerationJob, GenerationResult], object],
        emit: Callable[[WorldEvent], None],
        stats: dict,
        start_image: np.ndarray | None,
    ) -> None:
        self.config = config
        self.queue = queue
        self.executor = executor
        self.generator = generator
        self.memory = memory
        self.planner = planner
        self.stats = stats
        self.start_image = start_image
        self._apply = apply
        self._emit = emit
        self.average_job_s: float | None = None  # running average of one job's generation time

    def pump(self) -> None:
        """Submit the best queued jobs while fewer than ``max_concurrent_jobs`` run."""
        while True:
            started = self.queue.start_next(self.config.max_concurrent_jobs)
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
            self._emit(GenerationFailed(job.id, error))

    def _run(self, job: GenerationJob, token: CancelToken) -> None:
        cfg = self.config
        job.started_at = time.monotonic()
        try:
            if self.planner.already_covered(job):
                self.stats["jobs_skipped"] += 1
                self.planner.record_done(job.cameras)
                self.finish(job, "done")
                self._emit(ChunkAdded(job.id, (), (), ()))
                return
            first = job.cameras[0]
            memory = tuple(self.memory.retrieve(first, k=cfg.max_retrieved_frames)) if cfg.max_retrieved_frames and len(self.memory) else ()
            request = GenerationRequest(job.cameras, job.caption, memory, cfg.seed, self.start_image)

            def progress(fraction: float, message: str = "") -> None:
                job.progress = float(fraction)
                self._emit(GenerationProgress(job.id, float(fraction), message))

            progress(0.0, "started")
            result = self.generator.generate(request, progress, token)
            token.raise_if_cancelled()
            self._apply(job, result)
            self.stats["jobs_done"] += 1
            seconds = time.monotonic() - job.started_at
            self.average_job_s = seconds if self.average_job_s is None else 0.7 * self.average_job_s + 0.3 * seconds
        except GenerationCancelled:
            self.finish(job, "cancelled")
            self._emit(GenerationFailed(job.id, "cancelled", cancelled=True))
        except Exception as e:  # the world survives a failing generator
            log.exception("world %s: job %d failed", cfg.name, job.id)
            self.stats["jobs_failed"] += 1
            self.planner.record_failed(job.cameras, time.monotonic())
            self.finish(job, "failed")
            self._emit(GenerationFailed(job.id, f"{type(e).__name__}: {e}"))
        finally:
            if job in self.queue:  # apply() normally finishes it
                self.finish(job, job.state if job.state != "running" else "failed")
            self.pump()
