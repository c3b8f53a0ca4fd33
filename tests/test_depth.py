"""Depth: the transformers estimator (a tiny random-weight Depth Anything built here), its
alignment to known depth, and depth maps read from files."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import torch

from runtime.world.depth import (
    DepthMapError,
    DepthModelMissing,
    align_inverse_depth,
    align_to_known,
    load_depth_estimator,
    read_depth_map,
)
from runtime.world.generators.base import GenerationRequest


def png16(mm: np.ndarray) -> bytes:
    """``[H, W]`` uint16 millimetres as a 16-bit greyscale PNG."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="image2pipe") as container:
        stream = container.add_stream("png")
        stream.height, stream.width = mm.shape
        stream.pix_fmt = "gray16be"
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(mm, np.uint16), format="gray16le")):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


@pytest.fixture(scope="module")
def metric_model_dir(tmp_path_factory):
    from bench.models import save_tiny_depth_model

    return save_tiny_depth_model(tmp_path_factory.mktemp("depth") / "metric", "metric", max_depth=20)


def test_estimator_gives_metres_per_pixel_and_loads_once(metric_model_dir):
    estimator = load_depth_estimator(str(metric_model_dir))
    assert load_depth_estimator(str(metric_model_dir)) is estimator  # one model per process
    rgb = np.random.default_rng(0).integers(0, 255, (3, 36, 64, 3), dtype=np.uint8)
    depth = estimator.estimate(rgb)
    assert depth.shape == (3, 36, 64) and depth.dtype == np.float32
    assert estimator.metric
    finite = depth[np.isfinite(depth)]
    assert finite.size and (finite > 0).all() and (finite < 20).all()


def test_metric_sky_is_inf_and_relative_disparity_becomes_metres(tmp_path):
    from bench.models import tiny_depth_model
    from runtime.world.depth import TransformersDepthEstimator

    rgb = np.full((1, 28, 42, 3), 128, np.uint8)
    model, processor = tiny_depth_model("metric", max_depth=20)
    head = model.head.conv3
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(10.0)  # sigmoid(10) x max_depth: the model's "as far as I can tell": sky
    assert np.isinf(TransformersDepthEstimator(model, processor).estimate(rgb)).all()
    with torch.no_grad():
        head.bias.fill_(-1.0)
    depth = TransformersDepthEstimator(model, processor).estimate(rgb)
    np.testing.assert_allclose(depth, 20 / (1 + np.e), rtol=1e-4)

    model, processor = tiny_depth_model("relative")
    with torch.no_grad():
        model.head.conv3.weight.zero_()
        model.head.conv3.bias.fill_(2.0)
    depth = TransformersDepthEstimator(model, processor, relative_median_m=5.0).estimate(rgb)
    np.testing.assert_allclose(depth, 5.0, rtol=1e-5)


def test_missing_model_is_one_line_naming_the_option(tmp_path):
    with pytest.raises(DepthModelMissing) as info:
        load_depth_estimator(str(tmp_path / "no-such-model"))
    message = str(info.value)
    assert "\n" not in message and "--depth-model" in message and "Depth-Anything" in message


def test_alignment_recovers_scale_and_shift_in_inverse_depth():
    rng = np.random.default_rng(1)
    truth = rng.uniform(1.0, 30.0, (40, 60)).astype(np.float32)
    truth[:5] = np.inf  # sky
    # A monocular guess: right up to an affine map of disparity.
    guess = 1.0 / (0.5 / truth + 0.02)
    reference = truth.copy()
    reference[:, 30:] = np.inf  # the scene knows only the left half
    aligned, scale, shift = align_inverse_depth(guess, reference)
    assert scale == pytest.approx(2.0, rel=1e-4) and shift == pytest.approx(-0.04, abs=1e-5)
    np.testing.assert_allclose(aligned[5:], truth[5:], rtol=1e-3)  # the unknown half too
    assert np.isinf(aligned[:5]).all()

    # Per frame, only where the weight (rendered opacity) is high; nothing known: unchanged.
    both = align_to_known(np.stack([guess, guess]), np.stack([reference, reference]), np.stack([np.ones_like(truth), np.zeros_like(truth)]))
    np.testing.assert_allclose(both[0][5:], truth[5:], rtol=1e-3)
    np.testing.assert_array_equal(both[1], guess)


def test_depth_maps_from_files(tmp_path):
    mm = np.array([[0, 1000, 2500], [65535, 300, 0]], np.uint16)
    (tmp_path / "d.png").write_bytes(png16(mm))
    depth = read_depth_map(tmp_path / "d.png")
    np.testing.assert_allclose(depth, [[np.inf, 1.0, 2.5], [65.535, 0.3, np.inf]], rtol=1e-6)

    np.save(tmp_path / "d.npy", np.array([[1.5, np.nan], [-1.0, 7.0]]))
    np.testing.assert_array_equal(read_depth_map(tmp_path / "d.npy"), np.array([[1.5, np.inf], [np.inf, 7.0]], np.float32))

    from runtime.world.formats.media import write_image

    write_image(tmp_path / "rgb.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DepthMapError, match="16-bit greyscale"):
        read_depth_map(tmp_path / "rgb.png")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(DepthMapError, match="junk.npy"):
        read_depth_map(tmp_path / "junk.npy")


class GreyFrames:
    """A generator that paints RGB only (the plug-in from docs/generators.md): the world must
    estimate depth for its frames."""

    name = "grey"

    def generate(self, request, progress, cancel):
        from runtime.world.generators import GenerationResult

        cams = request.cameras
        progress(1.0, "done")
        return GenerationResult(np.full((len(cams), cams.height, cams.width, 3), 120, np.uint8))


def test_world_aligns_estimated_depth_to_what_its_scene_shows():
    """An RGB-only result in a world whose scene already shows a wall 5 m ahead: the
    estimator's guess (4 m everywhere, a relative model's unknown scale) lands aligned to 5 m."""
    import math

    from bench.models import tiny_depth_model
    from runtime.world.camera import Pose
    from runtime.world.depth import TransformersDepthEstimator
    from runtime.world.frontier.jobs import GenerationJob
    from runtime.world.keyframes.start_frame import seed_world
    from runtime.world.render import create_renderer
    from runtime.world.world import World, WorldConfig

    model, processor = tiny_depth_model("relative")
    with torch.no_grad():
        model.head.conv3.weight.zero_()
        model.head.conv3.bias.fill_(2.0)  # constant disparity: 4 m everywhere before alignment
    estimator = TransformersDepthEstimator(model, processor, relative_median_m=4.0)
    config = WorldConfig("aligned", keyframe_width=48, keyframe_height=27)
    with World(config, generator=GreyFrames(), renderer=create_renderer("cpu"), depth_estimator=estimator) as world:
        wall = np.full((90, 160), 5.0, np.float32)
        seed_world(world, np.full((90, 160, 3), 90, np.uint8), 160, 90, fov_y=math.radians(60), depth=wall)
        cams = Pose(np.zeros(3, np.float32), 0.0, 0.0).camera(48, 27, math.radians(40))  # inside the wall's view
        job = GenerationJob(99, cams, "", np.zeros(3, np.float32), 1.0)
        world.apply(job, GreyFrames().generate(GenerationRequest(cams), lambda *a: None, None))
        frame = max(world.memory.frames(), key=lambda f: f.id)
        np.testing.assert_allclose(frame.depth, 5.0, rtol=0.02)
