"""Generation jobs: what one job asks for, and the queue of jobs waiting or running."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from ..camera import Cameras
from ..generators.base import CancelToken


@dataclass
class GenerationJob:
    """One scheduled generation: target cameras and who wants them.

    ``region_center`` ``[3]`` and ``region_radius`` (metres) describe where it lands, for events.
    ``state`` is one of queued, running, done, failed, cancelled.
    """

    id: int
    cameras: Cameras
    caption: str
    region_center: np.ndarray
    region_radius: float
    requested_by: set[str] = field(default_factory=set)
    state: str = "queued"
    progress: float = 0.0
    # ---- additions ----
    priority: float = 0.0  # lower runs first
    refines: bool = False  # asked for because what the view shows is too coarse, not empty
    scale: float = 1.0  # traced at this x the cameras' resolution, then upsampled (coarse fill)
    fills_holes: bool = False  # asked for only by the hole test (WorldConfig.hole_fraction)
    looks_around: bool = False  # asked for only by a ring heading's hole test: not frontier work (FrontierPlanner)
    hole_view: Cameras | None = None  # the probe view whose holes asked for it (one camera)
    created_at: float = field(default_factory=time.monotonic)
    last_requested: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class JobLimits:
    """The most jobs queued or running at once: in one world, and that one player asked for
    (a job several players asked for counts for each). None: no limit. A view over a
    limit is not scheduled now; it is planned again on a later update, once jobs finish."""

    per_world: int | None = None
    per_player: int | None = None

    def refusal(self, pending: list[GenerationJob], player_id: str) -> str | None:
        """``"world"`` or ``"player"`` if one more job for ``player_id`` would pass a limit, else None."""
        if self.per_world is not None and len(pending) >= self.per_world:
            return "world"
        if self.per_player is not None and sum(player_id in j.requested_by for j in pending) >= self.per_player:
            return "player"
        return None


class JobQueue:
    """A world's queued and running jobs, their cancel tokens and the count of running ones.

    It shares the world's planner lock (an ``RLock``): the planner merges requests into
    these jobs and records finished views under the same lock, so a job is never seen
    both gone from the queue and missing from the planner's records.
    """

    def __init__(self, lock: threading.RLock, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = lock
        self._clock = clock  # stamps finished_at (the world's scheduling clock)
        self._idle = threading.Condition(lock)
        self._jobs: dict[int, GenerationJob] = {}  # queued or running
        self._cancel: dict[int, CancelToken] = {}  # running jobs only
        self._running = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __contains__(self, job: GenerationJob) -> bool:
        return job.id in self._jobs

    def pending(self) -> list[GenerationJob]:
        """Queued and running jobs (a copy of the list)."""
        with self._lock:
            return list(self._jobs.values())

    def add(self, job: GenerationJob) -> None:
        with self._lock:
            self._jobs[job.id] = job

    def start_next(self, max_running: int) -> tuple[GenerationJob, CancelToken] | None:
        """Mark the best queued job running and return it with its cancel token.

        None when the queue is closed, ``max_running`` jobs already run, or nothing waits.
        Best is the lowest ``(priority, id)``: equal priorities run in request order.
        """
        with self._lock:
            if self._closed or self._running >= max_running:
                return None
            queued = [j for j in self._jobs.values() if j.state == "queued"]
            if not queued:
                return None
            job = min(queued, key=lambda j: (j.priority, j.id))
            job.state = "running"
            self._running += 1
            token = CancelToken()
            self._cancel[job.id] = token
            return job, token

    def preempt_for_frontier(self, max_running: int) -> GenerationJob | None:
        """Cancel a running refining or look-around job when every slot is taken and a job
        that fills empty space for the frontier waits: neither holds the generator while a
        player walks into a hole (a waiting look-around job cancels nothing: it waits, for
        refining too). The cancelled job ends as usual (its worker sees the token); planning
        asks for it again once nothing fills. Returns the job cancelled, or None."""
        with self._lock:
            if self._closed or self._running < max_running:
                return None
            if not any(j.state == "queued" and not (j.refines or j.looks_around) for j in self._jobs.values()):
                return None
            for job in self._jobs.values():
                token = self._cancel.get(job.id)
                if job.state == "running" and (job.refines or job.looks_around) and token is not None and not token.cancelled:
                    token.cancel()
                    return job
            return None

    def finish(self, job: GenerationJob, state: str) -> bool:
        """Take ``job`` off the queue as ``state``; False if it was no longer on it."""
        with self._lock:
            if job.id not in self._jobs:
                return False
            job.state = state
            job.finished_at = self._clock()
            del self._jobs[job.id]
            if self._cancel.pop(job.id, None) is not None:  # it was submitted (running)
                self._running -= 1
            self._idle.notify_all()
            return True

    def cancel_queued(self, jobs: Iterable[GenerationJob], now: float) -> None:
        """Take queued ``jobs`` off the queue as cancelled (they never ran: no token to fire)."""
        with self._lock:
            jobs = list(jobs)
            for job in jobs:
                job.state = "cancelled"
                job.finished_at = now
                del self._jobs[job.id]
            if jobs:
                self._idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is queued or running; False if ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._jobs:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self) -> bool:
        """Cancel running jobs' tokens and drop queued jobs; False if already closed.

        Running jobs stay on the queue until their worker sees the cancellation and
        finishes them, so :meth:`wait_idle` still waits for them.
        """
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            for token in self._cancel.values():
                token.cancel()
            queued = [j for j in self._jobs.values() if j.state == "queued"]
            for job in queued:
                job.state = "cancelled"
                del self._jobs[job.id]
            self._idle.notify_all()
            return True
