"""The start-up warm-up (runtime/warmup.py) leaves nothing for the frame clock to compile.

A numba kernel met for the first time compiles where it is called: in the render thread,
that stopped every world's frames for 0.7 s on a quiet CPU-2 (the first head pose of a
teleport flood, the first other player in view). After ``warm_up`` the work a frame tick
does for any player (walking, running, flying, a VR head pose near and far, stereo and
mono views, other players drawn in view) must add no machine code to any kernel: neither
compiled (seconds) nor loaded from numba's on-disk cache (tens of ms, under its compiler
lock), so the test holds whatever the state of that cache.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from numba.core.registry import CPUDispatcher

from runtime.warmup import warm_up
from runtime.world.camera import Cameras, Pose
from runtime.world.generators import create_generator
from runtime.world.movement.motion import MoveInput
from runtime.world.render import create_renderer
from runtime.world.render.avatars import Avatar, avatar_color, draw_avatars, visible_avatars
from runtime.world.world import PlayerState, World, WorldConfig


def _kernels() -> dict[str, CPUDispatcher]:
    """Every numba kernel defined at module level in the project's loaded modules."""
    return {
        f"{name}.{attr}": value
        for name, module in list(sys.modules.items()) if name.split(".")[0] in ("runtime", "protocol")
        for attr, value in list(vars(module).items()) if isinstance(value, CPUDispatcher)
    }


def _machine_code() -> dict[str, int]:
    return {name: len(kernel.overloads) for name, kernel in _kernels().items()}


def test_after_the_warm_up_a_frame_tick_compiles_nothing():
    renderer = create_renderer("cpu")
    warm_up(renderer)
    world = World(WorldConfig(name="after-warm-up", seed=5, keyframe_width=64, keyframe_height=36),
                  generator=create_generator("procedural"), renderer=renderer)
    try:
        spawn = world.spawn_pose()
        world.update([PlayerState("a", spawn)])
        assert world.wait_idle(300)
        before = _machine_code()
        # What one frame tick does for each kind of player:
        pose = spawn
        for move in (MoveInput(forward=1.0, yaw_delta=0.05), MoveInput(forward=1.0, right=0.5, run=True),
                     MoveInput(forward=0.5, up=1.0, fly=True), MoveInput(up=-1.0, fly=True), MoveInput()):
            pose = world.move(pose, move, 1 / 30)
        near = Pose(pose.position + np.array([0.3, 0.0, 0.5], np.float32), pose.yaw + 0.2, -0.1, 0.05)
        far = Pose(np.array([4321.0, -1.6, -2987.0], np.float32), 1.0, 0.0)
        head = world.move_head(pose, near)
        world.move_head(head, far)
        for cameras in (head.camera(320, 180), Cameras.concat([head.camera(160, 90), near.camera(160, 90)])):
            frames = world.submit_video(cameras).wait()
            others = [
                Avatar(tuple(float(v) for v in head.position + np.array([dx, 0.0, dz], np.float32)), yaw, f"p{k}", avatar_color(f"p{k}"))
                for k, (dx, dz, yaw) in enumerate(((0.0, 2.0, math.pi), (1.5, 9.0, 0.3), (-40.0, 300.0, 2.0)))
            ]
            for eye in range(len(cameras)):
                seen = visible_avatars(cameras.width, cameras.height, cameras.w2c[eye], cameras.K[eye], others)
                draw_avatars(frames.picture(eye), cameras.width, cameras.height, cameras.w2c[eye], cameras.K[eye], seen)
        after = _machine_code()
        assert {name: n for name, n in after.items() if n > before.get(name, 0)} == {}
    finally:
        world.close()
