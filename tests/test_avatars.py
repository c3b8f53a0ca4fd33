"""Avatars: other players drawn into the streamed picture.

The drawing itself on a plain picture, then end to end: two real players (WorldClient,
real WebRTC and H.264 over loopback, the real server with the CPU renderer) stand facing
each other and each finds the other's avatar in its decoded video, where the other stands,
against the same view with the other gone.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from protocol import messages as m
from runtime.client import WorldClient
from runtime.world.camera import Pose
from runtime.world.render.avatars import EYE_HEIGHT, Avatar, avatar_color, draw_avatars, label_text
from runtime.world.render.video import split_planes
from tests.test_server import settled_frame, unique, wait_idle

pytestmark = pytest.mark.timeout(240)

W, H = 320, 180


def grey_picture() -> np.ndarray:
    return np.full(W * H * 3 // 2, 128, np.uint8)


def test_avatar_drawn_where_it_stands_and_only_in_front():
    cam = Pose(np.zeros(3)).camera(W, H)
    picture = grey_picture()
    drawn = draw_avatars(picture, W, H, cam.w2c[0], cam.K[0], [Avatar((0.0, 0.0, 4.0), 0.0, "Bob", (200, 40, 40))])
    assert drawn == 1
    y, u, v = split_planes(picture, W, H)
    changed = np.argwhere(y != 128)
    fy = float(cam.K[0, 1, 1])
    # Centred on the image's middle column; from above the head (name tag) down to the feet.
    assert abs(changed[:, 1].mean() - W / 2) < 3
    assert changed[:, 0].max() == pytest.approx(H / 2 + fy * EYE_HEIGHT / 4.0, abs=3)
    assert changed[:, 0].min() < H / 2 - fy * 0.14 / 4.0  # the tag sits above the head
    assert (v != 128).any() and (u != 128).any()  # coloured, not just luma

    behind = grey_picture()
    assert draw_avatars(behind, W, H, cam.w2c[0], cam.K[0], [Avatar((0.0, 0.0, -4.0), 0.0, "Bob", (200, 40, 40))]) == 0
    assert (behind == 128).all()


def test_nearer_avatar_covers_farther_and_labels_are_bounded():
    cam = Pose(np.zeros(3)).camera(W, H)
    near, far = Avatar((0.0, 0.0, 3.0), 0.0, "n", (250, 0, 0)), Avatar((0.0, 0.0, 8.0), 0.0, "f", (0, 0, 250))
    a, b = grey_picture(), grey_picture()
    draw_avatars(a, W, H, cam.w2c[0], cam.K[0], [near, far])
    draw_avatars(b, W, H, cam.w2c[0], cam.K[0], [far, near])
    assert (a == b).all()  # painted far to near whatever the order given
    body_row = int(H / 2 + cam.K[0, 1, 1] * 1.0 / 3.0)
    assert split_planes(a, W, H)[2][body_row // 2, W // 4] > 180  # red body of the near one: high V
    assert label_text("x" * 100) == "X" * 15 + "." and label_text("é!") == "?!"
    assert avatar_color("a") == avatar_color("a")
    # A name far longer than the picture, right at the edge, is clipped, never an error.
    draw_avatars(grey_picture(), W, H, cam.w2c[0], cam.K[0], [Avatar((5.0, 0.0, 1.0), 0.0, "W" * 500, (1, 2, 3))])


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """wxyz for a head turned ``yaw`` radians right (about world up = -y)."""
    return (math.cos(yaw / 2), 0.0, -math.sin(yaw / 2), 0.0)


def region_diff(a: np.ndarray, b: np.ndarray, rows: slice, cols: slice) -> float:
    return float(np.abs(a[rows, cols].astype(np.int16) - b[rows, cols].astype(np.int16)).mean())


def test_two_players_see_each_other(server):
    """A at the origin looking +z, B 3 m ahead looking back: each sees the other's avatar in
    the decoded video where the other stands; with the other stepped behind the viewer,
    that region shows the world again."""

    async def scenario():
        name = unique("avatars")
        async with WorldClient(server.url, new_world=m.NewWorld(name=name, seed=5), name="Ada") as a:
            async with WorldClient(server.url, world=name, name="Bob") as b:
                await wait_idle(a)
                a_pose, b_pose = ((0.0, 0.0, 0.0), yaw_quaternion(0.0)), ((0.0, 0.0, 3.0), yaw_quaternion(math.pi))
                a_away, b_away = ((0.0, 0.0, 4.0), yaw_quaternion(0.0)), ((0.0, 0.0, -1.0), yaw_quaternion(math.pi))

                async def frames(pose_a, pose_b):
                    seq_a, seq_b = await a.send_head_pose(*pose_a), await b.send_head_pose(*pose_b)
                    return (await settled_frame(a, seq_a)).rgb, (await settled_frame(b, seq_b)).rgb

                a_sees_b, b_sees_a = await frames(a_pose, b_pose)
                a_alone, _ = await frames(a_pose, b_away)  # B behind A
                _, b_alone = await frames(a_away, b_pose)  # A behind B

        w, h = a.welcome.server.width, a.welcome.server.height
        fy = h / 2 / math.tan(m.View().fov_y / 2)
        # The other's body: 3 m ahead, from the shoulders to the feet, around the middle column.
        rows = slice(int(h / 2 + fy * 0.4 / 3), int(h / 2 + fy * 1.5 / 3))
        body = slice(int(w / 2 - fy * 0.08 / 3), int(w / 2 + fy * 0.08 / 3) + 1)
        control = slice(0, w // 6)  # the same rows far to the left: only coding noise
        for seen, alone in ((a_sees_b, a_alone), (b_sees_a, b_alone)):
            there, elsewhere = region_diff(seen, alone, rows, body), region_diff(seen, alone, rows, control)
            assert there > 25.0 and there > 4 * elsewhere, (there, elsewhere)

    asyncio.run(scenario())


def test_avatar_bench_runs(tmp_path, capsys):
    from bench.avatars import main

    main(["--frames", "2", "--size", "160x90", "--avatars", "3", "--json", str(tmp_path / "avatars.json")])
    assert "avatars drawn" in capsys.readouterr().out and (tmp_path / "avatars.json").exists()
