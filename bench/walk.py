"""Walk benchmark: does a player holding W ever get stuck where the world is walkable?

The procedural generator knows its own terrain (a heightfield, water level, and one
object per grid cell), so it is the ground truth here -- and only here: the runtime
collides against the Gaussian scene alone (see docs/world.md#walking), as it must for
imported scenes and for generators that know nothing of their geometry.

Each walk (biome x seed) is a fresh world with the procedural generator. A scripted
player holds forward for ``--seconds`` of **simulated** time, stepped through
``World.move`` at the server's 30 Hz; it turns by a random 20-120 degrees every 2-6 s
and runs some of the time. Generation is fast-forwarded: every 0.2 s of simulated time
the world plans for the player and we wait until its jobs are done, so the scene the
player collides with is what a player who never outran the generator would meet.

**Stuck** (issue 16): for 2 s forward was held, the player never got :data:`PROGRESS_M`
away from where it was at the start of those 2 s, and the generator's terrain ahead is walkable
(:meth:`GeneratorTruth.walkable_ahead`: no slope over :data:`MAX_SLOPE_DEG`, no step over
``MAX_STEP``, no solid object but a bush in the body's way). A walk counts as stuck if that
happens once.

**Off the ground**: seconds the feet were more than ``MAX_STEP`` above or below the
generator's ground (walking on a canopy, sunk into the terrain). Not stuck, but not walking
on the generator's world either; the stuck case of forest seed 3 began as a climb into a
tree's canopy. Each episode (start and end time, where it began, farthest off) is kept in the
JSON and, with ``--trace``, logged.

Usage::

    .venv/bin/python -m bench.walk                              # 50 walks x 60 s (several minutes)
    .venv/bin/python -m bench.walk --walks 10 --seconds 20      # quicker
    .venv/bin/python -m bench.walk --biomes forest --seeds 7 --walks 1 --trace   # one walk, step by step
    .venv/bin/python -m bench.walk --processes 4                # the 50 walks, 4 at a time
    .venv/bin/python -m bench.walk --dump out/stuck             # + the scene around each stuck event
    .venv/bin/python -m bench.walk --only 4 --seconds 25 --trace   # replay walk 4 of the 50 (snow seed 1) alone

``--dump DIR`` saves, at each stuck event, the scene's Gaussians within :data:`DUMP_RADIUS_M`
of the player and its pose (``.npz``, see :func:`load_dump`): a walk's scene depends on its
jobs' timing, so a stuck walk may not come back when run again, and the dump is what a
regression test is built from.

``--processes N`` runs N walks at once, each in its own process (every walk is a fresh
world; nothing is shared). A walk's scene depends on how long its jobs took (the planner
looks further ahead when they are slow), so walks run side by side on a busy CPU meet the
scenes of a loaded server; the walks, their seeds and the judge are the same.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import describe_machine, format_table, machine, process_memory_bytes, write_json
from runtime.world import PlayerState, Pose, World, WorldConfig
from runtime.world.gaussians import Gaussians
from runtime.world.generators.procedural import ProceduralGenerator
from runtime.world.generators.procedural import kernels as K
from runtime.world.generators.procedural.generator import ground_height_y
from runtime.world.movement.motion import BODY_RADIUS, EYE_HEIGHT, HEAD_CLEARANCE, MAX_STEP, WALK_SPEED, MoveInput

CAPTIONS = {
    "forest": "a pine forest",
    "meadow": "a meadow with hills",
    "city": "a small town with streets and houses",
    "desert": "a desert with dunes",
    "snow": "a snowy winter valley",
    "beach": "a tropical beach",
}
MAX_SLOPE_DEG = 40.0
"""Steepest ground the truth calls walkable (the runtime's limit, issue 16)."""
STUCK_S = 2.0
"""Seconds without progress (forward held, truth walkable) that make a player stuck."""
PROGRESS_M = 0.3
"""Least distance (metres) a player must cover in :data:`STUCK_S` to count as progressing."""
AHEAD_M = 0.8
"""How far ahead (metres) the truth must be walkable for a stop to count as stuck."""
TICK_S = 1.0 / 30.0
"""Simulated seconds per move step (the server's frame clock)."""
PLAN_S = 0.2
"""Simulated seconds between two generation plans (the server plans at 5 Hz)."""
DUMP_RADIUS_M = 4.0
"""Gaussians within this many metres (over x, z) of a stuck player are dumped (``--dump``)."""
_TABLE_TILE = 48.0
"""Object tables are built per square of this many metres (cached)."""


class GeneratorTruth:
    """What the procedural generator's own world says about walking at a place.

    Ground: the heightfield or, where it lies under water, the water surface (the world
    shows the water's surface, and a player walks on it). Objects: the generator's trees,
    buildings and rocks, as signed-distance bounds; bushes are not obstacles.
    """

    def __init__(self, caption: str, seed: int) -> None:
        self.seed = seed
        self.biome = ProceduralGenerator.biome(caption)
        self._bp = self.biome.pack()
        self._seed32 = int(seed) % (2**31)
        self._e0 = float(K.lattice_height(0, 0, self._seed32))
        self._hg = np.zeros((0, 0))
        self._hm = np.zeros(3)
        self._tables: dict[tuple[int, int, bool], tuple[np.ndarray, np.ndarray]] = {}

    def ground_y(self, x: float, z: float) -> float:
        """World y (+y down, metres) of the walkable surface at ``(x, z)``."""
        terrain = float(ground_height_y(x, z, self.seed))
        water = EYE_HEIGHT - self.biome.water_level
        return min(terrain, water)

    def _objects(self, x: float, z: float, rocks: bool) -> list[np.ndarray]:
        """Object records (``OBJ_FIELDS`` each) of the 3x3 cells around ``(x, z)``, bushes left out."""
        cell = self.biome.rock_cell if rocks else self.biome.tree_cell
        tx, tz = math.floor(x / _TABLE_TILE), math.floor(z / _TABLE_TILE)
        key = (tx, tz, rocks)
        if key not in self._tables:
            ix0 = math.floor(tx * _TABLE_TILE / cell) - 1
            iz0 = math.floor(tz * _TABLE_TILE / cell) - 1
            n = math.ceil(_TABLE_TILE / cell) + 3
            table = np.empty((n, n, K.OBJ_FIELDS), np.float64)
            meta = np.empty(4, np.float64)
            K.build_object_table(ix0, iz0, n, n, float(cell), self._seed32, self._e0, self._hg, self._hm, self._bp, rocks, table, meta)
            self._tables[key] = (table, meta)
        table, meta = self._tables[key]
        ci, cj = math.floor(x / cell) - int(meta[K.M_IX0]), math.floor(z / cell) - int(meta[K.M_IZ0])
        found = []
        for i in range(max(ci - 1, 0), min(ci + 2, table.shape[0])):
            for j in range(max(cj - 1, 0), min(cj + 2, table.shape[1])):
                rec = table[i, j]
                if rec[K.O_KIND] not in (K.KIND_NONE, K.KIND_BUSH):
                    found.append(rec)
        return found

    def bushes_near(self, x: float, z: float, radius: float) -> list[tuple[float, float, float, float]]:
        """``(x, z, crown radius, height)`` (metres) of the generator's bushes within ``radius``
        of ``(x, z)``, nearest first."""
        cell = self.biome.tree_cell
        n = math.ceil(2.0 * radius / cell) + 3
        ix0, iz0 = math.floor((x - radius) / cell) - 1, math.floor((z - radius) / cell) - 1
        table = np.empty((n, n, K.OBJ_FIELDS), np.float64)
        K.build_object_table(ix0, iz0, n, n, float(cell), self._seed32, self._e0, self._hg, self._hm, self._bp, False, table, np.empty(4))
        recs = table.reshape(-1, K.OBJ_FIELDS)
        recs = recs[recs[:, K.O_KIND] == K.KIND_BUSH]
        d = np.hypot(recs[:, K.O_X] - x, recs[:, K.O_Z] - z)
        return [
            (float(r[K.O_X]), float(r[K.O_Z]), float(r[K.O_CROWN]), float(r[K.O_HEIGHT]))
            for r, dist in sorted(zip(recs, d), key=lambda p: p[1]) if dist <= radius
        ]

    def body_blocked(self, x: float, z: float, radius: float = BODY_RADIUS) -> bool:
        """Does a solid object (not a bush) come within ``radius`` of the body standing at
        ``(x, z)``, between a step's height and the top of the head?"""
        feet = self.ground_y(x, z)
        heights = np.arange(feet - MAX_STEP, feet - EYE_HEIGHT - HEAD_CLEARANCE - 1e-6, -0.1)
        for rec in self._objects(x, z, False) + self._objects(x, z, True):
            if math.hypot(x - rec[K.O_X], z - rec[K.O_Z]) > rec[K.O_FOOT] + radius:
                continue
            for y in heights:
                if K.object_sdf(x, float(y), z, rec)[0] < radius:
                    return True
        return False

    def walkable_ahead(self, x: float, z: float, yaw: float, distance: float = AHEAD_M, step: float = 0.1) -> bool:
        """Can a body walk ``distance`` metres from ``(x, z)`` along ``yaw`` (0 faces +z)?

        Every ``step`` metres: the ground rises no steeper than :data:`MAX_SLOPE_DEG` and
        no solid object is in the body's way.
        """
        dx, dz = math.sin(yaw), math.cos(yaw)
        max_rise = math.tan(math.radians(MAX_SLOPE_DEG)) * step
        prev = self.ground_y(x, z)
        for k in range(1, int(round(distance / step)) + 1):
            px, pz = x + dx * k * step, z + dz * k * step
            g = self.ground_y(px, pz)
            if prev - g > max_rise:  # +y down: a rise makes y smaller
                return False
            if self.body_blocked(px, pz):
                return False
            prev = g
        return True


@dataclass
class WalkResult:
    biome: str
    seed: int
    walk: int
    seconds: float
    distance_m: float = 0.0
    stuck_events: list = field(default_factory=list)  # [(t, x, z, yaw)]
    blocked_s: float = 0.0  # seconds the runtime reported the move blocked
    truth_blocked_s: float = 0.0  # seconds the generator's truth said the way ahead is not walkable
    off_ground_s: float = 0.0  # seconds the feet were more than a step off the generator's ground
    max_off_ground_m: float = 0.0  # farthest the feet got from it (metres, either way)
    off_ground_episodes: list = field(default_factory=list)  # [(t start, t end, x, z, farthest m)] where it began
    jobs: int = 0
    wall_s: float = 0.0
    rss_mb: float = 0.0  # the walk's process resident after the walk (its world closed and collected, free pages returned)
    peak_rss_mb: float = 0.0  # the most that process has been resident so far (VmHWM)

    @property
    def stuck(self) -> bool:
        return bool(self.stuck_events)


def plan_and_wait(world: World, pose: Pose) -> None:
    """Plan generation for a player walking along ``pose``'s yaw, and wait until its jobs have landed."""
    velocity = np.array([math.sin(pose.yaw), 0.0, math.cos(pose.yaw)], np.float32) * WALK_SPEED
    world.update([PlayerState("walker", pose, velocity)])
    world.wait_idle(120.0)


def walk_straight(world: World, pose: Pose, seconds: float) -> list[np.ndarray]:
    """Hold forward for ``seconds`` of simulated time from ``pose``, generation fast-forwarded
    as in :func:`scripted_walk`; returns the positions ``[3]`` after each move step."""
    path = []
    for i in range(int(round(seconds / TICK_S))):
        if i % round(PLAN_S / TICK_S) == 0:
            plan_and_wait(world, pose)
        pose = world.move(pose, MoveInput(forward=1.0), TICK_S)
        path.append(pose.position.copy())
    return path


def dump_scene(world: World, pose: Pose, path: str | Path) -> None:
    """Save the Gaussians of ``world``'s scene within :data:`DUMP_RADIUS_M` of ``pose`` and
    the pose itself to ``path`` (``.npz``; read back with :func:`load_dump`)."""
    x, z = float(pose.position[0]), float(pose.position[2])
    parts = []
    for chunk in world.scene.snapshot().chunks:
        g = chunk.gaussians
        near = np.hypot(g.means[:, 0] - x, g.means[:, 2] - z) < DUMP_RADIUS_M
        if near.any():
            parts.append([a[near] for a in (g.means, g.quats, g.log_scales, g.opacity_logits, g.colors)])
    arrays = [np.concatenate(a) for a in zip(*parts)] if parts else [np.zeros((0, n), np.float32) for n in (3, 4, 3)] + [
        np.zeros(0, np.float32), np.zeros((0, 3), np.float32)]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path, means=arrays[0], quats=arrays[1], log_scales=arrays[2], opacity_logits=arrays[3], colors=arrays[4],
        pose=np.array([*pose.position, pose.yaw, pose.pitch], np.float32),
    )


def load_dump(path: str | Path) -> tuple[Gaussians, Pose]:
    """The Gaussians and the player's pose that :func:`dump_scene` saved."""
    with np.load(path) as d:
        g = Gaussians(d["means"], d["quats"], d["log_scales"], d["opacity_logits"], d["colors"])
        p = d["pose"]
    return g, Pose(p[:3].astype(np.float32), float(p[3]), float(p[4]))


def scripted_walk(
    biome: str, seed: int, walk: int, seconds: float, rng: np.random.Generator, log=None, dump_dir: str | None = None
) -> WalkResult:
    """One fast-forwarded random walk in a fresh procedural world (see the module docstring);
    with ``dump_dir``, the scene around each stuck event is saved there (:func:`dump_scene`)."""
    caption = CAPTIONS.get(biome, biome)
    result = WalkResult(biome, seed, walk, seconds)
    truth = GeneratorTruth(caption, seed)
    t0 = time.perf_counter()
    # yield_cpu=False: the walk waits for every job, and SCHED_IDLE workers get almost no CPU beside any busy process
    world = World(
        WorldConfig(f"walk-{biome}-{seed}-{walk}", seed=seed, caption=caption), generator=ProceduralGenerator(), yield_cpu=False
    )
    try:
        pose = Pose(np.zeros(3, np.float32), float(rng.uniform(-math.pi, math.pi)), 0.0)
        history: list[tuple[float, np.ndarray]] = []
        next_turn, next_plan, run_until = rng.uniform(2.0, 6.0), 0.0, -1.0
        truth_bad_at, last_event = -1e9, 0.0
        episode = None  # the off-ground episode under way: [t start, t end, x, z, farthest m]
        steps = int(round(seconds / TICK_S))
        for i in range(steps):
            t = i * TICK_S
            turn = 0.0
            if t >= next_turn:
                turn = float(rng.choice([-1.0, 1.0]) * math.radians(rng.uniform(20.0, 120.0)))
                next_turn = t + rng.uniform(2.0, 6.0)
                if rng.uniform() < 0.3:
                    run_until = t + rng.uniform(1.0, 4.0)
            if t >= next_plan:
                plan_and_wait(world, pose)
                next_plan = t + PLAN_S
            old = pose.position.copy()
            pose = world.move(pose, MoveInput(forward=1.0, yaw_delta=turn, run=t < run_until), TICK_S)
            moved = float(np.hypot(*(pose.position - old)[[0, 2]]))
            result.distance_m += moved
            history.append((t + TICK_S, pose.position.copy()))
            while history and history[0][0] < t + TICK_S - STUCK_S - 1e-6:
                history.pop(0)
            x, z = float(pose.position[0]), float(pose.position[2])
            off = abs(float(pose.position[1]) + EYE_HEIGHT - truth.ground_y(x, z))
            result.max_off_ground_m = max(result.max_off_ground_m, off)
            if off > MAX_STEP:
                result.off_ground_s += TICK_S
                if episode is None:
                    episode = [round(t, 2), round(t, 2), round(x, 2), round(z, 2), 0.0]
                episode[1], episode[4] = round(t + TICK_S, 2), round(max(episode[4], off), 2)
            if episode is not None and (off <= MAX_STEP or i == steps - 1):
                result.off_ground_episodes.append(tuple(episode))
                if log:
                    log(f"    {biome} seed {seed} walk {walk}: off the ground t={episode[0]:.1f}-{episode[1]:.1f}s from "
                        f"({episode[2]:.2f}, {episode[3]:.2f}), "
                        f"up to {episode[4]:.2f} m")
                episode = None
            if moved < 0.5 * WALK_SPEED * TICK_S:  # slowed down: would the generator's world have let it walk?
                result.blocked_s += TICK_S
                if not truth.walkable_ahead(x, z, pose.yaw):
                    truth_bad_at = t
                    result.truth_blocked_s += TICK_S
            # Progress: how far the player got from where it was 2 s ago at any moment since
            # (a U-turn within the window is progress; shuffling on the spot is not).
            first = history[0][1]
            span = max(float(np.hypot(p[0] - first[0], p[2] - first[2])) for _, p in history)
            held = t + TICK_S - max(truth_bad_at + TICK_S, last_event, 0.0)
            if span < PROGRESS_M and held >= STUCK_S - 1e-6:
                result.stuck_events.append((round(t, 2), round(x, 2), round(z, 2), round(pose.yaw, 3)))
                last_event = t + TICK_S
                if log:
                    log(f"    {biome} seed {seed} walk {walk}: stuck at t={t:.1f}s ({x:.2f}, {z:.2f}) yaw {pose.yaw:.2f}")
                if dump_dir:
                    dump_scene(world, pose, Path(dump_dir) / f"stuck-{biome}-{seed}-{walk}-t{t:.1f}.npz")
        result.jobs = int(world.stats["jobs_done"])
    finally:
        world.close()
    # A closed world is garbage only for the cyclic collector (its job runner holds its
    # bound methods), whose full collections come when enough long-lived container objects
    # pile up -- rarely in a process that walks (numpy arrays are not counted): a process
    # running walk after walk held every dead world's scene, 8 GB by its tenth walk.
    del world
    gc.collect()
    _return_freed_memory()
    result.wall_s = time.perf_counter() - t0
    result.rss_mb = process_memory_bytes("VmRSS") / 2**20
    result.peak_rss_mb = process_memory_bytes("VmHWM") / 2**20
    return result


def _return_freed_memory() -> None:
    """Hand the pages malloc keeps free back to the system (glibc's ``malloc_trim``; a no-op
    elsewhere), so the RSS after a walk is what the process still holds, not what its
    allocator kept: its arenas kept 0.4-0.5 GB of a 30 s walk's freed memory."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--biomes", default="forest,meadow,city,desert,snow", help="comma-separated (CAPTIONS keys)")
    p.add_argument("--seeds", default="1,2,3,4,5,6,7,8,9,10", help="comma-separated world seeds")
    p.add_argument("--walks", type=int, default=50, help="walks in all, spread over biomes x seeds")
    p.add_argument("--seconds", type=float, default=60.0, help="simulated seconds per walk")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--trace", action="store_true", help="log every stuck event and off-ground episode")
    p.add_argument("--only", default=None, help="comma-separated walk numbers of the run to walk (replay walk 4: --only 4)")
    p.add_argument("--processes", type=int, default=1, help="walks run at once, each in its own process")
    p.add_argument("--dump", default=None, help="save the scene around each stuck event in this folder")
    return p.parse_args(argv)


def _one_walk(biome: str, seed: int, k: int, seconds: float, trace: bool, dump_dir: str | None = None) -> WalkResult:
    """Walk ``k`` of a run (its rng seeded from the world seed and ``k``); picklable for a process pool."""
    return scripted_walk(biome, seed, k, seconds, np.random.default_rng(1000 * seed + k), print if trace else None, dump_dir)


def by_biome(rows: list[dict]) -> list[dict]:
    """Per-biome totals of :func:`run`'s walk rows."""
    out = []
    for biome in dict.fromkeys(r["biome"] for r in rows):
        mine = [r for r in rows if r["biome"] == biome]
        out.append({
            "biome": biome, "walks": len(mine), "stuck_walks": sum(r["stuck_events"] > 0 for r in mine),
            "stuck_events": sum(r["stuck_events"] for r in mine),
            "mean_distance_m": round(float(np.mean([r["distance_m"] for r in mine])), 1),
            "blocked_s": round(sum(r["blocked_s"] for r in mine), 1),
            "truth_blocked_s": round(sum(r["truth_blocked_s"] for r in mine), 1),
            "off_ground_walks": sum(r["off_ground_s"] > 0 for r in mine),
            "off_ground_s": round(sum(r["off_ground_s"] for r in mine), 1),
            "max_off_ground_m": max(r["max_off_ground_m"] for r in mine),
        })
    return out


def run(args, log=print) -> dict:
    biomes = [b.strip() for b in args.biomes.split(",") if b.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    combos = [(b, s) for s in seeds for b in biomes]
    only = {int(k) for k in args.only.split(",")} if args.only else None
    walks = [(*combos[k % len(combos)], k, args.seconds, args.trace, args.dump) for k in range(args.walks) if only is None or k in only]
    t0 = time.perf_counter()

    def report(r: WalkResult) -> WalkResult:
        log(f"  walk {r.walk}: {r.biome} seed {r.seed}: {r.distance_m:.0f} m, stuck {len(r.stuck_events)}, "
            f"blocked {r.blocked_s:.1f} s (truth {r.truth_blocked_s:.1f} s), off the ground {r.off_ground_s:.1f} s "
            f"(at most {r.max_off_ground_m:.1f} m), {r.jobs} jobs, {r.wall_s:.0f} s wall, "
            f"RSS {r.rss_mb:.0f} MB after (peak {r.peak_rss_mb:.0f} MB)")
        return r

    if args.processes > 1:
        # spawn: a fresh interpreter per worker (numba's and the world's threads do not fork safely)
        with ProcessPoolExecutor(args.processes, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_one_walk, *w) for w in walks]
            results = [report(f.result()) for f in futures]
    else:
        results = [report(_one_walk(*w)) for w in walks]
    rows = [
        {
            "biome": r.biome, "seed": r.seed, "walk": r.walk, "distance_m": round(r.distance_m, 1),
            "stuck_events": len(r.stuck_events), "blocked_s": round(r.blocked_s, 1),
            "truth_blocked_s": round(r.truth_blocked_s, 1), "off_ground_s": round(r.off_ground_s, 1),
            "max_off_ground_m": round(r.max_off_ground_m, 2), "jobs": r.jobs, "wall_s": round(r.wall_s, 1),
            "rss_mb": round(r.rss_mb), "peak_rss_mb": round(r.peak_rss_mb),
            "events": r.stuck_events, "off_ground_episodes": r.off_ground_episodes,
        }
        for r in results
    ]
    summary = {
        "walks": len(results),
        "stuck_walks": sum(r.stuck for r in results),
        "stuck_rate": sum(r.stuck for r in results) / max(len(results), 1),
        "stuck_events": sum(len(r.stuck_events) for r in results),
        "mean_distance_m": float(np.mean([r.distance_m for r in results])) if results else 0.0,
        "off_ground_walks": sum(r.off_ground_s > 0 for r in results),
        "seconds_per_walk": args.seconds,
        "peak_rss_mb": max((round(r.peak_rss_mb) for r in results), default=0),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    return {"machine": machine(), "args": vars(args), "summary": summary, "biomes": by_biome(rows), "walks": rows}


def main(argv=None) -> None:
    args = parse_args(argv)
    print(describe_machine())
    out = run(args)
    print(format_table(out["walks"], [
        ("biome", "biome"), ("seed", "seed"), ("distance_m", "m walked"), ("stuck_events", "stuck"),
        ("blocked_s", "blocked s"), ("truth_blocked_s", "truth blocked s"), ("off_ground_s", "off ground s"),
        ("max_off_ground_m", "max off m"), ("jobs", "jobs"), ("wall_s", "wall s"), ("rss_mb", "RSS MB"),
        ("peak_rss_mb", "peak RSS MB"),
    ]))
    print()
    print(format_table(out["biomes"], [
        ("biome", "biome"), ("walks", "walks"), ("stuck_walks", "stuck walks"), ("stuck_events", "stuck events"),
        ("mean_distance_m", "mean m walked"), ("blocked_s", "blocked s"), ("truth_blocked_s", "truth blocked s"),
        ("off_ground_walks", "walks off ground"), ("off_ground_s", "off ground s"), ("max_off_ground_m", "max off m"),
    ]))
    s = out["summary"]
    print(f"\nstuck walks: {s['stuck_walks']} / {s['walks']} (rate {s['stuck_rate']:.2f}), "
          f"{s['stuck_events']} stuck events, mean {s['mean_distance_m']:.0f} m per {s['seconds_per_walk']:.0f} s walk; "
          f"{s['off_ground_walks']} walks left the generator's ground by more than a step; "
          f"{s['wall_s']:.0f} s wall with {args.processes} process(es), a walk process at most {s['peak_rss_mb']} MB resident")
    write_json(args.json, out)


if __name__ == "__main__":
    main()
