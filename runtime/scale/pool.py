"""A pool of generator actors on a Ray cluster, and the generator that sends jobs to it.

:class:`ActorPool` starts ``actors`` :class:`.actor.GeneratorActor` s (CPU or GPU, by
:class:`PoolSettings`), lends one to each job (the least busy), bounds the jobs in flight
over the whole pool (backpressure: a job waits on its world's worker thread, still
cancellable, until a slot frees) and replaces an actor that died. :class:`RayGenerator`
is the :class:`runtime.world.generators.Generator` a world uses with ``--ray``: its
``generate`` runs one job to its end on the pool, retried on another actor when its actor
dies, so each job returns exactly one result (or one error) to the world's runner.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from runtime.world.generators import CancelToken, GenerationCancelled, GenerationRequest, GenerationResult, ProgressCallback
from runtime.world.sky import Sky

from .actor import GeneratorActor

log = logging.getLogger(__name__)

POLL_S = 0.05
"""How often a waiting job looks at its cancel token (seconds)."""
PROGRESS_S = 0.5
"""How often a running job's progress is fetched from its actor (seconds)."""
CANCEL_GRACE_S = 10.0
"""How long a cancelled job's slot stays taken while its actor notices the flag (seconds)."""


@dataclass(frozen=True)
class PoolSettings:
    """What the pool runs and where.

    Attributes:
        generator, options: the registered generator each actor builds, once.
        actors: actors in the pool.
        num_cpus, num_gpus: Ray resources each actor holds (``num_gpus=1`` for a diffusion
            model that needs a whole GPU; fractions share one).
        max_in_flight: jobs sent to actors at once, all worlds together; None: one per
            actor (as many as the pool has now). More would wait in an actor's queue, where a closer job can no longer
            overtake them, so the default keeps the waiting on our side, in priority order.
        max_attempts: actors a job is tried on before it fails (an actor dying mid-job
            costs one attempt).
    """

    generator: str = "procedural"
    options: dict = field(default_factory=dict)
    actors: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_in_flight: int | None = None
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise ValueError(f"PoolSettings.actors must be >= 1, got {self.actors}")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(f"PoolSettings.max_in_flight must be >= 1, got {self.max_in_flight}")
        if self.max_attempts < 1:
            raise ValueError(f"PoolSettings.max_attempts must be >= 1, got {self.max_attempts}")


@dataclass
class PoolStats:
    """Counters: jobs sent (attempts), finished with a result, cancelled, retried after an
    actor died, and actors replaced."""

    submitted: int = 0
    completed: int = 0
    cancelled: int = 0
    retried: int = 0
    actors_replaced: int = 0


class _Slot:
    """One actor of the pool and the jobs it runs now."""

    def __init__(self, index: int, handle) -> None:
        self.index, self.handle, self.busy = index, handle, 0
        self.retiring = False  # the pool shrank: stop it once its jobs are done


class ActorPool:
    """``settings.actors`` generator actors on the connected Ray cluster (``ray.init`` first).

    Thread-safe: every world's worker threads share one pool.
    """

    def __init__(self, settings: PoolSettings) -> None:
        import ray  # the ray extra; only a pool needs it

        self._ray = ray
        self.settings = settings
        # Generation runs one job at a time per actor; cancel/current run beside it.
        self._actor_class = ray.remote(concurrency_groups={"control": 2})(GeneratorActor).options(
            num_cpus=settings.num_cpus, num_gpus=settings.num_gpus, max_restarts=0, max_task_retries=0
        )
        self._cond = threading.Condition()
        self._slots = [_Slot(i, self._new_actor()) for i in range(settings.actors)]
        self._in_flight = 0
        self._closed = False
        self.stats = PoolStats()
        self._retryable = (
            ray.exceptions.RayActorError,
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.NodeDiedError,
            ray.exceptions.ObjectLostError,
        )

    @property
    def max_in_flight(self) -> int:
        return self.settings.max_in_flight or max(1, sum(not s.retiring for s in self._slots))

    @property
    def in_flight(self) -> int:
        """Jobs sent to actors now."""
        with self._cond:
            return self._in_flight

    @property
    def actors(self) -> list:
        """The actor handles now in the pool, retiring ones aside (a copy)."""
        with self._cond:
            return [s.handle for s in self._slots if not s.retiring]

    def _new_actor(self):
        return self._actor_class.remote(self.settings.generator, dict(self.settings.options))

    def _control(self, handle, method: str, *args):
        return getattr(handle, method).options(concurrency_group="control").remote(*args)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every actor has built its generator; raises the first actor's error
        (e.g. a generator's missing weights) or GetTimeoutError."""
        self._ray.get([self._control(h, "current") for h in self.actors], timeout=timeout)

    # ------------------------------------------------------------------ one job
    def run(self, request: GenerationRequest, cancel: CancelToken, progress: ProgressCallback | None = None) -> GenerationResult:
        """Generate ``request`` on some actor; retried on another when its actor dies.

        ``progress(fraction, message)`` gets the generator's reports, fetched every ``PROGRESS_S``.

        Blocks the calling thread (a world's generation worker, never an event loop).
        Raises GenerationCancelled when ``cancel`` fires, the generator's own error when it
        fails, RuntimeError after ``max_attempts`` actors died under it.
        """
        key = uuid.uuid4().hex  # the job's name on the actors (for cancel)
        for attempt in range(1, self.settings.max_attempts + 1):
            slot, handle = self._acquire(cancel)
            try:
                ref = handle.generate.remote(key, request)
                with self._cond:
                    self.stats.submitted += 1
                return self._await(ref, handle, key, cancel, progress)
            except self._retryable as exc:
                log.warning("generator actor %d died during a job (attempt %d): %s", slot.index, attempt, type(exc).__name__)
                self._replace(slot, handle)
                with self._cond:
                    self.stats.retried += 1
            finally:
                self._release(slot)
        raise RuntimeError(f"the job's actor died {self.settings.max_attempts} times")

    def _await(self, ref, handle, key: str, cancel: CancelToken, progress: ProgressCallback | None) -> GenerationResult:
        ray = self._ray
        asked, last, next_ask = None, None, time.monotonic() + PROGRESS_S  # a progress question in flight
        while True:
            if progress is not None:
                if asked is not None and ray.wait([asked], timeout=0)[0]:
                    report, asked = ray.get(asked), None
                    if report is not None and report != last:
                        last = report
                        progress(*report)
                if asked is None and time.monotonic() >= next_ask:
                    asked, next_ask = self._control(handle, "progress", key), time.monotonic() + PROGRESS_S
            ready, _ = ray.wait([ref], timeout=POLL_S)
            if ready:
                result = ray.get(ref)  # the generator's exception, or the actor's death, raises here
                with self._cond:
                    self.stats.completed += 1
                return result
            if cancel.cancelled:
                self._control(handle, "cancel", key)  # the flag the generator polls
                ray.cancel(ref)  # and if it has not started, it never will
                ray.wait([ref], timeout=CANCEL_GRACE_S)  # keep the slot until the actor is free
                with self._cond:
                    self.stats.cancelled += 1
                raise GenerationCancelled()

    # ------------------------------------------------------------------ slots
    def _acquire(self, cancel: CancelToken) -> tuple[_Slot, object]:
        """The least busy actor, once fewer than ``max_in_flight`` jobs run (backpressure)."""
        with self._cond:
            while self._in_flight >= self.max_in_flight or self._closed:
                if self._closed:
                    raise RuntimeError("the actor pool is closed")
                if cancel.cancelled:
                    raise GenerationCancelled()
                self._cond.wait(POLL_S)
            slot = min((s for s in self._slots if not s.retiring), key=lambda s: s.busy)
            slot.busy += 1
            self._in_flight += 1
            return slot, slot.handle

    def _release(self, slot: _Slot) -> None:
        with self._cond:
            slot.busy -= 1
            self._in_flight -= 1
            if slot.retiring and slot.busy == 0:
                self._retire(slot)
            self._cond.notify_all()

    def _replace(self, slot: _Slot, dead) -> None:
        """Put a new actor in ``slot`` unless another job already replaced ``dead``."""
        with self._cond:
            if slot.handle is dead and not self._closed and not slot.retiring:
                slot.handle = self._new_actor()
                self.stats.actors_replaced += 1

    def resize(self, actors: int) -> None:
        """Grow to ``actors`` actors at once, or shrink: idle actors stop now, busy ones when
        their job ends (a job is never cut short by a shrink)."""
        if actors < 1:
            raise ValueError(f"a pool needs at least one actor, got {actors}")
        with self._cond:
            active = [s for s in self._slots if not s.retiring]
            for _ in range(actors - len(active)):
                self._slots.append(_Slot(max((s.index for s in self._slots), default=-1) + 1, self._new_actor()))
            for slot in sorted(active, key=lambda s: s.busy)[: max(0, len(active) - actors)]:
                slot.retiring = True
                if slot.busy == 0:
                    self._retire(slot)
            self._cond.notify_all()

    def _retire(self, slot: _Slot) -> None:
        # Under self._cond. ray.kill only sends a message: it does not block.
        self._slots.remove(slot)
        self._ray.kill(slot.handle)

    # ------------------------------------------------------------------ the rest
    def sky(self, caption: str, seed: int, start_image) -> Sky:
        """A new world's sky, from the generator (any actor: they are all alike)."""
        return self._ray.get(self._control(self.actors[0], "sky", caption, seed, start_image))

    def generator_attribute(self, name: str, default=None):
        """An attribute of the actors' generator (``makes_depth``, ...)."""
        return self._ray.get(self._control(self.actors[0], "attribute", name, default))

    def close(self) -> None:
        """Stop every actor (jobs still running on them fail)."""
        with self._cond:
            self._closed = True
            handles = [s.handle for s in self._slots]
            self._cond.notify_all()
        for handle in handles:
            self._ray.kill(handle)


class RayGenerator:
    """The generator a world uses when generation runs on an :class:`ActorPool`.

    ``generate`` blocks its caller (the world's job runner thread) until the pool answers,
    passing on the actor's progress reports twice a second. A request's ``scene``
    travels as the scene's snapshot (see :mod:`runtime.world.frontier.scene_view`), and only
    to generators that read it (those without ``reads_scene = False``).
    """

    def __init__(self, pool: ActorPool) -> None:
        self.pool = pool
        self.name = pool.settings.generator
        self.reads_scene = bool(pool.generator_attribute("reads_scene", True))
        self.traces_any_size = bool(pool.generator_attribute("traces_any_size", False))

    def generate(self, request: GenerationRequest, progress: ProgressCallback, cancel: CancelToken) -> GenerationResult:
        if not self.reads_scene and request.scene is not None:
            request = dataclasses.replace(request, scene=None)  # a snapshot costs bytes on the wire
        return self.pool.run(request, cancel, progress)

    def sky(self, caption: str, seed: int, start_image) -> Sky:
        return self.pool.sky(caption, seed, start_image)
