"""What drawing other players costs the video path: render_video with and without avatars.

One synthetic "typical world" (:mod:`bench.synthetic`), the CPU renderer, one player
turning slowly at the origin (every frame is drawn afresh), and ``--avatars`` others
standing 2-12 m ahead, all in view with their name tags. Timed per frame, interleaved
(a frame without, a frame with), so a busy machine slows both alike:

* ``render``: ``render_video`` alone (the scene to an I420 picture);
* ``avatars``: ``draw_avatars`` on that picture (what the session adds per view);
* their ratio.

    .venv/bin/python -m bench.avatars                    # 640x360, 8 avatars, 60 frames
    .venv/bin/python -m bench.avatars --size 1280x720 --avatars 32 --json out.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import describe_machine, machine, percentile, write_json
from bench.synthetic import scene_from_chunks, typical_world
from runtime.world.camera import Pose
from runtime.world.render.avatars import Avatar, avatar_color, draw_avatars
from runtime.world.render.cpu import CpuRenderer
from runtime.world.render.video import render_video
from runtime.world.sky import Sky


def crowd(count: int, seed: int = 0) -> list[Avatar]:
    """``count`` players 2-12 m ahead of the origin, within the view's width."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(2.0, 12.0, count)
    x = rng.uniform(-0.4, 0.4, count) * z
    return [Avatar((float(x[i]), 0.0, float(z[i])), float(rng.uniform(-3, 3)), f"player {i}", avatar_color(str(i))) for i in range(count)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="640x360", help="picture WxH (default 640x360)")
    parser.add_argument("--avatars", type=int, default=8, help="other players in view (default 8)")
    parser.add_argument("--frames", type=int, default=60, help="frames timed (default 60)")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    scene = scene_from_chunks(typical_world(num_views=3, width=320, height=180, seed=0))
    renderer, sky, others = CpuRenderer(), Sky(), crowd(args.avatars)
    snapshot = scene.snapshot()
    render_video(renderer, snapshot, Pose().camera(width, height), sky)  # compile, warm caches
    render_ms, avatar_ms, drawn = [], [], 0
    for i in range(args.frames):
        cam = Pose(np.zeros(3), yaw=0.02 * i).camera(width, height)
        t0 = time.perf_counter()
        frames = render_video(renderer, snapshot, cam, sky)
        t1 = time.perf_counter()
        drawn = draw_avatars(frames.picture(0), width, height, cam.w2c[0], cam.K[0], others)
        t2 = time.perf_counter()
        render_ms.append((t1 - t0) * 1e3)
        avatar_ms.append((t2 - t1) * 1e3)
    row = {
        "size": f"{width}x{height}", "avatars": args.avatars, "drawn": drawn, "gaussians": snapshot.num_gaussians,
        "render_p50_ms": percentile(render_ms, 50), "avatars_p50_ms": percentile(avatar_ms, 50),
        "avatars_p95_ms": percentile(avatar_ms, 95),
    }
    row["avatars_share"] = row["avatars_p50_ms"] / row["render_p50_ms"]
    print(describe_machine())
    print(
        f"{row['size']}: render_video p50 {row['render_p50_ms']:.2f} ms; {drawn} avatars drawn: "
        f"p50 {row['avatars_p50_ms']:.3f} ms, p95 {row['avatars_p95_ms']:.3f} ms "
        f"({100 * row['avatars_share']:.1f}% of the render)"
    )
    write_json(args.json, {"machine": machine(), "rows": [row]})


if __name__ == "__main__":
    main()
