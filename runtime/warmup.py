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
    world = World(config, generator=create_generator(generator_name), renderer=renderer)
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
        world.submit_video(cameras).wait()  # the stream's I420 path
    finally:
        world.close()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runtime.warmup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--renderer", default="auto", choices=("auto", "cpu", "gsplat"))
    parser.add_argument("--generator", default="procedural")
    args = parser.parse_args(argv)
    seconds = warm_up(create_renderer(args.renderer), args.generator)
    print(f"kernels compiled and cached in {seconds:.1f} s")


if __name__ == "__main__":
    main()
