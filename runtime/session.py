"""A session: one live world and the players in it.

The session keeps the players, plans generation and runs three loops on the event loop:

* the **frame clock** (:class:`runtime.frame_loop.FrameLoop`, ``fps``): input moves the
  players, their views are rendered and offered to their videos;
* the **planner** (``update_hz``): ``world.update(players)`` in the plan executor, so a
  generation job wanted by several players is planned once;
* the **reporter** (:class:`runtime.reporter.Reporter`, 10 Hz): world events become
  messages; the player list, explored cells and stats go out;
* the **splat feed** (:class:`runtime.splat_feed.SplatFeed`): the scene's Gaussians to the
  players that render locally (``splats``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import numpy as np

from protocol import messages as m
from runtime.config import Executors, ServerConfig
from runtime.frame_loop import FrameLoop
from runtime.metrics import ServerMetrics
from runtime.player import Player
from runtime.reporter import Reporter, forget_finished
from runtime.splat_feed import SplatFeed
from runtime.world.frontier.jobs import GenerationJob, JobLimits
from runtime.world.sky import Sky
from runtime.world.world import PlayerState

log = logging.getLogger("worldstream.session")

JOB_LIMIT_NOTICE_S = 10.0  # a player over a job limit hears so at most this often


def sky_info(sky) -> m.SkyInfo | None:
    """The world's sky for the welcome (None when the world has none to tell)."""
    if not isinstance(sky, Sky):
        return None
    vec = lambda v, lo: tuple(min(1.0, max(lo, float(x))) for x in v)  # noqa: E731 - clamp to the wire's range
    sun = np.asarray(sky.sun_direction, np.float64)
    sun = sun / max(float(np.linalg.norm(sun)), 1e-9)
    return m.SkyInfo(
        zenith=vec(sky.zenith, 0.0), horizon=vec(sky.horizon, 0.0), ground=vec(sky.ground, 0.0),
        sun_direction=vec(sun, -1.0), sun_color=vec(sky.sun_color, 0.0),
    )


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
        self.jobs: dict[int, GenerationJob] = {}  # queued or running, by id
        self.empty_since: float | None = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._tasks: list[asyncio.Task] = []
        self._closed = False
        self.frames = FrameLoop(name, world, self.players, config.fps, executors.render, metrics, config.avatars)
        self.reporter = Reporter(name, world, self.players, self.jobs, metrics)
        self.splats = SplatFeed(world, self.players)
        self._unsubscribe: Callable[[], None] = world.subscribe(self.reporter.on_world_event_threadsafe)
        limits = config.limits
        world.job_limits = JobLimits(per_world=limits.max_jobs_per_world, per_player=limits.max_jobs_per_player)
        self._job_limit_noticed: dict[str, float] = {}  # player id -> when it was last told

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.frames.run(), name=f"frames:{self.name}"),
            asyncio.create_task(self._planner(), name=f"plan:{self.name}"),
            asyncio.create_task(self.reporter.run(), name=f"report:{self.name}"),
            asyncio.create_task(self.splats.run(), name=f"splats:{self.name}"),
        ]

    async def close(self) -> None:
        """Stop the loops, close every player's video and close (save) the world."""
        if self._closed:
            return
        self._closed = True
        self.reporter.closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.splats.close()
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
    def welcome(
        self, player: Player, resume_token: str, resumed: bool, version: str, renderer: str,
        visibility: str, invite: str | None, owner_key: str | None,
    ) -> None:
        """Answer ``player``'s hello: who it is, where it stands, what this server streams
        (``version`` and ``renderer`` are the server's), and what it may know of who may
        join: the world's ``visibility``, an ``invite`` (``runtime.sessions.Admission``
        says which), and for its creator the ``owner_key`` that proves it."""
        w, h = player.video_size
        cfg, world = self.config, self.world
        player.send(
            m.Welcome(
                player_id=player.id,
                resume_token=resume_token,
                world=self.name,
                seed=int(world.config.seed) % (m.MAX_SEED + 1),
                caption=str(getattr(world, "caption", world.config.caption))[: m.MAX_CAPTION_CHARS],
                pose=player.pose_info(),
                resumed=resumed,
                server=m.ServerInfo(
                    version=version, fps=cfg.fps, width=w, height=h, codec=cfg.codec, bitrate=cfg.bitrate,
                    generator=cfg.generator, renderer=renderer, explored_cell_size=float(world.explored.cell_size),
                ),
                notice=getattr(world, "start_notice", "")[: m.MAX_ERROR_CHARS],
                visibility=visibility,
                invite=invite,
                owner_key=owner_key,
                sky=sky_info(getattr(world, "sky", None)),
            )
        )

    def add(self, player: Player) -> None:
        others = list(self.players.values())
        self.players[player.id] = player
        self.empty_since = None
        self.metrics.players.inc()
        for other in others:
            other.send(m.PlayerJoined(player=player.info()))
        player.send(self.reporter.explored_full())
        player.send(m.Players(players=[p.info() for p in self.players.values()]))
        log.info("player %s (%r) joined world %r (%d players)", player.id, player.name, self.name, len(self.players))

    async def remove(self, player: Player) -> None:
        if self.players.pop(player.id, None) is None:
            return
        self._job_limit_noticed.pop(player.id, None)
        self.splats.remove(player)
        self.metrics.players.dec()
        video, player.video = player.video, None  # first: closing it is not "video ended"
        if video is not None:
            await video.close()
        for other in self.players.values():
            other.send(m.PlayerLeft(id=player.id, name=player.name))
        if not self.players:
            self.empty_since = time.monotonic()
        log.info("player %s (%r) left world %r (%d players)", player.id, player.name, self.name, len(self.players))

    def set_caption(self, text: str, by: Player) -> None:
        """Generate from ``text`` from now on, and tell every player in the world (the caption
        label is shared, like the world)."""
        self.world.set_caption(text)
        self.reporter.broadcast(m.CaptionChanged(text=text, player_id=by.id, player_name=by.name))
        log.info("world %r: caption %r (by %s)", self.name, text[:80], by.id)

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
            forget_finished(self.jobs)
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

    @property
    def queue_depth(self) -> int:
        return len(self.jobs)


