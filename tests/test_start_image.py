"""Image -> world: the start image is keyframe 0 at the spawn camera, and the first picture.

Depth comes from a depth map given with the image or from a tiny random-weight Depth
Anything built here; without either, the world says so in one line and starts as before.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.world.camera import Cameras, intrinsics_from_fov
from runtime.world.formats.media import read_video_frames, resize_image, write_image
from runtime.world.render import create_renderer
from runtime.world.keyframes.start_frame import NO_DEPTH_NOTICE, seed_world
from runtime.world.store import WorldLibrary
from runtime.world.world import World, WorldConfig

from test_cli import run_cli

W, H = 320, 180
FOV_Y = math.radians(50.0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10.0 * math.log10(255.0**2 / max(mse, 1e-12))


def photo(width: int = 640, height: int = 360, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like test image with its depth: sky, textured ground receding, a box in front.

    Returns ``(rgb [H,W,3] uint8, depth [H,W] float32 metres, inf = sky)``.
    """
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = 0.4 * height
    f = 0.5 * height / math.tan(0.5 * FOV_Y)
    depth = np.where(v > horizon + 1, 1.6 * f / np.maximum(v - horizon, 1.0), np.inf).astype(np.float32)
    rgb = np.empty((height, width, 3), np.float32)
    sky = np.stack([120 + 60 * v / height, 160 + 40 * v / height, np.full_like(v, 230)], -1)
    ground = np.stack([90 + 30 * np.sin(u / 7.0) * np.cos(v / 5.0), 110 + 25 * np.sin(u / 11.0 + v / 3.0), 60 + 20 * np.cos(u / 4.0)], -1)
    rgb[:] = np.where(np.isfinite(depth)[..., None], ground, sky)
    box = (u > 0.35 * width) & (u < 0.55 * width) & (v > 0.3 * height) & (v < 0.8 * height)
    rgb[box] = [110, 60, 50]
    rgb[box & ((u.astype(int) // 9 + v.astype(int) // 9) % 2 == 0)] = [220, 170, 150]  # a brick-like checker
    depth[box] = 2.5
    rgb += rng.normal(0.0, 2.0, rgb.shape)  # sensor noise
    return np.clip(rgb, 0, 255).astype(np.uint8), depth


@pytest.fixture(scope="module")
def cpu_renderer():
    return create_renderer("cpu")


def spawn_camera(world: World) -> Cameras:
    return world.spawn_pose().camera(W, H, FOV_Y)


def test_start_image_is_the_first_picture(cpu_renderer):
    image, depth = photo()
    with World(WorldConfig("start", seed=3), renderer=cpu_renderer, start_image=image) as world:
        assert seed_world(world, image, W, H, fov_y=FOV_Y, depth=depth) is None
        first = world.render(spawn_camera(world)).rgb[0]
        assert psnr(first, resize_image(image, W, H)) >= 30.0
        # Keyframe 0 is in frame memory at the spawn camera, with the image and its depth.
        (frame,) = world.memory.frames()
        assert np.array_equal(frame.rgb, resize_image(image, W, H))
        np.testing.assert_allclose(frame.w2c, spawn_camera(world).w2c[0], atol=1e-6)
        assert np.isinf(frame.depth[: int(0.25 * H)]).all()  # sky stays sky in memory
        assert np.isfinite(frame.depth[int(0.6 * H) :]).all()
        # A step to the side still sees the picture's surfaces (not holes).
        pose = world.spawn_pose()
        pose.position[0] += 0.2
        assert world.render(pose.camera(W, H, FOV_Y)).alpha.mean() > 0.9


def test_start_image_with_the_depth_estimator(tmp_path, cpu_renderer):
    from bench.models import save_tiny_depth_model
    from runtime.world.depth import load_depth_estimator

    estimator = load_depth_estimator(str(save_tiny_depth_model(tmp_path / "depth")))
    image, _ = photo(seed=1)
    with World(WorldConfig("est"), renderer=cpu_renderer, start_image=image, depth_estimator=estimator) as world:
        assert seed_world(world, image, W, H, fov_y=FOV_Y) is None
        assert psnr(world.render(spawn_camera(world)).rgb[0], resize_image(image, W, H)) >= 30.0
        assert len(world.memory) == 1


def test_without_depth_the_world_says_so_and_starts_as_before(cpu_renderer, caplog):
    image, _ = photo()
    with World(WorldConfig("plain"), renderer=cpu_renderer, start_image=image) as world:
        with caplog.at_level("WARNING"):
            assert seed_world(world, image, W, H) == NO_DEPTH_NOTICE
        assert [r.getMessage().count("\n") for r in caplog.records if NO_DEPTH_NOTICE in r.getMessage()] == [0]
        assert not world.scene.snapshot().chunks and len(world.memory) == 0


def test_start_frame_is_saved_with_the_world(tmp_path, cpu_renderer):
    image, depth = photo()
    library = WorldLibrary(tmp_path / "worlds")
    world = library.create(WorldConfig("saved"), start_image=image, renderer=cpu_renderer)
    seed_world(world, image, W, H, fov_y=FOV_Y, depth=depth)
    before = world.render(spawn_camera(world)).rgb[0]
    world.close()
    again = library.open("saved", renderer=cpu_renderer)
    try:
        assert len(again.memory) == 1
        assert psnr(again.render(spawn_camera(again)).rgb[0], before) > 45.0
    finally:
        again.close()


def test_a_world_keeps_its_start_image_shrunk_and_looks_the_same(tmp_path, cpu_renderer):
    """A 2048 x 1152 picture (7 MB of pixels; 4096 x 4096 is 50 MB) is not held whole while
    the world is open: the world keeps it at 1024 pixels wide, the folder keeps the PNG as
    sent, keyframe 0 is made from the whole picture, and the biome's tint is the same."""
    from runtime.world.formats.media import encode_png
    from runtime.world.generators.procedural import ProceduralGenerator
    from runtime.world.keyframes.start_frame import KEPT_START_IMAGE_SIDE

    image, depth = photo(2048, 1152)
    png = encode_png(image)
    library = WorldLibrary(tmp_path / "worlds")
    world = library.create(WorldConfig("big", caption="a meadow"), start_image_bytes=png, renderer=cpu_renderer)
    try:
        assert world.start_image.shape == (576, KEPT_START_IMAGE_SIDE, 3)
        assert world.parts.start_image is world.start_image  # what generation requests carry
        assert seed_world(world, image, W, H, fov_y=FOV_Y, depth=depth) is None
        (frame,) = world.memory.frames()  # keyframe 0 is made from the whole picture
        assert np.array_equal(frame.rgb, resize_image(image, W, H))
        whole, kept = ProceduralGenerator.biome("a meadow", image), ProceduralGenerator.biome("a meadow", world.start_image)
        for name in ("grass_a", "dirt", "leaf_a", "conifer"):
            np.testing.assert_allclose(getattr(kept, name), getattr(whole, name), atol=2 / 255)
        np.testing.assert_allclose(kept.sky.zenith, whole.sky.zenith, atol=2 / 255)
    finally:
        world.close()
    assert (tmp_path / "worlds" / "big" / "start.png").read_bytes() == png
    again = library.open("big", renderer=cpu_renderer)
    try:
        assert again.start_image.shape == (576, KEPT_START_IMAGE_SIDE, 3)
    finally:
        again.close()


def test_render_command_starts_on_the_image(tmp_path):
    """``worldstream render --image --depth --trajectory --captions``: frame 0 of the video is the image."""
    from runtime.world.movement.trajectory import Trajectory, save_trajectory

    image, depth = photo(seed=2)
    write_image(tmp_path / "first_frame.png", image)
    np.save(tmp_path / "depth.npy", depth)
    n = 2
    w2c = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    w2c[1, 2, 3] = -0.1  # a small step forward
    K = intrinsics_from_fov(640, 360, FOV_Y)
    save_trajectory(tmp_path / "trajectory.npz", Trajectory(w2c, np.broadcast_to(K, (n, 3, 3)).copy(), 640, 360))
    (tmp_path / "captions.json").write_text('{"0": "a red box on a field"}')
    result = run_cli(
        "render", "--image", "first_frame.png", "--depth", "depth.npy", "--trajectory", "trajectory.npz",
        "--captions", "captions.json", "--frames", "2", "--resolution", f"{W}x{H}", "--renderer", "cpu", "-q", "out.mp4",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    video = read_video_frames(tmp_path / "out.mp4")
    assert psnr(video[0], resize_image(image, W, H)) >= 28.0  # after H.264 at CRF 18

    # Without a depth source: one line on stderr, and the render still works.
    result = run_cli(
        "render", "--image", "first_frame.png", "--trajectory", "trajectory.npz", "--frames", "1",
        "--resolution", f"{W}x{H}", "--renderer", "cpu", "-q", "plain.mp4", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "no depth" in line]
    assert len(lines) == 1 and lines[0].endswith(NO_DEPTH_NOTICE), result.stderr


def test_server_world_from_an_image_starts_on_it(start_server, tmp_path):
    """Through the real server: a start image with its depth is the player's first picture;
    without a depth source the welcome says so in one line."""
    import asyncio

    from protocol import messages as m
    from runtime.client import WorldClient
    from test_depth import png16

    image, depth = photo(seed=4)
    write_image(tmp_path / "start.png", image)
    png = (tmp_path / "start.png").read_bytes()
    mm = np.where(np.isfinite(depth), np.round(depth * 1000.0), 0).astype(np.uint16)
    size = (640, 360)  # the server's default video size on a CPU
    server = start_server(resolution="640x360", bitrate="4M")
    view = m.View(width=size[0], height=size[1], fov_y=FOV_Y)

    async def first_pictures():
        new = m.NewWorld(name="from-image", start_image=png, start_depth=png16(mm), start_fov_y=FOV_Y)
        async with WorldClient(server.url, new_world=new, view=view) as client:
            assert client.welcome.notice == ""
            frames = [await client.next_frame(timeout=60) for _ in range(3)]
        async with WorldClient(server.url, new_world=m.NewWorld(name="no-depth", start_image=png), view=view, video=False) as plain:
            notice = plain.welcome.notice
        return frames, notice

    frames, notice = asyncio.run(first_pictures())
    reference = resize_image(image, *size)
    assert max(psnr(f.rgb, reference) for f in frames) >= 30.0
    assert notice == NO_DEPTH_NOTICE
    assert server.log_text().count(NO_DEPTH_NOTICE) == 1


def test_server_refuses_a_missing_depth_model(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "runtime.app", "--port", "0", "--worlds", str(tmp_path / "w"), "--depth-model", str(tmp_path / "none")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--depth-model" in lines[0] and "no such folder" in lines[0], result.stderr


def jpeg_with_focal(focal_35mm: int, big_endian: bool = False, size=(64, 48)) -> bytes:
    """A JPEG whose EXIF records a 35 mm-equivalent focal length (as phone cameras write it)."""
    import io
    import struct

    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format="image2pipe") as container:
        stream = container.add_stream("mjpeg")
        stream.width, stream.height = size
        stream.pix_fmt = "yuvj420p"
        frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 100, np.uint8), format="rgb24").reformat(format="yuvj420p")
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    jpeg = out.getvalue()
    o = ">" if big_endian else "<"
    tiff = (b"MM" if big_endian else b"II") + struct.pack(o + "HI", 42, 8)
    tiff += struct.pack(o + "H", 1) + struct.pack(o + "HHII", 0x8769, 4, 1, 26) + struct.pack(o + "I", 0)  # IFD0 -> Exif IFD
    tiff += struct.pack(o + "H", 1) + struct.pack(o + "HHIHH", 0xA405, 3, 1, focal_35mm, 0) + struct.pack(o + "I", 0)
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\0\0" + tiff
    return jpeg[:2] + app1 + jpeg[2:]


def test_field_of_view_from_exif():
    from protocol import messages as m
    from runtime.sessions import start_fov_y
    from runtime.world.formats.exif import fov_y_from_exif

    # 26 mm equivalent (a phone's main camera) on a 4:3 photo: 53 degrees vertically.
    for big_endian in (False, True):
        data = jpeg_with_focal(26, big_endian)
        assert math.degrees(fov_y_from_exif(data, 640, 480)) == pytest.approx(53.0, abs=0.2)
    assert fov_y_from_exif(jpeg_with_focal(0), 640, 480) is None  # 0 = unknown
    assert fov_y_from_exif(b"\xff\xd8\xff\xe1\x00\x02", 640, 480) is None  # cut short
    assert fov_y_from_exif(b"\x89PNG\r\n\x1a\n", 640, 480) is None
    # The server's choice: as sent, else EXIF, else the creating player's view.
    image = np.zeros((48, 64, 3), np.uint8)
    sent = m.NewWorld(start_image=jpeg_with_focal(26), start_fov_y=0.5)
    assert start_fov_y(sent, image, 1.0) == 0.5
    assert start_fov_y(m.NewWorld(start_image=jpeg_with_focal(26)), image, 1.0) == pytest.approx(fov_y_from_exif(jpeg_with_focal(26), 64, 48))
    assert start_fov_y(m.NewWorld(start_image=jpeg_with_focal(0)), image, 1.0) == 1.0


def test_relative_depth_is_scaled_to_eye_height(cpu_renderer):
    """A relative model's metres are a guess: the start image's ground is put at eye height."""
    import torch

    from bench.models import tiny_depth_model
    from runtime.world.depth import TransformersDepthEstimator
    from runtime.world.keyframes.start_frame import EYE_HEIGHT_M, make_start_frame
    from runtime.world.movement.motion import EYE_HEIGHT

    assert EYE_HEIGHT_M == EYE_HEIGHT
    image, depth = photo(seed=5)
    K = intrinsics_from_fov(W, H, FOV_Y)

    def ground_below(frame) -> float:
        band = frame.depth[int(0.75 * H) :]
        rows = np.arange(H - len(band), H) + 0.5
        below = ((rows - K[1, 2]) / K[1, 1])[:, None] * band
        return float(np.percentile(below[np.isfinite(below) & (below > 0)], 75))

    # Given metres are kept as they are.
    from runtime.world.depth import resize_depth

    kept = make_start_frame(image, W, H, fov_y=FOV_Y, depth=depth).depth
    given = resize_depth(depth, W, H)
    finite = np.isfinite(kept) & np.isfinite(given)
    assert np.median(kept[finite] / given[finite]) == pytest.approx(1.0)
    model, processor = tiny_depth_model("relative")
    with torch.no_grad():
        model.head.conv3.weight.zero_()
        model.head.conv3.bias.fill_(2.0)  # 4 m everywhere before scaling
    frame = make_start_frame(image, W, H, fov_y=FOV_Y, estimator=TransformersDepthEstimator(model, processor))
    assert ground_below(frame) == pytest.approx(EYE_HEIGHT, rel=0.02)
