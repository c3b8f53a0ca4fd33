"""The wan-vace generator with a tiny random-weight Wan VACE built here (CPU, offline):
routing masks on a scene of known geometry, the camera path, the pipeline through a world
and through the real server, captions, progress and cancellation, LoRA, missing weights."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.world.camera import Cameras, Pose, intrinsics_from_fov
from runtime.world.generators import GeneratorUnavailable, create_generator
from runtime.world.generators.base import CancelToken, GenerationCancelled, GenerationRequest
from runtime.world.generators.diffusion import VideoDiffusionGenerator, camera_path, forward_warp, frames_for_budget, route, start_pose
from runtime.world.keyframes.frames import Frame

TINY = {"width": 32, "height": 32, "frames": 5, "steps": 2, "guidance": 1.0}
"""Generator options that keep a job to about a second on two CPU cores."""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from bench.models import save_tiny_vace_pipeline

    return str(save_tiny_vace_pipeline(tmp_path_factory.mktemp("wan") / "tiny-vace"))


@pytest.fixture(scope="module")
def tiny_depth(tmp_path_factory):
    from bench.models import save_tiny_depth_model

    return str(save_tiny_depth_model(tmp_path_factory.mktemp("depth") / "tiny-depth"))


def wall_frame(frame_id: int, depth_m: float, colour, w2c=None, size=(64, 48), fov_deg=60.0) -> Frame:
    """A memory frame looking at a flat wall ``depth_m`` ahead (``inf``: all sky)."""
    W, H = size
    rgb = np.empty((H, W, 3), np.uint8)
    rgb[:] = colour
    depth = np.full((H, W), depth_m, np.float32)
    K = intrinsics_from_fov(W, H, math.radians(fov_deg))
    return Frame(frame_id, rgb, depth, np.eye(4, dtype=np.float32) if w2c is None else w2c, K)


def turned(yaw: float, size=(64, 48), fov_deg=60.0) -> Cameras:
    return Pose(np.zeros(3, np.float32), yaw, 0.0).camera(size[0], size[1], math.radians(fov_deg))


# ---------------------------------------------------------------- routing
def test_routing_keeps_exactly_what_memory_saw():
    """A wall 4 m ahead seen by a memory frame; a camera turned 20 degrees right keeps the
    columns whose rays hit the wall inside the memory frame's view, and generates the rest."""
    frame = wall_frame(0, 4.0, (200, 50, 50))
    cams = turned(math.radians(20.0))
    cond = route(cams, [frame])
    # Expected: the target's ray through pixel (u, v), in the memory frame's camera (the
    # world frame), falls inside that frame's image.
    W, H = cams.width, cams.height
    K, Ks = cams.K[0], frame.K
    v, u = np.mgrid[0:H, 0:W] + 0.5
    x_cam, y_cam = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    yaw = math.radians(20.0)
    x_world = math.cos(yaw) * x_cam + math.sin(yaw)
    z_world = -math.sin(yaw) * x_cam + math.cos(yaw)
    us = Ks[0, 0] * x_world / z_world + Ks[0, 2]
    vs = Ks[1, 1] * y_cam / z_world + Ks[1, 2]
    expected = (us >= 0) & (us < frame.width) & (vs >= 0) & (vs < frame.height)
    agree = (cond.known[0] == expected).mean()
    assert agree > 0.98 and expected.mean() < 0.9, agree
    assert (cond.rgb[0][cond.known[0]] == (200, 50, 50)).all()
    assert (cond.rgb[0][~cond.known[0]] == 128).all()  # generate: mid-grey
    both = expected & cond.known[0]
    np.testing.assert_allclose(cond.depth[0][both], (4.0 / z_world)[both], rtol=0.05)  # z-depth in the target


def test_routing_z_buffers_and_warps_sky_as_directions():
    near = wall_frame(0, 2.0, (255, 0, 0))
    far = wall_frame(1, 6.0, (0, 0, 255))
    sky = wall_frame(2, np.inf, (0, 255, 0))
    rgb, depth, hit = forward_warp([far, near, sky], turned(0.0))
    assert hit.all() and (rgb[0] == (255, 0, 0)).all()  # the nearest surface wins everywhere
    np.testing.assert_allclose(depth[0], 2.0, rtol=1e-3)
    # Sky alone, seen from a camera 5 m away but turned the same way: it does not move.
    moved = Pose(np.array([5.0, 0.0, 0.0], np.float32), 0.0, 0.0).camera(64, 48, math.radians(60.0))
    rgb, depth, hit = forward_warp([sky], moved)
    assert hit.all() and np.isinf(depth).all() and (rgb[0] == (0, 255, 0)).all()


def test_routing_takes_the_scene_where_it_is_opaque():
    """With a scene: opaque pixels are kept as drawn; memory fills the rest, and wins where it
    holds something clearly in front of the scene."""
    from runtime.world.render.base import RenderOutput

    cams = turned(0.0)
    H, W = cams.height, cams.width

    def scene(c):
        alpha = np.zeros((1, H, W), np.float32)
        alpha[:, :, : W // 2] = 1.0  # the scene knows the left half: a wall 5 m away
        rgb = np.zeros((1, H, W, 3), np.uint8)
        rgb[..., 1] = 90
        return RenderOutput(rgb, np.where(alpha > 0, 5.0, np.inf).astype(np.float32), alpha, 0)

    post = wall_frame(0, np.inf, (255, 255, 255))  # seen from the same camera: sky, and ...
    post.depth[:, 28:36] = 2.0  # ... a post 2 m ahead straddling the middle
    cond = route(cams, [post], scene)
    assert cond.known[0].all()  # the scene's wall on the left, the memory's sky and post on the right
    assert (cond.rgb[0, :, 28:36] == 255).all()  # the post: in front of the scene's wall on the left
    np.testing.assert_allclose(cond.depth[0, :, 28:36], 2.0, rtol=1e-3)
    assert (cond.rgb[0, :, :26] == (0, 90, 0)).all()  # the scene's wall where only sky is behind it
    assert np.isinf(cond.depth[0, :, 38:]).all()  # sky from memory where the scene knows nothing


# ---------------------------------------------------------------- the camera path
def test_camera_path_runs_from_known_space_to_the_targets():
    targets = Cameras.concat([Pose(np.array([0.0, 0.0, 3.0], np.float32), 0.5, 0.0).camera(64, 48), Pose(np.array([0.0, 0.0, 3.0], np.float32), 1.0, 0.0).camera(64, 48)])
    memory = [wall_frame(0, 4.0, (1, 2, 3))]  # its camera is at the origin, 3 m from the targets
    start = start_pose(targets, memory)
    np.testing.assert_array_equal(start, memory[0].w2c)
    path = camera_path(start, targets, 9)
    assert len(path.cameras) == 9 and path.targets == (4, 8)
    np.testing.assert_allclose(path.cameras.w2c[0], start, atol=1e-5)
    for i, t in enumerate(path.targets):
        np.testing.assert_allclose(path.cameras.w2c[t], targets.w2c[i], atol=1e-4)
    steps = np.linalg.norm(np.diff(path.cameras.centers, axis=0), axis=1)
    assert steps[:4].std() < 1e-4  # even steps along a segment
    # No memory near: start 1.5 m behind the first target, facing the same way.
    far = start_pose(targets[:1], [])
    c = np.linalg.inv(far)[:3, 3]
    np.testing.assert_allclose(np.linalg.norm(c - targets.centers[0]), 1.5, rtol=1e-5)
    # k by budget: 1 s per frame and a 10 s budget give 9 frames; unknown speed, the most.
    assert frames_for_budget(10.0, 1.0, 33) == 9 and frames_for_budget(None, None, 33) == 33 and frames_for_budget(1.0, 1.0, 33) == 5


# ---------------------------------------------------------------- the pipeline
def request_at(yaw: float, caption: str = "a stone castle", memory=None, scene=None, seed=0) -> GenerationRequest:
    cams = Pose(np.array([0.0, 0.0, 1.0], np.float32), yaw, 0.0).camera(48, 27, math.radians(75.0))
    memory = (wall_frame(0, 4.0, (180, 120, 90)),) if memory is None else memory
    return GenerationRequest(cams, caption, memory, seed, None, scene)


def test_generate_shapes_progress_determinism_and_captions(tiny_model, tiny_depth):
    gen = create_generator("wan-vace", model=tiny_model, depth_model=tiny_depth, **{k: str(v) for k, v in TINY.items()})
    assert create_generator("wan-vace", model=tiny_model, depth_model=tiny_depth, **TINY)._loaded is gen._loaded  # loaded once
    seen = []
    result = gen.generate(request_at(0.4), lambda f, msg: seen.append((f, msg)), CancelToken())
    # 5 frames: keyframes every 4 and the target -> frame 4 only; at the request's size.
    assert result.rgb.shape == (1, 27, 48, 3) and result.rgb.dtype == np.uint8
    assert result.depth.shape == (1, 27, 48) and result.cameras.width == 48
    np.testing.assert_allclose(result.cameras.w2c[-1], request_at(0.4).cameras.w2c[0], atol=1e-4)
    steps = [msg for _, msg in seen if msg.startswith("denoising")]
    assert steps == ["denoising step 1/2", "denoising step 2/2"]
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    again = gen.generate(request_at(0.4), lambda *a: None, CancelToken())
    np.testing.assert_array_equal(again.rgb, result.rgb)  # same seed, caption, cameras: same pixels
    other = gen.generate(request_at(0.4, caption="a snowy forest at night"), lambda *a: None, CancelToken())
    assert not np.array_equal(other.rgb, result.rgb)  # the caption is the prompt


def test_cancel_stops_between_denoising_steps(tiny_model):
    gen = VideoDiffusionGenerator(tiny_model, **{**TINY, "steps": 4})
    token = CancelToken()
    seen = []

    def progress(fraction, message):
        seen.append(message)
        if message == "denoising step 2/4":
            token.cancel()

    with pytest.raises(GenerationCancelled):
        gen.generate(request_at(0.3), progress, token)
    assert seen[-1] == "denoising step 2/4" and "denoising step 3/4" not in seen
    # The shared pipeline is usable again right after.
    assert gen.generate(request_at(0.3), lambda *a: None, CancelToken()).rgb.shape == (1, 27, 48, 3)


def test_lora_is_fused_and_changes_the_output(tiny_model, tmp_path):
    from diffusers import WanVACEPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    import torch

    pipe = WanVACEPipeline.from_pretrained(tiny_model, local_files_only=True)
    pipe.transformer.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"], init_lora_weights=False))
    WanVACEPipeline.save_lora_weights(tmp_path / "lora", transformer_lora_layers=get_peft_model_state_dict(pipe.transformer))
    plain = VideoDiffusionGenerator(tiny_model, **TINY)
    distilled = VideoDiffusionGenerator(tiny_model, lora=str(tmp_path / "lora"), **{**TINY, "steps": None, "guidance": None})
    assert distilled.steps == 4 and distilled.guidance == 1.0  # a distillation LoRA's defaults
    a = plain.generate(request_at(0.2), lambda *a: None, CancelToken()).rgb
    b = VideoDiffusionGenerator(tiny_model, lora=str(tmp_path / "lora"), **TINY).generate(request_at(0.2), lambda *a: None, CancelToken()).rgb
    assert not np.array_equal(a, b)
    assert torch.is_tensor(next(pipe.transformer.parameters()))


def test_missing_weights_are_one_line_naming_the_option(tmp_path):
    for options in ({}, {"model": str(tmp_path / "no-such-model")}):
        with pytest.raises(GeneratorUnavailable) as info:
            create_generator("wan-vace", **options)
        message = str(info.value)
        assert "\n" not in message and "--generator-option model=" in message and "Wan2.1-VACE" in message, message


def test_world_grows_with_the_diffusion_generator(tiny_model, tiny_depth):
    """A world walked by a player: the generator's keyframes land as chunks and memory frames."""
    from runtime.world.depth import load_depth_estimator
    from runtime.world.players import PlayerState
    from runtime.world.render import create_renderer
    from runtime.world.world import World, WorldConfig

    gen = VideoDiffusionGenerator(tiny_model, **TINY)
    config = WorldConfig("vace", keyframe_width=48, keyframe_height=27, probe_width=32, probe_height=18)
    with World(config, generator=gen, renderer=create_renderer("cpu"), depth_estimator=load_depth_estimator(tiny_depth)) as world:
        spawn = world.spawn_pose()
        world.update([PlayerState("p", spawn)])
        assert world.wait_idle(300)
        chunks = world.scene.snapshot().chunks
        assert chunks and {c.source.generator for c in chunks} == {"wan-vace"}
        frames = world.memory.frames()
        assert frames and all(f.rgb.shape == (27, 48, 3) for f in frames)
        assert world.stats["jobs_done"] >= 1 and world.stats["jobs_failed"] == 0


def test_chunks_land_as_a_player_walks_through_the_real_server(start_server, tiny_model, tiny_depth, tmp_path):
    """``--generator wan-vace`` with the tiny model, a world made from a start image: a player
    walks, generation_progress counts denoising steps, and generated chunks land
    (generation_done with Gaussians) around the image's keyframe."""
    import asyncio

    from protocol import messages as m
    from runtime.client import WorldClient
    from runtime.world.formats.media import write_image
    from test_start_image import photo

    image, _ = photo(160, 90)
    write_image(tmp_path / "start.png", image)
    new_world = m.NewWorld(name="vace-walk", caption="a stone castle", start_image=(tmp_path / "start.png").read_bytes())

    options = [f"model={tiny_model}"] + [f"{k}={v}" for k, v in TINY.items()]
    args = sum((["--generator-option", o] for o in options), []) + ["--depth-model", tiny_depth]
    server = start_server(generator="wan-vace", resolution="64x36", extra_args=tuple(args))

    async def walk():
        async with WorldClient(server.url, new_world=new_world, video=False) as c:
            assert c.welcome.server.generator == "wan-vace"
            assert c.welcome.notice == ""  # the depth model placed the image as keyframe 0
            deadline = asyncio.get_running_loop().time() + 240
            while asyncio.get_running_loop().time() < deadline:
                await c.send_input(forward=1.0)
                await asyncio.sleep(0.2)
                done = [e for e in c.events if e.TYPE == "generation_done" and e.gaussians > 0]
                if len(done) >= 2:
                    break
            return list(c.events)

    events = asyncio.run(walk())
    done = [e for e in events if e.TYPE == "generation_done" and e.gaussians > 0]
    assert len(done) >= 2, [e.TYPE for e in events][-20:]
    steps = {e.message for e in events if e.TYPE == "generation_progress"}
    assert {"denoising step 1/2", "denoising step 2/2"} <= steps
    assert not [e for e in events if e.TYPE == "generation_failed" and not e.cancelled]


def test_server_refuses_wan_vace_without_weights_or_depth(tmp_path, tiny_model):
    import subprocess
    import sys

    from conftest import ROOT

    def start(*args):
        return subprocess.run(
            [sys.executable, "-m", "runtime.app", "--port", "0", "--worlds", str(tmp_path / "w"), "--generator", "wan-vace", *args],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )

    for args, words in [((), "--generator-option model="), (("--generator-option", f"model={tiny_model}"), "--depth-model")]:
        result = start(*args)
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        assert result.returncode == 2 and len(errors) == 1 and words in errors[0], result.stderr
        assert "Traceback" not in result.stderr and "it/s" not in result.stderr  # no progress bars
