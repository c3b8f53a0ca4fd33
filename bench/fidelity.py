"""Fidelity benchmark: does the world a player sees match what the generator made?

The procedural generator renders any camera exactly, so it is the ground truth. Per walk
(biome x seed x path x speed):

1. A fresh world (procedural generator with the server's thread setting, CPU or gsplat
   renderer) is bootstrapped at the spawn: ``update`` until its first jobs are done, as a
   player waits while the world loads.
2. The player walks the path **in real time** at the given speed: its pose follows the
   wall clock, ``World.update`` runs at ``--update-hz`` (the server's 5 Hz), and, unless
   ``--stream-fps 0``, the player's view is rendered at ``--stream-fps`` at the stream
   resolution, as the server does -- generation runs concurrently in the world's worker
   and pays for the CPU both take. Every ``1 / --sample-hz`` s the view's alpha is kept
   (reduced to 160x90) for the hole fraction.
3. After the walk (and ``--settle-s`` more seconds of the player standing, so jobs it
   asked for may land), ``--novel`` cameras are drawn inside the explored strip: a point
   on the walked path, up to +-``--offset`` m to the side, any yaw, pitch within
   +-``--pitch-deg``, at eye height over the generator's ground (cameras that start
   inside an object are drawn again). The world (``World.render``, what a player there
   would see) and the generator render each at ``--resolution`` with a 60 degree FOV.

Measured per novel view, against the generator's picture: PSNR (RGB), SSIM (luma),
sharpness ratio (mean luma gradient, world / generator), hole fraction (pixels where the
world shows nothing -- alpha < 0.5, the sky shows -- and the generator shows a surface; the
world's alpha is the scene's composited over the far field drawn behind it, as the player
is shown them: distant terrain the far field shows is no hole),
the same PSNR after the server's H.264 encoder (libx264, CRF 18, one stream of the novel
views in order, decoded), and the **ceiling**: the generator's picture of the same
surfaces with its view-dependent terms (distance fog, water reflection) evaluated from
the nearest keyframe instead of the camera -- what a reconstruction that stored exactly
what its keyframes saw would show; and what the far field adds (the PSNR of the same
snapshot drawn without its far chunks, subtracted). During the walk: the hole fraction of the player's
own view over time (sampled at ``--sample-hz``), and how long each visible hole lasted: a
hole opens at the first sample above ``--hole-threshold`` of the view (1 %) and closes at
the next sample at or below it (or at the last sample, still open); reported as the share
of the walk's time with a visible hole and the p50 / p95 / max seconds of these holes; the
same for holes nearer than 15 m (``NEAR_M``: what the world fills from the player's own
view), apart from the far field at the horizon; ``scene holes`` is the walk's hole fraction
of the scene's alpha alone (the far field left out: this bench's measure until 2026-12-07).
``--causes`` breaks every walk sample's holes down by the generator's depth there, whether
the far field covers them and whether any keyframe saw that surface (:mod:`bench.hole_causes`).
The walker's velocity, given to planning, follows the ground (uphill it rises), as the
server derives it from a player's moves.
``--error-budget`` splits every novel view's squared error by pixel class (holes, sky, depth
edges, unseen surfaces, thin structures, objects, ground), by the generator's depth, and into
geometry vs colour (:mod:`bench.error_budget`).
``--timeline`` prints every job of each walk: when it was planned, started, finished
generating, landed in the scene and was first drawn (seconds since the walk started), its
trace resolution (coarse fill jobs are traced at a fraction of the keyframe size) and how
far ahead of the player it was asked for, beside the hole fraction over time.
``--paced SCALE`` walks on a simulated clock instead of the wall clock: every job generates
for SCALE x its modelled quiet-CPU-2 time (:mod:`bench.paced`), so how long holes last under
real-time scheduling is measured whatever else loads the machine (1: a quiet CPU-2; 2-3: a
busy one). The player stands ``--settle-s`` after the walk, as in real time.

Usage::

    .venv/bin/python -m bench.fidelity                                  # forest, seed 7, straight, 1.5/3/6 m/s
    .venv/bin/python -m bench.fidelity --quick                          # seconds: 1 short walk, 4 views at 320x180
    .venv/bin/python -m bench.fidelity --biomes forest,city,desert,snow --paths straight,loop,turns --seeds 7,8
    .venv/bin/python -m bench.fidelity --config keyframe_width=640 --config keyframe_height=360
    .venv/bin/python -m bench.fidelity --fast-forward --speeds 1.5 --config detail_scale=1   # refining keyframes at 320x180
    .venv/bin/python -m bench.fidelity --fast-forward --speeds 3          # generation waited for: load-independent
    .venv/bin/python -m bench.fidelity --speeds 6 --novel 0 --no-encoder --timeline     # why holes last
    .venv/bin/python -m bench.fidelity --speeds 1.5 --novel 0 --no-encoder --causes     # what the holes are
    .venv/bin/python -m bench.fidelity --paced 1 --novel 0 --no-encoder --timeline      # real-time scheduling, load-free
    .venv/bin/python -m bench.fidelity --fast-forward --speeds 1.5,6 --distance 20 --novel 12 --no-encoder --error-budget  # where the error is

``--config key=value`` overrides a ``WorldConfig`` field (JSON values) to compare settings.
On the shared 2-core machine generation competes with everything else running: compare
settings within one run or back to back.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

from bench import error_budget, hole_causes, paced
from bench.common import describe_machine, format_table, machine, write_json
from bench.compare import psnr, sharpness, ssim
from runtime.world import PlayerState, Pose, World, WorldConfig
from runtime.world.camera import Cameras, intrinsics_from_fov
from runtime.world.generators.base import CancelToken, GenerationRequest
from runtime.world.generators.procedural import ProceduralGenerator
from runtime.world.generators.procedural.generator import ground_height_y
from runtime.world.keyframes.colour_solve import SOLVE_ITERATIONS
from runtime.world.keyframes.fit import FIT_ITERATIONS
from runtime.world.keyframes.optimise import ChunkOptimiser
from runtime.world.render import create_renderer
from runtime.world.render.far_pass import SEE_THROUGH_FROM, shown_alpha
from runtime.world.scene import SceneSnapshot

VIEW_FOV = math.radians(60.0)
EYE_HEIGHT = 1.7
SAMPLE_SIZE = (160, 90)
"""The player's view is kept at this size for the hole fraction during the walk."""
SKY_DEPTH = 200.0
"""Generator depths from here on count as sky (the world's reconstruction cut)."""
CAPTIONS = {
    "forest": "a pine forest",
    "city": "a small town with streets and houses",
    "desert": "a desert with dunes",
    "snow": "a snowy winter valley",
    "meadow": "a meadow with hills",
    "beach": "a tropical beach",
}
NEAR_M = 15.0
"""Holes nearer than this (generator depth, metres) are also reported apart: the ground and
objects around the player, which the world fills from the player's own view (its
``hole_reach_m``), rather than the far field at the horizon."""
DISTANCE_BINS = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 60.0, 1e9)


# --------------------------------------------------------------------------- paths
@dataclass
class Path2D:
    """A walked path as a polyline over (x, z) with headings, sampled every ``step`` metres."""

    xz: np.ndarray  # [S, 2] metres
    yaw: np.ndarray  # [S] radians (0 faces +z)
    step: float

    @property
    def length(self) -> float:
        return (len(self.xz) - 1) * self.step

    def at(self, s: float) -> tuple[float, float, float]:
        """``(x, z, yaw)`` after ``s`` metres (clamped to the path)."""
        k = min(max(s / self.step, 0.0), len(self.xz) - 1.0)
        i = min(int(k), len(self.xz) - 2)
        f = k - i
        x, z = self.xz[i] * (1 - f) + self.xz[i + 1] * f
        return float(x), float(z), float(self.yaw[i])


def make_path(kind: str, distance: float, seed: int, step: float = 0.05) -> Path2D:
    """``straight`` (+z), ``loop`` (a circle back to the spawn, turning right) or ``turns``
    (straight legs of 4-10 m with seeded turns of 20-90 degrees either way)."""
    n = max(2, int(math.ceil(distance / step)) + 1)
    s = np.arange(n) * step
    if kind == "straight":
        yaw = np.zeros(n)
    elif kind == "loop":
        radius = max(distance / (2 * math.pi), 5.0)
        yaw = s / radius
    elif kind == "turns":
        rng = np.random.default_rng(seed + 1000)
        yaw = np.empty(n)
        heading, next_turn = 0.0, rng.uniform(4.0, 10.0)
        for i, si in enumerate(s):
            if si >= next_turn:
                heading += rng.choice([-1.0, 1.0]) * math.radians(rng.uniform(20.0, 90.0))
                next_turn += rng.uniform(4.0, 10.0)
            yaw[i] = heading
    else:
        raise ValueError(f"--paths: unknown path {kind!r} (straight, loop, turns)")
    d = np.stack([np.sin(yaw), np.cos(yaw)], axis=1) * step
    xz = np.concatenate([np.zeros((1, 2)), np.cumsum(d[:-1], axis=0)])
    return Path2D(xz, yaw, step)


def eye_pose(x: float, z: float, yaw: float, pitch: float, seed: int) -> Pose:
    """A pose at eye height over the generator's ground at ``(x, z)``."""
    y = float(ground_height_y(x, z, seed)) - EYE_HEIGHT
    return Pose(np.array([x, y, z], np.float32), yaw, pitch)


def walk_velocity(path: Path2D, s: float, speed: float, seed: int, ds: float = 0.5) -> np.ndarray:
    """``[3]`` m/s: the velocity of an eye walking ``path`` at ``speed`` after ``s`` metres,
    vertical part included (the eye follows the ground), as the server derives a player's
    velocity from its moves; planning's view ahead rises with an uphill walk."""
    x0, z0, _ = path.at(s)
    x1, z1, yaw = path.at(s + ds)
    if math.hypot(x1 - x0, z1 - z0) < 1e-6:  # the end of the path: level, along the heading
        return np.array([math.sin(yaw), 0.0, math.cos(yaw)], np.float32) * speed
    d = eye_pose(x1, z1, 0.0, 0.0, seed).position - eye_pose(x0, z0, 0.0, 0.0, seed).position
    horizontal = math.hypot(float(d[0]), float(d[2]))
    return (d / horizontal * speed).astype(np.float32)


# --------------------------------------------------------------------------- truth
class Truth:
    """The generator's pictures of any camera (its own instance: no shared state with the world)."""

    def __init__(self, caption: str, seed: int) -> None:
        self.generator = ProceduralGenerator()
        self.caption, self.seed = caption, seed

    def render(self, cameras: Cameras, shade_from: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(rgb [N,H,W,3] uint8, depth [N,H,W] float32)``; ``shade_from`` ``[N, 3]`` evaluates the
        view-dependent terms from those points (see :class:`ProceduralGenerator`)."""
        options = {} if shade_from is None else {"shade_from": shade_from}
        request = GenerationRequest(cameras, self.caption, (), self.seed)
        result = self.generator.generate(request, lambda f, m: None, CancelToken(), **options)
        return result.rgb, result.depth


def holes(world_alpha: np.ndarray, truth_depth: np.ndarray, within: float = SKY_DEPTH, far_alpha: np.ndarray | None = None,
          see_through_from: float | None = SEE_THROUGH_FROM) -> float:
    """Fraction of pixels where the world shows nothing (alpha < 0.5) but the generator a
    surface (nearer than ``within`` metres along the view axis). With ``far_alpha`` (the
    far field's opacity there) the world's alpha is the two as the player is shown them
    (:func:`runtime.world.render.far_pass.shown_alpha`, the renderer's ``see_through_from``):
    distant terrain the far field shows is no hole."""
    surface = np.isfinite(truth_depth) & (truth_depth < min(within, SKY_DEPTH))
    shown = world_alpha if far_alpha is None else shown_alpha(world_alpha, far_alpha, see_through_from)
    return float(((shown < 0.5) & surface).mean())


def reduce_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` alpha averaged over blocks down to ``size`` (W, H) (H, W multiples of it)."""
    w, h = size
    H, W = alpha.shape
    return alpha.reshape(h, H // h, w, W // w).mean(axis=(1, 3))


# --------------------------------------------------------------------------- job timeline
class JobTimeline:
    """When each generation job of a walk was planned, started, generated, landed and first
    drawn (seconds since the walk started), from the world's events and the bench's renders,
    on ``clock`` (the world's: simulated with ``--paced`` and ``--fast-forward``)."""

    def __init__(self, world: World, clock=time.monotonic) -> None:
        self.world = world
        self.clock = clock
        self.start = clock()
        self.jobs: dict[int, dict] = {}
        self._draws: list[tuple[int, float]] = []  # (scene version drawn, when)
        world.subscribe(self._on_event)

    def _on_event(self, event) -> None:
        from runtime.world.events import ChunkAdded, ChunkRequested, JobFailed, JobProgress

        now = self.clock()
        if isinstance(event, ChunkRequested):
            job = event.job
            c = job.cameras.centers[0]
            f = job.cameras.forwards[0]
            self.jobs[job.id] = {
                "id": job.id, "planned": job.created_at, "x": float(c[0]), "z": float(c[2]),
                "yaw_deg": round(math.degrees(math.atan2(f[0], f[2]))), "refines": job.refines,
                "looks_around": job.looks_around,
                "size": f"{round(job.cameras.width * job.scale)}x{round(job.cameras.height * job.scale)}",
            }
            return
        row = self.jobs.get(event.job_id)
        if row is None:
            return
        if isinstance(event, JobProgress):
            row.setdefault("started", now)
            if event.fraction >= 1.0:
                row["generated"] = now
        elif isinstance(event, ChunkAdded):
            row["landed"] = now
            row["landed_version"] = self.world.scene.version
            row["gaussians"] = sum(len(c.gaussians) for c in event.chunks)
        elif isinstance(event, JobFailed):
            row["failed"] = now
            row["error"] = event.error

    def rendered(self, version: int, when: float) -> None:
        """The bench drew scene ``version`` at ``when`` (monotonic seconds)."""
        self._draws.append((version, when))

    def rows(self) -> list[dict]:
        """One row per job, times relative to the walk's start (None: never happened)."""
        out = []
        for row in sorted(self.jobs.values(), key=lambda r: r["id"]):
            r = dict(row)
            if "landed_version" in r:
                drawn = [w for v, w in self._draws if v >= r["landed_version"] and w >= r["landed"]]
                r["drawn"] = min(drawn) if drawn else None
            for k in ("planned", "started", "generated", "landed", "drawn", "failed"):
                if r.get(k) is not None:
                    r[k] = round(r[k] - self.start, 2)
            out.append(r)
        return out


# --------------------------------------------------------------------------- one walk
@dataclass
class WalkResult:
    biome: str
    seed: int
    path: str
    speed: float
    row: dict = field(default_factory=dict)
    views: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    jobs: list = field(default_factory=list)


def run_walk(args, biome: str, seed: int, path_kind: str, speed: float, log=print) -> WalkResult:
    out = WalkResult(biome, seed, path_kind, speed)
    caption = CAPTIONS.get(biome, biome)
    W, H = args.width, args.height
    config = WorldConfig("fidelity", seed=seed, caption=caption, **args.config_overrides)
    from runtime.sessions import generator_options

    generator = ProceduralGenerator(**generator_options("procedural"))
    clock = time.monotonic
    if args.paced:  # scheduling on a simulated clock, generation timed by a model (bench/paced.py)
        clock = paced.SimClock()
        generator = paced.PacedGenerator(generator, clock, args.paced)
    elif args.fast_forward:
        # Planning reads the clock (job times -> lookahead, stale jobs, retries): on the wall
        # clock a loaded CPU changed which jobs a walk planned. Here generation takes no time.
        clock = paced.SimClock()
    optimiser = ChunkOptimiser.for_cuda(args.optimise_chunks) if args.optimise_chunks else None
    # Fast-forwarded or paced, the walk waits for generation: its workers need not yield the
    # CPU (to a frame clock there is none of), which on a busy machine starved them.
    world = World(config, generator=generator, renderer=_renderer(args), chunk_optimiser=optimiser, clock=clock,
                  yield_cpu=not (args.fast_forward or args.paced))
    path = make_path(path_kind, args.distance, seed)
    timeline = JobTimeline(world, clock)
    try:
        # 1. bootstrap at the spawn
        t0 = time.monotonic()
        spawn = eye_pose(0.0, 0.0, 0.0, 0.0, seed)
        world.update([PlayerState("p", spawn, np.zeros(3, np.float32), VIEW_FOV)])
        if not world.wait_idle(args.bootstrap_timeout_s) and (args.fast_forward or args.paced):
            raise TimeoutError(_UNFINISHED.format(args.bootstrap_timeout_s))
        bootstrap_s = time.monotonic() - t0

        # 2. the walk: in real time, or fast-forwarded (generation waited for at every update)
        jobs_before = world.stats["jobs_done"]
        render_ms: list[float] = []
        samples = []  # (time s, metres walked, pose, alpha at SAMPLE_SIZE)
        start = time.monotonic()
        timeline.start = clock() if args.fast_forward or args.paced else start
        next_update = next_frame = next_sample = start
        walk_s = path.length / speed
        if args.fast_forward or args.paced:
            samples, walk_s = _fast_forward_walk(args, world, clock, path, speed, seed)
        while not (args.fast_forward or args.paced):
            now = time.monotonic()
            t = now - start
            if t > walk_s + args.settle_s:
                break
            s = min(speed * t, path.length)
            moving = t <= walk_s
            x, z, yaw = path.at(s)
            pose = eye_pose(x, z, yaw, 0.0, seed)
            velocity = walk_velocity(path, s, speed, seed) if moving else np.zeros(3, np.float32)
            if now >= next_update:
                world.update([PlayerState("p", pose, velocity, VIEW_FOV)])
                next_update += 1.0 / args.update_hz
            sample = now >= next_sample
            if args.stream_fps > 0 and now >= next_frame:
                r0 = time.perf_counter()
                version = world.scene.version
                frame = world.render(pose.camera(W, H, VIEW_FOV))
                render_ms.append((time.perf_counter() - r0) * 1e3)
                timeline.rendered(version, now)
                next_frame += 1.0 / args.stream_fps
                if sample:
                    samples.append((t, s, pose, reduce_alpha(frame.alpha[0], SAMPLE_SIZE), _state(args, world, pose)))
            elif sample:
                frame = world.render(pose.camera(*SAMPLE_SIZE, VIEW_FOV))
                samples.append((t, s, pose, frame.alpha[0], _state(args, world, pose)))
            if sample:
                next_sample += 1.0 / args.sample_hz
            pending = [v for v in (next_update, next_sample, next_frame if args.stream_fps > 0 else math.inf)]
            time.sleep(max(0.0, min(pending) - time.monotonic()))
            # A loaded machine falls behind: skip missed ticks rather than bunch them up.
            now = time.monotonic()
            next_update, next_sample = max(next_update, now - 0.5 / args.update_hz), max(next_sample, now)
            next_frame = max(next_frame, now - 0.5 / max(args.stream_fps, 1))
        walk_jobs = world.stats["jobs_done"] - jobs_before
        pending_at_end = len(world.pending_jobs())

        # walk holes: the generator at the sampled poses, at the sample size
        truth = Truth(caption, seed)
        see_through = world.renderer.far_see_through_from  # how it lays the far field behind the scene
        if samples:
            cams = Cameras(
                np.stack([x[2].w2c for x in samples]),
                np.broadcast_to(intrinsics_from_fov(*SAMPLE_SIZE, VIEW_FOV), (len(samples), 3, 3)),
                *SAMPLE_SIZE,
            )
            _, tdepth = truth.render(cams)
            for k, (t, s, pose, alpha, (drawn, frames)) in enumerate(samples):
                far = hole_causes.far_alpha(world.renderer, drawn, pose.camera(*SAMPLE_SIZE, VIEW_FOV))
                out.samples.append({
                    "t": round(t, 2), "s": round(s, 2), "moving": t <= walk_s, "holes": holes(alpha, tdepth[k], far_alpha=far, see_through_from=see_through),
                    "holes_near": holes(alpha, tdepth[k], NEAR_M, far_alpha=far, see_through_from=see_through), "holes_scene": holes(alpha, tdepth[k]),
                })
                if frames is not None:
                    out.samples[-1]["causes"] = hole_causes.classify(
                        alpha, far, tdepth[k], pose.camera(*SAMPLE_SIZE, VIEW_FOV), world.memory.frames()[:frames], SKY_DEPTH, NEAR_M,
                        see_through)
        walk_s_total = walk_s
        for job in timeline.rows():
            t_plan = job["planned"]
            px, pz, _ = path.at(min(speed * max(t_plan, 0.0), path.length)) if t_plan <= walk_s_total else path.at(path.length)
            job["ahead_m"] = round(math.hypot(job["x"] - px, job["z"] - pz), 1)
            out.jobs.append(job)
        walk_holes = [x["holes"] for x in out.samples if x["moving"]] or [0.0]
        episodes = hole_episodes(out.samples, args.hole_threshold)
        near_episodes = hole_episodes(out.samples, args.hole_threshold, key="holes_near")

        # 3. novel views inside the explored strip
        rng = np.random.default_rng(seed * 7919 + int(speed * 100))
        key_centers = _keyframe_centers(world)
        views = []
        world_rgb, truth_rgb = [], []
        attempts = 0
        while len(views) < args.novel and attempts < args.novel * 6:
            attempts += 1
            novel = draw_novel_view(truth, path, rng, args.offset, args.pitch_deg, seed, W, H)
            if novel is None:
                continue
            pose, s, heading, cam, t_rgb, t_depth = novel
            x, z = float(pose.position[0]), float(pose.position[2])
            px, pz, _ = path.at(s)
            w_out = world.render(cam)
            nearest = key_centers[np.argmin(np.linalg.norm(key_centers - pose.position, axis=1))] if len(key_centers) else pose.position
            c_rgb, _ = truth.render(cam, shade_from=nearest[None].astype(np.float64))
            far = hole_causes.far_alpha(world.renderer, _drawn(world, cam), cam)
            view = {
                "s": round(s, 2),
                "offset_m": round((x - px) * math.cos(heading) - (z - pz) * math.sin(heading), 2),  # + to the right
                "yaw_from_path_deg": round(math.degrees((pose.yaw - heading + math.pi) % (2 * math.pi) - math.pi)),
                "pitch_deg": round(math.degrees(pose.pitch), 1),
                "distance": round(math.hypot(x, z), 2),
                "psnr": _finite(psnr(w_out.rgb[0], t_rgb[0])),
                "ssim": ssim(w_out.rgb[0], t_rgb[0]),
                "sharpness": sharpness(w_out.rgb[0]) / max(sharpness(t_rgb[0]), 1e-6),
                "holes": holes(w_out.alpha[0], t_depth[0], far_alpha=far, see_through_from=see_through),
                "ceiling": _finite(psnr(c_rgb[0], t_rgb[0])),
                "far_gain": _far_gain(world, cam, w_out.rgb[0], t_rgb[0]),
            }
            if args.error_budget:
                shown = shown_alpha(w_out.alpha[0], far, see_through)
                sources = _alpha_by_source(world, cam, timeline)
                view["budget"] = error_budget.view_budget(w_out.rgb[0], t_rgb[0], t_depth[0], shown, cam, world.memory.frames(), seed,
                                                          SKY_DEPTH, sources)
            views.append(view)
            world_rgb.append(w_out.rgb[0])
            truth_rgb.append(t_rgb[0])
        if args.encoder and views:
            for view, value in zip(views, encoded_psnr(world_rgb, truth_rgb)):
                view["psnr_encoded"] = value
        out.views = views

        p = np.array([v["psnr"] for v in views]) if views else np.zeros(1)
        enc = np.array([v.get("psnr_encoded", np.nan) for v in views]) if views else np.full(1, np.nan)
        out.row = {
            "biome": biome,
            "seed": seed,
            "path": path_kind,
            "speed": speed,
            "bootstrap_s": round(bootstrap_s, 1),
            "walk_jobs": walk_jobs,
            "pending_at_end": pending_at_end,
            "render_ms": round(float(np.median(render_ms)), 1) if render_ms else None,
            "views": len(views),
            "psnr_med": float(np.median(p)),
            "psnr_p5": float(np.percentile(p, 5)),
            "ssim_med": float(np.median([v["ssim"] for v in views])) if views else None,
            "sharp_med": float(np.median([v["sharpness"] for v in views])) if views else None,
            "holes_novel": float(np.mean([v["holes"] for v in views])) if views else None,
            "holes_walk_mean": float(np.mean(walk_holes)),
            "holes_walk_max": float(np.max(walk_holes)),
            "holes_scene_mean": float(np.mean([x["holes_scene"] for x in out.samples if x["moving"]] or [0.0])),
            "hole_p50_s": round(float(np.median(episodes)), 2) if episodes else 0.0,
            "hole_p95_s": round(float(np.percentile(episodes, 95)), 2) if episodes else 0.0,
            "hole_longest_s": round(max(episodes), 2) if episodes else 0.0,
            "hole_time": round(sum(episodes) / max(out.samples[-1]["t"], 1e-6), 3) if out.samples else 0.0,
            "holes_near_mean": float(np.mean([x["holes_near"] for x in out.samples if x["moving"]] or [0.0])),
            "near_hole_p95_s": round(float(np.percentile(near_episodes, 95)), 2) if near_episodes else 0.0,
            "near_hole_longest_s": round(max(near_episodes), 2) if near_episodes else 0.0,
            "psnr_enc_med": float(np.nanmedian(enc)) if np.isfinite(enc).any() else None,
            "ceiling_med": float(np.median([v["ceiling"] for v in views])) if views else None,
        }
        fitted = world.stats["chunks_fitted"]  # colour fitting of every chunk (spawn included): CPU ms of the fitting thread
        out.row.update(chunks_fitted=fitted, fit_cpu_ms_per_chunk=round(world.stats["fit_cpu_ms"] / max(fitted, 1), 1))
        if optimiser is not None:  # what chunk optimisation did during this walk (all chunks, spawn included)
            kept, rejected = world.stats["chunks_optimised"], world.stats["chunks_optimise_rejected"]
            out.row.update(chunks_optimised=kept, chunks_optimise_rejected=rejected,
                           optimise_ms_per_chunk=round(world.stats["optimise_ms"] / max(kept + rejected, 1), 1),
                           optimise_gain_db_per_kept=round(world.stats["optimise_gain_db"] / max(kept, 1), 2))
        log(f"  {biome} seed {seed} {path_kind} {speed} m/s: PSNR {out.row['psnr_med']:.1f} (p5 {out.row['psnr_p5']:.1f}), "
            f"sharp {out.row['sharp_med'] or 0:.2f}, walk holes {out.row['holes_walk_mean']:.3f}, {walk_jobs} jobs")
    finally:
        world.close()
    return out


def _renderer(args):
    """The renderer ``--renderer`` names, with ``--lod-px`` where given (CPU renderer only)."""
    options = {} if args.lod_px is None else {"lod_px": args.lod_px}
    return create_renderer(args.renderer, **options)


_UNFINISHED = "fast-forward: jobs still running after {} s (raise --bootstrap-timeout-s): the walk would depend on the load"


def _fast_forward_walk(args, world: World, clock: paced.SimClock, path: Path2D, speed: float, seed: int) -> tuple[list, float]:
    """The walk with generation fast-forwarded: the pose advances ``speed / update_hz`` metres
    per update and every update waits for the jobs it caused (as if generation were free),
    so the result does not depend on how busy the CPU is. ``clock`` (the world's) is
    simulated: update ``k`` happens ``k / update_hz`` s after the call and a job takes no time on it, so
    the planner's lookahead is ``config.lookahead_s``. With ``--paced`` generation takes
    its modelled time on the simulated clock instead (:mod:`bench.paced`), and the player
    stands ``settle_s`` after the walk. Returns the hole samples (one per update, at
    :data:`SAMPLE_SIZE`) and the walk's simulated seconds."""
    samples = []
    step_s = 1.0 / args.update_hz
    n = int(math.ceil(path.length / (speed * step_s)))
    settle = int(round(args.settle_s / step_s)) if args.paced else 0
    generator = world.generator if args.paced else None
    if generator is not None:
        generator.free = False
    t0 = clock()
    for k in range(n + settle + 1):
        s = min(k * speed * step_s, path.length)
        x, z, yaw = path.at(s)
        pose = eye_pose(x, z, yaw, 0.0, seed)
        velocity = walk_velocity(path, s, speed, seed) if k <= n else np.zeros(3, np.float32)
        clock.advance(t0 + k * step_s)
        if generator is not None:
            paced.settle(world, generator)  # what ends by now lands, the next job starts
        world.update([PlayerState("p", pose, velocity, VIEW_FOV)])
        if generator is not None:
            paced.settle(world, generator)
        elif not world.wait_idle(args.bootstrap_timeout_s):
            raise TimeoutError(_UNFINISHED.format(args.bootstrap_timeout_s))
        frame = world.render(pose.camera(*SAMPLE_SIZE, VIEW_FOV))
        samples.append((k * step_s, s, pose, frame.alpha[0], _state(args, world, pose)))
    return samples, n * step_s


def _drawn(world: World, camera: Cameras):
    """The snapshot ``world.render`` draws at ``camera`` (one camera): a frozen seen view's, or the scene's."""
    snapshot = world.scene.snapshot()
    groups = world._display.groups(snapshot, camera)
    return snapshot if groups is None else groups[0][1]


def _state(args, world: World, pose: Pose) -> tuple:
    """What a hole sample needs of the world after the walk: ``(snapshot drawn at the sample
    camera, keyframes landed so far or None without --causes)``. Snapshots are immutable
    and share their chunks, so keeping one per sample is cheap."""
    return _drawn(world, pose.camera(*SAMPLE_SIZE, VIEW_FOV)), (len(world.memory) if args.causes else None)


def draw_novel_view(truth: Truth, path: Path2D, rng: np.random.Generator, offset: float, pitch_deg: float, seed: int,
                    width: int, height: int):
    """One novel camera inside the explored strip: a point on ``path``, up to +-``offset`` m to
    the side, any yaw, pitch within +-``pitch_deg``, at eye height over the generator's ground.

    Returns ``(pose, s metres along the path, path heading, camera, truth rgb [1,H,W,3], truth
    depth [1,H,W])``, or None when the camera starts inside an object (draw again).
    """
    s = rng.uniform(0.0, path.length)
    x, z, heading = path.at(s)
    off = rng.uniform(-offset, offset)
    x, z = x + off * math.cos(heading), z - off * math.sin(heading)
    pose = eye_pose(x, z, rng.uniform(-math.pi, math.pi), math.radians(rng.uniform(-pitch_deg, pitch_deg)), seed)
    cam = pose.camera(width, height, VIEW_FOV)
    t_rgb, t_depth = truth.render(cam)
    if (t_depth[0] < 0.5).mean() > 0.02:
        return None
    return pose, s, heading, cam, t_rgb, t_depth


def _far_gain(world: World, cam: Cameras, world_rgb: np.ndarray, truth_rgb: np.ndarray) -> float:
    """PSNR (dB) the far field adds to this picture: the world's, minus the same snapshot's
    drawn without its far chunks (0 when the world has none)."""
    snapshot = _drawn(world, cam)  # a frozen seen view's, where the camera stands in one
    if not snapshot.far:
        return 0.0
    bare = world.renderer.render(dataclasses.replace(snapshot, far=()), cam, world.sky).rgb[0]
    return _finite(psnr(world_rgb, truth_rgb)) - _finite(psnr(bare, truth_rgb))


def _alpha_by_source(world: World, cam: Cameras, timeline: JobTimeline) -> dict[str, np.ndarray]:
    """``{keyframe size: [H, W] opacity}``: the drawn snapshot's chunks grouped by the size their
    job's keyframes were traced at (``320x180`` fills, ``640x360`` refining keyframes, coarse
    fills smaller), each group drawn alone at ``cam`` (one camera)."""
    snapshot = _drawn(world, cam)
    groups: dict[str, list] = {}
    for chunk in snapshot.visible_chunks(cam):
        job = timeline.jobs.get(chunk.source.job_id)
        groups.setdefault(job["size"] if job else "other", []).append(chunk)
    return {name: world.renderer.render_alpha(SceneSnapshot(0, tuple(chunks)), cam)[0] for name, chunks in sorted(groups.items())}


def _keyframe_centers(world: World) -> np.ndarray:
    """``[F, 3]`` camera centres of the world's keyframes."""
    centers = [f.center for f in world.memory.frames()]
    return np.asarray(centers, np.float32).reshape(-1, 3)


def _finite(x: float) -> float:
    return 99.0 if math.isinf(x) else x


def hole_episodes(samples: list[dict], threshold: float, key: str = "holes") -> list[float]:
    """Seconds each visible hole lasted: runs of samples whose hole fraction (``key``) is
    above ``threshold``, from the first such sample to the first sample without (or to the
    last sample, for a hole still open when the walk ended)."""
    out, opened = [], None
    for x in samples:
        if x[key] > threshold and opened is None:
            opened = x["t"]
        elif x[key] <= threshold and opened is not None:
            out.append(x["t"] - opened)
            opened = None
    if opened is not None:
        out.append(max(samples[-1]["t"] - opened, 0.0))
    return out


def encoded_psnr(world_rgb: list[np.ndarray], truth_rgb: list[np.ndarray]) -> list[float]:
    """PSNR against the truth of the world's pictures after the server's encoder (one H.264
    stream of the pictures in order, CRF 18 as the server's default) and a decoder."""
    import av

    from runtime.stream.encoder import EncoderSettings, VideoEncoder

    H, W = world_rgb[0].shape[:2]
    encoder = VideoEncoder(EncoderSettings(codec="h264", width=W, height=H, fps=30, hardware=False))
    decoder = av.CodecContext.create("h264", "r")
    decoded = []
    for k, rgb in enumerate(world_rgb):
        for packet in encoder.encode(rgb, k * 3000):
            decoded += [f.to_ndarray(format="rgb24") for f in decoder.decode(packet)]
    for f in decoder.decode(None):
        decoded.append(f.to_ndarray(format="rgb24"))
    return [_finite(psnr(d, t)) for d, t in zip(decoded, truth_rgb)]


# --------------------------------------------------------------------------- representation limit
def oracle(args, log=print) -> list[dict]:
    """The best one keyframe can do: reconstruct from a keyframe taken at the very camera that is
    then rendered (no walk, no planning, no distance), per keyframe setting ``WxH@FOV/stride``,
    with its colours fitted as a world fits them: ``--oracle-solve`` least-squares iterations
    (:mod:`runtime.world.keyframes.colour_solve`), or with ``--oracle-solve 0`` ``--oracle-fit``
    Jacobi steps (:mod:`runtime.world.keyframes.fit`). The same chunk is also drawn from a
    novel camera half a metre to the side and back, turned 0.2 rad (``psnr_novel``): a fit
    that only reproduces its keyframe gains there less. Fitting runs on one thread and
    ``fit_ms`` is its CPU time (load-independent).

    Separates what the splat representation loses (resolution, splat blur) from what planning
    and coverage lose on a walk.
    """
    import numba

    from runtime.world.keyframes.colour_solve import FitView, solve_colours
    from runtime.world.keyframes.fit import fit_colors
    from runtime.world.keyframes.reconstruct import reconstruct
    from runtime.world.scene import Chunk, ChunkSource, SceneSnapshot

    seed = int(args.seeds.split(",")[0])
    caption = CAPTIONS.get(args.biomes.split(",")[0], args.biomes.split(",")[0])
    truth = Truth(caption, seed)
    sky = truth.generator.sky(caption, seed)
    renderer = _renderer(args)
    rng = np.random.default_rng(seed)
    settings = []
    for item in args.oracle.split(","):
        size, _, rest = item.partition("@")
        fov, _, stride = rest.partition("/")
        w, h = (int(v) for v in size.split("x"))
        settings.append((item, w, h, math.radians(float(fov)), int(stride or 2)))
    rows = {name: [] for name, *_ in settings}
    for _ in range(args.novel):
        x, z, yaw = rng.uniform(-2, 2), rng.uniform(0, args.distance), rng.uniform(-math.pi, math.pi)
        pose = eye_pose(x, z, yaw, 0.0, seed)
        cam = pose.camera(args.width, args.height, VIEW_FOV)
        t_rgb, _ = truth.render(cam)
        side = eye_pose(x + 0.5 * math.cos(yaw) - 0.5 * math.sin(yaw), z - 0.5 * math.sin(yaw) - 0.5 * math.cos(yaw), yaw + 0.2, 0.0, seed)
        novel = side.camera(args.width, args.height, VIEW_FOV)
        n_rgb, _ = truth.render(novel)
        for name, w, h, fov, stride in settings:
            key = pose.camera(w, h, fov)
            k_rgb, k_depth = truth.render(key)
            t0 = time.perf_counter()
            gaussians = reconstruct(k_rgb, k_depth, key, None, stride=stride)
            ms = (time.perf_counter() - t0) * 1e3

            def draw(g, key=key):
                out = renderer.render(SceneSnapshot(0, (Chunk.build(0, g, ChunkSource()),)), key, sky)
                return out.rgb, out.depth

            background = renderer.render(SceneSnapshot(0, ()), key, sky).rgb[0].astype(np.float32) / 255
            threads = numba.get_num_threads()
            numba.set_num_threads(1)
            t0 = time.thread_time()
            if args.oracle_solve > 0:
                view = FitView(key, k_rgb[0], k_depth[0], background)
                gaussians, _ = solve_colours(gaussians, SceneSnapshot(0, ()), [view], iterations=args.oracle_solve)
            else:
                gaussians = fit_colors(gaussians, k_rgb, k_depth, key, draw, stride=stride, iterations=args.oracle_fit)
            fit_ms = (time.thread_time() - t0) * 1e3
            numba.set_num_threads(threads)
            scene = SceneSnapshot(0, (Chunk.build(0, gaussians, ChunkSource()),))
            out, side_out = renderer.render(scene, cam, sky), renderer.render(scene, novel, sky)
            rows[name].append((psnr(out.rgb[0], t_rgb[0]), sharpness(out.rgb[0]) / sharpness(t_rgb[0]), len(gaussians), ms, fit_ms,
                               psnr(side_out.rgb[0], n_rgb[0])))
    table = []
    for name, values in rows.items():
        v = np.array(values)
        table.append({"keyframe": name, "psnr_med": float(np.median(v[:, 0])), "psnr_min": float(v[:, 0].min()),
                      "sharp_med": float(np.median(v[:, 1])), "psnr_novel_med": float(np.median(v[:, 5])),
                      "gaussians": int(v[:, 2].mean()), "reconstruct_ms": float(v[:, 3].mean()), "fit_ms": float(v[1:, 4].mean() if len(v) > 1 else v[:, 4].mean())})
    return table


# --------------------------------------------------------------------------- report
def distance_table(results: list[WalkResult]) -> list[dict]:
    """Per speed and distance-from-spawn bin: median PSNR, sharpness and view count."""
    rows = []
    for speed in sorted({r.speed for r in results}):
        views = [v for r in results if r.speed == speed for v in r.views]
        for lo, hi in zip(DISTANCE_BINS[:-1], DISTANCE_BINS[1:]):
            sel = [v for v in views if lo <= v["distance"] < hi]
            if sel:
                rows.append({
                    "speed": speed,
                    "bin": f"{lo:.0f}-{hi:.0f} m" if hi < 1e8 else f">= {lo:.0f} m",
                    "n": len(sel),
                    "psnr": float(np.median([v["psnr"] for v in sel])),
                    "sharp": float(np.median([v["sharpness"] for v in sel])),
                    "ceiling": float(np.median([v["ceiling"] for v in sel])),
                })
    return rows


def summary(results: list[WalkResult]) -> dict:
    """All novel views of all walks together (the issue's targets are over these)."""
    views = [v for r in results for v in r.views]
    if not views:
        return {}
    p = np.array([v["psnr"] for v in views])
    enc = np.array([v.get("psnr_encoded", np.nan) for v in views])
    return {
        "views": len(views),
        "psnr_med": float(np.median(p)),
        "psnr_p5": float(np.percentile(p, 5)),
        "ssim_med": float(np.median([v["ssim"] for v in views])),
        "sharp_med": float(np.median([v["sharpness"] for v in views])),
        "psnr_enc_med": float(np.nanmedian(enc)) if np.isfinite(enc).any() else None,
        "ceiling_med": float(np.median([v["ceiling"] for v in views])),
        "ceiling_p5": float(np.percentile([v["ceiling"] for v in views], 5)),
        "far_gain_mean": float(np.mean([v.get("far_gain", 0.0) for v in views])),
    }


WALK_COLUMNS = [
    ("biome", "biome"), ("seed", "seed"), ("path", "path"), ("speed", "m/s"), ("walk_jobs", "jobs"),
    ("pending_at_end", "pending"), ("render_ms", "render ms"), ("views", "views"), ("psnr_med", "PSNR med"),
    ("psnr_p5", "PSNR p5"), ("ssim_med", "SSIM"), ("sharp_med", "sharp"), ("psnr_enc_med", "enc PSNR"),
    ("ceiling_med", "ceiling"), ("holes_novel", "holes novel"), ("holes_walk_mean", "holes walk"),
    ("holes_walk_max", "holes max"), ("holes_scene_mean", "scene holes"), ("hole_time", "time holed"), ("hole_p50_s", "hole p50 s"),
    ("hole_p95_s", "hole p95 s"), ("hole_longest_s", "hole max s"), ("holes_near_mean", f"holes < {NEAR_M:.0f} m"),
    ("near_hole_p95_s", "near hole p95 s"), ("near_hole_longest_s", "near hole max s"),
    ("chunks_fitted", "fitted"), ("fit_cpu_ms_per_chunk", "fit CPU ms"),
]

JOB_COLUMNS = [
    ("id", "job"), ("refines", "detail"), ("size", "keyframe"), ("ahead_m", "ahead m"), ("yaw_deg", "yaw"),
    ("planned", "planned"), ("started", "started"), ("generated", "generated"), ("landed", "landed"),
    ("drawn", "drawn"), ("failed", "ended"), ("gaussians", "Gaussians"),
]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--biomes", default="forest", help=f"comma-separated, of {', '.join(CAPTIONS)} (or any caption)")
    ap.add_argument("--seeds", default="7")
    ap.add_argument("--paths", default="straight", help="comma-separated: straight, loop, turns")
    ap.add_argument("--speeds", default="1.5,3,6", help="walking speeds, m/s")
    ap.add_argument("--distance", type=float, default=30.0, help="metres walked")
    ap.add_argument("--novel", type=int, default=12, help="novel views per walk")
    ap.add_argument("--offset", type=float, default=1.0, help="novel views up to this far off the path (m)")
    ap.add_argument("--pitch-deg", type=float, default=20.0)
    ap.add_argument("--resolution", default="640x360")
    ap.add_argument("--stream-fps", type=float, default=30.0, help="render the player's view this often during the walk (0: only samples)")
    ap.add_argument("--update-hz", type=float, default=5.0)
    ap.add_argument("--sample-hz", type=float, default=4.0)
    ap.add_argument("--settle-s", type=float, default=2.0, help="the player stands this long after the walk")
    ap.add_argument("--bootstrap-timeout-s", type=float, default=300.0,
                    help="the longest wait for the spawn's jobs (and, fast-forwarded, for each update's)")
    ap.add_argument("--hole-threshold", type=float, default=0.01, help="a sample shows a visible hole above this fraction")
    ap.add_argument("--renderer", default="auto")
    ap.add_argument("--no-encoder", dest="encoder", action="store_false")
    ap.add_argument("--lod-px", type=float, default=None, help="the CPU renderer's level of detail (0: off; default: "
                    "the renderer's own, see runtime/world/render/lod.py)")
    ap.add_argument("--config", action="append", default=[], help="WorldConfig override key=value (JSON value)")
    ap.add_argument("--fast-forward", action="store_true", help="generation waited for at every update (simulated time): "
                    "measures reconstruction, not how busy the CPU is")
    ap.add_argument("--paced", type=float, default=0.0, metavar="SCALE",
                    help="generation in simulated time: each job takes SCALE x its quiet-CPU-2 cost (bench/paced.py): "
                    "real-time scheduling, whatever the load (0: off)")
    ap.add_argument("--quick", action="store_true", help="one 8 m walk at 3 m/s, 4 views at 320x180 (a smoke test)")
    ap.add_argument("--oracle", default="", help="instead of walks: the one-keyframe limit per setting, e.g. 320x180@75/2,640x360@60/1")
    ap.add_argument("--oracle-solve", type=int, default=SOLVE_ITERATIONS,
                    help="--oracle: least-squares colour-fitting iterations per keyframe (0: --oracle-fit Jacobi steps instead)")
    ap.add_argument("--oracle-fit", type=int, default=FIT_ITERATIONS, help="--oracle --oracle-solve 0: Jacobi colour-fitting steps (0: none)")
    ap.add_argument("--optimise-chunks", type=int, default=0, metavar="STEPS",
                    help="fit each new chunk to its keyframes with gsplat for STEPS steps (CUDA only; 0: off)")
    ap.add_argument("--timeline", action="store_true", help="print every job's plan/start/generate/land/draw times")
    ap.add_argument("--causes", action="store_true", help="break every hole sample down by depth band, far-field "
                    "cover and cause (bench/hole_causes.py)")
    ap.add_argument("--error-budget", action="store_true", help="split every novel view's squared error by pixel class, "
                    "depth band and geometry vs colour (bench/error_budget.py)")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    if args.quick:
        args.speeds, args.distance, args.novel, args.resolution, args.stream_fps = "3", 8.0, 4, "320x180", 10.0
        args.settle_s = 1.0
    args.width, args.height = (int(v) for v in args.resolution.lower().split("x"))
    args.config_overrides = config_overrides(args.config)
    if args.optimise_chunks:
        try:
            ChunkOptimiser.for_cuda(args.optimise_chunks)
        except RuntimeError as e:  # no CUDA or no gsplat: say so in one line, before any walk
            ap.error(f"--optimise-chunks {args.optimise_chunks}: {e}")
    return args


CAUSE_COLUMNS = [
    ("t", "t s"), ("holes", "holes"), ("near", "< 15 m"), ("mid", "15-40 m"), ("far", ">= 40 m"),
    ("far_covered", "far field covers"), ("visible", "visible"), ("lower", "lower half"), ("seen", "seen"),
    ("occluded", "occluded"), ("unseen", "unseen"),
]


def _print_causes(walks: list[dict]) -> None:
    """``--causes``: each walk's hole samples broken down, and their means while moving."""
    for walk in walks:
        r = walk["row"]
        rows = [{"t": x["t"], **x["causes"]} for x in walk["samples"] if "causes" in x]
        if not rows:
            continue
        print(f"\n{r['biome']} seed {r['seed']} {r['path']} {r['speed']} m/s: hole causes per sample (fractions of the view)")
        print(format_table([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in x.items()} for x in rows if x["holes"] > 0.001],
                           CAUSE_COLUMNS))
        moving = [x["causes"] for x in walk["samples"] if "causes" in x and x["moving"]]
        mean = hole_causes.summarise(moving)
        print("mean while moving: " + ", ".join(f"{k} {v:.4f}" for k, v in mean.items()))


def config_overrides(items: list[str]) -> dict:
    """``--config key=value`` items as ``WorldConfig`` overrides (JSON values; other text as strings)."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(args, log=print) -> dict:
    results = []
    for biome in args.biomes.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for path_kind in args.paths.split(","):
                for speed in (float(s) for s in args.speeds.split(",")):
                    results.append(run_walk(args, biome, seed, path_kind, speed, log))
    return {
        "rows": [r.row for r in results],
        "distance": distance_table(results),
        "summary": summary(results),
        "walks": [{"row": r.row, "views": r.views, "samples": r.samples, "jobs": r.jobs} for r in results],
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    info = machine()
    print(describe_machine(info))
    if args.oracle:
        table = oracle(args)
        print(format_table(table, [("keyframe", "keyframe WxH@FOV/stride"), ("psnr_med", "PSNR med"), ("psnr_min", "PSNR min"),
                                   ("sharp_med", "sharp"), ("psnr_novel_med", "PSNR novel med"), ("gaussians", "Gaussians"),
                                   ("reconstruct_ms", "reconstruct ms"), ("fit_ms", "fit CPU ms")]))
        write_json(args.json_path, {"settings": {k: v for k, v in vars(args).items() if k != "config"}, "oracle": table})
        return
    report = run(args)
    if args.timeline:
        for walk in report["walks"]:
            r = walk["row"]
            print(f"\n{r['biome']} seed {r['seed']} {r['path']} {r['speed']} m/s: jobs (seconds since the walk started)")
            print(format_table(walk["jobs"], JOB_COLUMNS))
            print("hole fraction of the player's view: " + " ".join(f"{x['t']:.1f}:{x['holes']:.2f}" for x in walk["samples"]))
    if args.causes:
        _print_causes(report["walks"])
    print(format_table(report["rows"], WALK_COLUMNS))
    print()
    print(format_table(report["distance"], [("speed", "m/s"), ("bin", "from spawn"), ("n", "views"), ("psnr", "PSNR med"), ("sharp", "sharp"), ("ceiling", "ceiling")]))
    if args.error_budget:
        error_budget.print_tables([v for walk in report["walks"] for v in walk["views"]], format_table)
    s = report["summary"]
    if s:
        print(
            f"\nall views: {s['views']}, PSNR median {s['psnr_med']:.1f} dB, p5 {s['psnr_p5']:.1f} dB, SSIM {s['ssim_med']:.3f}, "
            f"sharpness {s['sharp_med']:.2f}, encoded PSNR median {s['psnr_enc_med'] or float('nan'):.1f} dB; "
            f"ceiling median {s['ceiling_med']:.1f} dB (p5 {s['ceiling_p5']:.1f}); the far field adds {s['far_gain_mean']:+.2f} dB (mean)"
        )
    settings = {k: v for k, v in vars(args).items() if k not in ("config",)}
    write_json(args.json_path, {"settings": settings, **report})


if __name__ == "__main__":
    main()
