"""bench.error_budget: a novel view's squared error split by pixel class adds up to its MSE."""

from __future__ import annotations

import math

import numpy as np

from bench import error_budget
from bench.fidelity import SKY_DEPTH, Truth, eye_pose
from runtime.world.keyframes.frames import Frame

SEED = 7


def _view():
    truth = Truth("a pine forest", SEED)
    pose = eye_pose(0.0, 2.0, 0.3, 0.0, SEED)
    cam = pose.camera(96, 54, math.radians(60.0))
    rgb, depth = truth.render(cam)
    frame = Frame(0, rgb[0], depth[0], cam.w2c[0], cam.K[0])
    return cam, rgb[0], depth[0], frame


def test_classes_partition_the_view_and_their_errors_add_up_to_the_mse():
    cam, rgb, depth, frame = _view()
    world = rgb.copy()
    sky = ~np.isfinite(depth)
    assert sky.any() and (~sky).any()
    world[sky] = 0  # the only error: on sky pixels far from everything else
    budget = error_budget.view_budget(world, rgb, depth, np.ones(depth.shape, np.float32), cam, [frame], SEED, SKY_DEPTH)
    assert sum(budget["pixels"].values()) == depth.size
    mse = ((world.astype(float) - rgb) ** 2).mean()
    assert math.isclose(sum(budget["sse"].values()) / depth.size, mse, rel_tol=1e-9)
    assert math.isclose(budget["mse"], mse, rel_tol=1e-9)
    assert budget["sse"]["hole"] == budget["sse"]["unseen"] == 0  # the frame saw it all, the world is opaque
    assert budget["sse"]["sky"] + budget["sse"]["depth edge"] == sum(budget["sse"].values())
    assert math.isclose(sum(budget["band_sse"].values()) / depth.size, mse, rel_tol=1e-9)

    classes, bands, geometry = error_budget.tables([{"budget": budget}])
    assert math.isclose(sum(r["mse_share"] for r in classes), 1.0, rel_tol=1e-9)
    assert math.isclose(sum(r["pixels"] for r in classes), 1.0, rel_tol=1e-9)
    sky_row = next(r for r in classes if r["class"] == "sky")
    assert sky_row["psnr_if_perfect"] > geometry["psnr"] + 3


def test_a_shifted_world_is_found_to_be_misaligned():
    cam, rgb, depth, frame = _view()
    world = np.roll(rgb, 1, axis=1)  # the world drawn one pixel to the right
    budget = error_budget.view_budget(world, rgb, depth, np.ones(depth.shape, np.float32), cam, [frame], SEED, SKY_DEPTH)
    assert budget["shift_best"] == [-1, 0]
    assert budget["shift_mse"] < 1e-9 < budget["shift_mse0"]
    assert budget["slack_mse"] < 1e-9  # 1 px slack explains it all: geometry, not colour


def test_unseen_surfaces_are_those_no_keyframe_saw():
    cam, rgb, depth, frame = _view()
    world = np.zeros_like(rgb)
    budget = error_budget.view_budget(world, rgb, depth, np.ones(depth.shape, np.float32), cam, [], SEED, SKY_DEPTH)
    edge_free_surface = budget["pixels"]["unseen"]
    assert edge_free_surface > 0 and budget["pixels"]["ground"] == budget["pixels"]["object"] == budget["pixels"]["thin"] == 0


def test_the_skys_error_is_split_by_the_nearest_surface():
    cam, rgb, depth, frame = _view()
    world = rgb.copy()
    world[~np.isfinite(depth)] = 0
    budget = error_budget.view_budget(world, rgb, depth, np.ones(depth.shape, np.float32), cam, [frame], SEED, SKY_DEPTH)
    assert math.isclose(sum(budget["sky_sse"].values()), budget["sse"]["sky"] + budget["sse"]["depth edge"], rel_tol=1e-9)


def test_each_class_error_is_split_by_the_keyframes_that_drew_it():
    """With ``sources``, a class's error goes to the source with the most opacity at the pixel
    ("none" where no source reaches SOURCE_MIN_ALPHA); the parts add up to the class."""
    cam, rgb, depth, frame = _view()
    world = np.zeros_like(rgb)
    H, W = depth.shape
    fill = np.zeros((H, W), np.float32)
    detail = np.zeros((H, W), np.float32)
    fill[:, : W // 2] = 0.9  # the left half drawn by a fill keyframe, the right by a detail one
    detail[:, W // 2 :] = 0.6
    detail[:, -4:] = 0.0  # nothing draws the last columns
    budget = error_budget.view_budget(world, rgb, depth, np.ones(depth.shape, np.float32), cam, [frame], SEED, SKY_DEPTH,
                                      {"320x180": fill, "640x360": detail})
    se = ((world.astype(float) - rgb) ** 2).sum(axis=2) / 3.0
    parts = {k: sum(budget["source_sse"][c][k] for c in error_budget.CLASSES) for k in ("320x180", "640x360", "none")}
    assert math.isclose(parts["320x180"], se[:, : W // 2].sum(), rel_tol=1e-9)
    assert math.isclose(parts["640x360"], se[:, W // 2 : -4].sum(), rel_tol=1e-9)
    assert math.isclose(parts["none"], se[:, -4:].sum(), rel_tol=1e-9)
    for c in error_budget.CLASSES:
        assert math.isclose(sum(budget["source_sse"][c].values()), budget["sse"][c], rel_tol=1e-9, abs_tol=1e-9)
    shares = error_budget.tables([{"budget": budget}])[2]["source_share"]
    assert math.isclose(sum(sum(v.values()) for v in shares.values()), 1.0, rel_tol=1e-9)
