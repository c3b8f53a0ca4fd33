"""A session: one live world and the players in it.

The session owns three loops on the event loop:

* the **frame clock** (``fps``): takes every player's pending input, then — in the render
  executor — moves every player and renders all due views as I420 video frames in one
  ``render_video`` batch per image size (``runtime.world.render.video``; stereo eyes are
  two cameras, stitched side by side), and offers each picture to its player's video track;
* the **planner** (``update_hz``): ``world.update(players)`` in the plan executor, so a
  generation job wanted by several players is planned once;
* the **reporter** (10 Hz): ``players`` to everyone, ``stats`` (1 Hz) and ``explored``
  changes (2 Hz).

World events arrive from worker threads and are moved to the loop with
``call_soon_threadsafe`` before they become protocol messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import numpy as np

from protocol import messages as m
from protocol.codec import encode
from runtime.config import Executors, ServerConfig
from runtime.metrics import ServerMetrics
from runtime.player import Player, percentile
from runtime.stream.video_track import EncodedFrame
from runtime.world.camera import Cameras
from runtime.world.render.avatars import Avatar, avatar_color, draw_avatars
from runtime.world.frontier.jobs import JobLimits
from runtime.world.render.i420 import i420_size
from runtime.world.render.video import PendingVideoFrames
from runtime.world.world import ChunkAdded, ChunkRequested, JobFailed, JobProgress, PlayerState

log = logging.getLogger("worldstream.session")

REPORT_HZ = 10.0
STATS_EVERY = 10  # reporter ticks (1 Hz)
JOB_LIMIT_NOTICE_S = 10.0  # a player over a job limit hears so at most this often
EXPLORED_EVERY = 5  # reporter ticks (2 Hz)
RENDER_FAILURE_LOG_S = 10.0  # a view that keeps failing logs its traceback this often


class Session:
    """One world and its players.

    Args:
        name: the world's name.
        world: a :class:`runtime.world.world.World`.
        config: server settings (fps, update rate).
        executors: the server's thread pools.
        metrics: the server's metrics.
    """

    def __init__(self, name: str, world, config: ServerConfig, executors: Executors, metrics: ServerMetrics) -> None:
        self.name = name
        self.world = world
        self.config = config
        self.executors = executors
        self.metrics = metrics
        self.players: dict[str, Player] = {}
        self.jobs: dict[int, object] = {}  # job id -> GenerationJob, queued or running
        self.empty_since: float | None = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._tasks: list[asyncio.Task] = []
        self._closed = False
        self._explored_sent: dict[tuple[int, int], int] = {}
        self._explored_version = -1
        self._unsubscribe: Callable[[], None] = world.subscribe(self._on_world_event_threadsafe)
        limits = config.limits
        world.job_limits = JobLimits(per_world=limits.max_jobs_per_world, per_player=limits.max_jobs_per_player)
        self._job_limit_noticed: dict[str, float] = {}  # player id -> when it was last told

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._frame_clock(), name=f"frames:{self.name}"),
            asyncio.create_task(self._planner(), name=f"plan:{self.name}"),
            asyncio.create_task(self._reporter(), name=f"report:{self.name}"),
        ]

    async def close(self) -> None:
        """Stop the loops, close every player's video and close (save) the world."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for player in list(self.players.values()):
            video, player.video = player.video, None  # first: closing it is not "video ended"
            if video is not None:
                await video.close()
        self._unsubscribe()
        try:
            await self._loop.run_in_executor(self.executors.plan, self.world.close)
        except RuntimeError:  # executor already shut down: close here
            self.world.close()
        log.info("world %r closed", self.name)

    # ------------------------------------------------------------------ players
    def add(self, player: Player) -> None:
        others = list(self.players.values())
        self.players[player.id] = player
        self.empty_since = None
        self.metrics.players.inc()
        for other in others:
            other.send(m.PlayerJoined(player=player.info()))
        player.send(self.explored_full())
        player.send(m.Players(players=[p.info() for p in self.players.values()]))
        log.info("player %s (%r) joined world %r (%d players)", player.id, player.name, self.name, len(self.players))

    async def remove(self, player: Player) -> None:
        if self.players.pop(player.id, None) is None:
            return
        self._job_limit_noticed.pop(player.id, None)
        self.metrics.players.dec()
        video, player.video = player.video, None  # first: closing it is not "video ended"
        if video is not None:
            await video.close()
        for other in self.players.values():
            other.send(m.PlayerLeft(id=player.id, name=player.name))
        if not self.players:
            self.empty_since = time.monotonic()
        log.info("player %s (%r) left world %r (%d players)", player.id, player.name, self.name, len(self.players))

    def broadcast(self, msg: m.Message) -> None:
        # Encoded once for everyone: with 32 players the 10 Hz player list alone was a
        # sixth of the event loop's time when each connection encoded its own copy.
        data = encode(msg)
        for player in list(self.players.values()):
            player.send(data)

    def set_caption(self, text: str, by: Player) -> None:
        """Generate from ``text`` from now on, and tell every player in the world (the caption
        label is shared, like the world)."""
        self.world.set_caption(text)
        self.broadcast(m.CaptionChanged(text=text, player_id=by.id, player_name=by.name))
        log.info("world %r: caption %r (by %s)", self.name, text[:80], by.id)

    # ------------------------------------------------------------------ frame clock
    async def _frame_clock(self) -> None:
        period = 1.0 / self.config.fps
        next_t = time.monotonic()
        while True:
            next_t += period
            try:
                await self._frame()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("world %r: frame failed", self.name)
                await asyncio.sleep(0.5)
            delay = next_t - time.monotonic()
            if delay < -period:  # fell behind: start a fresh schedule instead of bursting
                next_t = time.monotonic()
                delay = 0.0
            await asyncio.sleep(max(delay, 0.0))

    async def _frame(self) -> None:
        players = list(self.players.values())
        if not players:
            return
        taken_at = time.monotonic()
        takes = [(p, *p.take_input()) for p in players]
        # Each player's video as of now: a new offer may replace it while this tick renders.
        videos = {p.id: p.video for p in players if p.video is not None and p.video.ready}
        due = [p for p in players if p.id in videos]
        world = self.world

        def move_and_render():
            job_started = time.monotonic()
            for player, snap, dt in takes:
                try:
                    if snap.head_pose is not None:
                        player.pose = snap.head_pose
                        player.velocity = np.zeros(3, np.float32)
                    elif snap.move is not None:  # also when idle: walking settles onto the ground
                        old = player.pose.position.copy()
                        player.pose = world.move(player.pose, snap.move, dt)
                        player.velocity = ((player.pose.position - old) / max(dt, 1e-3)).astype(np.float32)
                except Exception:
                    log.exception("world %r: moving player %s failed", self.name, player.id)
            # Read before rendering: if a chunk lands meanwhile, the next tick draws again.
            version = world.scene.version
            avatars = self._avatars(players)
            # Anyone moving changes what the others see: the key holds every avatar.
            avatar_key = tuple((pid, a.position, a.yaw) for pid, a in avatars.items())
            groups: dict[tuple[int, int], list[Player]] = {}
            staged = {}  # player id -> what its video's offer() takes
            keys = {}
            for player in due:
                keys[player.id] = (player.view_key(version), avatar_key)
                last_video, last_staged = player.last_picture
                if keys[player.id] == player.last_view_key and last_video is videos[player.id] and last_staged is not None:
                    staged[player.id] = last_staged  # standing still: the same picture again
                else:
                    groups.setdefault(player.eye_size, []).append(player)
            start = time.perf_counter()
            for player in self._render_views(world, list(groups.values()), videos, staged, avatars):
                player.last_picture = (videos[player.id], staged[player.id])
                player.last_view_key = keys[player.id]
            return staged, (time.perf_counter() - start) if groups else None, job_started, time.monotonic()

        staged, render_s, job_started, job_done = await self._loop.run_in_executor(self.executors.render, move_and_render)
        resumed = time.monotonic()
        if render_s is not None:
            self.metrics.render_seconds.observe(render_s)
            for player in due:
                player.render_ms.append(render_s * 1e3)
        snaps = {p.id: snap for p, snap, _ in takes}
        for player in due:
            if player.id not in staged:  # its view failed to render (counted): it gets the next one
                continue
            picture = staged[player.id]
            if picture is None:  # the media worker is a whole ring behind: it gets the next one
                self.metrics.frames_dropped.labels("worker_behind").inc()
                continue
            snap = snaps[player.id]
            videos[player.id].offer(picture, taken_at, snap.seq, snap.received_at, render_s or 0.0)
        tick = self.metrics.tick_seconds
        tick.labels("queued").observe(job_started - taken_at)
        tick.labels("move_render").observe(job_done - job_started)
        tick.labels("resume").observe(resumed - job_done)
        tick.labels("offer").observe(time.monotonic() - resumed)

    def _avatars(self, players: list[Player]) -> dict[str, Avatar]:
        """Every player as the others see them, by player id (none with ``--no-avatars``)."""
        if not self.config.avatars:
            return {}
        return {
            p.id: Avatar(tuple(float(x) for x in p.pose.position), float(p.pose.yaw), p.name, avatar_color(p.id))
            for p in players
        }

    def _render_views(self, world, groups: list[list[Player]], videos: dict, staged: dict, avatars: dict) -> list[Player]:
        """Render every group's views (one batch per image size) into ``staged``; returns the
        players that got a picture (a player missing from ``staged`` got none). Runs in the
        render thread.

        A batch that fails is rendered again one view at a time, so a view the renderer
        cannot draw costs that player this tick's picture, never the other players' (nor the
        session's: the frame clock carries on).
        """
        done: list[Player] = []
        retry: list[Player] = []

        def failed(members: list[Player]) -> None:
            if len(members) > 1:
                retry.extend(members)
            else:
                self._render_failed(members[0])

        # Queue every image size's batch first (GPU renderers return at once), then
        # collect: one batch's copy to the host overlaps the next one's rendering.
        batches = []
        for members in groups:
            try:
                batches.append((members, *self._submit(world, members, videos)))
            except Exception:
                failed(members)
        for members, cams, reserved, pending in batches:
            try:
                done += self._collect(members, cams, reserved, pending, videos, staged, avatars)
            except Exception:
                failed(members)
        for player in retry:  # alone, so one bad view fails only itself
            try:
                done += self._collect([player], *self._submit(world, [player], videos), videos, staged, avatars)
            except Exception:
                self._render_failed(player)
        return done

    @staticmethod
    def _submit(world, members: list[Player], videos: dict):
        """Queue one batch: ``(cameras per member, reserved ring buffers by player id, pending frames)``.

        A video with a buffer of its own (a media worker's page-locked ring) gets its
        picture copied there by the renderer (reserve before, commit after); the others
        are staged from the renderer's buffer (stereo: eyes stitched).
        """
        cams = [p.cameras() for p in members]
        into: list[np.ndarray | None] = []
        reserved: dict[str, np.ndarray] = {}
        for p, c in zip(members, cams):
            buffer = videos[p.id].reserve(i420_size(c.width, c.height)) if len(c) == 1 else None
            if buffer is not None:
                reserved[p.id] = buffer
            into.extend([buffer] * len(c))
        try:
            return cams, reserved, world.submit_video(Cameras.concat(cams), into)
        except Exception:
            for player_id, buffer in reserved.items():
                videos[player_id].commit(buffer, written=False)
            raise

    @staticmethod
    def _collect(members, cams, reserved: dict, pending: PendingVideoFrames, videos: dict, staged: dict, avatars: dict) -> list[Player]:
        """Wait for one batch, draw the other players into each member's picture and stage it;
        on failure give the ring buffers back."""
        try:
            frames = pending.wait()
        except Exception:
            for player_id, buffer in reserved.items():
                videos[player_id].commit(buffer, written=False)
            raise
        i = 0
        for p, c in zip(members, cams):
            video = videos[p.id]
            others = [a for pid, a in avatars.items() if pid != p.id]
            for eye in range(len(c)) if others else ():
                draw_avatars(frames.picture(i + eye), c.width, c.height, c.w2c[eye], c.K[eye], others)
            if p.id in reserved:
                staged[p.id] = video.commit(reserved[p.id])
            else:
                staged[p.id] = video.stage(frames.side_by_side(i, len(c)))
            i += len(c)
        return members

    def _render_failed(self, player: Player) -> None:
        """Count a view that could not be rendered this tick; log it (at most once per player per 10 s)."""
        self.metrics.frames_dropped.labels("render_failed").inc()
        now = time.monotonic()
        if now - player.render_failed_logged_at >= RENDER_FAILURE_LOG_S:
            player.render_failed_logged_at = now
            log.exception("world %r: rendering player %s's view failed; it misses this frame", self.name, player.id)

    def on_encoded(self, player: Player, frame: EncodedFrame) -> None:
        """A frame of ``player``'s video went to aiortc: report it and measure."""
        now = time.monotonic()
        player.sent_at.append(now)
        player.encode_ms.append(frame.encode_s * 1e3)
        self.metrics.frames_sent.inc()
        if frame.replaced:
            self.metrics.frames_dropped.labels("replaced").inc(frame.replaced)
        self.metrics.encode_seconds.observe(frame.encode_s)
        mtp_ms = -1.0
        if frame.mtp_s is not None:
            mtp_ms = frame.mtp_s * 1e3
            player.mtp_ms.append(mtp_ms)
            self.metrics.motion_to_photon_seconds.observe(frame.mtp_s)
        player.send(m.FrameInfo(rtp_timestamp=frame.rtp_timestamp, input_seq=frame.input_seq, server_ms=time.time() * 1e3, mtp_ms=mtp_ms))

    # ------------------------------------------------------------------ planning
    async def _planner(self) -> None:
        period = 1.0 / self.config.update_hz
        while True:
            await asyncio.sleep(period)
            players = list(self.players.values())
            if not players and not self.jobs:
                continue
            # With nobody left, an empty update still lets the world cancel queued jobs
            # nobody wants any more, so they do not hold up other worlds' generation.
            states = [PlayerState(p.id, p.pose.copy(), p.velocity.copy(), p.view.fov_y) for p in players]
            try:
                jobs = await self._loop.run_in_executor(self.executors.plan, self.world.update, states)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("world %r: update failed", self.name)
                continue
            for job in jobs or ():
                self.jobs.setdefault(job.id, job)
            self._prune_jobs()
            self._tell_job_limits(self.world.take_refused_jobs())

    def _tell_job_limits(self, refused: dict[str, str]) -> None:
        """Tell players whose views waited for a generation job limit (rarely: it is no fault of theirs)."""
        now = time.monotonic()
        for player_id, which in refused.items():
            player = self.players.get(player_id)
            if player is None or now - self._job_limit_noticed.get(player_id, -1e9) < JOB_LIMIT_NOTICE_S:
                continue
            self._job_limit_noticed[player_id] = now
            limits = self.config.limits
            if which == "world":
                limit, text = "max_jobs_per_world", f"this world already generates {limits.max_jobs_per_world} regions; yours waits its turn"
            else:
                limit, text = "max_jobs_per_player", f"{limits.max_jobs_per_player} regions you asked for are still generating; more wait their turn"
            self.metrics.limit_refusals.labels(limit).inc()
            self.metrics.protocol_errors.labels("limit_reached").inc()
            player.send(m.ErrorMessage(code="limit_reached", message=text, limit=limit))

    def _prune_jobs(self) -> None:
        for job_id, job in list(self.jobs.items()):
            if getattr(job, "state", "queued") in ("done", "failed", "cancelled"):
                del self.jobs[job_id]

    @property
    def queue_depth(self) -> int:
        return len(self.jobs)

    # ------------------------------------------------------------------ world events
    def _on_world_event_threadsafe(self, event) -> None:
        # Called from the World's worker threads: hop to the loop before touching anything.
        try:
            self._loop.call_soon_threadsafe(self._on_world_event, event)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _on_world_event(self, event) -> None:
        if self._closed:
            return
        if isinstance(event, ChunkRequested):
            job = event.job
            self.jobs[job.id] = job
            center = _vec3(job.region_center)
            log.info(
                "world %r: generation job %d requested by %s at (%.1f, %.1f, %.1f) r=%.1f m",
                self.name, job.id, ",".join(sorted(job.requested_by)) or "-", *center, job.region_radius,
            )
            self.metrics.generation_jobs.labels("requested").inc()
            self.broadcast(
                m.GenerationRequested(job_id=job.id, center=center, radius=float(job.region_radius), requested_by=sorted(job.requested_by))
            )
        elif isinstance(event, JobProgress):
            fraction = min(max(float(event.fraction), 0.0), 1.0)
            self.broadcast(m.GenerationProgress(job_id=event.job_id, fraction=fraction, message=event.message[: m.MAX_ERROR_CHARS]))
        elif isinstance(event, ChunkAdded):
            job = self.jobs.pop(event.job_id, None)
            gaussians = sum(len(c.gaussians) for c in event.chunks)
            if job is not None:
                center, radius = _vec3(job.region_center), float(job.region_radius)
            else:
                center, radius = _chunks_sphere(event.chunks)
            log.info("world %r: generation job %d done: %d Gaussians", self.name, event.job_id, gaussians)
            self.metrics.generation_jobs.labels("done").inc()
            self.broadcast(m.GenerationDone(job_id=event.job_id, center=center, radius=radius, gaussians=gaussians))
            self._send_explored_changes()
        elif isinstance(event, JobFailed):
            self.jobs.pop(event.job_id, None)
            if event.cancelled:
                log.info("world %r: generation job %d cancelled: %s", self.name, event.job_id, event.error)
            else:
                log.warning("world %r: generation job %d failed: %s", self.name, event.job_id, event.error)
            self.metrics.generation_jobs.labels("cancelled" if event.cancelled else "failed").inc()
            self.broadcast(
                m.GenerationFailed(job_id=event.job_id, error=str(event.error)[: m.MAX_ERROR_CHARS], cancelled=event.cancelled)
            )

    # ------------------------------------------------------------------ reporting
    async def _reporter(self) -> None:
        tick = 0
        while True:
            await asyncio.sleep(1.0 / REPORT_HZ)
            tick += 1
            if not self.players:
                continue
            self.broadcast(m.Players(players=[p.info() for p in list(self.players.values())[: m.MAX_PLAYERS_LISTED]]))
            if tick % EXPLORED_EVERY == 0:
                self._send_explored_changes()
            if tick % STATS_EVERY == 0:
                self._prune_jobs()
                for player in list(self.players.values()):
                    player.send(self.stats_for(player))

    def stats_for(self, player: Player) -> m.Stats:
        mtp = list(player.mtp_ms)[-300:]
        return m.Stats(
            fps=round(player.sent_fps(), 2),
            frame_ms=round(float(np.mean(player.render_ms)) if player.render_ms else 0.0, 3),
            encode_ms=round(float(np.mean(player.encode_ms)) if player.encode_ms else 0.0, 3),
            queue_depth=self.queue_depth,
            mtp_p50_ms=round(percentile(mtp, 50), 2),
            mtp_p95_ms=round(percentile(mtp, 95), 2),
            players=len(self.players),
        )

    def _explored_map(self):
        return getattr(self.world, "explored", None)

    def _explored_cells(self) -> dict[tuple[int, int], int]:
        explored = self._explored_map()
        if explored is None:
            return {}
        big = 1e9
        return {(i, j): s for i, j, s in explored.cells_in((-big, -big, big, big))}

    def explored_full(self) -> m.Explored:
        explored = self._explored_map()
        cell = float(getattr(explored, "cell_size", 0.0) or 0.0)
        cells = self._explored_cells()
        return m.Explored(cell_size=cell, cells=[(i, j, s) for (i, j), s in sorted(cells.items())][: m.MAX_EXPLORED_CELLS])

    def _send_explored_changes(self) -> None:
        explored = self._explored_map()
        if explored is None or getattr(explored, "version", None) == self._explored_version:
            return
        self._explored_version = getattr(explored, "version", None)
        cells = self._explored_cells()
        changed = [(i, j, s) for (i, j), s in sorted(cells.items()) if self._explored_sent.get((i, j)) != s]
        self._explored_sent = cells
        for start in range(0, len(changed), m.MAX_EXPLORED_CELLS):
            self.broadcast(m.Explored(cell_size=float(explored.cell_size), cells=changed[start : start + m.MAX_EXPLORED_CELLS]))


def _vec3(v) -> tuple[float, float, float]:
    a = np.asarray(v, np.float64).reshape(3)
    a = np.where(np.isfinite(a), a, 0.0)
    return (float(a[0]), float(a[1]), float(a[2]))


def _chunks_sphere(chunks) -> tuple[tuple[float, float, float], float]:
    if not chunks:
        return (0.0, 0.0, 0.0), 0.0
    lo = np.min([c.bounds_min for c in chunks], axis=0)
    hi = np.max([c.bounds_max for c in chunks], axis=0)
    return _vec3((lo + hi) / 2), float(np.linalg.norm(hi - lo) / 2)
