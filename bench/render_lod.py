"""CPU renderer cost against scene size, with level of detail on and off.

A world is walked with generation fast-forwarded (``bench.fidelity``'s walk: every update
waits for its jobs, so the scene does not depend on how busy the CPU is) and its scene kept
at a few points of the walk (cached under ``test-artifacts/render_lod/``, so a rerun only
renders). Each kept scene is then drawn at 640x360 from cameras along the path (forward,
sideways and back), LOD off and on back to back, and per frame the bench prints:

* Gaussians in the scene, in the visible blocks (projected) and splats kept (drawn);
* tile entries (splat x tile pairs the rasteriser blends);
* CPU milliseconds of the rendering thread (``time.thread_time``) with numba on one thread,
  so the number is the work done, not how long other processes held the cores;
* the picture's PSNR against LOD off, and PSNR and sharpness ratio against the generator's
  own picture of the camera (the truth, as in ``bench.fidelity``).

``--scale k`` repeats the kept scene ``k`` times side by side (shifted sideways by the walk's
width), so a 300k-Gaussian walk also measures 1M. PSNR between the LOD-on and LOD-off frames
says what LOD changed in the picture.

    python -m bench.render_lod --distance 12 --config keyframe_width=640 --config keyframe_height=360
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import numba
import numpy as np

from bench.common import describe_machine, format_table
from bench.compare import psnr, sharpness
from bench.fidelity import CAPTIONS, VIEW_FOV, Truth, _fast_forward_walk, config_overrides, eye_pose, make_path
from bench.paced import SimClock
from runtime.world import PlayerState, World, WorldConfig
from runtime.world.gaussians import Gaussians
from runtime.world.render.cpu import CpuRenderer
from runtime.world.scene import Chunk, ChunkSource, SceneSnapshot

CACHE = Path("test-artifacts/render_lod")
SIZE = (640, 360)


def _cache_path(args) -> Path:
    key = json.dumps([args.biome, args.seed, args.distance, args.speed, sorted(args.config), args.keep], sort_keys=True)
    return CACHE / f"walk-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"


def _pack(chunks: tuple[Chunk, ...], prefix: str, out: dict) -> None:
    for k, c in enumerate(chunks):
        g = c.gaussians
        for name in ("means", "quats", "log_scales", "opacity_logits", "colors"):
            out[f"{prefix}{k}_{name}"] = getattr(g, name)


def _unpack(data, prefix: str) -> list[Gaussians]:
    out, k = [], 0
    while f"{prefix}{k}_means" in data:
        out.append(Gaussians(*(data[f"{prefix}{k}_{n}"] for n in ("means", "quats", "log_scales", "opacity_logits", "colors"))))
        k += 1
    return out


def walked_scenes(args, log=print) -> list[tuple[float, list[Gaussians], list[Gaussians]]]:
    """``[(metres walked, scene chunks' Gaussians, far chunks' Gaussians)]`` at ``args.keep``
    fractions of the walk (cached)."""
    path_file = _cache_path(args)
    if path_file.exists():
        data = np.load(path_file)
        return [(float(data[f"s{i}_metres"]), _unpack(data, f"s{i}_c"), _unpack(data, f"s{i}_f")) for i in range(len(args.keep))]
    caption = CAPTIONS.get(args.biome, args.biome)
    config = WorldConfig("render_lod", seed=args.seed, caption=caption, **config_overrides(args.config))
    clock = SimClock()  # the fast-forward walk's: planning independent of the CPU's load
    world = World(config, renderer=CpuRenderer(), clock=clock)
    kept: list[tuple[float, SceneSnapshot]] = []
    t0 = time.monotonic()
    try:
        world.update([PlayerState("p", eye_pose(0.0, 0.0, 0.0, 0.0, args.seed), np.zeros(3, np.float32), VIEW_FOV)])
        world.wait_idle(300.0)
        done = 0.0
        for frac in args.keep:
            metres = frac * args.distance
            if metres > done:
                ff = argparse.Namespace(update_hz=5.0, bootstrap_timeout_s=300.0, causes=False, paced=0.0)
                _fast_forward_walk(ff, world, clock, _Offset(make_path("straight", args.distance, args.seed), done, metres), args.speed, args.seed)
                done = metres
            kept.append((metres, world.scene.snapshot()))
            log(f"# walked {metres:.1f} m: {kept[-1][1].num_gaussians} Gaussians in {len(kept[-1][1].chunks)} chunks "
                f"({time.monotonic() - t0:.0f} s)")
    finally:
        world.close()
    out: dict = {}
    for i, (metres, snap) in enumerate(kept):
        out[f"s{i}_metres"] = np.float32(metres)
        _pack(snap.chunks, f"s{i}_c", out)
        _pack(snap.far, f"s{i}_f", out)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path_file, **out)
    return [(m, [c.gaussians for c in s.chunks], [c.gaussians for c in s.far]) for m, s in kept]


class _Offset:
    """The part ``start..stop`` metres of a path (a walk resumed where it stopped)."""

    def __init__(self, path, start: float, stop: float) -> None:
        self._path, self._start, self.length = path, start, stop - start

    def at(self, s: float):
        return self._path.at(self._start + s)


def scaled(gaussians: list[Gaussians], copies: int, shift_m: float) -> list[Gaussians]:
    """The chunks repeated ``copies`` times, each copy shifted ``shift_m`` further along +x."""
    out = []
    for k in range(copies):
        for g in gaussians:
            means = g.means + np.array([k * shift_m, 0.0, 0.0], np.float32)
            out.append(dataclasses.replace(g, means=means))
    return out


def views(metres: float, seed: int, count: int) -> list:
    """Cameras along the walked path at eye height: forward, sideways and back, 640x360."""
    path = make_path("straight", max(metres, 1.0), seed)
    cams = []
    for k in range(count):
        s = path.length * (k + 0.5) / count
        x, z, yaw = path.at(s)
        turn = (0.0, math.pi / 2, math.pi, -math.pi / 2)[k % 4]
        cams.append(eye_pose(x, z, yaw + turn, 0.0, seed).camera(*SIZE, VIEW_FOV))
    return cams


def _timed(renderer: CpuRenderer, snapshot: SceneSnapshot, cam, sky, repeats: int) -> tuple[float, np.ndarray]:
    """Median thread CPU ms of ``repeats`` renders (one numba thread) and the last frame's RGB."""
    renderer.render(snapshot, cam, sky)  # warm: kernels compiled, scratch buffers sized
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        out = renderer.render(snapshot, cam, sky)
        times.append((time.thread_time() - t0) * 1e3)
    return float(np.median(times)), out.rgb[0]


def measure(args, log=print) -> list[dict]:
    """One row per kept scene, copies and ``lod_px`` setting (0 first: LOD off): medians over
    the views of thread CPU ms, counts, and the picture against LOD off and the generator."""
    caption = CAPTIONS.get(args.biome, args.biome)
    truth = Truth(caption, args.seed)
    sky = truth.generator.sky(caption, args.seed, None)
    rows = []
    threads = numba.get_num_threads()
    for metres, chunks, far in walked_scenes(args, log):
        cams = views(metres, args.seed, args.views)
        truth_rgb = [truth.render(cam)[0][0] for cam in cams] if args.truth else None
        for copies in args.scale:
            parts = scaled(chunks, copies, args.shift_m)
            snap = SceneSnapshot(1, tuple(Chunk.build(i, g, ChunkSource()) for i, g in enumerate(parts)),
                                 tuple(Chunk.build(len(parts) + i, g, ChunkSource()) for i, g in enumerate(far)))
            renderers = {px: CpuRenderer(lod_px=px) for px in [0.0] + args.lod_px}
            t0 = time.thread_time()
            renderers[0.0].prepare(snap.chunks + snap.far)
            prepare_ms = (time.thread_time() - t0) * 1e3
            for r in renderers.values():
                r.prepare(snap.chunks + snap.far)
            frames: dict[float, list] = {px: [] for px in renderers}
            numba.set_num_threads(1)  # thread_time then counts all the work
            try:
                for k, cam in enumerate(cams):
                    for px, r in renderers.items():  # back to back, per view
                        ms, rgb = _timed(r, snap, cam, sky, args.repeats)
                        frames[px].append((ms, rgb, r.last_counts))
            finally:
                numba.set_num_threads(threads)
            for px, got in frames.items():
                counts = [c for _, _, c in got]
                row = {
                    "walked m": metres, "copies": copies, "Gaussians": snap.num_gaussians, "lod px": px,
                    "CPU ms med": round(float(np.median([ms for ms, _, _ in got])), 1),
                    "CPU ms max": round(float(np.max([ms for ms, _, _ in got])), 1),
                    "projected": int(np.median([c.projected for c in counts])),
                    "drawn": int(np.median([c.drawn for c in counts])),
                    "tile entries": int(np.median([c.tile_entries for c in counts])),
                    "coarse blocks": int(np.median([c.coarse_blocks for c in counts])),
                    "PSNR vs off min": round(min(psnr(a[1], b[1]) for a, b in zip(got, frames[0.0])), 1) if px else None,
                }
                if truth_rgb is not None:
                    row["PSNR vs truth med"] = round(float(np.median([psnr(g[1], t) for g, t in zip(got, truth_rgb)])), 2)
                    row["sharpness med"] = round(float(np.median([sharpness(g[1]) / max(sharpness(t), 1e-9) for g, t in zip(got, truth_rgb)])), 3)
                if not px:
                    row["prepare ms"] = round(prepare_ms)
                rows.append(row)
                log(f"  {metres:.0f} m x{copies}: {snap.num_gaussians} Gaussians, lod_px {px}: {row['CPU ms med']} ms, "
                    f"drawn {row['drawn']}")
    return rows


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--biome", default="forest")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--distance", type=float, default=12.0, help="metres walked (fast-forwarded)")
    ap.add_argument("--speed", type=float, default=1.5)
    ap.add_argument("--keep", default="0.5,1", help="fractions of the walk at which the scene is measured")
    ap.add_argument("--scale", default="1", help="comma-separated copies of each kept scene (e.g. 1,3)")
    ap.add_argument("--shift-m", type=float, default=200.0, help="--scale: sideways shift between copies (m)")
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--lod-px", default="1,2,4", help="comma-separated CpuRenderer lod_px settings measured against 0 (off)")
    ap.add_argument("--no-truth", dest="truth", action="store_false", help="skip the generator's pictures (PSNR vs truth)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", action="append", default=[], help="WorldConfig override key=value (JSON value)")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    args.keep = [float(x) for x in args.keep.split(",")]
    args.scale = [int(x) for x in args.scale.split(",")]
    args.lod_px = [float(x) for x in args.lod_px.split(",") if float(x) > 0]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    print(f"# {describe_machine()}")
    rows = measure(args)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    print(format_table(rows, [(k, k) for k in columns]))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
