"""Frame-memory retrieval and reconstruction timings on synthetic data.

Builds memories of 100 / 1,000 / 10,000 frames taken along one long random-walk
trajectory (320x180 depth, one point per 4x4 pixels), then times queries from
random poses near the trajectory three ways:

* ``index``: the spatial grid (what :meth:`FrameMemory.retrieve` does);
* ``scan``: no grid — distance and frustum tests over every frame, then the same projection;
* ``all-points``: Lyra-style, every cached point of every frame projected (small sizes only).

Also times :func:`reconstruct` on 4 views at 320x180. Prints a table; ``--json PATH``
writes the numbers. Timings are wall-clock on whatever cores are free: compare
ratios within one run.

    .venv/bin/python -m bench.retrieval [--sizes 100 1000 10000] [--queries 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from runtime.world.camera import Cameras, Pose
from runtime.world.keyframes.frames import Frame
from runtime.world.keyframes.memory import FrameMemory
from runtime.world.keyframes.reconstruct import reconstruct

W, H = 320, 180
FOV = math.radians(75)
EYE_HEIGHT = 1.6


def depth_templates(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Camera-space depth maps ``[H, W]``: ground 1.6 m below, a wall at 8-60 m, sky above it.

    The same few maps are reused by every frame (posed differently) to keep memory small.
    """
    K = Pose().camera(W, H, FOV).K[0]
    v, u = np.mgrid[0:H, 0:W] + 0.5
    ray_y = (v - K[1, 2]) / K[1, 1]
    out = []
    for _ in range(count):
        wall = rng.uniform(8.0, 60.0)
        wall_top = rng.uniform(3.0, 20.0)  # metres above the eye
        ground = np.where(ray_y > 1e-6, EYE_HEIGHT / np.maximum(ray_y, 1e-6), np.inf)
        d = np.minimum(ground, wall)
        d = np.where((d >= wall) & (-ray_y * wall > wall_top), np.inf, d)  # above the wall: sky
        out.append(d.astype(np.float32))
    return out


def trajectory(n: int, rng: np.random.Generator) -> list[Pose]:
    """A walk of ``n`` keyframes ~1 m apart, heading drifting smoothly, looking around it."""
    pos = np.zeros(3)
    heading = 0.0
    poses = []
    for _ in range(n):
        heading += rng.normal(0.0, 0.15)
        pos = pos + np.array([math.sin(heading), 0.0, math.cos(heading)]) * rng.uniform(0.6, 1.4)
        poses.append(Pose(pos.copy(), yaw=heading + rng.normal(0.0, 0.6), pitch=rng.normal(-0.05, 0.1)))
    return poses


def build_memory(poses: list[Pose], templates: list[np.ndarray], rgb: np.ndarray) -> tuple[FrameMemory, float]:
    memory = FrameMemory(point_stride=4, cell_size=8.0)
    K = Pose().camera(W, H, FOV).K[0]
    t0 = time.perf_counter()
    for i, pose in enumerate(poses):
        memory.add(Frame(i, rgb, templates[i % len(templates)], pose.w2c, K))
    return memory, time.perf_counter() - t0


def all_points_query(memory: FrameMemory, cam: Cameras, k: int) -> list[int]:
    """Lyra-style: project every cached point of every frame (no distance or frustum test)."""
    frames, _ = memory.retrieve_with_coverage(cam, k, use_index=False, cull=False)
    return [f.id for f in frames]


def percentiles(ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--all-points-max", type=int, default=10000, help="largest memory to run all-points on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    templates = depth_templates(8, rng)
    rgb = np.full((H, W, 3), 127, np.uint8)  # shared by every frame
    poses = trajectory(max(args.sizes), rng)
    results: dict = {"retrieval": [], "reconstruct": {}}

    print(f"retrieval, {W}x{H} frames, point_stride 4, k=5, max_distance 60 m, {args.queries} queries")
    print("(ms per query; 'select' = finding the candidate frames/tiles only, the rest is projection + set cover)")
    print(f"{'frames':>7} {'build ms/frame':>14} {'<=60m':>5} {'proj':>4} {'index p50':>9} {'p95':>6} "
          f"{'scan p50':>8} {'p95':>6} {'select idx':>10} {'scan':>6} {'all-pts p50':>11} {'p95':>7}")
    for n in args.sizes:
        memory, build_s = build_memory(poses[:n], templates, rgb)
        qrng = np.random.default_rng(args.seed + 1)
        cams = []
        for _ in range(args.queries):
            base = poses[int(qrng.integers(n))]
            pos = base.position + qrng.normal(0.0, 2.0, 3) * np.array([1.0, 0.0, 1.0])
            cams.append(Pose(pos, yaw=float(qrng.uniform(-math.pi, math.pi))).camera(W, H, FOV))
        memory.retrieve(cams[0])  # warm-up
        centres = np.stack([f.center for f in memory.frames()])
        timings: dict[str, list[float]] = {"index": [], "scan": [], "all": [], "sel_index": [], "sel_scan": []}
        candidates, projected = [], []
        for cam in cams:
            t0 = time.perf_counter()
            a, _ = memory.retrieve_with_coverage(cam, k=5)
            t1 = time.perf_counter()
            b, _ = memory.retrieve_with_coverage(cam, k=5, use_index=False)
            t2 = time.perf_counter()
            timings["index"].append((t1 - t0) * 1e3)
            timings["scan"].append((t2 - t1) * 1e3)
            assert [f.id for f in a] == [f.id for f in b], "index and scan disagree"
            t0 = time.perf_counter()
            cand = memory._candidates(cam, 60.0, use_index=True)
            t1 = time.perf_counter()
            memory._candidates(cam, 60.0, use_index=False)
            t2 = time.perf_counter()
            timings["sel_index"].append((t1 - t0) * 1e3)
            timings["sel_scan"].append((t2 - t1) * 1e3)
            projected.append(len(cand.frames))
            candidates.append(int((np.linalg.norm(centres - cam.centers[0], axis=1) <= 60.0).sum()))
        if n <= args.all_points_max:
            for cam in cams[: max(3, args.queries // 12)]:
                t0 = time.perf_counter()
                all_points_query(memory, cam, 5)
                timings["all"].append((time.perf_counter() - t0) * 1e3)
        row = {
            "frames": n,
            "build_ms_per_frame": build_s * 1e3 / n,
            "frames_within_60m_mean": float(np.mean(candidates)),
            "frames_projected_mean": float(np.mean(projected)),
            "select_index_ms": percentiles(timings["sel_index"]),
            "select_scan_ms": percentiles(timings["sel_scan"]),
            "index_ms": percentiles(timings["index"]),
            "scan_ms": percentiles(timings["scan"]),
            "all_points_ms": percentiles(timings["all"]) if timings["all"] else None,
        }
        results["retrieval"].append(row)
        allp = f"{row['all_points_ms'][0]:11.1f} {row['all_points_ms'][1]:7.1f}" if timings["all"] else f"{'-':>11} {'-':>7}"
        print(f"{n:7d} {row['build_ms_per_frame']:14.2f} {row['frames_within_60m_mean']:5.0f} "
              f"{row['frames_projected_mean']:4.0f} {row['index_ms'][0]:9.1f} {row['index_ms'][1]:6.1f} "
              f"{row['scan_ms'][0]:8.1f} {row['scan_ms'][1]:6.1f} {row['select_index_ms'][0]:10.2f} "
              f"{row['select_scan_ms'][0]:6.2f} {allp}")
        del memory

    # Reconstruction: 4 overlapping views of the template world, empty scene.
    K = Pose().camera(W, H, FOV).K[0]
    views = [Pose(np.array([0.5 * i, 0.0, 0.0]), yaw=0.3 * i) for i in range(4)]
    cams4 = Cameras(np.stack([p.w2c for p in views]), np.repeat(K[None], 4, 0), W, H)
    depth4 = np.stack([templates[i] for i in range(4)]) * (1 + 0.01 * rng.random((4, H, W))).astype(np.float32)
    rgb4 = rng.integers(0, 256, (4, H, W, 3), dtype=np.uint8)
    reconstruct(rgb4, depth4, cams4, None)  # warm-up (numba compile / cache load)
    ms, count = [], 0
    for _ in range(20):
        t0 = time.perf_counter()
        count = len(reconstruct(rgb4, depth4, cams4, None))
        ms.append((time.perf_counter() - t0) * 1e3)
    alpha_ms = []
    half = np.zeros((4, H, W), np.float32)
    half[:, :, : W // 2] = 1.0
    for _ in range(20):
        t0 = time.perf_counter()
        reconstruct(rgb4, depth4, cams4, half)
        alpha_ms.append((time.perf_counter() - t0) * 1e3)
    results["reconstruct"] = {
        "views": 4, "width": W, "height": H, "stride": 2, "gaussians": count,
        "empty_scene_ms": percentiles(ms), "half_covered_ms": percentiles(alpha_ms),
    }
    print(f"\nreconstruct 4 views {W}x{H}, stride 2: {count} Gaussians, "
          f"p50 {percentiles(ms)[0]:.1f} ms, p95 {percentiles(ms)[1]:.1f} ms (empty scene); "
          f"half covered p50 {percentiles(alpha_ms)[0]:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
