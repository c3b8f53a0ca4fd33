"""GPU streaming path benchmark: raw gsplat vs the runtime's ``render_video``, and encoding at scale.

In one run, on one scene (``bench/synthetic.py: typical_world``) and the same cameras
(players at the origin, yaws spread over the circle, 1280x720, 60 deg vertical FOV):

* ``raster``: raw ``gsplat.rasterization(render_mode="RGB")`` views/s for batches of
  1, 8, 32 cameras (scene tensors already on the GPU, timed with synchronisation);
* ``video``: the runtime's ``GsplatRenderer.submit_video`` views/s, pipelined as the
  server's loop can (batch k+1 queued before batch k is waited for), its ratio to
  ``raster``; also blocking ``render_video`` and the old ``render()`` (RGB + depth +
  alpha to pageable memory) for reference; parity of the GPU I420 with the CPU
  conversion of ``render()``'s RGB;
* ``encode``: ms/frame of one 720p stream (I420 in vs RGB in); threads scaling (the
  interpreter lock check: frames/s of 1 thread vs one thread per core on independent
  streams).

How many players' videos the machine's cores carry (encode, RTP, SRTP, UDP in the
server's media workers, < 1% late frames) needs no GPU: ``bench/media.py --until-late``.

Runs without numba too (some GPU images lack it): ``--export-scene FILE`` on a machine
with numba writes the scene, ``--scene FILE`` loads it.

    .venv/bin/python -m bench.gpu_stream --export-scene out/gpu_scene.npz   # here (CPU)
    python3 -m bench.gpu_stream --scene out/gpu_scene.npz --json $OUT/gpu_stream.json  # on the GPU
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _allow_import_without_numba() -> bool:
    """Make ``runtime.world.*`` importable where numba is missing (the package's
    ``__init__`` imports the World, which needs numba; the renderers here do not)."""
    try:
        import numba  # noqa: F401

        return True
    except ImportError:
        pkg = types.ModuleType("runtime.world")
        pkg.__path__ = [str(ROOT / "runtime" / "world")]
        sys.modules["runtime.world"] = pkg
        return False


HAVE_NUMBA = _allow_import_without_numba()

from runtime.world.camera import Cameras, Pose
from runtime.world.gaussians import Gaussians
from runtime.world.scene import ChunkSource, Scene
from runtime.world.sky import Sky

SKY = Sky()
FIELDS = ("means", "quats", "log_scales", "opacity_logits", "colors")


def export_scene(path: Path, views: int) -> None:
    from bench.synthetic import typical_world

    parts = typical_world(num_views=views, width=320, height=180, seed=0)
    arrays = {f"{i}_{f}": getattr(p, f) for i, p in enumerate(parts) for f in FIELDS}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    print(f"wrote {len(parts)} chunks, {sum(len(p.means) for p in parts):,} Gaussians to {path}")


def load_scene(path: Path) -> Scene:
    data = np.load(path)
    scene = Scene()
    for i in range(len(data.files) // len(FIELDS)):
        scene.append(Gaussians(*(data[f"{i}_{f}"] for f in FIELDS)), ChunkSource(job_id=i, generator="synthetic"))
    return scene


def player_cameras(n: int, width: int = 1280, height: int = 720) -> Cameras:
    """``n`` players at the origin looking out at yaws spread over the circle."""
    return Cameras.concat(
        [Pose(np.zeros(3, np.float32), yaw=0.3 + 2 * math.pi * i / n, pitch=-0.08).camera(width, height, math.radians(60)) for i in range(n)]
    )


def bench_render(scene: Scene, batches: list[int], seconds: float) -> dict:
    import torch

    from bench.gpu_timing import raw_vs_runtime, timed
    from runtime.world.render.gsplat_renderer import GsplatRenderer
    from bench.compare import psnr
    from runtime.world.render.video import rgb_to_i420

    renderer = GsplatRenderer()
    snap = scene.snapshot()
    out = {"backend": renderer.video_backend, "gaussians": snap.num_gaussians, "rows": []}
    for n in batches:
        cams = player_cameras(n)
        row = {"batch": n, "visible": len(renderer._visible(snap, cams))}
        both = raw_vs_runtime(renderer, snap, cams, SKY, seconds, torch)
        row["raster_views_per_s"], row["raster_ms_per_call"] = both["raw_views_per_s"], both["raw_ms_per_call"]
        row["video_pipelined_views_per_s"], row["video_pipelined_ms_per_call"] = both["runtime_views_per_s"], both["runtime_ms_per_call"]
        for name, fn, secs in (
            ("video_blocking", lambda: renderer.render_video(snap, cams, SKY), seconds / 2),
            ("render_rgb_depth_alpha", lambda: renderer.render(snap, cams, SKY), seconds / 2),
        ):
            calls, dt = timed(fn, secs, torch)
            row[f"{name}_views_per_s"] = calls * n / dt
            row[f"{name}_ms_per_call"] = dt / calls * 1e3
        row["ratio_video_to_raster"] = both["ratio"]
        # Parity: GPU I420 vs the CPU conversion of render()'s RGB, same cameras.
        video = renderer.render_video(snap, cams[:2] if n > 1 else cams, SKY).i420
        ref = rgb_to_i420(renderer.render(snap, cams[:2] if n > 1 else cams, SKY).rgb)
        diff = np.abs(video.astype(np.int16) - ref.astype(np.int16))
        row["i420_max_diff"] = int(diff.max())
        row["i420_psnr_db"] = psnr(video, ref)
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
    return out


# ------------------------------------------------------------------ encoding
def walk_pictures(scene: Scene, count: int = 16) -> list[np.ndarray]:
    """I420 720p pictures of a player walking and turning (realistic motion for the encoder)."""
    from runtime.world.render import create_renderer
    from runtime.world.render.video import render_video

    cams = Cameras.concat(
        [Pose(np.array([0.0, 0.0, -0.15 * i], np.float32), yaw=0.3 + 0.03 * i, pitch=-0.08).camera(1280, 720, math.radians(60)) for i in range(count)]
    )
    frames = render_video(create_renderer("auto"), scene.snapshot(), cams, SKY)
    pictures = [frames.i420[i].copy() for i in range(count)]
    return pictures + pictures[-2:0:-1]  # forward then back: the loop never cuts


def bench_encode_single(pictures: list[np.ndarray]) -> dict:
    import av

    from runtime.stream.encoder import EncoderSettings, VideoEncoder

    rgb = []
    for p in pictures[:8]:  # RGB versions via libswscale, to time the old path
        frame = av.VideoFrame.from_ndarray(p.reshape(1080, 1280), format="yuv420p")
        rgb.append(frame.to_ndarray(format="rgb24"))
    result = {}
    for name, images, fmt in (("i420_in", pictures, "yuv420p"), ("rgb_in", rgb, "rgb24")):
        enc = VideoEncoder(EncoderSettings(width=1280, height=720, fps=30, bitrate=6_000_000))
        times = []
        for k in range(90):
            t0 = time.perf_counter()
            enc.encode(images[k % len(images)], k * 3000, pixel_format=fmt)
            times.append((time.perf_counter() - t0) * 1e3)
        result[f"{name}_ms"] = float(np.median(times[5:]))
        result["codec_name"] = enc.codec_name
    return result


def bench_threads(pictures: list[np.ndarray], threads: int, seconds: float = 3.0) -> dict:
    """Frames/s of independent streams (thread_count 1 each) on 1 thread vs ``threads`` threads."""
    import threading

    import av

    from runtime.stream.encoder import TIME_BASE

    def run(n: int) -> float:
        counts = [0] * n
        stop = time.perf_counter() + seconds

        def work(slot: int) -> None:
            ctx = av.CodecContext.create("libx264", "w")
            ctx.options = {"preset": "ultrafast", "tune": "zerolatency"}
            ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base, ctx.thread_count = 1280, 720, "yuv420p", TIME_BASE, 1
            ctx.bit_rate = 6_000_000
            ctx.open()
            k = 0
            while time.perf_counter() < stop:
                frame = av.VideoFrame.from_ndarray(pictures[k % len(pictures)].reshape(1080, 1280), format="yuv420p")
                frame.pts = k * 3000
                list(ctx.encode(frame))
                k += 1
            counts[slot] = k

        ts = [threading.Thread(target=work, args=(i,)) for i in range(n)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return sum(counts) / (time.perf_counter() - t0)

    one = run(1)
    many = run(threads)
    return {"threads": threads, "fps_1_thread": one, f"fps_{threads}_threads": many, "speedup": many / one}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export-scene", type=Path, help="write the synthetic scene here and stop (needs numba)")
    ap.add_argument("--views", type=int, default=8, help="chunks (synthetic views) in the exported scene")
    ap.add_argument("--scene", type=Path, help="load the scene from this file (else build it: needs numba)")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=2.0, help="timing window per measurement")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: render,encode")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    if args.export_scene:
        export_scene(args.export_scene, args.views)
        return
    if args.scene:
        scene = load_scene(args.scene)
    else:
        from bench.synthetic import scene_from_chunks, typical_world

        scene = scene_from_chunks(typical_world(num_views=args.views, width=320, height=180, seed=0))
    skip = set(filter(None, args.skip.split(",")))
    from runtime.stream.media_pool import usable_cores

    result: dict = {"machine": {"cores": usable_cores(), "platform": platform.platform(), "numba": HAVE_NUMBA}}

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))

    t0 = time.perf_counter()
    if "render" not in skip:
        result["render"] = bench_render(scene, [int(b) for b in args.batches.split(",")], args.seconds)
        save()
    print(f"# render section done at {time.perf_counter() - t0:.0f} s", flush=True)
    pictures = walk_pictures(scene)
    if "encode" not in skip:
        result["encode_single"] = bench_encode_single(pictures)
        print(json.dumps(result["encode_single"]), flush=True)
        result["threads_scaling"] = bench_threads(pictures, usable_cores())
        print(json.dumps(result["threads_scaling"]), flush=True)
        save()
    print(f"# done at {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
