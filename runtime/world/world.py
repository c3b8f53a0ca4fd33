"""The World facade: scene, frame memory, coverage, generation scheduling, reconstruction,
rendering and movement -- everything a world is, with no networking in it.

The server and the store drive a world through this class only; it composes the parts:

* :meth:`World.update` (5-10 times a second) asks the :class:`.planner.FrontierPlanner`
  to test each player's probe views for coverage and queue a :class:`.jobs.GenerationJob`
  for every uncovered view that no queued, running or finished job already serves.
* The :class:`.runner.JobRunner` runs jobs on an executor (one worker thread by
  default), highest priority first; :meth:`World.apply` lands a job's frames through
  the :class:`.chunk_builder.ChunkBuilder` as a new scene chunk, keeps them in frame
  memory and updates the sky-direction and explored maps, all under one lock so each
  chunk lands atomically.
* :meth:`World.render` draws ``scene.snapshot()`` and never waits on generation; cameras
  standing in a view a player was shown earlier see it as it was shown
  (:mod:`.seen_views`, :mod:`.seen_masks`, :mod:`.display`).
* :meth:`World.move` steps a pose with collision against the scene.

Events (:data:`.events.WorldEvent`) go to subscribers from whichever thread made them.
"""

from __future__ import annotations

import base64
import math
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from .camera import Cameras, Pose
from .config import MAX_CAPTION_CHARS, WorldConfig
from .events import ChunkAdded, ChunkRequested, EventBus, JobFailed, JobProgress, WorldEvent
from .frontier.chunk_builder import SHOWN_DEPTH_CACHE_FRAMES, ChunkBuilder
from .frontier.coverage import ExploredMap, SkyDirections
from .frontier.jobs import GenerationJob, JobLimits, JobQueue
from .frontier.planner import FrontierPlanner, ViewRecord, lookahead_seconds
from .frontier.runner import JobRunner
from .gaussians import Gaussians
from .generators.base import DepthEstimator, GenerationResult, Generator
from .keyframes.frames import Frame
from .keyframes.memory import FrameMemory
from .keyframes.optimise import ChunkOptimiser
from .movement.collision import SceneCollider
from .movement.motion import MoveInput, Moved, head_step
from .movement.motion import advance as motion_advance
from .parts import WorldParts, WorldStats
from .players import PlayerState
from .render.base import Renderer, RenderOutput
from .render.video import PendingVideoFrames
from .revisit.display import Display
from .revisit.seen_masks import HiddenSplats
from .revisit.seen_views import NO_CHUNK, SeenViews
from .thread_priority import lower_thread_priority
from .scene import Chunk, ChunkSource, Scene, SceneSnapshot
from .sky import Sky
from .keyframes.start_frame import START_IMAGE_SOURCE, StartFrame, kept_start_image, lift_start_frame

MAX_CAPTION_HISTORY = 64
"""Captions remembered (with their times) and saved; older ones are dropped: chunks keep their own."""

# Re-exported: these names have always been importable from runtime.world.world.
__all__ = [
    "ChunkAdded",
    "ChunkRequested",
    "GenerationJob",
    "JobFailed",
    "JobProgress",
    "PlayerState",
    "SHOWN_DEPTH_CACHE_FRAMES",
    "ViewRecord",
    "World",
    "WorldConfig",
    "WorldEvent",
    "pack_retired",
    "retired_mask",
]


class World:
    """One persistent world. Thread-safe: update/render/move from the server, apply from workers.

    Args:
        config: identity and generation settings.
        generator: None builds ``create_generator(config.generator, **config.generator_options)``.
        renderer: None builds ``create_renderer("auto")``.
        executor: runs generation jobs; None makes a ``ThreadPoolExecutor`` with one worker
            per job that may run at once, which the world owns (and shuts down in :meth:`close`).
            Its workers yield the CPU to the server's frame clock (:mod:`.thread_priority`)
            unless ``yield_cpu`` is False.
        start_image: ``[H, W, 3]`` uint8 image the world started from, or None; the world keeps
            it shrunk to :data:`.keyframes.start_frame.KEPT_START_IMAGE_SIDE` pixels at most.
        depth_estimator: turns RGB-only generator output into depth.
        max_concurrent_jobs: jobs generating at once, for this process only (not saved:
            a server whose generator is a pool of remote workers runs more); None:
            ``config.max_concurrent_jobs``.
        chunk_optimiser: fits each new chunk to its keyframes before it lands (on the
            generation worker, :mod:`.keyframes.optimise`); None: off. A process setting
            like the renderer, not saved with the world.
        clock: seconds, for scheduling (when jobs were asked for, started, ended; stale
            jobs, retries, the lookahead's job times): ``time.monotonic``, or a simulated
            clock (``bench.paced``: generation timed by a model, not by a loaded CPU).
        yield_cpu: False: the world's own workers keep the priority of the thread that starts
            them, for a caller that waits for generation with no frame clock to give way to
            (the start-up warm-up, fast-forwarded benches, tests). A yielding worker is in
            ``SCHED_IDLE``, which on a machine busy with anything else gets almost no CPU: a
            warm-up, or a bench walk, then waited minutes for it.
    """

    def __init__(
        self,
        config: WorldConfig,
        generator: Generator | None = None,
        renderer: Renderer | None = None,
        executor: Executor | None = None,
        start_image: np.ndarray | None = None,
        depth_estimator: DepthEstimator | None = None,
        max_concurrent_jobs: int | None = None,
        chunk_optimiser: ChunkOptimiser | None = None,
        clock: Callable[[], float] = time.monotonic,
        yield_cpu: bool = True,
    ) -> None:
        if generator is None:
            from .generators import create_generator

            generator = create_generator(config.generator, **config.generator_options)
        if renderer is None:
            from .render import create_renderer

            renderer = create_renderer("auto")
        if start_image is not None:
            start_image = np.asarray(start_image)
            if start_image.ndim != 3 or start_image.shape[2] != 3 or start_image.dtype != np.uint8:
                raise ValueError(f"start_image must be [H, W, 3] uint8, got {start_image.shape} {start_image.dtype}")
            # Not the whole picture: keyframe 0 is made from the caller's copy (seed_world),
            # and generators only read its colours.
            start_image = kept_start_image(start_image)
        self._own_executor = executor is None
        if max_concurrent_jobs is not None and (int(max_concurrent_jobs) != max_concurrent_jobs or max_concurrent_jobs < 1):
            raise ValueError(f"max_concurrent_jobs must be an integer >= 1, got {max_concurrent_jobs}")
        max_concurrent_jobs = max_concurrent_jobs or config.max_concurrent_jobs
        # Generation yields the CPU to the server's frame clock (thread_priority says why).
        self.executor = executor or ThreadPoolExecutor(
            max_workers=max_concurrent_jobs, thread_name_prefix=f"world-{config.name}",
            initializer=lower_thread_priority if yield_cpu else None,
        )
        sky_fn = getattr(generator, "sky", None)
        sky = sky_fn(config.caption, config.seed, start_image) if callable(sky_fn) else Sky()
        # One planner lock (an RLock) for subscribers, jobs, view records, id counters and
        # captions, shared by the parts: they were one object's state and their updates
        # must stay atomic together (see JobQueue).
        lock = threading.RLock()
        self.parts = WorldParts(
            config=config,
            generator=generator,
            depth_estimator=depth_estimator,
            renderer=renderer,
            sky=sky,
            start_image=start_image,
            # Renderers that derive per-chunk data (the CPU renderer's levels of detail) do it
            # as chunks land, on the generation worker, not in the first frame drawing them.
            scene=Scene(prepare=getattr(renderer, "prepare", None)),
            memory=FrameMemory(point_stride=4),
            collider=SceneCollider(),
            explored=ExploredMap(config.explored_cell),
            sky_directions=SkyDirections(),
            lock=lock,
            jobs=JobQueue(lock, clock),
            events=EventBus(config.name, lock),
            stats=WorldStats(),
            optimiser=chunk_optimiser,
            clock=clock,
        )
        # The parts that never change, by their names (the server and the store read them).
        self.config, self.generator, self.renderer, self.sky = config, generator, renderer, sky
        self.depth_estimator, self.start_image = depth_estimator, start_image
        # Why the start image is not keyframe 0 (no depth source), for players; "" when it is.
        self.start_notice = ""
        self._start_position: np.ndarray | None = None  # [3] the start image's camera centre
        self.scene, self.memory, self.collider = self.parts.scene, self.parts.memory, self.parts.collider
        self._lock, self._queue, self._events = lock, self.parts.jobs, self.parts.events
        self._apply_lock = threading.Lock()  # one chunk lands at a time
        # Jobs whose result has landed, so a job lands once even if a retried job answers
        # twice (a generator on another process or machine: runtime/scale). Ints: small.
        self._landed_jobs: set[int] = set()
        self._captions: list[tuple[float, str]] = [(time.time(), config.caption)]

        self._planner = FrontierPlanner(self.parts)
        self._builder = ChunkBuilder(self.parts)
        self._runner = JobRunner(self.parts, self._planner, self.executor, self.apply, max_concurrent_jobs)
        self.seen_views = SeenViews(config.revisit_radius_m, math.radians(config.revisit_angle_deg), self.parts.stats)
        self._display = Display(self.parts, self.seen_views, HiddenSplats(self.parts))

    @property
    def explored(self) -> ExploredMap:
        """Which ground cells are generated or visited (replaced by :meth:`restore`)."""
        return self.parts.explored

    @property
    def sky_directions(self) -> SkyDirections:
        """Which view directions are known sky (replaced by :meth:`restore`)."""
        return self.parts.sky_directions

    @property
    def stats(self) -> dict[str, int | float]:
        """The counters by name (a copy; see :class:`.parts.WorldStats`)."""
        return self.parts.stats.as_dict()

    # ------------------------------------------------------------------ events
    def subscribe(self, callback: Callable[[WorldEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; returns an unsubscribe function."""
        return self._events.subscribe(callback)

    def _emit(self, event: WorldEvent) -> None:
        self._events.emit(event)

    # ------------------------------------------------------------------ movement
    def spawn_pose(self) -> Pose:
        """Where new players start: the origin facing +z (the first camera of the world)."""
        return Pose(np.zeros(3, np.float32), 0.0, 0.0)

    def move(self, pose: Pose, move: MoveInput, dt: float) -> Pose:
        """Advance ``pose`` by a :class:`runtime.world.movement.motion.MoveInput` over ``dt`` seconds, with collision."""
        return self.advance(pose, move, dt).pose

    def advance(self, pose: Pose, move: MoveInput, dt: float) -> Moved:
        """:meth:`move`, also saying whether the move was blocked (see :class:`.movement.motion.Moved`).

        Collides with the collider's grids as they are: every change to the scene brings them
        up to date in the thread that made it (a chunk landing is collidable once merged, tens
        of ms later). Merging here would put that work in the frame clock's render thread.
        """
        # A player standing on the start image's camera stays there until they walk, so the
        # first picture is the image; their first step settles them onto the ground.
        on_start = self._start_position is not None and np.array_equal(pose.position, self._start_position)
        walking = move.forward != 0 or move.right != 0 or move.up != 0
        return motion_advance(pose, move, dt, None if on_start and not walking else self.collider)

    def move_head(self, pose: Pose, head: Pose) -> Pose:
        """Move ``pose`` to a VR ``head`` pose, with collision (walls stop the head; no gravity);
        against the collider as it is, like :meth:`advance`."""
        return head_step(pose, head, self.collider)

    # ------------------------------------------------------------------ planning
    @property
    def caption(self) -> str:
        return self._captions[-1][1]

    def set_caption(self, caption: str) -> None:
        """Use ``caption`` for every job scheduled from now on (earlier chunks keep theirs)."""
        if not isinstance(caption, str):
            raise ValueError(f"caption must be a string, got {type(caption).__name__}")
        if len(caption) > MAX_CAPTION_CHARS:
            raise ValueError(f"caption must be at most {MAX_CAPTION_CHARS} characters, got {len(caption)}")
        with self._lock:
            if caption != self._captions[-1][1]:
                self._captions.append((time.time(), caption))
                del self._captions[:-MAX_CAPTION_HISTORY]

    @property
    def job_limits(self) -> JobLimits:
        """The most jobs queued or running at once, in this world and per player (none by default)."""
        return self._planner.limits

    @job_limits.setter
    def job_limits(self, limits: JobLimits) -> None:
        self._planner.limits = limits

    def take_refused_jobs(self) -> dict[str, str]:
        """Players whose views were left unplanned by :attr:`job_limits` since the last call:
        player id -> ``"world"`` or ``"player"`` (the limit that refused)."""
        with self._lock:
            refused, self._planner.refused = self._planner.refused, {}
        return refused

    def pending_jobs(self) -> list[GenerationJob]:
        """Queued and running jobs (a copy of the list)."""
        return self._queue.pending()

    def update(self, players: Sequence[PlayerState]) -> list[GenerationJob]:
        """Plan generation for these players; returns the jobs newly scheduled (already submitted)."""
        if self._queue.closed:
            return []
        now = self.parts.clock()
        self.parts.stats.updates += 1
        # Which views players are shown now; views no player stands in any more freeze.
        standing_in = self.seen_views.observe(players, _newest_chunk_id(self.scene.snapshot()))
        new_jobs, stale = self._planner.plan(players, now, self.lookahead_s, self.caption)
        for job in new_jobs:  # a job for a player's own view will show there even after it left
            for player_id in job.requested_by:
                if player_id in standing_in:
                    self.seen_views.add_pending(standing_in[player_id], job)
        self.seen_views.forget_jobs(j.id for j in self._queue.pending())
        for job in stale:
            self._emit(JobFailed(job.id, "no player needs this view any more", cancelled=True))
        for job in new_jobs:
            self._emit(ChunkRequested(job))
        self._runner.pump()
        return new_jobs

    @property
    def lookahead_s(self) -> float:
        """How far ahead (seconds) views are predicted: ``config.lookahead_s``, or longer
        when a job takes longer to land, so chunks land before the player arrives
        (see :func:`.frontier.planner.lookahead_seconds`)."""
        return lookahead_seconds(self.config.lookahead_s, self._runner.average_job_s, self._runner.average_wait_s)

    # ------------------------------------------------------------------ applying results
    def apply(self, job: GenerationJob, result: GenerationResult) -> list[Chunk]:
        """Reconstruct a result into the scene and memory (the worker calls this).

        Idempotent by job id: a job that has landed before lands nothing again (returns []).
        Raises ValueError when the result's shapes do not match the job's cameras.
        """
        cams, rgb, depth = self._builder.checked_result(job, result)
        with self._apply_lock:
            if job.id in self._landed_jobs:
                return []
            self._landed_jobs.add(job.id)
            chunks, frames, new_cells = self._builder.build(job, cams, rgb, depth)
            self.seen_views.job_landed(job.id, [c.id for c in chunks])
            if frames:
                self._planner.record_done(job.cameras)
            else:  # every keyframe was inside geometry (a guess of the ground ahead was off): not done there
                self._planner.record_failed(job.cameras, self.parts.clock())
            self.collider.sync(self.scene.snapshot())
            # Emitted under the apply lock and before the job counts as finished, so that
            # subscribers (the store) see chunks in scene order, with a state_dict() that
            # matches them, and wait_idle() cannot return before they have seen the chunk.
            self._emit(ChunkAdded(job.id, tuple(chunks), tuple(frames), tuple(new_cells), *self._far_of(job.id)))
        self._runner.landed(job)
        return chunks

    def _far_of(self, job_id: int) -> tuple[tuple[Chunk, ...], tuple[int, ...]]:
        """The far-field chunks job ``job_id`` added or merged into, and the ids of those it
        dropped (call under the apply lock, right after it landed)."""
        landed = tuple(c for c in self.scene.snapshot().far if c.source.job_id == job_id)
        return landed, self._builder.far_dropped.pop(job_id, ())

    # ------------------------------------------------------------------ start image
    def place_start_frame(self, frame: StartFrame) -> list[Chunk]:
        """Make ``frame`` (the start image with its depth) the world's keyframe 0: splats,
        a memory frame and map updates, landed like a chunk (saved by the store).

        Call on a new world before players join: raises RuntimeError if it has content.
        """
        if self.scene.snapshot().chunks or len(self.memory):
            raise RuntimeError("place_start_frame needs a new, empty world")
        gaussians = lift_start_frame(frame)
        source = ChunkSource(-1, START_IMAGE_SOURCE, self.config.seed, self.caption)
        with self._apply_lock:
            chunks, frames, new_cells = self._builder.land(source, gaussians, frame.rgb[None], frame.depth[None], frame.camera)
            self._planner.record_done(frame.camera)
            self.collider.sync(self.scene.snapshot())
            self._start_position = frame.camera.centers[0].astype(np.float32)
            self._emit(ChunkAdded(source.job_id, tuple(chunks), tuple(frames), tuple(new_cells), *self._far_of(source.job_id)))
        return chunks

    # ------------------------------------------------------------------ rendering
    def render(self, cameras: Cameras) -> RenderOutput:
        """Draw the current scene snapshot over the sky (never waits on generation).

        A camera standing in a frozen seen view (within ``revisit_radius_m`` and
        ``revisit_angle_deg`` of a view a player was shown and left) sees it as it was
        shown: later chunks' Gaussians that would change that picture are left out.
        """
        return self._display.render(self.scene.snapshot(), cameras)

    def submit_video(self, cameras: Cameras, into: Sequence[np.ndarray | None] | None = None) -> PendingVideoFrames:
        """Start rendering the I420 pictures a video stream needs (no depth, no alpha).

        Returns at once on renderers that queue GPU work (``.wait()`` collects the frames),
        so a caller can queue the next batch before waiting; ``into`` names host buffers
        some pictures go straight to; see :func:`.render.video.submit_video`. Frozen seen
        views are honoured as in :meth:`render`.
        """
        return self._display.submit_video(self.scene.snapshot(), cameras, into)

    # ------------------------------------------------------------------ imports
    def import_gaussians(self, gaussians: Gaussians, source: ChunkSource | None = None, *, min_per_cell: int = 32) -> list[Chunk]:
        """Seed the world with an existing scene (e.g. an imported PLY).

        The Gaussians are appended as chunks; explored cells holding at least
        ``min_per_cell`` Gaussian means are marked generated (and imported: from inside
        them, the scene's edge is no hole to fill) and every direction above the horizon
        is marked sky, so players walk the imported scene at once and generation only
        extends it where they leave its borders.
        """
        source = source or ChunkSource(-1, "import", self.config.seed, self.caption)
        chunks = self.scene.append(gaussians, source) if len(gaussians) else []
        if len(gaussians):
            means = gaussians.means[np.isfinite(gaussians.means).all(axis=1)]
            ij = np.floor(means[:, [0, 2]] / self.explored.cell_size).astype(np.int64)
            cells, counts = np.unique(ij, axis=0, return_counts=True)
            new = self.explored.mark_generated_cells([(int(i), int(j)) for i, j in cells[counts >= min_per_cell]], imported=True)
        else:
            new = []
        self.sky_directions.mark_all_above(0.0)
        self.collider.sync(self.scene.snapshot())
        self._emit(ChunkAdded(source.job_id, tuple(chunks), (), tuple(new)))
        return chunks

    # ------------------------------------------------------------------ lifecycle
    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is queued or running; False if ``timeout`` seconds passed first."""
        return self._queue.wait_idle(timeout)

    def close(self) -> None:
        """Cancel queued and running jobs and shut the executor down (if the world owns it)."""
        if not self._queue.close():
            return
        if self._own_executor:
            self.executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "World":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- persistence hooks (used by runtime/world/store) ----
    def state_dict(self) -> dict:
        """Small JSON-able state beyond chunks and frames: config, explored cells, captions, id
        counters, seen views, and which chunks' Gaussians refinement retired."""
        with self._lock:
            return {
                "version": 1,
                "config": self.config.to_dict(),
                "explored": self.explored.to_state(),
                "sky_directions": self.sky_directions.to_state(),
                "captions": [[t, c] for t, c in self._captions],
                "done_views": self._planner.done_views.to_state(),
                "next_job_id": self._planner.next_job_id,
                "next_frame_id": self._builder.next_frame_id,
                "seen_views": self.seen_views.to_state(_newest_chunk_id(self.scene.snapshot())),
                "retired": {str(cid): pack_retired(mask) for cid, mask in self.scene.retired_masks().items()},
            }

    def restore(self, chunks: Sequence[Chunk], frames: Sequence[Frame], state: dict, far: Sequence[Chunk] = ()) -> None:
        """Load saved chunks, memory frames, :meth:`state_dict` output and far-field chunks
        into an empty world (worlds saved before the far field existed have none)."""
        if self.scene.snapshot().chunks or len(self.memory):
            raise RuntimeError("World.restore needs an empty world (it already has chunks or frames)")
        if int(state.get("version", 1)) != 1:
            raise ValueError(f"state_dict version {state.get('version')} is not supported (expected 1)")
        self.scene.restore(list(chunks), list(far))
        # Chunk files hold the original Gaussians; take out what refinement had retired.
        self.scene.retire_original({int(cid): retired_mask(packed) for cid, packed in state.get("retired", {}).items()})
        for f in sorted(frames, key=lambda f: f.id):
            self.memory.add(f)
        with self._lock:
            if "explored" in state:
                self.parts.explored = ExploredMap.from_state(state["explored"])
            if "sky_directions" in state:
                self.parts.sky_directions = SkyDirections.from_state(state["sky_directions"])
            if state.get("captions"):
                self._captions = [(float(t), str(c)) for t, c in state["captions"][-MAX_CAPTION_HISTORY:]]
            self._planner.restore(
                ViewRecord.from_state(state.get("done_views", [])),
                max(int(state.get("next_job_id", 0)), max((c.source.job_id + 1 for c in chunks), default=0)),
            )
            self._builder.restore(max(int(state.get("next_frame_id", 0)), max((f.id + 1 for f in frames), default=0)))
        # Older worlds saved no seen views: they start with none.
        self.seen_views.load_state(state.get("seen_views", []), _newest_chunk_id(self.scene.snapshot()))
        self.collider.sync(self.scene.snapshot())
        start_chunks = {c.id for c in chunks if c.source.generator == START_IMAGE_SOURCE}
        start_frames = [f for f in frames if f.chunk_id in start_chunks]
        if start_frames:
            self._start_position = np.asarray(start_frames[0].center, np.float32)


def _newest_chunk_id(snapshot: SceneSnapshot) -> int:
    """The largest chunk id in ``snapshot``, far-field chunks and the landings merged into them
    included (ids grow in landing order), or ``NO_CHUNK``."""
    ids = [c.id for c in (*snapshot.chunks, *snapshot.far)] + [by for c in snapshot.far for by, _ in c.far_parts]
    return max(ids, default=NO_CHUNK)


def pack_retired(mask: np.ndarray) -> list:
    """A chunk's retired Gaussians, ``[G]`` bool -> ``[G, base64 of the packed bits]`` (JSON-able,
    as ``state_dict()["retired"]`` holds them)."""
    return [int(len(mask)), base64.b64encode(np.packbits(np.asarray(mask, bool)).tobytes()).decode("ascii")]


def retired_mask(packed: list) -> np.ndarray:
    """Inverse of :func:`pack_retired`: ``[G]`` bool, True = retired."""
    count, data = int(packed[0]), base64.b64decode(packed[1])
    return np.unpackbits(np.frombuffer(data, np.uint8))[:count].astype(bool)
