"""Far-field benchmark: what the far field costs a frame, and what it shows at the horizon.

A world (procedural generator, ``--renderer``: CPU by default) is walked ``--distance`` m along +z, fast-forwarded
(generation finishes between steps, so both variants see the same, complete world). Then:

* **cost**: a player walks the strip again; each frame is drawn as ``World.render`` draws it
  (the world's renderer, its snapshot, its sky) at each ``--sizes``, with the far field and
  without it (the same snapshot less its far chunks), the two interleaved frame by frame so
  that other load on the machine hits both alike. Medians and the ratio are reported.
* **horizon**: ``--views`` novel cameras along the strip (any yaw, level) against the generator:
  over the generator's far pixels (surfaces >= 60 m away that it does not fog into the sky),
  the mean absolute error and the fraction still showing bare sky, with and without; and the
  whole picture's PSNR.

Usage::

    .venv/bin/python -m bench.far_field                         # forest, seed 7, 20 m
    .venv/bin/python -m bench.far_field --caption "a snowy winter valley" --frames 60
    .venv/bin/python -m bench.far_field --far-cell-m 0          # far chunks never merged (as before merging)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import numpy as np

from bench.common import describe_machine, format_table, machine, write_json
from bench.compare import psnr
from bench.fidelity import VIEW_FOV, Truth, eye_pose
from runtime.world import PlayerState, World, WorldConfig
from runtime.world.generators.procedural import ProceduralGenerator
from runtime.world.render import create_renderer

FAR_PIXEL_M = 60.0
"""Generator surfaces from this distance on count as far pixels."""


def build_world(args, **config) -> tuple[World, float]:
    """The walked world (``config``: ``WorldConfig`` overrides) and the seconds it took (generation included)."""
    renderer = create_renderer(getattr(args, "renderer", "cpu"))
    world = World(WorldConfig("far-bench", seed=args.seed, caption=args.caption, **config), generator=ProceduralGenerator(), renderer=renderer)
    t0 = time.monotonic()
    for z in np.arange(0.0, args.distance + 0.01, 2.0):
        pose = eye_pose(0.0, float(z), 0.0, 0.0, args.seed)
        world.update([PlayerState("p", pose, np.array([0.0, 0.0, 1.5], np.float32), VIEW_FOV)])
        world.wait_idle(120)
    return world, time.monotonic() - t0


def frame_cost(world: World, args) -> list[dict]:
    """Per image size: median ms of ``World.render`` with and without the far field."""
    snap = world.scene.snapshot()
    bare = dataclasses.replace(snap, far=())
    rows = []
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        times = {True: [], False: []}
        for k in range(args.frames):
            z = args.distance * k / max(args.frames - 1, 1)
            cam = eye_pose(0.0, z, 0.1 * math.sin(k / 10), 0.0, args.seed).camera(w, h, VIEW_FOV)
            for with_far in (k % 2 == 0, k % 2 == 1):  # alternate which goes first
                t0 = time.perf_counter()
                world.renderer.render(snap if with_far else bare, cam, world.sky)  # what World.render draws
                times[with_far].append((time.perf_counter() - t0) * 1e3)
        on, off = float(np.median(times[True])), float(np.median(times[False]))
        rows.append({"size": size, "frames": args.frames, "ms_without": off, "ms_with": on, "ratio": on / off})
    return rows


def horizon(world: World, args) -> dict:
    """Far-pixel error and bare-sky fraction, and whole-picture PSNR, with and without the far field."""
    truth = Truth(args.caption, args.seed)
    snap = world.scene.snapshot()
    bare = dataclasses.replace(snap, far=())
    rng = np.random.default_rng(args.seed)
    err, haze, p = np.zeros(2), np.zeros(2), [[], []]
    count = 0
    for _ in range(args.views):
        pose = eye_pose(rng.uniform(-1.0, 1.0), rng.uniform(0.0, args.distance), rng.uniform(-math.pi, math.pi), 0.0, args.seed)
        cam = pose.camera(args.width, args.height, VIEW_FOV)
        t_rgb, t_depth = truth.render(cam)
        sky = np.rint(world.sky.colors(cam)[0] * 255)
        far = np.isfinite(t_depth[0]) & (t_depth[0] >= FAR_PIXEL_M) & (np.abs(t_rgb[0] - sky).max(axis=2) > 12)
        for k, s in enumerate((snap, bare)):
            rgb = world.renderer.render(s, cam, world.sky).rgb[0]
            err[k] += np.abs(rgb.astype(float) - t_rgb[0])[far].sum() / 3
            haze[k] += (np.abs(rgb - sky).max(axis=2) <= 4)[far].sum()
            p[k].append(psnr(rgb, t_rgb[0]))
        count += int(far.sum())
    n = max(count, 1)
    return {
        "views": args.views,
        "far_pixel_fraction": count / (args.views * args.width * args.height),
        "far_error_with": err[0] / n,
        "far_error_without": err[1] / n,
        "bare_sky_with": haze[0] / n,
        "bare_sky_without": haze[1] / n,
        "psnr_med_with": float(np.median(p[0])),
        "psnr_med_without": float(np.median(p[1])),
        "psnr_gain_mean": float(np.mean(np.array(p[0]) - np.array(p[1]))),
        "psnr_gain_min": float(np.min(np.array(p[0]) - np.array(p[1]))),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--caption", default="a pine forest")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--distance", type=float, default=20.0)
    ap.add_argument("--sizes", default="320x180,640x360")
    ap.add_argument("--frames", type=int, default=40, help="frames per size and variant")
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--resolution", default="320x180", help="novel views' size")
    ap.add_argument("--renderer", default="cpu", help="cpu or gsplat")
    ap.add_argument("--far-cell-m", type=float, default=None, help="WorldConfig.far_field_cell_m (0: far chunks never merge)")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    args.width, args.height = (int(v) for v in args.resolution.split("x"))
    print(describe_machine(machine()))
    world, seconds = build_world(args, **({} if args.far_cell_m is None else {"far_field_cell_m": args.far_cell_m}))
    try:
        stats = world.stats
        snap = world.scene.snapshot()
        jobs = max(stats["jobs_done"], 1)
        print(f"world: {stats['jobs_done']} jobs in {seconds:.0f} s, {snap.num_gaussians} scene Gaussians, "
              f"{sum(len(c.gaussians) for c in snap.far)} far-field Gaussians in {len(snap.far)} chunks, "
              f"building them {stats['far_field_ms'] / jobs:.1f} ms per job")
        cost = frame_cost(world, args)
        print(format_table(cost, [("size", "size"), ("frames", "frames"), ("ms_without", "ms without"), ("ms_with", "ms with"), ("ratio", "with / without")]))
        h = horizon(world, args)
        print(f"horizon ({h['views']} views, {h['far_pixel_fraction']:.1%} far pixels): far-pixel error "
              f"{h['far_error_without']:.1f} -> {h['far_error_with']:.1f}, bare sky {h['bare_sky_without']:.1%} -> "
              f"{h['bare_sky_with']:.1%}; PSNR median {h['psnr_med_without']:.2f} -> {h['psnr_med_with']:.2f} dB "
              f"(gain mean {h['psnr_gain_mean']:+.2f}, min {h['psnr_gain_min']:+.2f})")
        write_json(args.json_path, {"settings": vars(args), "cost": cost, "horizon": h})
    finally:
        world.close()


if __name__ == "__main__":
    main()
