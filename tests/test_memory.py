"""Frame memory retrieval on synthetic scenes with a known answer."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from runtime.world.camera import Cameras, Pose
from runtime.world.keyframes.frames import Frame
from runtime.world.keyframes.memory import FrameMemory

W, H = 96, 54
FOV = math.radians(60)
ROOM = 30.0  # walls at x, z = +-30 m
GROUND_Y = 1.5  # world +y is down: the ground is 1.5 m below the eye
WALL_TOP_Y = -10.0  # walls end 10 m above the eye; sky above


def room_depth(pose: Pose, w: int = W, h: int = H, fov: float = FOV) -> np.ndarray:
    """``[h, w]`` float32 depth of the inside of a square room with a ground and open sky, ray-cast exactly."""
    cam = pose.camera(w, h, fov)
    K, c2w = cam.K[0], cam.c2w[0]
    v, u = np.mgrid[0:h, 0:w] + 0.5
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)  # z = 1
    d = rays_cam @ c2w[:3, :3].T  # world directions; the ray parameter t equals camera depth
    o = c2w[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(d[..., 1] > 1e-9, (GROUND_Y - o[1]) / d[..., 1], np.inf)
        t_x = np.where(d[..., 0] > 0, (ROOM - o[0]) / d[..., 0], (-ROOM - o[0]) / d[..., 0])
        t_z = np.where(d[..., 2] > 0, (ROOM - o[2]) / d[..., 2], (-ROOM - o[2]) / d[..., 2])
        t_wall = np.minimum(np.abs(t_x), np.abs(t_z))
    wall_y = o[1] + t_wall * d[..., 1]
    t_wall = np.where(wall_y >= WALL_TOP_Y, t_wall, np.inf)  # above the wall top: sky
    return np.minimum(t_ground, t_wall).astype(np.float32)


RGB = np.full((H, W, 3), 128, np.uint8)


def frame(frame_id: int, pose: Pose) -> Frame:
    cam = pose.camera(W, H, FOV)
    return Frame(frame_id, RGB, room_depth(pose), cam.w2c[0], cam.K[0])


def room_memory() -> tuple[FrameMemory, Pose]:
    """Ten frames; only 3 and 7 look where the target looks (yaw 0 from the origin)."""
    eye = np.array([0.0, 0.0, -10.0])
    # Vertical FOV 60 deg at 16:9 is +-45.8 deg horizontally: yaws beyond +-92 deg never overlap yaw 0.
    yaws_deg = {0: 100, 1: 135, 2: 180, 3: -25, 4: 225, 5: 260, 6: 120, 7: 15, 8: 200, 9: 240}
    memory = FrameMemory(point_stride=2, cell_size=8.0)
    for i, yaw in yaws_deg.items():
        memory.add(frame(i, Pose(eye, yaw=math.radians(yaw))))
    return memory, Pose(eye, yaw=0.0)


def test_retrieval_picks_the_frames_that_see_the_view():
    memory, target = room_memory()
    cam = target.camera(W, H, FOV)
    chosen, owner = memory.retrieve_with_coverage(cam, k=5)
    # Frame 7 (yaw 15) sees more of the target (yaw 0, +-30 deg) than frame 3 (yaw -25): it comes first.
    assert [f.id for f in chosen] == [7, 3]
    assert owner.shape == (H, W) and owner.dtype == np.int32
    assert set(np.unique(owner)) <= {-1, 0, 1}
    # Frame 7 owns the right part of the view, frame 3 the left strip only it sees; the
    # sky is nobody's. Frame 7 covers bearings -31..46 deg: all but the left ~21 %.
    solid = np.isfinite(room_depth(target))
    assert np.mean(owner[solid] >= 0) > 0.99
    assert np.mean(owner[~solid] == -1) > 0.9  # the skyline row may be claimed (coarse grid)
    right, left = solid.copy(), solid.copy()
    right[:, : W // 4] = False
    left[:, W // 8 :] = False
    assert np.mean(owner[right] == 0) > 0.85
    assert np.mean(owner[left] == 1) > 0.99


def test_opposite_view_is_never_returned():
    memory, target = room_memory()
    back = Pose(target.position, yaw=math.pi).camera(W, H, FOV)
    ids = [f.id for f in memory.retrieve(back, k=5)]
    assert ids and 3 not in ids and 7 not in ids  # 3 and 7 look the other way


def test_k_limits_the_answer():
    memory, target = room_memory()
    cam = target.camera(W, H, FOV)
    assert [f.id for f in memory.retrieve(cam, k=1)] == [7]
    with pytest.raises(ValueError, match="k"):
        memory.retrieve(cam, k=0)
    with pytest.raises(ValueError, match="camera"):
        memory.retrieve(Cameras.concat([cam, cam]))


def test_far_frames_are_out_of_reach():
    memory = FrameMemory(point_stride=2)
    far = Pose(np.array([0.0, 0.0, -10.0 - 70.0]))  # 70 m behind, looking the same way
    memory.add(frame(0, Pose(np.array([0.0, 0.0, -80.0]))))
    cam = Pose(np.array([0.0, 0.0, -10.0])).camera(W, H, FOV)
    assert memory.retrieve(cam, max_distance=60.0) == []
    assert [f.id for f in memory.retrieve(cam, max_distance=100.0)] == [0]
    assert far.position[2] == -80.0


def test_empty_memory_and_sky_only_frames():
    memory = FrameMemory()
    cam = Pose().camera(W, H, FOV)
    chosen, owner = memory.retrieve_with_coverage(cam)
    assert chosen == [] and np.all(owner == -1)
    sky = Frame(0, RGB, np.full((H, W), np.inf, np.float32), cam.w2c[0], cam.K[0])
    memory.add(sky)
    assert len(memory) == 1 and memory.retrieve(cam) == []
    assert len(memory.points(0)) == 0


def test_storage_api():
    memory, _ = room_memory()
    assert len(memory) == 10
    assert [f.id for f in memory.frames()] == list(range(10))
    assert memory.get(7).id == 7
    with pytest.raises(KeyError):
        memory.get(42)
    with pytest.raises(ValueError, match="already"):
        memory.add(memory.get(3))
    # Out-of-order ids (restoring) still list in id order.
    late = Frame(-5, RGB, room_depth(Pose()), Pose().w2c, Pose().camera(W, H, FOV).K[0])
    memory.add(late)
    assert [f.id for f in memory.frames()][:2] == [-5, 0]
    with pytest.raises(ValueError, match="frame.depth"):
        memory.add(Frame(99, RGB, np.ones((H, W + 1), np.float32), Pose().w2c, np.eye(3, dtype=np.float32)))


def test_cached_points_lie_on_the_surfaces():
    memory, _ = room_memory()
    pts = memory.points(2)
    on_ground = np.abs(pts[:, 1] - GROUND_Y) < 1e-3
    on_wall = (np.abs(np.abs(pts[:, 0]) - ROOM) < 1e-3) | (np.abs(np.abs(pts[:, 2]) - ROOM) < 1e-3)
    assert np.all(on_ground | on_wall)
    assert len(pts) <= (H // 2) * (W // 2)


def random_walk_memory(n: int, seed: int, cell_size: float) -> tuple[FrameMemory, np.random.Generator]:
    rng = np.random.default_rng(seed)
    memory = FrameMemory(point_stride=4, cell_size=cell_size)
    pos = np.zeros(3)
    for i in range(n):
        pos = pos + np.array([rng.normal(0, 3), 0.0, rng.normal(0, 3)])
        pose = Pose(pos, yaw=rng.uniform(-math.pi, math.pi), pitch=rng.uniform(-0.3, 0.1))
        cam = pose.camera(48, 27, FOV)
        depth = rng.uniform(2.0, 25.0) * (1 + 0.3 * rng.random((27, 48))).astype(np.float32)
        depth[rng.random((27, 48)) < 0.1] = np.inf
        memory.add(Frame(i, np.zeros((27, 48, 3), np.uint8), depth, cam.w2c[0], cam.K[0]))
    return memory, rng


def test_spatial_index_matches_brute_force():
    memory, rng = random_walk_memory(150, seed=3, cell_size=5.0)
    centres = np.stack([f.center for f in memory.frames()])
    for _ in range(25):
        pos = centres[rng.integers(len(centres))] + rng.normal(0, 4, 3) * [1, 0, 1]
        cam = Pose(pos, yaw=rng.uniform(-math.pi, math.pi)).camera(64, 36, FOV)
        dist = float(rng.uniform(5, 40))
        a, owner_a = memory.retrieve_with_coverage(cam, k=4, max_distance=dist)
        b, owner_b = memory.retrieve_with_coverage(cam, k=4, max_distance=dist, use_index=False)
        assert [f.id for f in a] == [f.id for f in b]
        np.testing.assert_array_equal(owner_a, owner_b)
        for f in a:
            assert np.linalg.norm(f.center - pos) <= dist + 1e-6


def test_concurrent_adds_and_queries():
    memory, _ = random_walk_memory(20, seed=5, cell_size=8.0)
    errors: list[BaseException] = []

    def writer(start: int) -> None:
        try:
            rng = np.random.default_rng(start)
            for i in range(start, start + 40):
                pose = Pose(rng.normal(0, 10, 3) * [1, 0, 1], yaw=rng.uniform(-3, 3))
                cam = pose.camera(48, 27, FOV)
                depth = np.full((27, 48), 8.0, np.float32)
                memory.add(Frame(i, np.zeros((27, 48, 3), np.uint8), depth, cam.w2c[0], cam.K[0]))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    def reader() -> None:
        try:
            rng = np.random.default_rng(9)
            for _ in range(40):
                cam = Pose(rng.normal(0, 10, 3) * [1, 0, 1], yaw=rng.uniform(-3, 3)).camera(48, 27, FOV)
                chosen, owner = memory.retrieve_with_coverage(cam, k=5)
                assert len(chosen) <= 5 and owner.shape == (27, 48)
                memory.frames()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(1000 * (i + 1),)) for i in range(3)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(memory) == 20 + 3 * 40
    ids = [f.id for f in memory.frames()]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_frames_viewing_a_box_by_distance_and_frustum():
    memory, _ = room_memory()  # all cameras at (0, 0, -10); only frames 3 and 7 look towards +z
    lo, hi = np.array([-1.0, -1.0, 9.0]), np.array([1.0, 1.0, 11.0])
    assert [f.id for f in memory.frames_viewing(lo, hi, max_distance=25.0)] == [3, 7]
    assert memory.frames_viewing(lo, hi, max_distance=15.0) == []  # cameras are 19 m from the box
    assert memory.frames_viewing(lo, hi * np.nan, max_distance=25.0) == []
