"""Frontier benchmark: planning cost, fill latency and the fastest stall-free walking speed.

For each speed, a fresh world is bootstrapped at the spawn (first update, wait until
idle), then a player walks straight ahead (+z, following the ground the scene
provides) in real time, with ``World.update`` at ``--hz``. Each tick the player's own
view (64x36, 60 degrees vertical FOV, level) is tested the way planning tests views:
the fraction of pixels with neither splats (alpha >= 0.5) nor known sky. A walk is
stall-free when that fraction never exceeds the world's ``uncovered_fraction``.

Reported per speed: jobs run, ``update()`` time (median / p95 / max, ms), fill time
from ``ChunkRequested`` to ``ChunkAdded`` (median / p95, s) and the worst uncovered
fraction of the player's view.

Usage::

    .venv/bin/python -m bench.frontier --speeds 1.5,3,4.5,6,9 --distance 30 --json /tmp/frontier.json
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time

import numpy as np

from runtime.world import PlayerState, Pose, World, WorldConfig
from runtime.world.frontier.coverage import uncovered_fractions
from runtime.world.movement.motion import walk_target_eye_y
from runtime.world.render import create_renderer
from runtime.world.world import ChunkAdded, ChunkRequested

VIEW_FOV = math.radians(60.0)


class FillClock:
    """Times each job from ChunkRequested to ChunkAdded (event thread-safe)."""

    def __init__(self) -> None:
        self.requested: dict[int, float] = {}
        self.fills: list[float] = []
        self.first_chunk_at: float | None = None
        self.lock = threading.Lock()

    def __call__(self, event) -> None:
        now = time.monotonic()
        with self.lock:
            if isinstance(event, ChunkRequested):
                self.requested[event.job.id] = now
            elif isinstance(event, ChunkAdded) and event.job_id in self.requested:
                self.fills.append(now - self.requested.pop(event.job_id))
                if event.chunks and self.first_chunk_at is None:
                    self.first_chunk_at = now


def view_uncovered(world: World, pose: Pose) -> float:
    cam = pose.camera(64, 36, VIEW_FOV)
    alpha = world.renderer.render_alpha(world.scene.snapshot(), cam)
    return float(uncovered_fractions(alpha, cam, world.sky_directions)[0])


def walk(args, speed: float) -> dict:
    renderer = create_renderer(args.renderer)
    world = World(WorldConfig("bench", seed=args.seed, generator=args.generator, **args.config_overrides), renderer=renderer)
    clock = FillClock()
    world.subscribe(clock)
    pose = world.spawn_pose()
    t0 = time.monotonic()
    world.update([PlayerState("p", pose)])
    world.wait_idle(600)
    bootstrap_s = time.monotonic() - t0
    first_chunk_s = (clock.first_chunk_at or t0) - t0
    bootstrap_jobs = world.stats["jobs_created"]

    dt = 1.0 / args.hz
    velocity = np.array([0.0, 0.0, speed], np.float32)
    update_ms, worst, worst_at = [], 0.0, 0.0
    steps = int(math.ceil(args.distance / (speed * dt)))
    next_tick = time.monotonic()
    for k in range(steps):
        pos = pose.position.astype(np.float64) + velocity * dt
        world.collider.sync(world.scene.snapshot())
        eye = walk_target_eye_y(pos[0], pos[2], pos[1], world.collider)
        if eye is not None:
            pos[1] = eye
        pose = Pose(pos.astype(np.float32), 0.0, 0.0)
        t = time.perf_counter()
        world.update([PlayerState("p", pose, velocity, VIEW_FOV)])
        update_ms.append((time.perf_counter() - t) * 1e3)
        frac = view_uncovered(world, pose)
        if frac > worst:
            worst, worst_at = frac, float(pos[2])
        next_tick += dt
        time.sleep(max(0.0, next_tick - time.monotonic()))
    jobs = world.stats["jobs_created"] - bootstrap_jobs
    world.close()
    u = np.asarray(update_ms)
    fills = np.asarray(clock.fills) if clock.fills else np.zeros(1)
    return {
        "speed_mps": speed,
        "bootstrap_s": round(bootstrap_s, 2),
        "first_chunk_s": round(first_chunk_s, 2),
        "bootstrap_jobs": bootstrap_jobs,
        "walk_jobs": jobs,
        "update_ms_median": round(float(np.median(u)), 2),
        "update_ms_p95": round(float(np.percentile(u, 95)), 2),
        "update_ms_max": round(float(u.max()), 2),
        "fill_s_median": round(float(np.median(fills)), 2),
        "fill_s_p95": round(float(np.percentile(fills, 95)), 2),
        "worst_uncovered": round(worst, 3),
        "worst_at_z": round(worst_at, 1),
        "stall_free": worst <= world.config.uncovered_fraction,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--speeds", default="1.5,3,4.5,6,9", help="comma-separated walking speeds, m/s")
    ap.add_argument("--distance", type=float, default=30.0, help="metres walked per speed")
    ap.add_argument("--hz", type=float, default=10.0, help="update() calls per second")
    ap.add_argument("--generator", default="procedural")
    ap.add_argument("--renderer", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", dest="json_path", default=None, help="also write the results here")
    ap.add_argument("--config", action="append", default=[], help="WorldConfig override key=value (JSON value), e.g. fit_iterations=0")
    args = ap.parse_args()
    args.config_overrides = {}
    for item in args.config:
        key, _, value = item.partition("=")
        try:
            args.config_overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            args.config_overrides[key] = value
    rows = [walk(args, float(s)) for s in args.speeds.split(",")]
    cols = [
        ("speed_mps", "speed m/s"), ("walk_jobs", "jobs"), ("update_ms_median", "upd med ms"),
        ("update_ms_p95", "upd p95 ms"), ("update_ms_max", "upd max ms"), ("fill_s_median", "fill med s"),
        ("fill_s_p95", "fill p95 s"), ("worst_uncovered", "worst empty"), ("stall_free", "stall-free"),
    ]
    print(f"bootstrap: {rows[0]['bootstrap_jobs']} jobs, first chunk {rows[0]['first_chunk_s']} s, idle after {rows[0]['bootstrap_s']} s")
    print(" | ".join(f"{h:>11}" for _, h in cols))
    for r in rows:
        print(" | ".join(f"{str(r[k]):>11}" for k, _ in cols))
    ok = [r["speed_mps"] for r in rows if r["stall_free"]]
    fastest = max((s for s in ok if all(r["stall_free"] for r in rows if r["speed_mps"] <= s)), default=None)
    print(f"fastest stall-free speed: {fastest} m/s" if fastest else "no speed was stall-free")
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({"rows": rows, "fastest_stall_free_mps": fastest, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
