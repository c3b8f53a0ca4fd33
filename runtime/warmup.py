"""Compile every numba kernel and warm the renderer before the first player arrives.

numba compiles on first call and caches the machine code under ``__pycache__``; the
first start of a fresh install would otherwise make the first player wait tens of seconds
(generator, reconstruction, memory and renderer kernels) while the page shows nothing.
``scripts/setup`` runs this once, so a fresh server starts warm; the server runs it again
at start-up (about a second with the cache filled) to load the kernels and renderer caches.

    .venv/bin/python -m runtime.warmup [--renderer auto|cpu|gsplat] [--generator NAME]
"""

from __future__ import annotations

import argparse
import logging
import math
import time

import numpy as np

from runtime.world.camera import Pose
from runtime.world.generators import create_generator
from runtime.world.movement.motion import MoveInput
from runtime.world.render import create_renderer
from runtime.world.render.avatars import Avatar, avatar_color, draw_avatars
from runtime.world.world import PlayerState, World, WorldConfig

log = logging.getLogger("worldstream.warmup")


def warm_up(renderer=None, generator_name: str = "procedural", timeout_s: float = 300.0) -> float:
    """Generate, reconstruct, retrieve and render one tiny throwaway world; returns seconds taken.

    ``renderer`` is the server's own renderer (so its caches warm too), or None for ``auto``.
    Nothing is written to disk but numba's cache.
    """
    started = time.perf_counter()
    renderer = renderer if renderer is not None else create_renderer("auto")
    config = WorldConfig(name="warmup", keyframe_width=64, keyframe_height=36)
    # Nothing streams yet, so generation need not give way (yield_cpu): on a busy machine a
    # yielding worker got almost no CPU, and the server's start waited minutes for it.
    world = World(config, generator=create_generator(generator_name), renderer=renderer, yield_cpu=False)
    try:
        spawn = world.spawn_pose()
        world.update([PlayerState("warmup", spawn)])
        if not world.wait_idle(timeout_s):
            log.warning("warm-up: generation did not finish in %.0f s", timeout_s)
        # A second, moved player exercises retrieval from memory and the revisit check.
        ahead = Pose(spawn.position + np.array([0.0, 0.0, 6.0], np.float32), math.pi / 3, 0.0)
        world.update([PlayerState("warmup", ahead, velocity=np.array([0.0, 0.0, 1.5], np.float32))])
        world.wait_idle(timeout_s)
        world.move(spawn, MoveInput(forward=1.0), 1 / 30)  # the collision kernels every player step uses
        cameras = spawn.camera(64, 36)
        world.render(cameras)
        frames = world.submit_video(cameras).wait()  # the stream's I420 path
        warm_stream_extras(world, spawn, frames.picture(0), cameras)
    finally:
        world.close()
    return time.perf_counter() - started


def warm_stream_extras(world: World, spawn: Pose, picture: np.ndarray, cameras) -> None:
    """The kernels of the frame clock's render thread that a lone walking player does not
    reach: flying and a VR head pose (the sphere collision checks) and other players drawn
    into a view (the avatar kernels). Unwarmed, the first head pose or the first avatar in
    view compiled them in the render thread, and every world's frames stopped meanwhile
    (0.7 s on a quiet CPU-2, 13 s on a loaded one; ``docs/benchmarks.md``)."""
    world.move(spawn, MoveInput(forward=1.0, up=1.0, fly=True), 1 / 30)
    ahead = Pose(spawn.position + np.array([0.0, -0.5, 0.8], np.float32), spawn.yaw, spawn.pitch)
    world.move_head(spawn, ahead)
    # Near enough for every shape and the name tag, in front of the camera.
    other = Avatar(tuple(float(v) for v in spawn.position + np.array([0.0, 0.0, 3.0], np.float32)), math.pi, "warm-up", avatar_color("warm-up"))
    draw_avatars(picture, cameras.width, cameras.height, cameras.w2c[0], cameras.K[0], [other])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runtime.warmup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--renderer", default="auto", choices=("auto", "cpu", "gsplat"))
    parser.add_argument("--generator", default="procedural")
    args = parser.parse_args(argv)
    seconds = warm_up(create_renderer(args.renderer), args.generator)
    print(f"kernels compiled and cached in {seconds:.1f} s")


if __name__ == "__main__":
    main()
