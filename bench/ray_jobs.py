"""Generation on Ray actors vs in-process: jobs/s, time-to-frontier, per-job overhead.

    .venv/bin/python -m bench.ray_jobs                         # 1 and 2 CPU actors, 160x90 keyframes
    .venv/bin/python -m bench.ray_jobs --actors 1,2,4 --jobs 24 --size 320x180 --json out/ray.json
    .venv/bin/python -m bench.ray_jobs --generator wan-vace --generator-option model=/models/Wan2.1-VACE-1.3B-diffusers \
        --gpus-per-actor 1 --actors 1,2,4,8 --jobs 16 --size 832x480      # GPU actors (one GPU each)

Starts a private local Ray (``ray.init(num_cpus=max actors)``, no dashboard; it sees the
machine's GPUs) and, for each actor count, an :class:`runtime.scale.pool.ActorPool` of
``--generator`` actors (procedural: one numba thread each; ``--gpus-per-actor`` for a
model). Rows:

* ``overhead``: round trip of a 8x8 one-view job (next to nothing to compute) through the
  pool, against the same call in-process, alternating: the median paired difference is
  what Ray adds per job.
* ``throughput``: ``--jobs`` 4-view jobs of ``--size``, as many in flight as there are
  actors (one thread each waiting, as the worlds' job runners do): jobs/s.
* ``frontier``: a new world's spawn ring (every job a standing player needs) from the
  first update until the last chunk landed, jobs running at once = actors.

The in-process rows run the generator on one thread (the server's default: one job at a
time per world).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bench.common import describe_machine, format_table, write_json
from runtime.world import PlayerState, World, WorldConfig
from runtime.world.camera import Cameras, Pose, intrinsics_from_fov
from runtime.world.generators import CancelToken, GenerationRequest, create_generator, parse_option
from runtime.world.render.cpu import CpuRenderer


def _request(width: int, height: int, views: int, seed: int) -> GenerationRequest:
    w2c = np.stack([Pose(np.array([0.0, 0.0, 0.5 * i], np.float32), 2 * math.pi * i / views, 0.0).w2c for i in range(views)])
    K = np.repeat(intrinsics_from_fov(width, height, math.radians(75))[None], views, 0)
    return GenerationRequest(Cameras(w2c, K, width, height), "rolling hills", (), seed)


def _paired_ms(local, remote, repeats: int) -> tuple[float, float, float]:
    """Median ms of ``local()``, of ``remote()`` and of their paired difference; the calls
    alternate, so load that comes and goes (a shared machine) hits both alike."""
    here, there = [], []
    for _ in range(repeats):
        for call, times in ((local, here), (remote, there)):
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(here), statistics.median(there), statistics.median(b - a for a, b in zip(here, there))


def _throughput(run_one, jobs: int, in_flight: int, width: int, height: int) -> float:
    requests = [_request(width, height, 4, seed) for seed in range(jobs)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(run_one, requests))
    return jobs / (time.perf_counter() - t0)


def _time_to_frontier(generator, renderer, width: int, height: int, jobs_at_once: int) -> tuple[float, int]:
    config = WorldConfig("bench-ray", seed=11, keyframe_width=width, keyframe_height=height)
    with World(config, generator=generator, renderer=renderer, max_concurrent_jobs=jobs_at_once) as world:
        t0 = time.perf_counter()
        jobs = world.update([PlayerState("a", world.spawn_pose())])
        if not world.wait_idle(600):
            raise TimeoutError("the spawn ring did not finish in 600 s")
        return time.perf_counter() - t0, len(jobs)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--actors", default="1,2", help="comma-separated actor counts (default 1,2)")
    ap.add_argument("--jobs", type=int, default=16, help="jobs per throughput run (default 16)")
    ap.add_argument("--size", default="160x90", help="keyframe WxH (default 160x90)")
    ap.add_argument("--repeats", type=int, default=30, help="round trips for the overhead median (default 30)")
    ap.add_argument("--generator", default="procedural", help="registered generator the actors build (default procedural)")
    ap.add_argument("--generator-option", type=parse_option, action="append", default=[], metavar="KEY=VALUE", help="its options, repeatable")
    ap.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs each actor holds (default 0)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    counts = [int(a) for a in args.actors.split(",")]
    width, height = (int(v) for v in args.size.split("x"))
    tiny = _request(8, 8, 1, 0)
    renderer = CpuRenderer()

    options = dict(args.generator_option)
    if args.generator == "procedural":
        options.setdefault("threads", 1)
    local = create_generator(args.generator, **options)
    if callable(getattr(local, "warmup", None)):
        local.warmup()

    def run_local(request):
        return local.generate(request, lambda f, m="": None, CancelToken())

    rows = []
    frontier_s, ring = _time_to_frontier(local, renderer, width, height, 1)
    rows.append({
        "runner": "in-process", "actors": "-",
        "jobs_per_s": _throughput(run_local, args.jobs, 1, width, height), "frontier_s": frontier_s, "ring_jobs": ring,
    })

    import ray

    from runtime.scale.pool import ActorPool, PoolSettings, RayGenerator

    t0 = time.perf_counter()
    ray.init(num_cpus=max(counts), include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    ray_start_s = time.perf_counter() - t0
    try:
        for n in counts:
            pool = ActorPool(PoolSettings(args.generator, options, actors=n, num_gpus=args.gpus_per_actor))
            t0 = time.perf_counter()
            pool.wait_ready(600)
            ready_s = time.perf_counter() - t0

            def run_remote(request, pool=pool):
                return pool.run(request, CancelToken())

            local_ms, remote_ms, overhead_ms = _paired_ms(lambda: run_local(tiny), lambda: run_remote(tiny), args.repeats)
            frontier_s, ring = _time_to_frontier(RayGenerator(pool), renderer, width, height, n)
            rows.append({
                "runner": "ray", "actors": n, "overhead_ms": overhead_ms, "tiny_ms": remote_ms, "tiny_local_ms": local_ms,
                "jobs_per_s": _throughput(run_remote, args.jobs, n, width, height), "frontier_s": frontier_s,
                "ring_jobs": ring, "actors_ready_s": ready_s,
            })
            pool.close()
    finally:
        ray.shutdown()

    print(describe_machine())
    print(f"Ray start {ray_start_s:.1f} s; keyframes {width}x{height}, 4 views per throughput job, {args.jobs} jobs")
    print(format_table(rows, [
        ("runner", "runner"), ("actors", "actors"), ("tiny_local_ms", "8x8 job in-process ms"), ("tiny_ms", "8x8 job on Ray ms"),
        ("overhead_ms", "Ray overhead ms/job (paired median)"),
        ("jobs_per_s", "jobs/s"), ("ring_jobs", "spawn-ring jobs"), ("frontier_s", "time to frontier s"), ("actors_ready_s", "actors ready s"),
    ]))
    write_json(args.json, {"rows": rows, "ray_start_s": ray_start_s, "size": [width, height], "jobs": args.jobs})


if __name__ == "__main__":
    main()
