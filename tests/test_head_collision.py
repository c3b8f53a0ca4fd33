"""VR head poses and collision through the real server: a world that starts as a wall 1.5 m
ahead (a start image with its depth), head poses sent 3 m through it stop in front of it (the
first and every one after: a head stopped against the wall, its position rounded to float32,
is not "inside" it), and ``frame_info.head_position`` says where the head is, so the client's
rig can follow."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from protocol import messages as m
from runtime.client import WorldClient
from runtime.world.formats.media import encode_png
from tests.test_depth import png16
from tests.test_server import unique

pytestmark = pytest.mark.timeout(240)

WALL_M = 1.5
FOV_Y = math.radians(60)


def wall_world(fill: int = 3) -> m.NewWorld:
    """A new world whose start image is a textured wall ``WALL_M`` ahead of the spawn, filling the view."""
    rng = np.random.default_rng(fill)
    image = rng.integers(40, 220, (90, 160, 3), dtype=np.uint8).repeat(2, 0).repeat(2, 1)
    depth = np.full(image.shape[:2], int(WALL_M * 1000), np.uint16)
    return m.NewWorld(name=unique("wall"), seed=fill, start_image=encode_png(image), start_depth=png16(depth), start_fov_y=FOV_Y)


FORWARD = (1.0, 0.0, 0.0, 0.0)  # looking down world +z


async def head_position_for(client: WorldClient, position) -> tuple[float, float, float] | None:
    """Send a head pose; the head position the first frame showing it reports."""
    seq = await client.send_head_pose(position, FORWARD)
    await client.frame_after_input(seq)
    infos = [info for info in client.frame_infos.values() if info.input_seq == seq]
    return infos[0].head_position if infos else None


def test_the_wall_stops_the_head_and_frame_info_says_where(server):
    async def scenario():
        async with WorldClient(server.url, new_world=wall_world(), name="Headset") as c:
            free = await head_position_for(c, (0.0, 0.0, 0.5))
            # Pushed again and again (a headset sends a pose every frame): it stays stopped.
            through = [await head_position_for(c, (0.0, 0.0, 3.0)) for _ in range(5)]
            back = await head_position_for(c, (0.0, 0.0, 0.2))
            return free, through, back

    free, through, back = asyncio.run(scenario())
    assert free == pytest.approx((0.0, 0.0, 0.5), abs=1e-4), "nothing in the way: where it was sent"
    assert all(p is not None and p[2] < WALL_M - 0.1 for p in through), ("the wall stops the head", through)
    assert back == pytest.approx((0.0, 0.0, 0.2), abs=1e-4)
