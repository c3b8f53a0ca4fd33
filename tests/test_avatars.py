"""Avatars: other players drawn into the streamed picture.

The drawing itself on a plain picture, then end to end: two real players (WorldClient,
real WebRTC and H.264 over loopback, the real server with the CPU renderer) stand facing
each other and each finds the other's avatar in its decoded video, where the other stands,
against the same view with the other gone.
"""

from __future__ import annotations

import asyncio
import json
import math
import urllib.request

import numpy as np
import pytest

from protocol import messages as m
from runtime.client import WorldClient
from runtime.world.camera import Pose
from runtime.world.render.avatars import EYE_HEIGHT, Avatar, avatar_color, draw_avatars, label_text, visible_avatars
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


def pictures_made(url: str) -> dict[str, float]:
    """``worldstream_pictures_total`` by ``how`` from the server's /metrics."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    counts = {"rendered": 0.0, "avatars": 0.0, "repeated": 0.0}
    for line in text.splitlines():
        if line.startswith("worldstream_pictures_total{"):
            counts[line.split('how="')[1].split('"')[0]] = float(line.split()[-1])
    return counts


def test_a_player_moving_out_of_view_costs_the_others_no_render(server):
    """Through the real server, B walks (head poses every 50 ms) while A stands still: with B
    out of A's view, A's picture is repeated, not rendered again; with B in view it changes
    (B drawn again; chunks that land meanwhile re-render both, so no count of renders here).
    Before, any move re-rendered every other player's whole scene."""

    async def scenario():
        name = unique("avatar-cost")
        async with WorldClient(server.url, new_world=m.NewWorld(name=name, seed=5), name="Ada") as a:
            async with WorldClient(server.url, world=name, name="Bob") as b:
                await wait_idle(a)
                await a.next_frame()
                await settled_frame(a, await a.send_head_pose((0.0, 0.0, 0.0), yaw_quaternion(0.0)))

                async def walk(start_x: float, z: float, yaw: float) -> dict[str, float]:
                    """B steps 2 cm right every 50 ms for 1.5 s; the pictures made meanwhile."""
                    await settled_frame(b, await b.send_head_pose((start_x, 0.0, z), yaw_quaternion(yaw)))
                    await wait_idle(a)  # chunks landing re-render everyone: not what is measured
                    before = await asyncio.to_thread(pictures_made, server.url)  # off the clients' event loop
                    for i in range(30):
                        await b.send_head_pose((start_x + 0.02 * i, 0.0, z), yaw_quaternion(yaw))
                        await asyncio.sleep(0.05)
                    after = await asyncio.to_thread(pictures_made, server.url)
                    return {how: after[how] - before[how] for how in after}

                return await walk(-0.3, -3.0, math.pi), await walk(-0.3, 3.0, math.pi)

    behind, ahead = asyncio.run(scenario())
    print("pictures made while B walks behind A:", behind, "and in front of A:", ahead)
    # Each tick: B's own picture is rendered (it moved); A's is repeated, or has B drawn again.
    assert behind["rendered"] > 5 and behind["repeated"] >= 0.6 * behind["rendered"], behind
    assert ahead["avatars"] > 5 and ahead["repeated"] < 0.3 * ahead["avatars"], ("B moves in A's view: A's picture must change", ahead)


def test_visible_avatars_are_those_drawn():
    """The cache key's avatars (visible_avatars) include every one that changes a pixel, for
    players all around the camera, near and far, many at the picture's edges; and few more."""
    rng = np.random.default_rng(3)
    cam = Pose(np.zeros(3)).camera(W, H)
    drawn_count = extra = 0
    for i in range(400):
        distance, bearing = rng.uniform(0.3, 60.0), rng.uniform(-1.2, 1.2)
        avatar = Avatar((distance * math.sin(bearing), rng.uniform(-2.0, 2.0), distance * math.cos(bearing)), 0.0, f"p{i}", (200, 40, 40))
        picture = grey_picture()
        draw_avatars(picture, W, H, cam.w2c[0], cam.K[0], [avatar])
        drawn = bool((picture != 128).any())
        visible = visible_avatars(W, H, cam.w2c[0], cam.K[0], [avatar]) == [avatar]
        assert visible or not drawn, f"{avatar} changes pixels but is not in the key"
        drawn_count += drawn
        extra += visible and not drawn
    assert drawn_count > 100 and extra < 0.1 * drawn_count, (drawn_count, extra)


def test_avatar_bench_runs(tmp_path, capsys):
    from bench.avatars import main

    main(["--frames", "2", "--size", "160x90", "--avatars", "3", "--json", str(tmp_path / "avatars.json")])
    assert "avatars drawn" in capsys.readouterr().out and (tmp_path / "avatars.json").exists()

def test_a_player_moving_costs_a_still_one_no_render(tmp_path):
    """Through the frame clock over a generated world that has stopped generating (so only
    players move): with the mover out of the still player's view its picture is repeated,
    with the mover in view only the avatar is drawn again; each tick renders the mover's
    picture alone. (bench.avatars --loop, which also times it.)"""
    from bench.avatars import main

    main(["--loop", "--frames", "4", "--size", "160x90", "--json", str(tmp_path / "loop.json")])
    pictures = json.loads((tmp_path / "loop.json").read_text())["rows"][0]["pictures"]
    assert pictures["out_of_view"] == {"rendered": 4, "avatars": 0, "repeated": 4}
    assert pictures["in_view"] == {"rendered": 4, "avatars": 4, "repeated": 0}
    assert pictures["in_view_alone"] == {"rendered": 4, "avatars": 0, "repeated": 0}
