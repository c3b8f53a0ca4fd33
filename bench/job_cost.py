"""What one generation job costs, stage by stage: the trace and everything after it.

A fast-forwarded walk (forest seed 7, straight, as ``bench.fidelity --fast-forward``: every
update waits for the jobs it caused, and the world schedules on a simulated clock that the
walk advances by ``1 / --update-hz`` per update, so how busy the CPU is changes neither the
jobs planned nor the lookahead) times each job's stages in CPU time of the world's
worker thread (``time.thread_time``), so other processes on a shared machine slow the walk
but barely change the numbers. The timed functions are wrapped (no profiler: its per-call
cost would inflate the stages made of many small numpy calls); each stage counts its own
share, without the timed stages it calls, and "other" is the job's remainder. Jobs are
grouped by what they traced (320x180 fill, 640x360 detail, 160x90 coarse fill). A first
walk in another world, not timed, compiles the numba kernels. The planner's
``World.update`` on the walk's thread is timed apart (CPU ms per update). ``--top`` /
``--pstats`` also run cProfile (thread-CPU clock) over every job, for the hottest functions.

Usage::

    .venv/bin/python -m bench.job_cost                      # 1.5 m/s, 20 m
    .venv/bin/python -m bench.job_cost --speed 1.5 --distance 12 --config detail_scale=1
    .venv/bin/python -m bench.job_cost --top 25             # also the hottest functions
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import math
import pstats
import threading
import time
from collections import defaultdict

import numpy as np

from bench import paced
from bench.common import describe_machine, format_table
from bench.fidelity import CAPTIONS, VIEW_FOV, eye_pose, make_path, walk_velocity
from runtime.world import PlayerState, World, WorldConfig
from runtime.world.frontier.runner import JobRunner
from runtime.world.generators.procedural import ProceduralGenerator

def _stages() -> list[tuple[str, object, str]]:
    """``(row, owner, attribute)``: the functions timed, patched where the job's code looks
    them up (a class, or the module that imported the name)."""
    from runtime.world.frontier import chunk_builder as cb
    from runtime.world.keyframes.memory import FrameMemory
    from runtime.world.movement.collision import SceneCollider
    from runtime.world.render.cpu import CpuRenderer
    from runtime.world.scene import Scene

    B = cb.ChunkBuilder
    return [
        ("trace", ProceduralGenerator, "generate"),
        ("checked result", B, "checked_result"),
        ("refine: coarse mask", B, "_coarse"),
        ("scene less masked (temp chunks)", B, "_without"),
        ("render (scene at keyframes, fit backgrounds)", CpuRenderer, "render"),
        ("render alpha (scene / far field at keyframes)", CpuRenderer, "render_alpha"),
        ("seam blend", cb, "blend_keyframes"),
        ("reconstruct", cb, "reconstruct"),
        ("revisit check", B, "_keep_earlier_views"),
        ("refine: remade blocks", cb, "remade_blocks"),
        ("refine: retire mask", cb, "retire_mask"),
        ("colour fit: views", B, "_fit_views"),
        ("colour fit: solve", cb, "solve_colours"),
        ("far field", B, "_land_far"),
        ("scene insert (+ renderer activation, LOD)", Scene, "append"),
        ("frame memory", FrameMemory, "add"),
        ("explored + sky marks", B, "_mark_explored"),
        ("collider sync", SceneCollider, "sync"),
    ]


class StageTimer:
    """Exclusive thread-CPU time per stage on the jobs' threads: a stage called inside
    another (a render inside the colour fit's views) counts for itself only."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._patched: list[tuple[object, str, object]] = []

    def job(self) -> dict[str, float]:
        """Start collecting for the job on this thread; returns its ms-per-stage dict."""
        self._local.ms = defaultdict(float)
        self._local.stack = []
        return self._local.ms

    def done(self) -> None:
        self._local.ms = None

    def install(self) -> None:
        for row, owner, attr in _stages():
            original = getattr(owner, attr)
            setattr(owner, attr, self._wrap(row, original))
            self._patched.append((owner, attr, original))

    def remove(self) -> None:
        for owner, attr, original in reversed(self._patched):
            setattr(owner, attr, original)
        self._patched.clear()

    def _wrap(self, row: str, fn):
        local = self._local

        @functools.wraps(fn)
        def timed(*a, **k):
            ms = getattr(local, "ms", None)
            if ms is None:
                return fn(*a, **k)
            stack = local.stack
            stack.append(0.0)  # CPU of nested stages, taken off this one
            t0 = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                took = time.thread_time() - t0
                nested = stack.pop()
                ms[row] += (took - nested) * 1e3
                if stack:
                    stack[-1] += took

        return timed


def profile_walk(args) -> tuple[dict, list, dict]:
    """Walk fast-forwarded with every job profiled; returns (per-size stage ms lists,
    per-job rows, planner ms list)."""
    from runtime.sessions import generator_options

    overrides = {k: json.loads(v) for k, v in (c.split("=", 1) for c in args.config)}
    config = WorldConfig("job_cost", seed=args.seed, caption=CAPTIONS[args.biome], **overrides)
    if args.warmup_m > 0:  # numba compiles on first use: not a job's cost
        _walk(*_world(config, generator_options), args, args.warmup_m)
    world, clock = _world(config, generator_options)
    profiling = bool(args.top or args.pstats)
    timer = StageTimer()
    jobs: list[tuple[str, dict, float]] = []
    merged: dict[str, pstats.Stats] = {}
    original = JobRunner._run

    def run(self, job, token):
        size = f"{round(job.cameras.width * job.scale)}x{round(job.cameras.height * job.scale)}"
        size += " detail" if job.refines else " fill"
        prof = cProfile.Profile(time.thread_time) if profiling else None
        ms = timer.job()
        cpu = time.thread_time()
        if prof is not None:
            prof.enable()
        try:
            return original(self, job, token)
        finally:
            if prof is not None:
                prof.disable()
            total = time.thread_time() - cpu
            timer.done()
            if ms.get("trace", 0.0) > 0:  # skipped (already covered) jobs trace nothing
                jobs.append((size, dict(ms), total * 1e3))
                if prof is not None:
                    if size in merged:
                        merged[size].add(prof)
                    else:
                        merged[size] = pstats.Stats(prof)

    JobRunner._run = run
    timer.install()
    planner = cProfile.Profile(time.thread_time) if profiling else None
    try:
        planner_ms = _walk(world, clock, args, args.distance, planner)
    finally:
        JobRunner._run = original
        timer.remove()
    by_size: dict[str, list[dict]] = defaultdict(list)
    rows = []
    for size, ms, total in jobs:
        ms["other"] = total - sum(ms.values())
        ms["total"] = total
        by_size[size].append(ms)
        rows.append({"size": size, **{k: round(v, 1) for k, v in ms.items()}})
    if planner is not None:
        merged["World.update"] = pstats.Stats(planner)
    return by_size, rows, {"planner_ms": planner_ms, "stats": merged}


def _world(config: WorldConfig, generator_options) -> tuple[World, paced.SimClock]:
    """A world with the procedural generator, scheduling on a simulated clock (returned too);
    its workers do not yield the CPU (the walk waits for them)."""
    clock = paced.SimClock()
    world = World(config, generator=ProceduralGenerator(**generator_options("procedural")), clock=clock, yield_cpu=False)
    return world, clock


def _walk(world: World, clock: paced.SimClock, args, distance: float, prof: cProfile.Profile | None = None) -> list[float]:
    """Bootstrap ``world`` at the spawn and walk ``distance`` m straight, fast-forwarded
    (every update waits for its jobs; update ``k`` at ``k / update_hz`` s on the world's
    simulated clock, on which a job takes no time); closes the world. Returns each update's CPU ms."""
    planner_ms = []
    try:
        path = make_path("straight", distance, args.seed)
        spawn = eye_pose(0.0, 0.0, 0.0, 0.0, args.seed)
        world.update([PlayerState("p", spawn, np.zeros(3, np.float32), VIEW_FOV)])
        _wait(world)
        step_s = 1.0 / args.update_hz
        n = int(math.ceil(path.length / (args.speed * step_s)))
        t0 = clock()
        for k in range(n + 1):
            s = min(k * args.speed * step_s, path.length)
            x, z, yaw = path.at(s)
            pose = eye_pose(x, z, yaw, 0.0, args.seed)
            clock.advance(t0 + k * step_s)
            cpu = time.thread_time()
            if prof is not None:
                prof.enable()
            world.update([PlayerState("p", pose, walk_velocity(path, s, args.speed, args.seed), VIEW_FOV)])
            if prof is not None:
                prof.disable()
            planner_ms.append((time.thread_time() - cpu) * 1e3)
            _wait(world)
    finally:
        world.close()
    return planner_ms


def _wait(world: World, timeout_s: float = 600.0) -> None:
    if not world.wait_idle(timeout_s):
        raise TimeoutError(f"job_cost walk: jobs still running after {timeout_s:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--biome", default="forest", choices=sorted(CAPTIONS))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--speed", type=float, default=1.5, help="m/s (below coarse_speed 3 for detail jobs)")
    ap.add_argument("--distance", type=float, default=20.0, help="metres walked")
    ap.add_argument("--update-hz", type=float, default=5.0)
    ap.add_argument("--warmup-m", type=float, default=3.0, help="metres walked first in another world, unprofiled (numba compiles)")
    ap.add_argument("--config", action="append", default=[], help="WorldConfig override key=value (JSON value)")
    ap.add_argument("--top", type=int, default=0, help="also print the N functions with the most own CPU per job size")
    ap.add_argument("--json", help="write the per-job rows here")
    ap.add_argument("--pstats", help="write each job size's merged profile to PREFIX<size>.pstats (for pstats / snakeviz)")
    args = ap.parse_args()
    started = time.monotonic()
    by_size, rows, extra = profile_walk(args)
    print(describe_machine())
    print(f"forest walk {args.distance:g} m at {args.speed:g} m/s fast-forwarded, config {args.config or 'default'}; "
          f"{time.monotonic() - started:.0f} s wall")
    sizes = sorted(by_size)
    table = []
    for name in [row for row, _, _ in _stages()] + ["other", "total", "non-trace"]:
        row = {"stage": name}
        for size in sizes:
            jobs = by_size[size]
            v = [j["total"] - j.get("trace", 0.0) if name == "non-trace" else j.get(name, 0.0) for j in jobs]
            row[size] = f"{np.mean(v):.0f}"
        table.append(row)
    print("mean thread-CPU ms per job, each stage without the stages it calls (its own share)")
    print(format_table(table, [("stage", "stage")] + [(s, f"{s} (n={len(by_size[s])})") for s in sizes]))
    p = extra["planner_ms"]
    print(f"World.update (planning) on the walk's thread: mean {np.mean(p):.1f} ms, p95 {np.percentile(p, 95):.1f} ms, n={len(p)}")
    if args.top:
        for size, stats in extra["stats"].items():
            print(f"\n--- {size}: top {args.top} by own CPU (all jobs summed)")
            stats.sort_stats("tottime").print_stats(args.top)
    if args.pstats:
        for size, stats in extra["stats"].items():
            stats.dump_stats(f"{args.pstats}{size.replace(' ', '_').replace('.', '')}.pstats")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "planner_ms": p}, f, indent=1)


if __name__ == "__main__":
    main()
