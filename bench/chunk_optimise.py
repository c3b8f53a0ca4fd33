"""Chunk optimisation benchmark (issue 16 item 3): milliseconds per chunk and the PSNR it gains.

Two worlds (procedural generator, ``--biome``, ``--seed``) are walked the same way,
fast-forwarded: the player stands at stops every ``--stop-m`` metres along +z, each until
the world is idle, so every chunk it asks for lands. One world lands chunks as
reconstruction makes them; the other fits each new chunk to its keyframes first
(``--steps`` Adam steps, :mod:`runtime.world.keyframes.optimise`; gsplat on CUDA).

Printed:

* per chunk of the optimised world: its Gaussians, the scene's Gaussians drawn with it,
  milliseconds, and the keyframes' PSNR as rendered before and after the fit (the
  keyframes are the generator's pictures: this is PSNR against the generator at the
  cameras the chunk was fitted to);
* held-out views (``bench.fidelity``'s novel cameras: on the walked line up to
  ``--offset`` m to the side, any yaw, pitch within +-20 degrees, 60 degree FOV at
  ``--resolution``): PSNR, SSIM and sharpness against the generator for the world without
  and with optimisation, and the per-view PSNR difference. The two worlds diverge after the
  first fitted chunk (later reconstruction sees the fitted scene), and a world whose stop
  timed out holds fewer chunks: on a slow machine give ``--stop-timeout-s`` room.

``--single`` instead fits one chunk alone (the spawn keyframe's, nothing else in the scene)
with each ``--steps`` and compares views inside what that keyframe saw before and after:
the fit's effect with nothing else changing.

Usage::

    python -m bench.chunk_optimise                          # CUDA: forest seed 7, 100 steps, stops at 0/4/8 m
    python -m bench.chunk_optimise --steps 100,300 --json out/chunk_optimise.json
    python -m bench.chunk_optimise --single --steps 50,100,300 --optimise max_shrink=0.7   # one chunk alone
    python -m bench.chunk_optimise --rasteriser dense --quick   # any machine: tiny keyframes, a smoke test
    python -m bench.chunk_optimise --rasteriser windowed --renderer cpu --config keyframe_width=160 --config keyframe_height=90 --steps 50

gsplat compiles its kernels on first use (about a minute on a fresh machine); a warm-up
fit before the walks keeps that out of the per-chunk times (its time is printed).
``--rasteriser dense|windowed`` are the plain-torch rasterisers (:mod:`runtime.world.keyframes.torch_raster`):
the same pictures as gsplat's up to rounding, at CPU speed -- ``dense`` only for tiny
keyframes (``--quick`` sets 32x18), ``windowed`` for real ones at seconds a step. Their
PSNR gains are the fit's; their milliseconds say nothing about the GPU.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Callable

import numpy as np

from bench.common import describe_machine, format_table, machine, write_json
from bench.compare import psnr, sharpness, ssim
from bench.fidelity import CAPTIONS, Truth, config_overrides, draw_novel_view, eye_pose, make_path
from runtime.world import PlayerState, World, WorldConfig
from runtime.world.gaussians import Gaussians
from runtime.world.keyframes.optimise import ChunkOptimiser, OptimiseSettings
from runtime.world.keyframes.torch_raster import rasteriser
from runtime.world.render import create_renderer
from runtime.world.sky import Sky


def build_optimiser(args, steps: int) -> ChunkOptimiser:
    settings = {"max_seconds": 0, **args.optimise_overrides}  # every step, however long: that is what is measured
    if args.rasteriser != "gsplat":
        import torch

        torch.set_num_threads(1)  # small tensors: more threads only spin-wait on a busy machine
        return ChunkOptimiser(OptimiseSettings(steps=steps, **settings), rasteriser(args.rasteriser))
    return ChunkOptimiser.for_cuda(steps, **settings)


def warm_up(optimiser: ChunkOptimiser) -> float:
    """Seconds for one small fit (gsplat compiles its kernels here on a fresh machine)."""
    from runtime.world.camera import Pose

    cam = Pose(np.zeros(3, np.float32), 0.0, 0.0).camera(32, 18, math.radians(60.0))
    rng = np.random.default_rng(0)
    n = 64
    q = np.tile(np.float32([1, 0, 0, 0]), (n, 1))
    g = Gaussians(rng.uniform(-1, 1, (n, 3)) + np.float32([0, 0, 4]), q, np.full((n, 3), math.log(0.1)),
                  np.zeros(n), rng.uniform(0, 1, (n, 3)))
    t0 = time.perf_counter()
    optimiser.optimise(g, Gaussians.empty(), cam, np.full((1, 18, 32, 3), 128, np.uint8), Sky().colors(cam))
    optimiser.reports.clear()
    return time.perf_counter() - t0


def walk(args, optimiser: ChunkOptimiser | None, log=print) -> World:
    """A world walked to every stop (fast-forwarded: each stop until the world is idle)."""
    caption = CAPTIONS.get(args.biome, args.biome)
    config = WorldConfig("chunk-optimise", seed=args.seed, caption=caption, **args.config_overrides)
    from runtime.sessions import generator_options
    from runtime.world.generators.procedural import ProceduralGenerator

    world = World(config, generator=ProceduralGenerator(**generator_options("procedural")),
                  renderer=create_renderer(args.renderer), chunk_optimiser=optimiser)
    t0 = time.monotonic()
    shown = 0
    for z in np.arange(0.0, args.distance + 1e-6, args.stop_m):
        pose = eye_pose(0.0, float(z), 0.0, 0.0, args.seed)
        world.update([PlayerState("p", pose, np.zeros(3, np.float32), math.radians(60.0))])
        if not world.wait_idle(args.stop_timeout_s):
            log(f"  stop at {z:.0f} m: not idle after {args.stop_timeout_s:.0f} s; going on")
        if optimiser is not None:  # as they come: a run cut short still says something
            for r in list(optimiser.reports)[shown:]:
                log(f"  chunk at {z:.0f} m: {r.gaussians} Gaussians (+{r.fixed} drawn), {r.ms:.0f} ms, "
                    f"keyframe PSNR {r.psnr_before:.2f} -> {r.psnr_after:.2f} dB{'' if r.kept else ' (not kept)'}")
            shown = len(optimiser.reports)
    label = "optimised" if optimiser is not None else "plain"
    log(f"  {label} world: {len(world.scene.snapshot().chunks)} chunks, {world.scene.snapshot().num_gaussians} Gaussians, "
        f"{world.stats['jobs_done']} jobs in {time.monotonic() - t0:.1f} s")
    return world


def held_out(args, worlds: dict[str, Callable], log=print) -> list[dict]:
    """Novel views (fidelity's), each drawn by every ``worlds`` function (camera -> ``[H,W,3]``
    uint8) and by the generator."""
    truth = Truth(CAPTIONS.get(args.biome, args.biome), args.seed)
    path = make_path("straight", args.distance, args.seed)
    rng = np.random.default_rng(args.seed * 7919)
    return compare_views(truth, worlds, (draw_novel_view(truth, path, rng, args.offset, 20.0, args.seed, args.width, args.height)
                                         for _ in range(args.novel * 6)), args.novel, log)


def compare_views(truth: Truth, worlds: dict[str, Callable], drawn, count: int, log=print) -> list[dict]:
    """PSNR, SSIM and sharpness against the generator of the first ``count`` views ``drawn``
    yields (``draw_novel_view``'s tuples; None: drawn again)."""
    rows = []
    for novel in drawn:
        if len(rows) >= count:
            break
        if novel is None:
            continue
        pose, s, _, cam, t_rgb, _ = novel
        row = {"s": round(float(s), 1), "yaw_deg": round(math.degrees(pose.yaw)), "pitch_deg": round(math.degrees(pose.pitch))}
        for name, draw in worlds.items():
            rgb = draw(cam)
            row[f"psnr_{name}"] = psnr(rgb, t_rgb[0])
            row[f"ssim_{name}"] = ssim(rgb, t_rgb[0])
            row[f"sharp_{name}"] = sharpness(rgb) / max(sharpness(t_rgb[0]), 1e-6)
        rows.append(row)
        log("  view " + ", ".join(f"PSNR {name} {row[f'psnr_{name}']:.2f}" for name in worlds))
    return rows


def run(args, log=print) -> dict:
    plain = walk(args, None, log)
    try:
        report: dict = {"runs": []}
        for steps in args.steps:
            optimiser = build_optimiser(args, steps)
            warm_s = warm_up(optimiser)
            log(f"  {steps} steps: warm-up fit {warm_s:.1f} s")
            fitted = walk(args, optimiser, log)
            try:
                chunks = [
                    {"chunk": k, "gaussians": r.gaussians, "fixed": r.fixed, "keyframes": r.keyframes, "ms": r.ms,
                     "ms_per_step": r.ms / max(r.steps, 1), "psnr_before": r.psnr_before, "psnr_after": r.psnr_after,
                     "gain_db": r.psnr_after - r.psnr_before, "kept": r.kept}
                    for k, r in enumerate(optimiser.reports) if r.gaussians
                ]
                views = held_out(args, {"plain": _drawn_by(plain), "optimised": _drawn_by(fitted)}, log)
                report["runs"].append({"steps": steps, "warm_up_s": warm_s, "chunks": chunks, "views": views,
                                       "summary": summarise(chunks, views), "stats": fitted.stats})
            finally:
                fitted.close()
        return report
    finally:
        plain.close()


def _drawn_by(world: World) -> Callable:
    return lambda cam: world.render(cam).rgb[0]


def single(args, log=print) -> list[dict]:
    """One keyframe, no walk: the first keyframe's chunk (the spawn, facing +z, pitched down
    10 degrees, the config's keyframe size and FOV) fitted with each ``--steps``, and views
    within 2 m and 0.4 rad of it (inside what it saw) drawn before and after. Nothing else
    changes between the two, so the difference is the fit's alone."""
    from runtime.world.camera import Cameras
    from runtime.world.keyframes.reconstruct import reconstruct
    from runtime.world.scene import ChunkSource, Scene

    config = WorldConfig("chunk-optimise", seed=args.seed, caption=CAPTIONS.get(args.biome, args.biome), **args.config_overrides)
    truth = Truth(config.caption, args.seed)
    sky = truth.generator.sky(config.caption, args.seed)
    renderer = create_renderer(args.renderer)
    key = eye_pose(0.0, 0.0, 0.0, math.radians(-10.0), args.seed).camera(config.keyframe_width, config.keyframe_height, config.keyframe_fov_y)
    k_rgb, k_depth = truth.render(key)
    start = reconstruct(k_rgb, k_depth, key, None, stride=config.reconstruct_stride)

    def drawn_by(gaussians: Gaussians) -> Callable:
        scene = Scene()
        scene.append(gaussians, ChunkSource())
        snapshot = scene.snapshot()
        return lambda cam: renderer.render(snapshot, cam, sky).rgb[0]

    def near_views():
        rng = np.random.default_rng(args.seed * 7919 + 1)
        while True:
            pose = eye_pose(rng.uniform(-0.7, 0.7), rng.uniform(0.0, 2.0), rng.uniform(-0.4, 0.4), math.radians(rng.uniform(-15, 10)), args.seed)
            cam: Cameras = pose.camera(args.width, args.height, math.radians(60.0))
            t_rgb, t_depth = truth.render(cam)
            yield None if (t_depth[0] < 0.5).mean() > 0.02 else (pose, float(pose.position[2]), 0.0, cam, t_rgb, t_depth)

    rows = []
    for steps in args.steps:
        optimiser = build_optimiser(args, steps)
        warm_up(optimiser)
        fitted, r = optimiser.optimise(start, Gaussians.empty(), key, k_rgb, sky.colors(key))
        views = compare_views(truth, {"plain": drawn_by(start), "optimised": drawn_by(fitted)}, near_views(), args.novel, log)
        row = {"steps": steps, "gaussians": r.gaussians, "ms": r.ms, "key_before": r.psnr_before, "key_after": r.psnr_after}
        row |= {k: v for k, v in summarise([], views).items() if k != "chunks"}
        log(f"  single keyframe, {steps} steps: {r.ms:.0f} ms, keyframe PSNR {r.psnr_before:.2f} -> {r.psnr_after:.2f} dB, "
            f"held-out PSNR median {row['novel_psnr_plain_med']:.2f} -> {row['novel_psnr_optimised_med']:.2f} dB, "
            f"sharpness {row['sharp_plain_med']:.2f} -> {row['sharp_optimised_med']:.2f}")
        rows.append(row)
    return rows


def summarise(chunks: list[dict], views: list[dict]) -> dict:
    out: dict = {"chunks": len(chunks)}
    if chunks:
        out |= {
            "ms_per_chunk_med": float(np.median([c["ms"] for c in chunks])),
            "ms_per_chunk_max": float(np.max([c["ms"] for c in chunks])),
            "ms_per_step_med": float(np.median([c["ms_per_step"] for c in chunks])),
            "keyframe_gain_db_med": float(np.median([c["gain_db"] for c in chunks])),
            "kept": sum(c["kept"] for c in chunks),
        }
    if views:
        p0, p1 = (np.array([v[f"psnr_{n}"] for v in views]) for n in ("plain", "optimised"))
        out |= {
            "views": len(views),
            "novel_psnr_plain_med": float(np.median(p0)),
            "novel_psnr_optimised_med": float(np.median(p1)),
            "novel_psnr_delta_med": float(np.median(p1 - p0)),
            "novel_psnr_delta_min": float(np.min(p1 - p0)),
            "ssim_plain_med": float(np.median([v["ssim_plain"] for v in views])),
            "ssim_optimised_med": float(np.median([v["ssim_optimised"] for v in views])),
            "sharp_plain_med": float(np.median([v["sharp_plain"] for v in views])),
            "sharp_optimised_med": float(np.median([v["sharp_optimised"] for v in views])),
        }
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", default="100", help="comma-separated step counts, one optimised walk each")
    ap.add_argument("--biome", default="forest")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--distance", type=float, default=8.0, help="metres walked along +z")
    ap.add_argument("--stop-m", type=float, default=4.0, help="the player stands every this many metres")
    ap.add_argument("--stop-timeout-s", type=float, default=120.0)
    ap.add_argument("--novel", type=int, default=8, help="held-out views")
    ap.add_argument("--offset", type=float, default=1.0, help="held-out views up to this far off the line (m)")
    ap.add_argument("--resolution", default="640x360")
    ap.add_argument("--renderer", default="auto", help="the worlds' renderer (auto: gsplat on CUDA)")
    ap.add_argument("--rasteriser", choices=["gsplat", "dense", "windowed"], default="gsplat",
                    help="the optimiser's: gsplat (CUDA), or plain torch on any machine: dense (tiny keyframes only) or windowed")
    ap.add_argument("--config", action="append", default=[], help="WorldConfig override key=value (JSON value)")
    ap.add_argument("--optimise", action="append", default=[], metavar="KEY=VALUE",
                    help="OptimiseSettings override, e.g. max_shrink=0.7 or ssim_weight=0 (repeatable)")
    ap.add_argument("--quick", action="store_true", help="32x18 keyframes, 20 steps, one stop, 2 views at 160x90 (a smoke test)")
    ap.add_argument("--single", action="store_true", help="one keyframe's chunk fitted alone, views inside what it saw (no walk)")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    args.steps = [int(s) for s in str(args.steps).split(",")]
    args.config_overrides = config_overrides(args.config)
    args.optimise_overrides = config_overrides(args.optimise)
    if args.quick:
        args.config_overrides |= {"keyframe_width": 32, "keyframe_height": 18}
        args.steps, args.distance, args.novel, args.resolution = [20], 0.0, 2, "160x90"
    args.width, args.height = (int(v) for v in args.resolution.lower().split("x"))
    return args


CHUNK_COLUMNS = [("chunk", "chunk"), ("gaussians", "Gaussians"), ("fixed", "scene drawn"), ("keyframes", "keyframes"),
                 ("ms", "ms"), ("ms_per_step", "ms/step"), ("psnr_before", "PSNR before"), ("psnr_after", "PSNR after"),
                 ("gain_db", "gain dB"), ("kept", "kept")]
VIEW_COLUMNS = [("s", "s m"), ("yaw_deg", "yaw"), ("pitch_deg", "pitch"), ("psnr_plain", "PSNR plain"),
                ("psnr_optimised", "PSNR optimised"), ("ssim_plain", "SSIM plain"), ("ssim_optimised", "SSIM optimised"),
                ("sharp_plain", "sharp plain"), ("sharp_optimised", "sharp optimised")]


SINGLE_COLUMNS = [("steps", "steps"), ("gaussians", "Gaussians"), ("ms", "ms"), ("key_before", "keyframe PSNR before"),
                  ("key_after", "after"), ("novel_psnr_plain_med", "held-out PSNR before"), ("novel_psnr_optimised_med", "after"),
                  ("novel_psnr_delta_min", "worst view gain"), ("ssim_plain_med", "SSIM before"), ("ssim_optimised_med", "after"),
                  ("sharp_plain_med", "sharpness before"), ("sharp_optimised_med", "after")]


def main(argv=None) -> None:
    args = parse_args(argv)
    info = machine()
    print(describe_machine(info))
    if args.single:
        rows = single(args)
        print(format_table(rows, SINGLE_COLUMNS))
        write_json(args.json_path, {"machine": info, "settings": {k: v for k, v in vars(args).items() if k != "config"}, "single": rows})
        return
    report = run(args)
    for r in report["runs"]:
        s = r["summary"]
        print(f"\n{r['steps']} steps (warm-up {r['warm_up_s']:.1f} s):")
        print(format_table(r["chunks"], CHUNK_COLUMNS))
        print(format_table(r["views"], VIEW_COLUMNS))
        if r["chunks"]:
            print(f"ms per chunk: median {s['ms_per_chunk_med']:.0f} (max {s['ms_per_chunk_max']:.0f}), "
                  f"{s['ms_per_step_med']:.2f} ms/step; keyframe PSNR gain median {s['keyframe_gain_db_med']:+.2f} dB; "
                  f"kept {s['kept']} of {s['chunks']}")
        if r["views"]:
            print(f"held-out views: PSNR median {s['novel_psnr_plain_med']:.2f} -> {s['novel_psnr_optimised_med']:.2f} dB "
                  f"(per view median {s['novel_psnr_delta_med']:+.2f}, worst {s['novel_psnr_delta_min']:+.2f}); "
                  f"SSIM {s['ssim_plain_med']:.3f} -> {s['ssim_optimised_med']:.3f}; "
                  f"sharpness {s['sharp_plain_med']:.2f} -> {s['sharp_optimised_med']:.2f}")
    write_json(args.json_path, {"machine": info, "settings": {k: v for k, v in vars(args).items() if k != "config"}, **report})
    failed = [r["steps"] for r in report["runs"] if not r["chunks"] or r["stats"]["jobs_failed"]]
    if failed:  # a broken fit fails its jobs (the world goes on): say so in the exit status
        print(f"FAILED: no chunk optimised, or jobs failed (see the log above), with --steps {failed}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
