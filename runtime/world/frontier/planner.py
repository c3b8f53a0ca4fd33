"""Frontier planning: which views around the players need generating, and as which jobs.

Every update, :class:`FrontierPlanner` renders each player's probe views
(:func:`.coverage.probe_views`) at low resolution, keeps those that reach unexplored
cells and show too much empty space, and turns each into a :class:`.jobs.GenerationJob`
unless a queued, running or finished job already serves that view.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..camera import Cameras, Pose, intrinsics_from_fov
from ..movement.motion import walk_target_eye_y
from ..parts import WorldParts
from ..players import PlayerState
from ..scene import SceneSnapshot
from .coverage import ProbeView, probe_cameras, probe_views, shown_hole_fractions, uncovered_fractions
from .jobs import GenerationJob, JobLimits

REFINE_PRIORITY = 10.0
"""Added to a refining job's priority: it runs after every job that fills empty space."""

HOLE_PROBES = ("view", "soon", "ahead")
"""Probe kinds tested for holes (``WorldConfig.hole_fraction``) even inside explored space:
what the player sees now and is about to see."""

AROUND = "around"
"""Last element of a probe key whose probe is a ``ring`` heading hole-tested inside explored
space (the look-around: see :meth:`FrontierPlanner.uncovered_views`); its cached answer
includes the far pass, a frontier ring probe's does not."""

SHOWN_PROBES = ("view", "soon")
"""Probe kinds that are what a player is shown (now, and a second on): while one shows a
hole that a fill job is asked for, no refining job starts (fill first, detail after)."""

HOLE_MERGE_DISTANCE = 1.0
"""Metres within which a finished keyframe serves a view asked for only by the hole test: a
keyframe a few metres ahead does not see the near ground and the sides a player's view
shows, so a view with holes gets its own keyframe unless one stood nearly where it stands."""

PATH_STEP_M = 0.5
"""Metres per step when following the ground to the views ahead (a walker's step rises at
most ``MAX_STEP``, 0.5 m: a 40 degree slope rises 0.42 m in a step this long)."""

PROBE_CACHE_MAX = 4096
"""Cached probe answers before the cache is dropped (a long walk would grow it without bound)."""


def lookahead_seconds(configured_s: float, average_job_s: float | None, average_wait_s: float | None = None) -> float:
    """How far ahead (seconds) views are predicted: ``configured_s``, or longer when a job
    takes longer to land, so chunks land before the player arrives: 1.5 x (the average job
    time + the average time a job that fills empty space waited in the queue) + 0.5 s, at
    most 8 s. A player outrunning generation is thus asked for farther ahead."""
    if average_job_s is None:
        return configured_s
    return max(configured_s, min(8.0, 1.5 * (average_job_s + (average_wait_s or 0.0)) + 0.5))


class ViewRecord:
    """Views (position + unit forward) of jobs, for 'is this view already served?' tests."""

    def __init__(self) -> None:
        self.positions = np.zeros((0, 3), np.float32)
        self.forwards = np.zeros((0, 3), np.float32)
        self.times = np.zeros(0, np.float64)

    def drop_before(self, when: float) -> None:
        """Forget views recorded before ``when`` (a record of recent failures stays small)."""
        keep = self.times >= when
        if not keep.all():
            self.positions, self.forwards, self.times = self.positions[keep], self.forwards[keep], self.times[keep]

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
class UncoveredView:
    """A probe view showing too much empty space: a keyframe that may become a job."""

    probe: ProbeView
    pitch: float  # keyframe pitch (the probe's, clamped)
    forward: np.ndarray  # [3] unit forward of the keyframe
    detail: bool = False  # asked for only because what the view shows is too coarse
    speed: float = 0.0  # horizontal speed (m/s) of the player it is for
    hole: bool = False  # asked for only by the hole test (see WorldConfig.hole_fraction)
    shown_hole: bool = False  # the player's view now or soon shows holes (SHOWN_PROBES)
    looks_around: bool = False  # a ring heading inside explored space showing holes (the look-around)


class FrontierPlanner:
    """Finds uncovered views around players and schedules jobs for them.

    Owns what planning remembers: the views of finished jobs (``done_views``: never
    again; saved with the world), of failed jobs (``failed_views``: not again for
    ``retry_after_s``), the next job id and a cache of probe coverage answers.

    Args:
        parts: the world's shared state. Planning reads its settings, scene, collider,
            renderer and coverage maps; new jobs go onto its queue (under its lock), and it
            counts ``probes_rendered`` and ``jobs_created``.
    """

    def __init__(self, parts: WorldParts) -> None:
        self.parts = parts
        self.config, self.scene, self.collider, self.renderer = parts.config, parts.scene, parts.collider, parts.renderer
        self.queue, self.stats, self._lock = parts.jobs, parts.stats, parts.lock
        self.done_views = ViewRecord()  # keyframes generated (or found covered): never again
        self.failed_views = ViewRecord()  # keyframes that failed: not again for retry_after_s
        self.next_job_id = 0
        self.limits = JobLimits()
        self.refused: dict[str, str] = {}  # player id -> "world" | "player": views left unplanned by a limit
        self._probe_cache: dict[tuple, tuple[float, float]] = {}  # probe key -> uncovered fractions (all, near)
        self._probe_versions: tuple = (-1, -1)  # (scene, sky) versions the cache is valid for

    # ------------------------------------------------------------------ one update
    def plan(
        self, players: Sequence[PlayerState], now: float, lookahead_s: float, caption: str
    ) -> tuple[list[GenerationJob], list[GenerationJob]]:
        """Mark players' cells visited, queue jobs for their uncovered views and cancel stale ones.

        Returns ``(new_jobs, stale_jobs)``; the caller announces them and starts jobs.
        """
        for p in players:
            if np.isfinite(p.pose.position).all():
                self.parts.explored.mark_visited(float(p.pose.position[0]), float(p.pose.position[2]))
        candidates = sorted(self.uncovered_views(players, lookahead_s), key=lambda c: c.probe.rank)
        new_jobs: list[GenerationJob] = []
        with self._lock:
            holes_wait = False  # a player is shown a hole that a fill job is asked for
            around = False  # a look-around job was asked for: one at a time
            for cand in candidates:
                if cand.looks_around and around:
                    continue
                if not cand.detail:
                    served = self._schedule(cand, now, caption, new_jobs)
                    holes_wait |= cand.shown_hole and not served
                    around |= cand.looks_around and not served
            # Fill first, detail after: while a player is shown a hole that a fill job is
            # asked for, no refining job is planned and queued ones yield (cancelled; asked
            # again once nothing fills); a running one is cancelled once a fill job waits
            # for its slot (JobQueue.preempt_for_frontier).
            if holes_wait:
                yielded = [j for j in self.queue.pending() if j.state == "queued" and j.refines]
                self.queue.cancel_queued(yielded, now)
                self.stats.jobs_yielded += len(yielded)
            else:
                yielded = []
                for cand in candidates:
                    if cand.detail:
                        self._schedule(cand, now, caption, new_jobs)
            stale = self._drop_stale(now) + yielded
        return new_jobs, stale

    def _probe_key(self, probe: ProbeView) -> tuple:
        """A probe's pose quantised: probes with equal keys share one coverage test.

        Ring probes use a coarser grid (they anticipate turns; a metre changes little),
        so a walking player re-renders about two probes per update, not six.
        """
        q = 1.0 if probe.kind == "ring" else 0.5
        step = math.radians(10.0)
        pos = np.round(np.asarray(probe.position, np.float64) / q).astype(int)
        return (q, *pos.tolist(), round(probe.yaw / step), round(probe.pitch / step), round(probe.fov_y / step))

    def _ahead_on_ground(self, pose: Pose, probes: list[ProbeView]) -> list[ProbeView]:
        """Put a walking player's predicted eyes (``ahead`` probes, nearest first) at eye height
        over the ground along the way.

        The path is followed from the player in ``PATH_STEP_M`` steps as a walker would
        (:func:`walk_target_eye_y`: each step rises at most a step's height) while the scene
        knows the ground along it -- not a straight-line guess, which on a rising slope put
        keyframes under the terrain, where they see nothing and land nothing. Past the known
        ground the last known slope goes on, and probes more than ``ahead_step_m`` beyond it
        are left out, unless nothing nearer is kept (they wait for a nearer keyframe to land
        and show the ground there). Players not at eye height
        over known ground (flying, or on unknown ground) keep the probes as predicted.
        """
        if not probes:
            return probes
        self.collider.sync(self.scene.snapshot())
        x0, y0, z0 = (float(v) for v in pose.position)
        here = walk_target_eye_y(x0, z0, y0, self.collider)
        if here is None or abs(here - y0) > 0.5:
            return probes
        far = probes[-1].position
        dx, dz = float(far[0]) - x0, float(far[2]) - z0
        reach = math.hypot(dx, dz)
        if reach < 1e-3:
            return probes
        ux, uz = dx / reach, dz / reach
        step_m = self.config.ahead_step_m
        out: list[ProbeView] = []
        y, slope, known_at = here, 0.0, 0.0  # eye height, its rise per metre, last known ground (m along)
        d, k = 0.0, 0
        while k < len(probes):
            target = math.hypot(float(probes[k].position[0]) - x0, float(probes[k].position[2]) - z0)
            while d + 1e-6 < target:
                nd = min(d + PATH_STEP_M, target)
                # Followed only while the ground is continuous: past a gap, the floors found
                # from a guessed height are as often canopies as ground.
                ground = walk_target_eye_y(x0 + nd * ux, z0 + nd * uz, y, self.collider) if known_at == d else None
                if ground is not None:
                    slope = 0.5 * slope + 0.5 * (ground - y) / (nd - d)  # smoothed: one odd column is no hill
                    y, known_at = ground, nd
                else:
                    y += slope * (nd - d)
                d = nd
            if step_m > 0 and d - known_at > step_m and out:
                break  # far past the known ground: the nearer keyframe shows it first
            pr = probes[k]
            out.append(dataclasses.replace(pr, position=np.array([pr.position[0], y, pr.position[2]], np.float32)))
            k += 1
        return out

    def uncovered_views(self, players: Sequence[PlayerState], lookahead_s: float) -> list[UncoveredView]:
        """Probe views of all players that reach unexplored cells and show too much empty
        space, that show a player holes (``hole_fraction``), and -- while nothing fills --
        that show too coarse a scene (``detail``).

        The look-around: a ``ring`` heading inside explored space is hole-tested too, but only
        while no look-around job is pending and no refining job waits for the generator,
        and not where refining is asked for (the heading is too coarse and nothing fills: the
        refining keyframe, made where the player stands, fills its holes too). Keyframes made
        walking ahead do not see the sides and back near the path; these fills do, after the
        frontier and without holding refining back (:attr:`UncoveredView.looks_around`)."""
        cfg = self.config
        versions = (self.scene.version, self.parts.sky_directions.version)
        if self._probe_versions != versions or len(self._probe_cache) > PROBE_CACHE_MAX:  # new splats or sky: answers are stale
            self._probe_cache.clear()
            self._probe_versions = versions
        tested: list[tuple[ProbeView, tuple]] = []
        coarse: list[ProbeView] = []  # inside explored space, but only seen from too far
        detail = not self._frontier_busy()
        with self._lock:
            pending = self.queue.pending()
        look_around = cfg.hole_fraction > 0 and not any(j.looks_around or (j.refines and j.state == "queued") for j in pending)
        speeds: dict[str, float] = {}
        for p in players:
            if not (np.isfinite(p.pose.position).all() and np.isfinite(p.velocity).all()):
                continue  # a bad client pose must not poison planning
            speeds[p.player_id] = float(math.hypot(p.velocity[0], p.velocity[2]))
            probes = probe_views(
                p.player_id,
                p.pose,
                p.velocity,
                p.fov_y,
                lookahead_s=lookahead_s,
                keyframe_fov_y=cfg.keyframe_fov_y,
                ring_yaws=cfg.ring_yaws,
                ahead_step_m=cfg.ahead_step_m,
            )
            ahead = self._ahead_on_ground(p.pose, [pr for pr in probes if pr.kind == "ahead"])
            probes = [pr for pr in probes if pr.kind != "ahead"] + ahead
            hole_tested = set()  # kinds tested for holes: the view now and soon, and the nearest view ahead
            for pr in probes:
                if self.parts.explored.reaches_unknown(pr.position, pr.yaw, cfg.frontier_distances):
                    tested.append((pr, self._probe_key(pr)))
                elif cfg.hole_fraction > 0 and pr.kind in HOLE_PROBES and pr.kind not in hole_tested:
                    hole_tested.add(pr.kind)
                    tested.append((pr, self._probe_key(pr)))  # explored, but is it whole?
                elif detail and pr.kind not in ("ahead", "soon") and self._too_coarse(pr):
                    coarse.append(pr)  # refining: a ring heading's holes too
                elif look_around and pr.kind == "ring":
                    tested.append((pr, self._probe_key(pr) + (AROUND,)))
        self._test_probes(tested, speeds)
        out: list[UncoveredView] = []
        for probe, key in tested:
            # Splats seen from far away cover a view in alpha long before they have the
            # detail to stand among: a player heading into a cell no keyframe was made
            # near gets one there, whatever alpha says.
            unexplored = (
                cfg.generate_unexplored_ahead
                and probe.kind != "ring"
                and not self.parts.explored.is_generated(float(probe.position[0]), float(probe.position[2]))
            )
            fraction, shown = self._probe_cache[key]
            uncovered = unexplored or fraction > cfg.uncovered_fraction
            # Holes in what the player is shown now or is about to be: the scene with the
            # far field behind, every pixel (a hole the player sees is one, near or far).
            around = key[-1] == AROUND
            holed = self._hole_tested(probe.kind, key) and shown > cfg.hole_fraction
            if uncovered or holed:
                # Empty space around a player in explored cells is a hole however much of a
                # ring heading it fills: near the path, between keyframes that looked ahead and back.
                view = dataclasses.replace(self._keyframe_view(probe), hole=not uncovered or around)
                view.shown_hole = holed and probe.kind in SHOWN_PROBES
                view.looks_around = around
                out.append(view)
            elif not around and detail and probe.kind not in ("ahead", "soon") and self._too_coarse(probe):
                coarse.append(probe)  # (a look-around heading was found fine above)
        for probe in coarse:
            # Tilted down: a refining keyframe also remakes the ground just ahead, which
            # far keyframes covered with long grazing splats (a level one starts 2 m out).
            pitch = min(probe.pitch, math.radians(cfg.detail_pitch_deg))
            out.append(dataclasses.replace(self._keyframe_view(dataclasses.replace(probe, pitch=pitch)), detail=True))
        for view in out:
            view.speed = speeds.get(view.probe.player_id, 0.0)
        return out

    def _test_probes(self, tested: list[tuple[ProbeView, tuple]], speeds: dict[str, float]) -> None:
        """Render the probes not in the cache yet (at :meth:`probe_size`, ``speeds`` m/s by
        player id) and cache
        ``(uncovered fraction of the splats, fraction of holes shown)`` for each: the
        second draws the far field behind the splats, for :data:`HOLE_PROBES` kinds (and
        :data:`AROUND` keys) whose
        splats alone leave more than ``hole_fraction`` uncovered (else it is the first)."""
        cfg = self.config
        missing = list({key: pr for pr, key in tested if key not in self._probe_cache}.items())
        if not missing:
            return
        snapshot = self.scene.snapshot()
        sizes = {key: self.probe_size(pr.kind, speeds.get(pr.player_id, 0.0)) for key, pr in missing}
        for size in sorted(set(sizes.values())):
            group = [(key, pr) for key, pr in missing if sizes[key] == size]
            cams = probe_cameras([pr for _, pr in group], *size)
            n = len(cams)
            alpha = self.renderer.render_alpha(snapshot, cams) if snapshot.chunks else np.zeros((n, cams.height, cams.width), np.float32)
            self.stats.probes_rendered += n
            fractions = uncovered_fractions(alpha, cams, self.parts.sky_directions)
            # The far field only hides holes: where the splats alone leave few, so does the
            # picture (and the far pass is skipped).
            shown = np.asarray(fractions, np.float64).copy()
            holes = [i for i, (key, pr) in enumerate(group) if self._hole_tested(pr.kind, key) and shown[i] > cfg.hole_fraction]
            if holes:
                shown[holes] = self._shown_holes(snapshot, alpha[holes], cams[holes])
            for (key, _), frac, hole in zip(group, fractions, shown):
                self._probe_cache[key] = (float(frac), float(hole))

    def _hole_tested(self, kind: str, key: tuple = ()) -> bool:
        """Is a probe of ``kind`` (cache ``key``) tested for holes: ``hole_fraction`` on, and a
        :data:`HOLE_PROBES` kind or a look-around heading (an :data:`AROUND` key)?"""
        return self.config.hole_fraction > 0 and (kind in HOLE_PROBES or key[-1:] == (AROUND,))

    def probe_size(self, kind: str, speed: float) -> tuple[int, int]:
        """``(width, height)`` pixels a probe of ``kind`` for a player moving at ``speed`` m/s
        (horizontal) is drawn at: ``hole_probe_width`` x ``hole_probe_height`` for the hole
        test's :data:`HOLE_PROBES` while the player moves slower than ``coarse_speed`` (a
        coarser probe fills the thin gaps a player is shown), else ``probe_width`` x
        ``probe_height``. Look-around headings are not what the player is shown; and a running
        player's views ahead land before such gaps grow (no hole lasted at 6 m/s either way),
        while the fills the finer probes asked for there were coarse and cut refining short."""
        cfg = self.config
        if cfg.hole_fraction > 0 and kind in HOLE_PROBES and speed < cfg.coarse_speed:
            return cfg.hole_probe_width, cfg.hole_probe_height
        return cfg.probe_width, cfg.probe_height

    def _shown_holes(self, snapshot: SceneSnapshot, alpha: np.ndarray, cams: Cameras) -> np.ndarray:
        """``[N]`` fraction of holes ``cams`` show a player: the splats' opacity ``alpha``
        ``[N, H, W]`` with ``snapshot``'s far field (rendered here, alone) laid behind as the
        renderer lays it."""
        far = self.renderer.render_alpha(SceneSnapshot(snapshot.version, snapshot.far), cams) if snapshot.far else np.zeros_like(alpha)
        return shown_hole_fractions(alpha, far, cams, self.parts.sky_directions, self.parts.explored,
                                    see_through_from=self.renderer.far_see_through_from)

    def _keyframe_view(self, probe: ProbeView) -> UncoveredView:
        """The keyframe a probe asks for: its pose with the pitch clamped to the keyframe range."""
        lo, hi = self.config.keyframe_pitch_range
        pitch = min(hi, max(lo, probe.pitch))
        return UncoveredView(probe, pitch, _forward(probe.yaw, pitch))

    def footprint_px(self, position: np.ndarray, forward: np.ndarray) -> float:
        """Estimated width (stream pixels) of the splats a view at ``position`` looking along
        unit ``forward`` shows of a surface ``detail_reference_m`` metres away.

        A keyframe's Gaussians are ``reconstruct_stride`` keyframe pixels wide where it saw
        them; the nearest keyframe facing this way (finished, queued or running, within
        ``merge_angle``), ``D`` metres off, saw that surface from about ``D + reference``
        metres, so on the stream its splats span ``base x (D + reference) / reference`` pixels,
        ``base`` being the stride in keyframe pixels over the stream's pixel angle. ``inf``
        when no keyframe faces this way (then the view is not judged coarse).
        """
        cfg = self.config
        base = cfg.reconstruct_stride * math.degrees(cfg.keyframe_fov_y) / cfg.keyframe_height / cfg.detail_pixel_deg
        positions, forwards = [self.done_views.positions], [self.done_views.forwards]
        for job in self.queue.pending():
            positions.append(job.cameras.centers.astype(np.float32))
            forwards.append(job.cameras.forwards.astype(np.float32))
        pos, fwd = np.concatenate(positions), np.concatenate(forwards)
        facing = fwd @ np.asarray(forward, np.float32) >= math.cos(cfg.merge_angle)
        if not facing.any():
            return math.inf
        distance = float(np.linalg.norm(pos[facing] - np.asarray(position, np.float32), axis=1).min())
        return base * (distance + cfg.detail_reference_m) / cfg.detail_reference_m

    def _too_coarse(self, probe: ProbeView) -> bool:
        """Would ``probe``'s view show splats wider than ``detail_max_px``? (see :meth:`footprint_px`)

        The limit is at least 1.5 x what a keyframe at the probe itself gives, so the
        keyframe this asks for always satisfies it (planning never loops)."""
        cfg = self.config
        if cfg.detail_max_px <= 0:
            return False
        base = cfg.reconstruct_stride * math.degrees(cfg.keyframe_fov_y) / cfg.keyframe_height / cfg.detail_pixel_deg
        with self._lock:
            footprint = self.footprint_px(probe.position, self._keyframe_view(probe).forward)
        # No keyframe facing this way (an imported scene, say): nothing says it is coarse.
        return math.isfinite(footprint) and footprint > max(cfg.detail_max_px, 1.5 * base)

    # ------------------------------------------------------------------ jobs from views
    def _schedule(self, cand: UncoveredView, now: float, caption: str, new_jobs: list[GenerationJob]) -> bool:
        """Merge ``cand`` into a job that serves it, or make a new one (called under the lock).

        Returns True when no job will be asked for it: a finished keyframe already served
        that view (or failed there lately); False when it joined a pending job, got a new
        one, or waits for a limit."""
        cfg = self.config
        pos = cand.probe.position
        near = HOLE_MERGE_DISTANCE if cand.hole else cfg.merge_distance
        if self.done_views.matches(pos, cand.forward, near, cfg.merge_angle):
            return True  # generated there already: what is still empty stays empty, no loops
        if self.failed_views.matches(pos, cand.forward, cfg.merge_distance, cfg.merge_angle, since=now - cfg.retry_after_s):
            return True
        for job in self.queue.pending():
            if job.refines and not cand.detail:
                continue  # fill never waits on a refining job's larger trace: it gets its own
            centers, forwards = job.cameras.centers, job.cameras.forwards
            near = np.linalg.norm(centers - pos, axis=1) <= cfg.merge_distance
            aligned = forwards @ cand.forward >= math.cos(cfg.merge_angle)
            if (near & aligned).any():
                job.requested_by.add(cand.probe.player_id)
                job.last_requested = now
                job.looks_around &= cand.looks_around  # the frontier asks for it now: frontier work
                if job.state == "queued":
                    job.priority = min(job.priority, self.priority(cand))
                return False
        refusal = self.limits.refusal(self.queue.pending(), cand.probe.player_id)
        if refusal is not None:
            self.refused[cand.probe.player_id] = refusal
            return False
        job = self._make_job(cand, now, caption, self.keyframe_size(cand))
        job.refines = cand.detail
        job.scale = self.trace_scale(cand)
        job.fills_holes = cand.hole
        job.looks_around = cand.looks_around
        if cand.hole:
            job.hole_view = probe_cameras([cand.probe], *self.probe_size(cand.probe.kind, cand.speed))
        self.stats.coarse_jobs += int(job.scale < 1.0)
        self.queue.add(job)
        new_jobs.append(job)
        self.stats.jobs_created += 1
        self.stats.detail_jobs += int(cand.detail)
        self.stats.look_around_jobs += int(cand.looks_around)
        self.stats.fine_jobs += int(job.cameras.width > cfg.keyframe_width)
        return False

    def priority(self, cand: UncoveredView) -> float:
        """Lower first: the probe's rank (the queue breaks ties by job id, i.e. request order);
        refining after every job that fills empty space (fill first, detail after)."""
        return cand.probe.rank + (REFINE_PRIORITY if cand.detail else 0.0)

    def trace_scale(self, cand: UncoveredView) -> float:
        """The resolution scale a new job for ``cand`` is traced at (call under the lock):
        ``coarse_scale`` for a job filling empty space while generation is behind -- the
        player is shown a hole now or a second on in a world under way, a fill job is already
        queued or running, or the player moves at ``coarse_speed`` or faster -- so holes close
        in about a quarter of the time (fill coarse first); else 1. A fresh world's first
        view is its start: traced whole. Only for generators that trace any image size
        (``traces_any_size``): a model may need its own sizes."""
        cfg = self.config
        if cand.detail or cfg.coarse_scale >= 1.0 or not getattr(self.parts.generator, "traces_any_size", False):
            return 1.0
        shown = cand.shown_hole and bool(self.scene.snapshot().chunks)
        behind = shown or cand.speed >= cfg.coarse_speed or self._frontier_busy()
        return cfg.coarse_scale if behind else 1.0

    def keyframe_size(self, cand: UncoveredView) -> tuple[int, int]:
        """``(width, height)`` pixels of the keyframes a new job for ``cand`` is made at: the
        keyframe size, or ``detail_scale`` x it for a refining job while its player moves slower
        than ``coarse_speed``. Refining jobs run only when no fill job is pending (the generator
        has slack) and are cancelled for one, so their larger trace never delays the frontier;
        a running player needs the frontier, and would pass the place before a larger trace
        lands. Only for generators that trace any image size (``traces_any_size``)."""
        cfg = self.config
        size = (cfg.keyframe_width, cfg.keyframe_height)
        if not cand.detail or cfg.detail_scale <= 1.0 or cand.speed >= cfg.coarse_speed:
            return size
        if not getattr(self.parts.generator, "traces_any_size", False):
            return size
        return round(cfg.keyframe_width * cfg.detail_scale), round(cfg.keyframe_height * cfg.detail_scale)

    def _frontier_busy(self) -> bool:
        """Is a job that fills empty space queued or running (a look-around job aside)? Then
        detail waits: a player outrunning generation needs holes filled before anything is
        sharpened."""
        with self._lock:
            return any(not (job.refines or job.looks_around) for job in self.queue.pending())

    def _make_job(self, cand: UncoveredView, now: float, caption: str, size: tuple[int, int]) -> GenerationJob:
        cfg = self.config
        W, H = size
        fov = cfg.detail_fov_y if cand.detail and cfg.detail_fov_y else cfg.keyframe_fov_y  # refining: narrower, finer
        K = intrinsics_from_fov(W, H, fov)
        pos = np.asarray(cand.probe.position, np.float32)
        w2c = np.stack([Pose(pos, cand.probe.yaw + off, cand.pitch).w2c for off in cfg.job_yaw_offsets])
        cameras = Cameras(w2c, np.broadcast_to(K, (len(w2c), 3, 3)), W, H)
        heading = np.array([math.sin(cand.probe.yaw), 0.0, math.cos(cand.probe.yaw)], np.float32)
        job = GenerationJob(
            id=self.next_job_id,
            cameras=cameras,
            caption=caption,
            region_center=pos + heading * cfg.explored_mark_distance * 0.5,
            region_radius=cfg.explored_mark_distance,
            requested_by={cand.probe.player_id},
            priority=self.priority(cand),
            created_at=now,
            last_requested=now,
        )
        self.next_job_id += 1
        return job

    def _drop_stale(self, now: float) -> list[GenerationJob]:
        """Cancel queued jobs nobody asked for lately (players moved on); called under the lock."""
        stale = [j for j in self.queue.pending() if j.state == "queued" and now - j.last_requested > self.config.stale_job_s]
        self.queue.cancel_queued(stale, now)
        return stale

    # ------------------------------------------------------------------ outcomes
    def record_done(self, cameras: Cameras) -> None:
        """These keyframes were generated (or found covered): never plan them again."""
        with self._lock:
            self.done_views.add(cameras.centers, cameras.forwards)

    def record_failed(self, cameras: Cameras, when: float) -> None:
        """These keyframes failed at ``when``: not again for ``retry_after_s``."""
        with self._lock:
            self.failed_views.drop_before(when - self.config.retry_after_s)
            self.failed_views.add(cameras.centers, cameras.forwards, when)

    def already_covered(self, job: GenerationJob) -> bool:
        """Did other jobs cover this job's views while it waited? (cheap low-resolution test)

        Covered means: the camera stands in a generated cell and every view is covered
        in alpha (the same two rules that made the job); for a job the hole test asked
        for, the probe view that asked shows at most half ``hole_fraction`` of holes now
        (the scene over the far field). That view, not the keyframe's: a 75 degree
        keyframe dilutes what a 60 degree view shows, and a hole under its threshold
        there stayed on the player's screen.
        """
        snapshot = self.scene.snapshot()
        if not snapshot.chunks or job.refines:  # a refining job's views are covered: coarsely
            return False
        if self.config.generate_unexplored_ahead:
            c = job.cameras.centers[0]
            if not self.parts.explored.is_generated(float(c[0]), float(c[2])):
                return False
        cfg = self.config
        cams = job.cameras.resized(cfg.probe_width, cfg.probe_height)
        if job.fills_holes:
            view = cams if job.hole_view is None else job.hole_view
            alpha = self.renderer.render_alpha(snapshot, view)
            return bool((self._shown_holes(snapshot, alpha, view) <= cfg.hole_fraction / 2).all())
        alpha = self.renderer.render_alpha(snapshot, cams)
        return bool((uncovered_fractions(alpha, cams, self.parts.sky_directions) <= cfg.uncovered_fraction).all())

    # ------------------------------------------------------------------ persistence
    def restore(self, done_views: ViewRecord, next_job_id: int) -> None:
        """Take a loaded world's finished views and job counter (call under the lock)."""
        self.done_views = done_views
        self.next_job_id = next_job_id
        self._probe_cache.clear()


def _forward(yaw: float, pitch: float) -> np.ndarray:
    """``[3]`` unit view direction for ``yaw`` / ``pitch`` (radians; +y is down)."""
    cp = math.cos(pitch)
    return np.array([math.sin(yaw) * cp, -math.sin(pitch), math.cos(yaw) * cp], np.float32)
