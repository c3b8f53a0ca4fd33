"""The World facade: scene, frame memory, coverage, generation scheduling, reconstruction,
rendering and movement -- everything a world is, with no networking in it.

The server drives a world through this class only:

* :meth:`World.update` (5-10 times a second) tests each player's probe views for
  coverage (:mod:`.coverage`) and schedules a :class:`GenerationJob` for every
  uncovered view that no queued, running or finished job already serves.
* Jobs run on an executor (one worker thread by default), highest priority first;
  :meth:`World.apply` reconstructs a job's frames into a new scene chunk, keeps
  them in frame memory and updates the sky-direction and explored maps, all under
  one lock so each chunk lands atomically.
* :meth:`World.render` draws ``scene.snapshot()`` and never waits on generation.
* :meth:`World.move` steps a pose with collision against the scene.

Events (:data:`WorldEvent`) go to subscribers from whichever thread made them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import OrderedDict
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .camera import Cameras, Pose, intrinsics_from_fov
from .collision import SceneCollider
from .coverage import ExploredMap, ProbeView, SkyDirections, probe_cameras, probe_views, uncovered_fractions
from .frames import Frame
from .gaussians import Gaussians
from .generators.base import (
    CancelToken,
    DepthEstimator,
    GenerationCancelled,
    GenerationRequest,
    GenerationResult,
    Generator,
)
from .memory import FrameMemory
from .motion import MoveInput, walk_target_eye_y
from .motion import step as motion_step
from .reconstruct import AUTHORITY_RATIO, occluder_mask, reconstruct, shown_depth
from .render.base import Renderer, RenderOutput
from .scene import Chunk, ChunkSource, Scene
from .sky import Sky, pixel_directions

log = logging.getLogger(__name__)

SHOWN_DEPTH_CACHE_FRAMES = 512
"""Keyframes whose shown-depth maps (revisit checks) are cached: ~57 KB each at 320x180, stride 2."""


@dataclass
class WorldConfig:
    """A world's identity and generation settings (saved with the world).

    Planning fields (all optional; defaults suit the procedural generator):
        probe_width, probe_height: resolution of coverage probes (pixels).
        ring_yaws: headings (radians, relative to the player's yaw) tested around
            each player; four at 90 degrees cover 360 degrees at keyframe FOV.
        frontier_distances: a probe is tested only when a point this many metres
            along its heading lies in an ungenerated explored-map cell.
        explored_cell: explored-map cell size (metres).
        explored_mark_distance: a generated frame marks cells only for its points
            within this horizontal distance (metres), where its splats are dense.
        generate_unexplored_ahead: the player's view and the view ahead count as
            uncovered while their position lies in an ungenerated cell, even when
            distant, coarse splats cover them in alpha (keeps detail near players).
        merge_distance, merge_angle: a view within this distance (metres) and
            angle (radians) of a queued, running or finished job's view is that job.
        keyframe_pitch_range: (min, max) pitch of generated keyframes (radians).
        job_yaw_offsets: the keyframes of one job, as yaw offsets (radians) from the
            uncovered view's heading.
        max_concurrent_jobs: jobs submitted to the executor at once.
        stale_job_s: a queued job no player has asked for in this long is cancelled.
        retry_after_s: a failed view is not requested again for this long.
    """

    name: str
    seed: int = 0
    caption: str = ""
    generator: str = "procedural"
    generator_options: dict = field(default_factory=dict)
    keyframe_width: int = 320
    keyframe_height: int = 180
    keyframe_fov_y: float = math.radians(75.0)
    lookahead_s: float = 1.5
    uncovered_fraction: float = 0.15
    max_retrieved_frames: int = 5
    # ---- planning (additions to the contract; all defaulted) ----
    probe_width: int = 64
    probe_height: int = 36
    ring_yaws: tuple = (0.0, math.pi / 2, -math.pi / 2, math.pi)
    frontier_distances: tuple = (0.0, 3.0, 6.0)
    explored_cell: float = 4.0
    explored_mark_distance: float = 10.0
    merge_distance: float = 3.0
    merge_angle: float = math.radians(40.0)
    keyframe_pitch_range: tuple = (math.radians(-45.0), math.radians(15.0))
    job_yaw_offsets: tuple = (0.0,)
    generate_unexplored_ahead: bool = True
    reconstruct_stride: int = 2
    max_concurrent_jobs: int = 1
    stale_job_s: float = 5.0
    retry_after_s: float = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("WorldConfig.name must be a non-empty string")
        for name in ("keyframe_width", "keyframe_height", "probe_width", "probe_height"):
            value = getattr(self, name)
            if int(value) != value or not 8 <= value <= 8192:
                raise ValueError(f"WorldConfig.{name} must be an integer in [8, 8192], got {value!r}")
        if not 0.0 < self.keyframe_fov_y < math.pi:
            raise ValueError(f"WorldConfig.keyframe_fov_y must be in (0, pi) radians, got {self.keyframe_fov_y}")
        if not 0.0 <= self.uncovered_fraction < 1.0:
            raise ValueError(f"WorldConfig.uncovered_fraction must be in [0, 1), got {self.uncovered_fraction}")
        if not 0.0 <= self.lookahead_s <= 30.0:
            raise ValueError(f"WorldConfig.lookahead_s must be in [0, 30] seconds, got {self.lookahead_s}")
        if int(self.max_retrieved_frames) != self.max_retrieved_frames or not 0 <= self.max_retrieved_frames <= 64:
            raise ValueError(f"WorldConfig.max_retrieved_frames must be an integer in [0, 64], got {self.max_retrieved_frames}")
        if not 1 <= len(self.job_yaw_offsets) <= 8:
            raise ValueError(f"WorldConfig.job_yaw_offsets must hold 1 to 8 offsets, got {len(self.job_yaw_offsets)}")
        if int(self.max_concurrent_jobs) != self.max_concurrent_jobs or self.max_concurrent_jobs < 1:
            raise ValueError(f"WorldConfig.max_concurrent_jobs must be an integer >= 1, got {self.max_concurrent_jobs}")
        # JSON round trips turn tuples into lists; keep tuples so configs compare equal.
        for name in ("ring_yaws", "frontier_distances", "keyframe_pitch_range", "job_yaw_offsets"):
            setattr(self, name, tuple(float(v) for v in getattr(self, name)))

    def to_dict(self) -> dict:
        """JSON-able copy."""
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @staticmethod
    def from_dict(d: dict) -> "WorldConfig":
        """Inverse of :meth:`to_dict`; unknown keys (from newer versions) are ignored."""
        known = {f.name for f in dataclasses.fields(WorldConfig)}
        return WorldConfig(**{k: v for k, v in d.items() if k in known})


@dataclass
class PlayerState:
    """What the world needs to know of a player to plan generation."""

    player_id: str
    pose: Pose
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))  # [3] m/s, world
    fov_y: float = math.radians(60.0)


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
    created_at: float = field(default_factory=time.monotonic)
    last_requested: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    finished_at: float | None = None


# ---- events (delivered to subscribers from any thread) ----
@dataclass(frozen=True)
class ChunkRequested:
    job: GenerationJob


@dataclass(frozen=True)
class GenerationProgress:
    job_id: int
    fraction: float
    message: str = ""


@dataclass(frozen=True)
class ChunkAdded:
    job_id: int
    chunks: tuple[Chunk, ...]
    frames: tuple[Frame, ...]
    explored_cells: tuple[tuple[int, int], ...]  # newly explored (i, j) grid cells


@dataclass(frozen=True)
class GenerationFailed:
    job_id: int
    error: str


WorldEvent = ChunkRequested | GenerationProgress | ChunkAdded | GenerationFailed


class ViewRecord:
    """Views (position + unit forward) of jobs, for 'is this view already served?' tests."""

    def __init__(self) -> None:
        self.positions = np.zeros((0, 3), np.float32)
        self.forwards = np.zeros((0, 3), np.float32)
        self.times = np.zeros(0, np.float64)

    def add(self, positions: np.ndarray, forwards: np.ndarray, when: float = 0.0) -> None:
        self.positions = np.concatenate([self.positions, np.asarray(positions, np.float32).reshape(-1, 3)])
        self.forwards = np.concatenate([self.forwards, np.asarray(forwards, np.float32).reshape(-1, 3)])
        self.times = np.concatenate([self.times, np.full(len(positions), when)])

    def matches(self, position: np.ndarray, forward: np.ndarray, distance: float, angle: float, since: float = -math.inf) -> bool:
        if self.positions.shape[0] == 0:
            return False
        near = np.linalg.norm(self.positions - position, axis=1) <= distance
        aligned = self.forwards @ forward >= math.cos(angle)
        return bool((near & aligned & (self.times >= since)).any())

    def __len__(self) -> int:
        return self.positions.shape[0]

    def to_state(self) -> list:
        return np.concatenate([self.positions, self.forwards], axis=1).round(4).tolist()

    @staticmethod
    def from_state(rows: list) -> "ViewRecord":
        r = ViewRecord()
        a = np.asarray(rows, np.float32).reshape(-1, 6)
        r.add(a[:, :3], a[:, 3:])
        return r


@dataclass
class _Candidate:
    """An uncovered view that may become a job."""

    probe: ProbeView
    pitch: float  # keyframe pitch (the probe's, clamped)
    forward: np.ndarray  # [3] unit forward of the keyframe


class World:
    """One persistent world. Thread-safe: update/render/move from the server, apply from workers.

    Args:
        config: identity and generation settings.
        generator: None builds ``create_generator(config.generator, **config.generator_options)``.
        renderer: None builds ``create_renderer("auto")``.
        executor: runs generation jobs; None makes a 1-worker ``ThreadPoolExecutor``
            the world owns (and shuts down in :meth:`close`).
        start_image: ``[H, W, 3]`` uint8 image the world started from, or None.
        depth_estimator: turns RGB-only generator output into depth.
    """

    def __init__(
        self,
        config: WorldConfig,
        generator: Generator | None = None,
        renderer: Renderer | None = None,
        executor: Executor | None = None,
        start_image: np.ndarray | None = None,
        depth_estimator: DepthEstimator | None = None,
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
        self.config = config
        self.generator = generator
        self.renderer = renderer
        self.depth_estimator = depth_estimator
        self.start_image = start_image
        self._own_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"world-{config.name}")
        sky_fn = getattr(generator, "sky", None)
        self.sky: Sky = sky_fn(config.caption, config.seed, start_image) if callable(sky_fn) else Sky()

        self.scene = Scene()
        self.memory = FrameMemory(point_stride=4)
        self.collider = SceneCollider()
        self.sky_directions = SkyDirections()
        self.explored = ExploredMap(config.explored_cell)

        self._lock = threading.RLock()  # planner state: jobs, view records, counters, captions
        self._apply_lock = threading.Lock()  # one chunk lands at a time
        self._idle = threading.Condition(self._lock)
        self._subscribers: list[Callable[[WorldEvent], None]] = []
        self._jobs: dict[int, GenerationJob] = {}  # queued or running
        self._cancel: dict[int, CancelToken] = {}
        self._running = 0
        self._done_views = ViewRecord()  # keyframes generated (or found covered): never again
        self._failed_views = ViewRecord()  # keyframes that failed: not again for retry_after_s
        self._captions: list[tuple[float, str]] = [(time.time(), config.caption)]
        self._next_job_id = 0
        self._next_frame_id = 0
        self._probe_cache: dict[tuple, float] = {}  # probe key -> uncovered fraction
        self._probe_versions: tuple = (-1, -1)  # (scene, sky) versions the cache is valid for
        self._closed = False
        self._job_seconds: float | None = None  # running average of one job's generation time
        # Per keyframe id, what its reconstruction shows (reconstruct.shown_depth); LRU, used
        # only under _apply_lock.
        self._shown_depth_cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.stats = {"updates": 0, "probes_rendered": 0, "jobs_created": 0, "jobs_done": 0, "jobs_failed": 0, "jobs_skipped": 0}
        # Revisit consistency: Gaussians dropped because earlier keyframes saw something else
        # there, and the total time the check took (milliseconds).
        self.stats.update(gaussians_dropped=0, revisit_check_ms=0.0)

    # ------------------------------------------------------------------ events
    def subscribe(self, callback: Callable[[WorldEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; returns an unsubscribe function."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def _emit(self, event: WorldEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # a broken subscriber must not break generation
                log.exception("world %s: subscriber failed on %s", self.config.name, type(event).__name__)

    # ------------------------------------------------------------------ movement
    def spawn_pose(self) -> Pose:
        """Where new players start: the origin facing +z (the first camera of the world)."""
        return Pose(np.zeros(3, np.float32), 0.0, 0.0)

    def move(self, pose: Pose, move: MoveInput, dt: float) -> Pose:
        """Advance ``pose`` by a :class:`runtime.world.motion.MoveInput` over ``dt`` seconds, with collision."""
        self.collider.sync(self.scene.snapshot())
        return motion_step(pose, move, dt, self.collider)

    # ------------------------------------------------------------------ planning
    @property
    def caption(self) -> str:
        return self._captions[-1][1]

    def set_caption(self, caption: str) -> None:
        """Use ``caption`` for every job scheduled from now on (earlier chunks keep theirs)."""
        if not isinstance(caption, str):
            raise ValueError(f"caption must be a string, got {type(caption).__name__}")
        if len(caption) > 4000:
            raise ValueError(f"caption must be at most 4000 characters, got {len(caption)}")
        with self._lock:
            if caption != self._captions[-1][1]:
                self._captions.append((time.time(), caption))

    def pending_jobs(self) -> list[GenerationJob]:
        """Queued and running jobs (a copy of the list)."""
        with self._lock:
            return list(self._jobs.values())

    def update(self, players: Sequence[PlayerState]) -> list[GenerationJob]:
        """Plan generation for these players; returns the jobs newly scheduled (already submitted)."""
        if self._closed:
            return []
        cfg = self.config
        now = time.monotonic()
        self.stats["updates"] += 1
        for p in players:
            if np.isfinite(p.pose.position).all():
                self.explored.mark_visited(float(p.pose.position[0]), float(p.pose.position[2]))
        candidates = self._uncovered_candidates(players)
        new_jobs: list[GenerationJob] = []
        with self._lock:
            for cand in sorted(candidates, key=lambda c: c.probe.rank):
                self._schedule(cand, now, new_jobs)
            stale = self._drop_stale(now)
        for job in stale:
            self._emit(GenerationFailed(job.id, "cancelled: no player needs this view any more"))
        for job in new_jobs:
            self._emit(ChunkRequested(job))
        self._pump()
        return new_jobs

    @property
    def lookahead_s(self) -> float:
        """How far ahead (seconds) views are predicted: ``config.lookahead_s``, or longer
        when generating a job takes longer, so chunks land before the player arrives
        (1.5 x the average job time + 0.5 s, at most 8 s)."""
        if self._job_seconds is None:
            return self.config.lookahead_s
        return max(self.config.lookahead_s, min(8.0, 1.5 * self._job_seconds + 0.5))

    def _probe_key(self, probe: ProbeView) -> tuple:
        """A probe's pose quantised: probes with equal keys share one coverage test.

        Ring probes use a coarser grid (they anticipate turns; a metre changes little),
        so a walking player re-renders about two probes per update, not six.
        """
        q = 1.0 if probe.kind == "ring" else 0.5
        step = math.radians(10.0)
        pos = np.round(np.asarray(probe.position, np.float64) / q).astype(int)
        return (q, *pos.tolist(), round(probe.yaw / step), round(probe.pitch / step), round(probe.fov_y / step))

    def _ahead_on_ground(self, pose: Pose, probe: ProbeView) -> ProbeView:
        """Put a walking player's predicted eye at eye height over the ground known there.

        A keyframe placed at the current height would sink into a rising slope. Players
        not at eye height over known ground (flying, or on unknown ground) keep theirs.
        """
        self.collider.sync(self.scene.snapshot())
        x, y, z = (float(v) for v in pose.position)
        here = walk_target_eye_y(x, z, y, self.collider)
        if here is None or abs(here - y) > 0.5:
            return probe
        ax, ay, az = (float(v) for v in probe.position)
        there = walk_target_eye_y(ax, az, ay, self.collider)
        if there is None:
            return probe
        return dataclasses.replace(probe, position=np.array([ax, there, az], np.float32))

    def _uncovered_candidates(self, players: Sequence[PlayerState]) -> list[_Candidate]:
        """Probe views of all players that reach unexplored cells and show too much empty space."""
        cfg = self.config
        versions = (self.scene.version, self.sky_directions.version)
        if self._probe_versions != versions or len(self._probe_cache) > 4096:  # new splats or sky: answers are stale
            self._probe_cache.clear()
            self._probe_versions = versions
        tested: list[tuple[ProbeView, tuple]] = []
        for p in players:
            if not (np.isfinite(p.pose.position).all() and np.isfinite(p.velocity).all()):
                continue  # a bad client pose must not poison planning
            probes = probe_views(
                p.player_id,
                p.pose,
                p.velocity,
                p.fov_y,
                lookahead_s=self.lookahead_s,
                keyframe_fov_y=cfg.keyframe_fov_y,
                ring_yaws=cfg.ring_yaws,
            )
            for pr in probes:
                if pr.kind == "ahead":
                    pr = self._ahead_on_ground(p.pose, pr)
                if self.explored.reaches_unknown(pr.position, pr.yaw, cfg.frontier_distances):
                    tested.append((pr, self._probe_key(pr)))
        missing = list({key: pr for pr, key in tested if key not in self._probe_cache}.items())
        if missing:
            cams = probe_cameras([pr for _, pr in missing], cfg.probe_width, cfg.probe_height)
            snapshot = self.scene.snapshot()
            if snapshot.chunks:
                alpha = self.renderer.render_alpha(snapshot, cams)
            else:
                alpha = np.zeros((len(cams), cams.height, cams.width), np.float32)
            self.stats["probes_rendered"] += len(cams)
            fractions = uncovered_fractions(alpha, cams, self.sky_directions)
            for (key, _), frac in zip(missing, fractions):
                self._probe_cache[key] = float(frac)
        out: list[_Candidate] = []
        lo, hi = cfg.keyframe_pitch_range
        for probe, key in tested:
            # Splats seen from far away cover a view in alpha long before they have the
            # detail to stand among: a player heading into a cell no keyframe was made
            # near gets one there, whatever alpha says.
            unexplored = (
                cfg.generate_unexplored_ahead
                and probe.kind != "ring"
                and not self.explored.is_generated(float(probe.position[0]), float(probe.position[2]))
            )
            if unexplored or self._probe_cache[key] > cfg.uncovered_fraction:
                pitch = min(hi, max(lo, probe.pitch))
                cp = math.cos(pitch)
                fwd = np.array([math.sin(probe.yaw) * cp, -math.sin(pitch), math.cos(probe.yaw) * cp], np.float32)
                out.append(_Candidate(probe, pitch, fwd))
        return out

    def _schedule(self, cand: _Candidate, now: float, new_jobs: list[GenerationJob]) -> None:
        """Merge ``cand`` into a job that serves it, or make a new one (called under the lock)."""
        cfg = self.config
        pos = cand.probe.position
        if self._done_views.matches(pos, cand.forward, cfg.merge_distance, cfg.merge_angle):
            return  # generated there already: what is still empty stays empty, no loops
        if self._failed_views.matches(pos, cand.forward, cfg.merge_distance, cfg.merge_angle, since=now - cfg.retry_after_s):
            return
        for job in self._jobs.values():
            centers, forwards = job.cameras.centers, job.cameras.forwards
            near = np.linalg.norm(centers - pos, axis=1) <= cfg.merge_distance
            aligned = forwards @ cand.forward >= math.cos(cfg.merge_angle)
            if (near & aligned).any():
                job.requested_by.add(cand.probe.player_id)
                job.last_requested = now
                if job.state == "queued":
                    job.priority = min(job.priority, self._priority(cand))
                return
        job = self._make_job(cand, now)
        self._jobs[job.id] = job
        new_jobs.append(job)
        self.stats["jobs_created"] += 1

    def _priority(self, cand: _Candidate) -> float:
        """Lower first: probe rank, then a little for age so equal ranks run in request order."""
        return cand.probe.rank

    def _make_job(self, cand: _Candidate, now: float) -> GenerationJob:
        cfg = self.config
        W, H = cfg.keyframe_width, cfg.keyframe_height
        K = intrinsics_from_fov(W, H, cfg.keyframe_fov_y)
        pos = np.asarray(cand.probe.position, np.float32)
        w2c = np.stack([Pose(pos, cand.probe.yaw + off, cand.pitch).w2c for off in cfg.job_yaw_offsets])
        cameras = Cameras(w2c, np.broadcast_to(K, (len(w2c), 3, 3)), W, H)
        heading = np.array([math.sin(cand.probe.yaw), 0.0, math.cos(cand.probe.yaw)], np.float32)
        job = GenerationJob(
            id=self._next_job_id,
            cameras=cameras,
            caption=self.caption,
            region_center=pos + heading * cfg.explored_mark_distance * 0.5,
            region_radius=cfg.explored_mark_distance,
            requested_by={cand.probe.player_id},
            priority=self._priority(cand),
            created_at=now,
            last_requested=now,
        )
        self._next_job_id += 1
        return job

    def _drop_stale(self, now: float) -> list[GenerationJob]:
        """Cancel queued jobs nobody asked for lately (players moved on); called under the lock."""
        stale = [
            j for j in self._jobs.values() if j.state == "queued" and now - j.last_requested > self.config.stale_job_s
        ]
        for job in stale:
            job.state = "cancelled"
            job.finished_at = now
            del self._jobs[job.id]
        if stale:
            self._idle.notify_all()
        return stale

    # ------------------------------------------------------------------ running jobs
    def _pump(self) -> None:
        """Submit the best queued jobs while fewer than ``max_concurrent_jobs`` run."""
        while True:
            with self._lock:
                if self._closed or self._running >= self.config.max_concurrent_jobs:
                    return
                queued = [j for j in self._jobs.values() if j.state == "queued"]
                if not queued:
                    return
                job = min(queued, key=lambda j: (j.priority, j.id))
                job.state = "running"
                self._running += 1
                token = CancelToken()
                self._cancel[job.id] = token
            try:
                self.executor.submit(self._run_job, job, token)
            except RuntimeError as e:  # executor shut down under us
                self._finish(job, "failed", f"could not submit: {e}")
                return

    def _run_job(self, job: GenerationJob, token: CancelToken) -> None:
        cfg = self.config
        job.started_at = time.monotonic()
        try:
            if self._already_covered(job):
                self.stats["jobs_skipped"] += 1
                with self._lock:
                    self._done_views.add(job.cameras.centers, job.cameras.forwards)
                self._finish(job, "done")
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
            self.apply(job, result)
            self.stats["jobs_done"] += 1
            seconds = time.monotonic() - job.started_at
            self._job_seconds = seconds if self._job_seconds is None else 0.7 * self._job_seconds + 0.3 * seconds
        except GenerationCancelled:
            self._finish(job, "cancelled")
            self._emit(GenerationFailed(job.id, "cancelled"))
        except Exception as e:  # the world survives a failing generator
            log.exception("world %s: job %d failed", cfg.name, job.id)
            self.stats["jobs_failed"] += 1
            with self._lock:
                self._failed_views.add(job.cameras.centers, job.cameras.forwards, time.monotonic())
            self._finish(job, "failed")
            self._emit(GenerationFailed(job.id, f"{type(e).__name__}: {e}"))
        finally:
            with self._lock:
                if job.id in self._jobs:  # apply() normally finishes it
                    self._finish(job, job.state if job.state != "running" else "failed")
            self._pump()

    def _already_covered(self, job: GenerationJob) -> bool:
        """Did other jobs cover this job's views while it waited? (cheap low-resolution test)

        Covered means: the camera stands in a generated cell and every view is covered
        in alpha (the same two rules that made the job).
        """
        snapshot = self.scene.snapshot()
        if not snapshot.chunks:
            return False
        if self.config.generate_unexplored_ahead:
            c = job.cameras.centers[0]
            if not self.explored.is_generated(float(c[0]), float(c[2])):
                return False
        cams = job.cameras.resized(self.config.probe_width, self.config.probe_height)
        alpha = self.renderer.render_alpha(snapshot, cams)
        return bool((uncovered_fractions(alpha, cams, self.sky_directions) <= self.config.uncovered_fraction).all())

    def _finish(self, job: GenerationJob, state: str, error: str | None = None) -> None:
        with self._lock:
            if job.id not in self._jobs:
                return
            job.state = state
            job.finished_at = time.monotonic()
            del self._jobs[job.id]
            if self._cancel.pop(job.id, None) is not None:  # it was submitted (running)
                self._running -= 1
            self._idle.notify_all()
        if error is not None:
            self._emit(GenerationFailed(job.id, error))

    def apply(self, job: GenerationJob, result: GenerationResult) -> list[Chunk]:
        """Reconstruct a result into the scene and memory (the worker calls this).

        Raises ValueError when the result's shapes do not match the job's cameras.
        """
        cams = job.cameras
        N, H, W = len(cams), cams.height, cams.width
        rgb = np.asarray(result.rgb)
        if rgb.shape != (N, H, W, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"GenerationResult.rgb must be [{N},{H},{W},3] uint8, got {rgb.shape} {rgb.dtype}")
        depth = result.depth
        if depth is None:
            if self.depth_estimator is None:
                raise RuntimeError(
                    f"generator {getattr(self.generator, 'name', '?')!r} returned no depth and the world has no depth_estimator"
                )
            depth = self.depth_estimator.estimate(rgb, cams, ())
        depth = np.asarray(depth, np.float32)
        if depth.shape != (N, H, W):
            raise ValueError(f"GenerationResult.depth must be [{N},{H},{W}] float32, got {depth.shape}")
        depth = np.where(np.isnan(depth), np.inf, depth)  # NaN would poison reconstruction; treat as sky
        cfg = self.config
        with self._apply_lock:
            snapshot = self.scene.snapshot()
            existing = self.renderer.render_alpha(snapshot, cams) if snapshot.chunks else None
            gaussians = reconstruct(rgb, depth, cams, existing, stride=cfg.reconstruct_stride)
            gaussians = self._keep_earlier_views(gaussians, cams)
            source = ChunkSource(job.id, getattr(self.generator, "name", "unknown"), cfg.seed, job.caption)
            chunks = self.scene.append(gaussians, source) if len(gaussians) else []
            chunk_id = chunks[0].id if chunks else -1
            frames = []
            with self._lock:
                for i in range(N):
                    frames.append(Frame(self._next_frame_id, rgb[i], depth[i], cams.w2c[i], cams.K[i], chunk_id, job.caption))
                    self._next_frame_id += 1
            for f in frames:
                self.memory.add(f)
            sky = ~np.isfinite(depth) | (depth >= 200.0)
            if sky.any():
                self.sky_directions.mark(pixel_directions(cams)[sky])
            new_cells = self._mark_explored(frames)
            with self._lock:
                self._done_views.add(cams.centers, cams.forwards)
            self.collider.sync(self.scene.snapshot())
            # Emitted under the apply lock and before the job counts as finished, so that
            # subscribers (the store) see chunks in scene order, with a state_dict() that
            # matches them, and wait_idle() cannot return before they have seen the chunk.
            self._emit(ChunkAdded(job.id, tuple(chunks), tuple(frames), tuple(new_cells)))
        self._finish(job, "done")
        return chunks

    def _keep_earlier_views(self, gaussians: Gaussians, cams: Cameras) -> Gaussians:
        """Drop the new Gaussians that would change what earlier keyframes show (call under _apply_lock).

        A place once seen must render the same when revisited, so a new chunk may not put
        splats in front of what an earlier keyframe's reconstruction shows, nor where it
        shows nothing (sky, holes), where that keyframe saw the spot from no farther than
        ``AUTHORITY_RATIO`` x the new cameras (see :func:`.reconstruct.occluder_mask`).
        Only frames already in memory count: this job's own keyframes are added after.

        The dropped Gaussians' directions from the job's cameras are marked as sky: those
        pixels of the job's views stay empty for good, and planning must count them as
        covered rather than ask for them again.
        """
        if len(gaussians) == 0 or len(self.memory) == 0:
            return gaussians
        started = time.perf_counter()
        centers = cams.centers.astype(np.float32)  # [C, 3]
        offsets = gaussians.means[:, None, :] - centers[None, :, :]  # [G, C, 3]
        distances = np.linalg.norm(offsets, axis=2)  # [G, C] metres
        reach = AUTHORITY_RATIO * float(distances.min(axis=1).max())
        frames = self.memory.frames_viewing(gaussians.means.min(axis=0), gaussians.means.max(axis=0), reach)
        if frames:
            shown = [self._shown_depth(f) for f in frames]
            occluder = occluder_mask(gaussians, frames, new_centers=centers, shown=shown, stride=self.config.reconstruct_stride)
            if occluder.any():
                rows = np.flatnonzero(occluder)
                nearest = distances[rows].argmin(axis=1)
                directions = offsets[rows, nearest] / np.maximum(distances[rows, nearest], 1e-6)[:, None]
                self.sky_directions.mark(directions)
                self.stats["gaussians_dropped"] += len(rows)
                gaussians = gaussians.subset(np.flatnonzero(~occluder))
        self.stats["revisit_check_ms"] += (time.perf_counter() - started) * 1e3
        return gaussians

    def _shown_depth(self, frame: Frame) -> np.ndarray:
        """``[Hb, Wb]`` what ``frame``'s reconstruction shows (LRU-cached; call under _apply_lock)."""
        cached = self._shown_depth_cache.get(frame.id)
        if cached is not None:
            self._shown_depth_cache.move_to_end(frame.id)
            return cached
        shown = shown_depth(frame.depth, stride=self.config.reconstruct_stride)
        self._shown_depth_cache[frame.id] = shown
        if len(self._shown_depth_cache) > SHOWN_DEPTH_CACHE_FRAMES:
            self._shown_depth_cache.popitem(last=False)
        return shown

    def _mark_explored(self, frames: Sequence[Frame]) -> list[tuple[int, int]]:
        """Mark explored cells from frames' surface points near their cameras (where splats are dense)."""
        new: list[tuple[int, int]] = []
        reach = self.config.explored_mark_distance
        for f in frames:
            pts = self.memory.points(f.id)
            if len(pts) == 0:
                continue
            c = f.center
            d = np.hypot(pts[:, 0] - c[0], pts[:, 2] - c[2])
            new.extend(self.explored.mark_generated_points(pts[d <= reach]))
        return new

    # ------------------------------------------------------------------ rendering
    def render(self, cameras: Cameras) -> RenderOutput:
        """Draw the current scene snapshot over the sky (never waits on generation)."""
        return self.renderer.render(self.scene.snapshot(), cameras, self.sky)

    # ------------------------------------------------------------------ imports
    def import_gaussians(self, gaussians: Gaussians, source: ChunkSource | None = None, *, min_per_cell: int = 32) -> list[Chunk]:
        """Seed the world with an existing scene (e.g. an imported PLY).

        The Gaussians are appended as chunks; explored cells holding at least
        ``min_per_cell`` Gaussian means are marked generated and every direction
        above the horizon is marked sky, so players walk the imported scene at once
        and generation only extends it where they leave its borders.
        """
        source = source or ChunkSource(-1, "import", self.config.seed, self.caption)
        chunks = self.scene.append(gaussians, source) if len(gaussians) else []
        if len(gaussians):
            means = gaussians.means[np.isfinite(gaussians.means).all(axis=1)]
            ij = np.floor(means[:, [0, 2]] / self.explored.cell_size).astype(np.int64)
            cells, counts = np.unique(ij, axis=0, return_counts=True)
            new = self.explored.mark_generated_cells([(int(i), int(j)) for i, j in cells[counts >= min_per_cell]])
        else:
            new = []
        self.sky_directions.mark_all_above(0.0)
        self.collider.sync(self.scene.snapshot())
        self._emit(ChunkAdded(source.job_id, tuple(chunks), (), tuple(new)))
        return chunks

    # ------------------------------------------------------------------ lifecycle
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

    def close(self) -> None:
        """Cancel queued and running jobs and shut the executor down (if the world owns it)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for token in self._cancel.values():
                token.cancel()
            queued = [j for j in self._jobs.values() if j.state == "queued"]
            for job in queued:
                job.state = "cancelled"
                del self._jobs[job.id]
            self._idle.notify_all()
        if self._own_executor:
            self.executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "World":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- persistence hooks (used by runtime/world/store) ----
    def state_dict(self) -> dict:
        """Small JSON-able state beyond chunks and frames: config, explored cells, captions, id counters."""
        with self._lock:
            return {
                "version": 1,
                "config": self.config.to_dict(),
                "explored": self.explored.to_state(),
                "sky_directions": self.sky_directions.to_state(),
                "captions": [[t, c] for t, c in self._captions],
                "done_views": self._done_views.to_state(),
                "next_job_id": self._next_job_id,
                "next_frame_id": self._next_frame_id,
            }

    def restore(self, chunks: Sequence[Chunk], frames: Sequence[Frame], state: dict) -> None:
        """Load saved chunks, memory frames and :meth:`state_dict` output into an empty world."""
        if self.scene.snapshot().chunks or len(self.memory):
            raise RuntimeError("World.restore needs an empty world (it already has chunks or frames)")
        if int(state.get("version", 1)) != 1:
            raise ValueError(f"state_dict version {state.get('version')} is not supported (expected 1)")
        self.scene.restore(list(chunks))
        for f in sorted(frames, key=lambda f: f.id):
            self.memory.add(f)
        with self._lock:
            if "explored" in state:
                self.explored = ExploredMap.from_state(state["explored"])
            if "sky_directions" in state:
                self.sky_directions = SkyDirections.from_state(state["sky_directions"])
            if state.get("captions"):
                self._captions = [(float(t), str(c)) for t, c in state["captions"]]
            self._done_views = ViewRecord.from_state(state.get("done_views", []))
            self._next_job_id = max(int(state.get("next_job_id", 0)), max((c.source.job_id + 1 for c in chunks), default=0))
            self._next_frame_id = max(int(state.get("next_frame_id", 0)), max((f.id + 1 for f in frames), default=0))
            self._probe_cache.clear()
        self.collider.sync(self.scene.snapshot())
