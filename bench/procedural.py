"""Benchmark the procedural generator: views/s and ms per chunk, after JIT warm-up.

    .venv/bin/python -m bench.procedural                      # 320x180 and 640x360, 1 and 4 views
    .venv/bin/python -m bench.procedural --cold               # also time a from-scratch JIT compile
    .venv/bin/python -m bench.procedural --png /tmp           # save one image per biome
    .venv/bin/python -m bench.procedural --json out.json

Cameras stand at the spawn and a few metres around it, looking all round, so a chunk mixes
near ground, objects, far hills and sky like the world's keyframe chunks do.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import tempfile
import time
import zlib
from pathlib import Path


def _save_png(path: Path, img) -> None:
    """Write an ``[H, W, 3]`` uint8 image as PNG with the standard library only."""
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="320x180,640x360", help="comma-separated WxH")
    ap.add_argument("--views", default="1,4", help="comma-separated views per chunk")
    ap.add_argument("--captions", default=",forest,city", help="comma-separated captions ('' = meadow)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per case (best is reported)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cold", action="store_true", help="compile into an empty numba cache to time a cold JIT")
    ap.add_argument("--png", type=Path, help="save procedural_<biome>.png (two views each) in this folder")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()

    if args.cold:
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-cold-")

    import numba
    import numpy as np

    from runtime.world.camera import Cameras, Pose
    from runtime.world.generators.base import CancelToken, GenerationRequest
    from runtime.world.generators.procedural import ProceduralGenerator

    gen = ProceduralGenerator()
    t0 = time.perf_counter()
    warm = gen.warmup()
    print(f"warm-up (JIT {'compile, empty cache' if args.cold else 'compile or cache load'}): {warm:.2f} s; "
          f"numba threads {numba.get_num_threads()}, layer {numba.threading_layer()}")

    def cameras(n: int, w: int, h: int) -> Cameras:
        poses = [
            Pose(np.array([3.0 * math.sin(k), 0.0, 3.0 * math.cos(k)]), yaw=k * 2 * math.pi / max(n, 1) + 0.3, pitch=-0.08)
            for k in range(n)
        ]
        return Cameras.concat([p.camera(w, h, math.radians(75.0)) for p in poses])

    rows = []
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    views = [int(v) for v in args.views.split(",")]
    captions = args.captions.split(",")
    print(f"{'caption':>8} {'size':>9} {'views':>5} {'ms/chunk':>9} {'views/s':>8} {'CPU ms':>8}")
    for caption in captions:
        for w, h in sizes:
            for n in views:
                cams = cameras(n, w, h)
                req = GenerationRequest(cameras=cams, caption=caption, seed=args.seed)
                best, best_cpu = math.inf, math.inf
                for _ in range(args.repeat):
                    c0, t0 = time.process_time(), time.perf_counter()
                    gen.generate(req, lambda f, m: None, CancelToken())
                    best = min(best, time.perf_counter() - t0)
                    best_cpu = min(best_cpu, time.process_time() - c0)
                row = {
                    "caption": caption or "meadow", "width": w, "height": h, "views": n,
                    "ms_per_chunk": best * 1e3, "views_per_s": n / best, "cpu_ms": best_cpu * 1e3,
                }
                rows.append(row)
                print(f"{row['caption']:>8} {w:>4}x{h:<4} {n:>5} {row['ms_per_chunk']:>9.0f} {row['views_per_s']:>8.2f} {row['cpu_ms']:>8.0f}")

    if args.png:
        args.png.mkdir(parents=True, exist_ok=True)
        for caption in ("", "forest", "desert", "snow", "city", "beach"):
            poses = [Pose(np.zeros(3), yaw=0.0, pitch=-0.02), Pose(np.array([6.0, 0.0, 4.0]), yaw=math.radians(150), pitch=-0.06)]
            cams = Cameras.concat([p.camera(640, 360, math.radians(75.0)) for p in poses])
            res = gen.generate(GenerationRequest(cameras=cams, caption=caption, seed=args.seed), lambda f, m: None, CancelToken())
            path = args.png / f"procedural_{caption or 'meadow'}.png"
            _save_png(path, np.concatenate(list(res.rgb), axis=0))
            print(f"saved {path}")

    if args.json:
        args.json.write_text(json.dumps({"warmup_s": warm, "cold": args.cold, "threads": numba.get_num_threads(), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
