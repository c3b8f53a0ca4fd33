"""Where the GPU streaming path spends its time: torch profiler over raw gsplat and ``submit_video``.

``bench/gpu_stream.py`` says *how much* the runtime keeps of raw ``gsplat.rasterization``;
this script says *why*: for each batch size it profiles a run of raw calls and a run of
pipelined ``submit_video`` calls (as the server issues them) and prints the ops by host
time and by device time, plus the wall time per call.

    python3 -m bench.gpu_profile --batches 1,32 --calls 200          # GPU machine
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.gpu_stream import SKY, load_scene, player_cameras


def profile(label: str, fn, calls: int, torch, rows: int, trace: Path | None = None) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / calls * 1e3
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    if trace is not None:
        trace.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace))
    averages = prof.key_averages()
    print(f"\n## {label}: {wall:.3f} ms per call (unprofiled wall)")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=rows))
    print(averages.table(sort_by="self_cuda_time_total", row_limit=rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", type=Path, help="scene file from gpu_stream.py --export-scene (else built: needs numba)")
    ap.add_argument("--views", type=int, default=7)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--rows", type=int, default=18)
    ap.add_argument("--trace", type=Path, help="also write Chrome traces of the runs into this folder")
    args = ap.parse_args()

    import torch

    from bench.gpu_timing import PipelinedVideo, raw_rasterize
    from runtime.world.render.gsplat_renderer import GsplatRenderer

    if args.scene:
        scene = load_scene(args.scene)
    else:
        from bench.synthetic import scene_from_chunks, typical_world

        scene = scene_from_chunks(typical_world(num_views=args.views, width=320, height=180, seed=0))
    renderer = GsplatRenderer()
    snap = scene.snapshot()
    for n in (int(b) for b in args.batches.split(",")):
        cams = player_cameras(n)
        video = PipelinedVideo(renderer, snap, cams, SKY)
        traces = (args.trace / f"raw_{n}.json", args.trace / f"video_{n}.json") if args.trace else (None, None)
        profile(f"raw rasterization, batch {n}", raw_rasterize(renderer, snap, cams, torch), args.calls, torch, args.rows, traces[0])
        profile(f"submit_video pipelined, batch {n}", video, args.calls, torch, args.rows, traces[1])
        video.drain()

if __name__ == "__main__":
    main()
