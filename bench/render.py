"""Renderer benchmark: CPU frame times vs scene size, render_alpha cost, and (``--gsplat``) CUDA timings.

Scenes are synthetic "typical worlds" (:mod:`bench.synthetic`): chunks
of pixel-aligned Gaussians ray-marched from 320x180 views at 75 degrees (the world's
keyframe settings), ~40k Gaussians per chunk. The 3M scene is the 1M world three times
over, 5 cm apart (all of it in view); the 10M scene is ten copies of the 1M world strung
along the path behind the player, as a long walk leaves them.

``--gsplat`` times, per scene, image size (640x360, 1280x720) and batch (1, 8, 32), raw
``gsplat.rasterization`` against the runtime's streaming path (``submit_video``) in the
same run (``bench/gpu_timing.py``), and the PSNR between gsplat and the CPU renderer.

A "frame" is one view of a player turning slowly (yaw += 0.02 rad per frame, so the
sky cache misses every frame, as when turning) from the origin.

    .venv/bin/python -m bench.render                      # CPU table
    .venv/bin/python -m bench.render --quick              # smaller scenes only
    .venv/bin/python -m bench.render --gsplat --json out.json   # on a CUDA machine
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from bench.compare import psnr
from bench.synthetic import scene_from_chunks, translated, typical_world
from runtime.world.camera import Cameras, Pose
from runtime.world.gaussians import Gaussians
from runtime.world.render.cpu import CpuRenderer
from runtime.world.render.projection import visible_blocks
from runtime.world.scene import Scene
from runtime.world.sky import Sky

SKY = Sky()


def build_scenes(quick: bool) -> dict[str, Scene]:
    """Name -> scene. Views are cached between sizes (the larger worlds reuse the smaller's views)."""
    t0 = time.perf_counter()
    views = typical_world(num_views=3 if quick else 24, width=320, height=180, seed=0)
    print(f"# built {len(views)} synthetic views in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    scenes = {"typical-3": scene_from_chunks(views[:3])}
    if quick:
        return scenes
    scenes["typical-8"] = scene_from_chunks(views[::3])
    scenes["typical-24"] = scene_from_chunks(views)
    # ~3M visible: the 1M world three times over, 5 cm apart (denser, all in view).
    offsets = (np.zeros(3, np.float32), np.array([0.05, 0.0, 0.05], np.float32), np.array([-0.05, 0.0, 0.05], np.float32))
    scenes["typical-24x3"] = scene_from_chunks([translated(v, o) for o in offsets for v in views])
    copies: list[Gaussians] = []
    for k in range(10):
        copies += [translated(v, np.array([0.0, 0.0, -250.0 * k], np.float32)) for v in views]
    scenes["path-10x24"] = scene_from_chunks(copies)
    return scenes


def walk(width: int, height: int, frames: int, fov_y: float = math.radians(60.0)) -> list[Cameras]:
    return [Pose(np.zeros(3, np.float32), yaw=0.3 + 0.02 * i, pitch=-0.08).camera(width, height, fov_y) for i in range(frames)]


def scene_stats(renderer: CpuRenderer, scene: Scene, cam: Cameras) -> dict:
    snap = scene.snapshot()
    chunks = snap.visible_chunks(cam)
    packed = [renderer._chunks.get(c) for c in chunks]
    _, in_blocks = visible_blocks(packed, cam)
    alpha = renderer.render(snap, cam, SKY).alpha
    return {
        "total": snap.num_gaussians,
        "chunks": len(snap.chunks),
        "visible_chunks": len(chunks),
        "in_visible_chunks": sum(len(c.gaussians) for c in chunks),
        "in_visible_blocks": in_blocks,
        "coverage": float(alpha.mean()),
    }


def time_frames(fn, cams: list[Cameras]) -> dict:
    """Wall and process-CPU milliseconds per call over ``cams`` (after one warm-up)."""
    fn(cams[0])
    wall, cpu = [], []
    for cam in cams:
        t0, c0 = time.perf_counter(), time.process_time()
        fn(cam)
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    wall_a = np.array(wall)
    return {
        "median_ms": float(np.median(wall_a)),
        "p90_ms": float(np.percentile(wall_a, 90)),
        "fps": float(1e3 / np.median(wall_a)),
        "cpu_ms": float(np.median(cpu)),
    }


def bench_cpu(scenes: dict[str, Scene], frames: int) -> list[dict]:
    import numba

    rows = []
    for name, scene in scenes.items():
        renderer = CpuRenderer()
        snap = scene.snapshot()
        stats = scene_stats(renderer, scene, walk(640, 360, 1)[0])
        for width, height in ((640, 360), (1280, 720)):
            t = time_frames(lambda cam: renderer.render(snap, cam, SKY), walk(width, height, frames))
            rows.append({"scene": name, "size": f"{width}x{height}", "threads": numba.get_num_threads(), **stats, **t})
        t = time_frames(lambda cam: renderer.render_alpha(snap, cam), walk(64, 36, frames))
        rows.append({"scene": name, "size": "64x36 alpha", "threads": numba.get_num_threads(), **stats, **t})
    return rows


def print_cpu(rows: list[dict]) -> None:
    print(f"{'scene':<12} {'total':>9} {'in vis.chunks':>13} {'in vis.blocks':>13} {'cover':>6} "
          f"{'size':<12} {'median ms':>9} {'p90 ms':>7} {'fps':>6} {'cpu ms':>7}")
    for r in rows:
        print(f"{r['scene']:<12} {r['total']:>9,} {r['in_visible_chunks']:>13,} {r['in_visible_blocks']:>13,} "
              f"{r['coverage']:>6.2f} {r['size']:<12} {r['median_ms']:>9.1f} {r['p90_ms']:>7.1f} "
              f"{r['fps']:>6.1f} {r['cpu_ms']:>7.1f}")


GSPLAT_SIZES = ((640, 360), (1280, 720))


def bench_gsplat(scenes: dict[str, Scene], seconds: float) -> list[dict]:
    """Per scene, image size and batch: raw ``gsplat.rasterization`` vs the runtime's
    streaming path (``submit_video``: I420 frames in host memory), same run, same cameras;
    plus the gsplat-vs-CPU-renderer PSNR on one 640x360 view."""
    import torch

    from bench.gpu_timing import raw_vs_runtime
    from runtime.world.render.gsplat_renderer import GsplatRenderer

    renderer = GsplatRenderer()
    rows = []
    for name, scene in scenes.items():
        snap = scene.snapshot()
        cam = walk(640, 360, 1)[0]
        cpu = CpuRenderer().render(snap, cam, SKY)
        gpu = renderer.render(snap, cam, SKY)
        quality = {"psnr_vs_cpu_db": psnr(gpu.rgb, cpu.rgb), "alpha_mae": float(np.abs(gpu.alpha - cpu.alpha).mean())}
        for width, height in GSPLAT_SIZES:
            for batch in (1, 8, 32):
                cams = Cameras.concat(walk(width, height, batch))
                both = raw_vs_runtime(renderer, snap, cams, SKY, seconds, torch)
                row = {"scene": name, "total": snap.num_gaussians, "size": f"{width}x{height}", "batch": batch, **both, **quality}
                row["runtime_ms_per_view"] = both["runtime_ms_per_call"] / batch
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def print_gsplat(rows: list[dict]) -> None:
    print(f"{'scene':<14} {'total':>10} {'size':>9} {'batch':>5} {'raw views/s':>11} {'runtime views/s':>15} "
          f"{'ratio':>5} {'ms/view':>7} {'PSNR vs cpu':>11} {'alpha MAE':>9}")
    for r in rows:
        print(f"{r['scene']:<14} {r['total']:>10,} {r['size']:>9} {r['batch']:>5} {r['raw_views_per_s']:>11.0f} "
              f"{r['runtime_views_per_s']:>15.0f} {r['ratio']:>5.2f} {r['runtime_ms_per_view']:>7.3f} "
              f"{r['psnr_vs_cpu_db']:>11.1f} {r['alpha_mae']:>9.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20, help="frames per measurement")
    parser.add_argument("--quick", action="store_true", help="only the smallest scene")
    parser.add_argument("--gsplat", action="store_true", help="also time the gsplat renderer (CUDA)")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU timings")
    parser.add_argument("--gsplat-seconds", type=float, default=1.0, help="timing window per gsplat measurement")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    scenes = build_scenes(args.quick)
    result: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    if not args.no_cpu:
        result["cpu"] = bench_cpu(scenes, args.frames)
        print_cpu(result["cpu"])
    if args.gsplat:
        result["gsplat"] = bench_gsplat(scenes, args.gsplat_seconds)
        print_gsplat(result["gsplat"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
