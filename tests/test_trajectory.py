"""Lyra-compatible trajectories: files are read (or refused) as Lyra reads them, and a walkthrough follows them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from runtime.cli import main as cli_main
from runtime.world.camera import Pose, intrinsics_from_fov
from runtime.world.formats.media import read_video_frames, write_image
from runtime.world.store import WorldLibrary
from runtime.world.movement.trajectory import (
    Captions,
    Trajectory,
    TrajectoryError,
    chunk_start,
    is_lyra_length,
    load_captions,
    load_trajectory,
    save_trajectory,
    zoom_trajectory,
)


def cpu_renderer():
    try:
        from runtime.world.render import create_renderer
    except ImportError:
        from runtime.world.render.cpu import CpuRenderer

        return CpuRenderer()
    return create_renderer("cpu")


def lyra_trajectory(n: int, width: int = 320, height: int = 180) -> Trajectory:
    """Walk forward 0.3 m a frame while turning right and drifting sideways (a known synthetic path)."""
    w2c = np.stack([Pose(np.array([0.06 * i, 0.0, 0.3 * i], np.float32), yaw=0.035 * i).w2c for i in range(n)])
    K = intrinsics_from_fov(width, height, math.radians(60.0))
    return Trajectory(w2c, np.broadcast_to(K, (n, 3, 3)).copy(), width, height)


# ---------------------------------------------------------------- reading files
def test_trajectory_file_is_read_like_lyra(tmp_path):
    traj = lyra_trajectory(9)
    path = tmp_path / "trajectory.npz"
    save_trajectory(path, traj)
    loaded = load_trajectory(path)  # default pose scale 1.1
    assert len(loaded) == 9 and (loaded.width, loaded.height) == (320, 180)
    assert np.allclose(loaded.w2c[:, :3, :3], traj.w2c[:, :3, :3])
    assert np.allclose(loaded.w2c[:, :3, 3], 1.1 * traj.w2c[:, :3, 3], atol=1e-5)
    assert np.allclose(loaded.centers, 1.1 * traj.centers, atol=1e-5)
    unscaled = load_trajectory(path, pose_scale=1.0)
    assert np.allclose(unscaled.w2c, traj.w2c, atol=1e-6)
    cams = unscaled.cameras(160, 90)  # intrinsics rescale to the render size
    assert np.allclose(cams.K[0, 0, 0], traj.K[0, 0, 0] / 2) and np.allclose(cams.K[0, :2, 2], [80, 45])
    pose = unscaled.pose(5)
    assert np.allclose(pose.w2c, traj.w2c[5], atol=1e-5)


def test_bad_trajectory_files_get_clear_errors(tmp_path):
    traj = lyra_trajectory(5)

    def write(name: str, **arrays) -> str:
        path = tmp_path / name
        np.savez(path, **arrays)
        return str(path)

    with pytest.raises(TrajectoryError, match=r"no_w2c\.npz: missing array 'w2c'"):
        load_trajectory(write("no_w2c.npz", intrinsics=traj.K, image_height=180, image_width=320))
    with pytest.raises(TrajectoryError, match=r"counts\.npz: w2c has 5 poses but intrinsics has 4"):
        load_trajectory(write("counts.npz", w2c=traj.w2c, intrinsics=traj.K[:4], image_height=180, image_width=320))
    bad = traj.w2c.copy()
    bad[3, 0, 3] = np.inf
    with pytest.raises(TrajectoryError, match=r"inf\.npz: w2c\[3\] is not finite"):
        load_trajectory(write("inf.npz", w2c=bad, intrinsics=traj.K, image_height=180, image_width=320))
    sheared = traj.w2c.copy()
    sheared[2, 0, 1] = 0.5
    with pytest.raises(TrajectoryError, match=r"shear\.npz: w2c\[2\] is not a rigid transform"):
        load_trajectory(write("shear.npz", w2c=sheared, intrinsics=traj.K, image_height=180, image_width=320))
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(TrajectoryError, match=r"text\.npz: not a readable \.npz"):
        load_trajectory(tmp_path / "text.npz")
    with pytest.raises(TrajectoryError, match=r"absent\.npz: no such file"):
        load_trajectory(tmp_path / "absent.npz")
    # image size missing: twice the principal point
    assert load_trajectory(write("nosize.npz", w2c=traj.w2c, intrinsics=traj.K)).width == 320


def test_captions_pick_the_chunk_start_caption(tmp_path):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"81": "a lake", "0": "a forest", "161": "a town"}))
    captions = load_captions(path)
    assert [chunk_start(i) for i in (0, 1, 80, 81, 160, 161, 240)] == [0, 1, 1, 81, 81, 161, 161]
    assert [captions.for_frame(i) for i in (0, 40, 80, 81, 100, 160, 161, 400)] == [
        "a forest", "a forest", "a forest", "a lake", "a lake", "a lake", "a town", "a town",
    ]
    assert Captions(((10, "late"),)).at(0) == "late"  # nothing <= 0: the first one
    assert is_lyra_length(81) and is_lyra_length(481) and not is_lyra_length(80) and not is_lyra_length(17)

    for text, problem in (("[1, 2]", "non-empty JSON object"), ('{"x": "a"}', "'x' is not a frame index"), ('{"0": 3}', "must be a string"), ("{", "not valid JSON")):
        path.write_text(text)
        with pytest.raises(TrajectoryError, match=problem):
            load_captions(path)


def test_zoom_presets_move_along_the_camera_axis():
    depth = np.full((20, 30), 4.0)
    depth[:5] = np.inf  # sky does not count
    depth[5:8] = 2.0  # the nearest quarter sets the scale
    zin = zoom_trajectory("zoom-in", depth, 11, 64, 36, strength=0.5)
    p25 = float(np.percentile(depth[np.isfinite(depth)], 25))
    assert np.allclose(zin.centers[0], 0) and np.allclose(zin.centers[-1], [0, 0, 0.5 * p25])
    assert np.allclose(np.diff(zin.centers[:, 2]), 0.5 * p25 / 10)
    zout = zoom_trajectory("zoom-out", depth, 11, 64, 36, strength=1.5)
    back = 1.5 * p25
    assert np.allclose(zout.centers[-1], [0, -0.15 * back, -back])  # up is -y
    assert np.allclose(zout.w2c[:, :3, :3], np.eye(3))
    with pytest.raises(ValueError, match="no finite depth"):
        zoom_trajectory("zoom-in", np.full((4, 4), np.inf), 5, 64, 36)


# ---------------------------------------------------------------- a walkthrough follows the file
def test_render_follows_the_trajectory_file(tmp_path, capsys):
    traj = lyra_trajectory(17)
    save_trajectory(tmp_path / "trajectory.npz", traj)
    (tmp_path / "captions.json").write_text(json.dumps({"0": "a pine forest", "81": "a lake"}))
    write_image(tmp_path / "first_frame.png", np.full((90, 160, 3), 120, np.uint8))
    out = tmp_path / "walk.mp4"
    code = cli_main([
        "--worlds", str(tmp_path / "worlds"), "-q", "render",
        "--image", str(tmp_path / "first_frame.png"),
        "--trajectory", str(tmp_path / "trajectory.npz"),
        "--captions", str(tmp_path / "captions.json"),
        "--frames", "17", "--resolution", "160x90", "--keyframe-size", "96x54", "--renderer", "cpu",
        "--world", "walk", str(out),
    ])
    assert code == 0
    assert "not of the form 1 + 80k" in capsys.readouterr().err
    video = read_video_frames(out)
    assert video.shape == (17, 90, 160, 3)

    library = WorldLibrary(tmp_path / "worlds")
    world = library.open("walk", read_only=True, renderer=cpu_renderer())
    try:
        chunks = world.scene.snapshot().chunks
        assert chunks and {c.source.caption for c in chunks} == {"a pine forest"}
        assert world.start_image is not None and world.start_image.shape == (90, 160, 3)
        scaled = load_trajectory(tmp_path / "trajectory.npz")  # pose scale 1.1, as the render used
        right = world.render(scaled.cameras(160, 90)).rgb
        wrong_w2c = np.stack([Pose(scaled.pose(i).position, scaled.pose(i).yaw + 0.6).w2c for i in range(17)])
        wrong = world.render(Trajectory(wrong_w2c, scaled.K, 320, 180).cameras(160, 90)).rgb
        reversed_ = world.render(scaled.cameras(160, 90)[::-1]).rgb
    finally:
        world.close()

    def mse(a, b):
        return ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))

    to_right, to_wrong, to_reversed = mse(video, right), mse(video, wrong), mse(video, reversed_)
    assert (to_right < to_wrong).all(), (to_right, to_wrong)
    far = np.abs(np.arange(17) - 8) >= 3  # frames whose reversed counterpart is a different pose
    assert (to_right[far] < to_reversed[far]).all(), (to_right, to_reversed)
    assert to_right.max() < 0.25 * to_wrong.min()


def test_zoom_preset_render_moves_the_camera_forward(tmp_path):
    out = tmp_path / "zoom.mp4"
    code = cli_main([
        "--worlds", str(tmp_path / "worlds"), "-q", "render", "--preset", "zoom-in", "--strength", "0.8",
        "--frames", "5", "--resolution", "96x54", "--keyframe-size", "64x36", "--renderer", "cpu", str(out),
    ])
    assert code == 0
    video = read_video_frames(out)
    assert video.shape == (5, 54, 96, 3)
    world = WorldLibrary(tmp_path / "worlds").open("zoom", read_only=True, renderer=cpu_renderer())
    try:
        K = intrinsics_from_fov(96, 54, math.radians(60.0))
        depth = world.render(Trajectory(np.eye(4, dtype=np.float32)[None], K[None], 96, 54).cameras()).depth[0]
        expected = zoom_trajectory("zoom-in", depth, 5, 96, 54, strength=0.8)
        assert expected.centers[-1][2] > 0
        rendered = world.render(expected.cameras()).rgb
    finally:
        world.close()
    error = np.abs(video.astype(float) - rendered.astype(float)).mean(axis=(1, 2, 3))
    assert error.max() < 12, error
