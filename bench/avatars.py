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

``--loop`` measures what one player moving costs the others, through the session's real
frame clock (:class:`runtime.frame_loop.FrameLoop`) over a generated world (CPU renderer;
pictures go to a sink that drops them: encoding is not measured). Four sessions tick in
turn, so a busy machine slows them alike: a still player watching the mover walk (in
view), one the mover walks behind (out of view), and the mover alone at each place. Each
tick (moving players, rendering and drawing every due view) is timed; the still player's
cost is a session's time less that of the mover alone at the same place. The pictures each
session made are counted by how (``worldstream_pictures_total``: rendered, avatars, repeated).

    .venv/bin/python -m bench.avatars --loop --frames 30  # 640x360, 30 ticks
"""

from __future__ import annotations

import argparse
import math
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


class _DroppingVideo:
    """A player's video that takes every picture and drops it (the encoder is not measured)."""

    ready, closed, end_reason = True, False, ""

    def __init__(self) -> None:
        self.buffer: np.ndarray | None = None

    def slot(self, nbytes: int) -> "_DroppingVideo":
        if self.buffer is None or self.buffer.size != nbytes:
            self.buffer = np.empty(nbytes, np.uint8)
        return self

    def fill(self, picture: np.ndarray) -> object:
        return picture

    def give_up(self) -> None:
        pass

    def offer(self, *args) -> None:
        pass


def _quat_wxyz(R: np.ndarray) -> tuple[float, float, float, float]:
    """A rotation matrix ``[3, 3]`` as a unit quaternion (w, x, y, z)."""
    r = np.asarray(R, np.float64)
    w = math.sqrt(max(0.0, 1 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1 + r[0, 0] - r[1, 1] - r[2, 2])) / 2, r[2, 1] - r[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1 - r[0, 0] + r[1, 1] - r[2, 2])) / 2, r[0, 2] - r[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1 - r[0, 0] - r[1, 1] + r[2, 2])) / 2, r[1, 0] - r[0, 1])
    return (w, x, y, z)


def _head_pose(player, seq: int, pose: Pose) -> None:
    """Give ``player`` an absolute head pose, as a VR client sends every frame."""
    from protocol import messages as m

    player.on_head_pose(m.HeadPose(seq=seq, position=tuple(map(float, pose.position)), orientation=_quat_wxyz(pose.c2w[:3, :3])))


def loop_main(args, width: int, height: int) -> None:
    """``--loop``: the still player's cost per tick through FrameLoop (see the module doc)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from protocol import messages as m
    from runtime.frame_loop import FrameLoop
    from runtime.metrics import ServerMetrics
    from runtime.player import Player
    from runtime.world import PlayerState, World, WorldConfig
    from runtime.world.render import create_renderer

    world = World(WorldConfig(name="bench-avatars", seed=3), renderer=create_renderer("cpu"))
    executor = ThreadPoolExecutor(1)
    try:
        spawn = world.spawn_pose()
        world.update([PlayerState("bench", spawn)])
        world.wait_idle(600)
        view = m.View(width=width, height=height)

        def player(pid: str) -> Player:
            p = Player(pid, pid, view, (width, height), spawn, lambda msg: None)
            p.video = _DroppingVideo()
            return p

        def ahead(pose: Pose, metres: float, right: float = 0.0) -> Pose:
            out = Pose(pose.position.copy(), pose.yaw, 0.0)
            out.position[0] += metres * np.sin(pose.yaw) + right * np.cos(pose.yaw)
            out.position[2] += metres * np.cos(pose.yaw) - right * np.sin(pose.yaw)
            return out

        # The mover walks sideways 3 m ahead of the still player (in view), or 3 m behind it
        # (out of view); each alone too, so the still player's cost compares like with like.
        scenes = {"in_view": ("still", 3.0), "in_view_alone": (None, 3.0), "out_of_view": ("still", -3.0), "out_of_view_alone": (None, -3.0)}

        def made(metrics: ServerMetrics) -> dict[str, float]:
            return {how: metrics.registry.get_sample_value("worldstream_pictures_total", {"how": how}) or 0.0 for how in ("rendered", "avatars", "repeated")}

        async def run() -> tuple[dict[str, list[float]], dict[str, dict[str, float]]]:
            loops, times, counted = {}, {name: [] for name in scenes}, {}
            for name, (still, _) in scenes.items():
                players = {"mover": player("mover")} | ({still: player(still)} if still else {})
                loops[name] = FrameLoop(name, world, players, 30.0, executor, ServerMetrics())
            for tick in range(args.frames + 3):
                for name, (still, distance) in scenes.items():
                    players = loops[name].players
                    _head_pose(players["mover"], tick, ahead(spawn, distance, right=-1.0 + 0.05 * tick))
                    if still:
                        _head_pose(players[still], tick, spawn)
                    if tick == 3:  # the first ticks render everything (and compile)
                        counted[name] = made(loops[name].metrics)
                    t0 = time.perf_counter()
                    await loops[name].tick()
                    if tick >= 3:
                        times[name].append((time.perf_counter() - t0) * 1e3)
            return times, {name: {how: n - counted[name][how] for how, n in made(loop.metrics).items()} for name, loop in loops.items()}

        times, pictures = asyncio.run(run())
    finally:
        executor.shutdown()
        world.close()
    p50 = {name: percentile(t, 50) for name, t in times.items()}
    row = {"size": f"{width}x{height}", "ticks": args.frames, **{f"{name}_tick_p50_ms": v for name, v in p50.items()}}
    print(describe_machine())
    print(f"{row['size']}, {args.frames} ticks, FrameLoop.tick p50:")
    for name in ("out_of_view", "in_view"):
        alone = p50[f"{name}_alone"]
        row[f"still_{name}_ms"] = p50[name] - alone
        print(
            f"  mover {name.replace('_', ' ')} of a still player: {p50[name]:.2f} ms, mover alone there {alone:.2f} ms "
            f"(still player's cost {p50[name] - alone:+.2f} ms)"
        )
    row["pictures"] = pictures
    for name in ("out_of_view", "in_view"):
        print(f"  pictures made with the mover {name.replace('_', ' ')}: " + ", ".join(f"{how} {n:.0f}" for how, n in pictures[name].items()))
    write_json(args.json, {"machine": machine(), "rows": [row]})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="640x360", help="picture WxH (default 640x360)")
    parser.add_argument("--avatars", type=int, default=8, help="other players in view (default 8)")
    parser.add_argument("--frames", type=int, default=60, help="frames timed (default 60)")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    parser.add_argument("--loop", action="store_true", help="a still player's cost through the frame clock while another moves")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.loop:
        return loop_main(args, width, height)

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
