"""What a session tells its players about the world.

* World events arrive from worker threads, hop to the event loop
  (``call_soon_threadsafe``) and become protocol messages to everyone:
  ``generation_requested`` / ``generation_progress`` / ``generation_done`` /
  ``generation_failed``.
* Every 0.1 s the player list goes to everyone; every 0.5 s the explored cells that
  changed; every second each player gets its own ``stats``.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from protocol import messages as m
from protocol.codec import encode
from runtime.metrics import ServerMetrics
from runtime.player import Player, percentile
from runtime.world.frontier.jobs import GenerationJob
from runtime.world.world import ChunkAdded, ChunkRequested, JobFailed, JobProgress, WorldEvent

log = logging.getLogger("worldstream.session")

REPORT_HZ = 10.0
STATS_EVERY = 10  # report ticks (1 Hz)
EXPLORED_EVERY = 5  # report ticks (2 Hz)


def forget_finished(jobs: dict[int, GenerationJob]) -> None:
    """Drop the jobs that are done, failed or cancelled from ``jobs``."""
    for job_id, job in list(jobs.items()):
        if getattr(job, "state", "queued") in ("done", "failed", "cancelled"):
            del jobs[job_id]


class Reporter:
    """Turns one session's world events into messages and sends its periodic reports.

    Args:
        name: the world's name (for logs).
        world: the session's :class:`runtime.world.world.World`.
        players: the session's players by id (the live dict).
        jobs: the session's queued and running jobs by id (the live dict; events add and
            remove them, as the planner does).
        metrics: the server's metrics.
    """

    def __init__(self, name: str, world, players: dict[str, Player], jobs: dict[int, GenerationJob], metrics: ServerMetrics) -> None:
        self.name = name
        self.world = world
        self.players = players
        self.jobs = jobs
        self.metrics = metrics
        self.closed = False  # set by the session: events after closing are dropped
        self._loop = asyncio.get_running_loop()
        self._explored_sent: dict[tuple[int, int], int] = {}
        self._explored_version = -1

    def broadcast(self, msg: m.Message) -> None:
        """``msg`` to every player, encoded once: with 32 players the 10 Hz player list alone
        was a sixth of the event loop's time when each connection encoded its own copy."""
        data = encode(msg)
        for player in list(self.players.values()):
            player.send(data)

    # ------------------------------------------------------------------ world events
    def on_world_event_threadsafe(self, event: WorldEvent) -> None:
        """The world's subscriber (see :meth:`runtime.world.world.World.subscribe`)."""
        # Called from the World's worker threads: hop to the loop before touching anything.
        try:
            self._loop.call_soon_threadsafe(self._on_world_event, event)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _on_world_event(self, event: WorldEvent) -> None:
        if self.closed:
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

    # ------------------------------------------------------------------ reports
    async def run(self) -> None:
        """Send the periodic reports until cancelled."""
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
                forget_finished(self.jobs)
                for player in list(self.players.values()):
                    player.send(self.stats_for(player))

    def stats_for(self, player: Player) -> m.Stats:
        mtp = list(player.mtp_ms)[-300:]
        return m.Stats(
            fps=round(player.sent_fps(), 2),
            frame_ms=round(float(np.mean(player.render_ms)) if player.render_ms else 0.0, 3),
            encode_ms=round(float(np.mean(player.encode_ms)) if player.encode_ms else 0.0, 3),
            queue_depth=len(self.jobs),
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
