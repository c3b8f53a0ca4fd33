"""Generation in simulated time: the real-time walk's scheduling without the machine's load
(``bench.fidelity --paced SCALE``).

A real-time walk on a shared CPU measures the load as much as the planner: the same code
gave a longest hole of 3.8 s on a quiet CPU-2 and 12.7 s at load 10-20. Here the walk runs
on a simulated clock, and each job's generation takes a modelled time on it:

    seconds = SCALE x (PACE_FIXED_S + PACE_S_PER_PIXEL x pixels traced)

-- 0.31 s for a 320x180 keyframe, 1.07 s for 640x360 and 0.12 s for a 160x90 coarse trace at
SCALE 1: what a job costs (trace, reconstruction, colour fit and landing) in CPU time of the
generation worker's thread, measured with ``bench.job_cost`` on 2026-12-07 after the fast
procedural trace and the cheaper landing (docs/benchmarks.md, "What a job costs, stage by
stage"; it was 0.44 / 1.6 / 0.15 s before them). The real work
still runs (the chunks are the real ones); while it does, the simulated clock stands still,
and a job's chunk lands once the clock has passed its start plus its modelled time. Queueing,
cancellation (refining jobs cut short for a fill) and priorities play out as they would on a
machine that generates at that speed, whatever else runs on this one. Planning, probes and
drawing are taken as free.
"""

from __future__ import annotations

import threading
import time

from runtime.world import World
from runtime.world.generators.base import CancelToken, GenerationCancelled, GenerationRequest, GenerationResult

PACE_FIXED_S = 0.06
"""Modelled seconds of a job besides its trace's pixels (at SCALE 1)."""
PACE_S_PER_PIXEL = 4.4e-6
"""Modelled seconds per traced pixel: trace, reconstruction and landing (at SCALE 1)."""


class SimClock:
    """A clock the walk advances; jobs wait on it for their modelled end."""

    def __init__(self) -> None:
        self.now = 0.0
        self._cond = threading.Condition()

    def __call__(self) -> float:
        return self.now

    def advance(self, t: float) -> None:
        with self._cond:
            self.now = max(self.now, t)
            self._cond.notify_all()

    def wait_until(self, t: float, cancel: CancelToken) -> None:
        """Block until the clock reaches ``t`` (raises GenerationCancelled if ``cancel`` is set first)."""
        with self._cond:
            while self.now < t - 1e-9:
                if cancel.cancelled:
                    raise GenerationCancelled()
                self._cond.wait(0.02)


class PacedGenerator:
    """Wraps a generator: a result is returned once the simulated clock has passed the
    moment the call began plus the modelled cost of what it traced."""

    def __init__(self, inner, clock: SimClock, scale: float) -> None:
        self.inner, self.clock, self.scale = inner, clock, scale
        self.name = inner.name
        self.reads_scene = getattr(inner, "reads_scene", True)
        self.traces_any_size = getattr(inner, "traces_any_size", False)
        self._lock = threading.Lock()
        self.waiting = 0  # calls blocked on the clock (their real work done)
        self.free = True  # until the walk starts (the spawn's bootstrap): no waiting

    def __getattr__(self, name):  # the world reads generator-specific attributes (biome, ...)
        return getattr(self.inner, name)

    def cost_s(self, request: GenerationRequest) -> float:
        cams = request.cameras
        return self.scale * (PACE_FIXED_S + PACE_S_PER_PIXEL * len(cams) * cams.width * cams.height)

    def generate(self, request: GenerationRequest, progress, cancel: CancelToken) -> GenerationResult:
        start = self.clock.now
        result = self.inner.generate(request, progress, cancel)
        if self.free:
            return result
        with self._lock:
            self.waiting += 1
        try:
            self.clock.wait_until(start + self.cost_s(request), cancel)
        finally:
            with self._lock:
                self.waiting -= 1
        return result


def settle(world: World, generator: PacedGenerator, timeout_s: float = 300.0) -> None:
    """Wait (real time) until no job does real work: every running job is blocked on the
    simulated clock, and those it released have landed and the next ones started."""
    deadline = time.monotonic() + timeout_s
    slots = world.config.max_concurrent_jobs
    quiet = 0
    while time.monotonic() < deadline:
        jobs = world.pending_jobs()
        running = sum(j.state == "running" for j in jobs)
        startable = running < slots and any(j.state == "queued" for j in jobs)  # a landing's worker starts it next
        # Twice in a row: between a landing and the next start nothing may show.
        quiet = quiet + 1 if running == generator.waiting and not startable else 0
        if quiet >= 2:
            return
        time.sleep(0.005)
    raise TimeoutError(f"paced walk: jobs still working after {timeout_s} s")
