"""Reconstruction: depth maps -> pixel-aligned Gaussians, on scenes with known geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.world.camera import Cameras, Pose, intrinsics_from_fov, quat_wxyz_to_matrix
from runtime.world.gaussians import Gaussians
from runtime.world.keyframes.frames import Frame
from runtime.world.keyframes.reconstruct import (
    MAX_STRETCH,
    drop_occluders,
    matrix_to_quat_wxyz,
    occluder_mask,
    reconstruct,
    reduce_blocks,
    shown_depth,
    unproject_depth,
)

W, H, F = 64, 48, 50.0


def K_() -> np.ndarray:
    return np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]], np.float32)


def identity_cameras(n: int = 1) -> Cameras:
    return Cameras(np.repeat(np.eye(4, dtype=np.float32)[None], n, 0), np.repeat(K_()[None], n, 0), W, H)


def textured(n: int = 1) -> np.ndarray:
    v, u = np.mgrid[0:H, 0:W]
    img = np.stack([u * 4 % 256, v * 5 % 256, (u + v) * 3 % 256], -1).astype(np.uint8)
    return np.repeat(img[None], n, 0)


def test_plane_gives_one_surfel_per_block_on_the_plane():
    depth = np.full((1, H, W), 5.0, np.float32)
    g = reconstruct(textured(), depth, identity_cameras(), None, stride=2, sharpen=0.0)
    assert len(g) == (H // 2) * (W // 2)
    np.testing.assert_allclose(g.means[:, 2], 5.0, rtol=1e-5)
    footprint = 2 * 5.0 / F
    scales = np.sort(g.scales, axis=1)
    np.testing.assert_allclose(scales[:, 2], 0.7 * footprint, rtol=1e-4)  # tangent axes: pixel footprint
    np.testing.assert_allclose(scales[:, 1], 0.7 * footprint, rtol=1e-4)
    assert np.all(scales[:, 0] < 0.2 * footprint)  # flattened along the normal
    # The flat axis is the plane's normal (camera z).
    R = quat_wxyz_to_matrix(g.quats)
    flat_axis = R[np.arange(len(g)), :, np.argmin(g.log_scales, axis=1)]
    np.testing.assert_allclose(np.abs(flat_axis[:, 2]), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(g.quats, axis=1), 1.0, atol=1e-5)
    assert np.all(g.opacities > 0.9)
    # Colour is the block average of the image (without pre-sharpening).
    img = textured()[0].astype(np.float32) / 255
    block = img.reshape(H // 2, 2, W // 2, 2, 3).mean(axis=(1, 3)).reshape(-1, 3)
    np.testing.assert_allclose(np.sort(g.colors, axis=0), np.sort(block, axis=0), atol=1e-5)


def test_colours_are_pre_sharpened_within_a_surface_only():
    """Block colours get an unsharp mask over their same-surface neighbours: a flat colour stays
    flat, a fine texture gains contrast, and a silhouette does not ring against its background."""
    depth = np.full((1, H, W), 5.0, np.float32)
    flat = np.full((1, H, W, 3), 100, np.uint8)
    np.testing.assert_allclose(reconstruct(flat, depth, identity_cameras(), None).colors, 100 / 255, atol=1e-6)
    stripes = np.zeros((1, H, W, 3), np.uint8)
    stripes[:, :, (np.arange(W) // 2) % 2 == 1] = 160  # one block column dark, one bright
    stripes[:, :, (np.arange(W) // 2) % 2 == 0] = 80
    plain = reconstruct(stripes, depth, identity_cameras(), None, sharpen=0.0).colors
    sharp = reconstruct(stripes, depth, identity_cameras(), None, sharpen=0.5).colors
    assert np.ptp(sharp) > 1.3 * np.ptp(plain)
    # A bright foreground square in front of a dark wall: its colour is its own, unchanged.
    step = np.full((1, H, W), 10.0, np.float32)
    step[:, 16:32, 16:40] = 4.0
    rgb = np.full((1, H, W, 3), 40, np.uint8)
    rgb[:, 16:32, 16:40] = 200
    g = reconstruct(rgb, step, identity_cameras(), None, sharpen=1.0)
    front = np.abs(g.means[:, 2] - 4.0) < 1e-3
    np.testing.assert_allclose(g.colors[front], 200 / 255, atol=1e-6)
    np.testing.assert_allclose(g.colors[~front], 40 / 255, atol=1e-6)


def test_means_are_in_world_coordinates():
    pose = Pose(np.array([3.0, -1.0, 2.0]), yaw=0.7, pitch=0.2)
    cams = Cameras(pose.w2c[None], K_()[None], W, H)
    depth = np.full((1, H, W), 4.0, np.float32)
    g = reconstruct(textured(), depth, cams, None, stride=4)
    # Every mean is 4 m in front of the camera along its forward axis.
    ahead = (g.means - pose.position) @ cams.forwards[0]
    np.testing.assert_allclose(ahead, 4.0, rtol=1e-4)


def test_covered_views_add_nothing():
    depth = np.full((1, H, W), 5.0, np.float32)
    assert len(reconstruct(textured(), depth, identity_cameras(), np.ones((1, H, W), np.float32))) == 0
    # Half covered: only the uncovered half is filled.
    alpha = np.zeros((1, H, W), np.float32)
    alpha[:, :, : W // 2] = 1.0
    g = reconstruct(textured(), depth, identity_cameras(), alpha, stride=2)
    assert len(g) == (H // 2) * (W // 4)
    assert np.all(g.means[:, 0] > 0)


def test_sky_is_never_a_splat():
    sky = np.full((1, H, W), np.inf, np.float32)
    assert len(reconstruct(textured(), sky, identity_cameras(), None)) == 0
    far = np.full((1, H, W), 500.0, np.float32)
    assert len(reconstruct(textured(), far, identity_cameras(), None, max_depth=200.0)) == 0
    half = np.full((1, H, W), 5.0, np.float32)
    half[:, : H // 2] = np.inf  # upper half sky
    g = reconstruct(textured(), half, identity_cameras(), None, stride=2)
    # A splat per block, but per pixel (4 a block) on the block row under the sky.
    assert len(g) == (H // 4 - 1) * (W // 2) + 4 * (W // 2)
    assert len(reconstruct(textured(), half, identity_cameras(), None, stride=2, split_sky_edges=False)) == (H // 4) * (W // 2)
    assert np.all(np.isfinite(g.means)) and np.all(g.means[:, 1] > 0)


def test_depth_step_is_not_bridged():
    depth = np.full((1, H, W), 5.0, np.float32)
    depth[:, :, W // 2 + 1 :] = 10.0  # the step falls inside a 2x2 block
    g = reconstruct(textured(), depth, identity_cameras(), None, stride=2)
    z = g.means[:, 2]
    assert np.all((np.abs(z - 5.0) < 1e-3) | (np.abs(z - 10.0) < 1e-3)), "a Gaussian floats between surfaces"
    # No Gaussian's 3-sigma extent reaches across the 5 m gap.
    assert np.all(3 * g.scales.max(axis=1) < 1.0)
    # The foreground keeps its silhouette column; the background loses at most its edge column.
    assert np.count_nonzero(np.abs(z - 5.0) < 1e-3) == (H // 2) * (W // 4 + 1)
    assert np.count_nonzero(np.abs(z - 10.0) < 1e-3) >= (H // 2) * (W // 4 - 2)


def test_flying_pixels_between_surfaces_are_dropped():
    depth = np.full((1, H, W), 5.0, np.float32)
    depth[:, :, W // 2 :] = 10.0
    depth[:, :, W // 2 - 2 : W // 2] = 7.0  # one block column of blurred edge depth
    g = reconstruct(textured(), depth, identity_cameras(), None, stride=2)
    assert not np.any(np.abs(g.means[:, 2] - 7.0) < 0.5)


def test_thin_foreground_structures_survive():
    depth = np.full((1, H, W), 10.0, np.float32)
    depth[:, :, 30:32] = 4.0  # a pole one block wide in front of a wall
    g = reconstruct(textured(), depth, identity_cameras(), None, stride=2)
    pole = np.abs(g.means[:, 2] - 4.0) < 1e-3
    assert np.count_nonzero(pole) == H // 2
    assert np.all(3 * g.scales[pole].max(axis=1) < 0.5)  # camera-facing, pixel-sized


def test_isolated_points_are_dropped():
    depth = np.full((1, H, W), np.inf, np.float32)
    depth[:, 10:12, 20:22] = 3.0  # one lone block
    depth[:, 30:40, 30:50] = 6.0  # a solid patch
    g = reconstruct(textured(), depth, identity_cameras(), None, stride=2, floater_min_neighbors=2)
    assert not np.any(np.abs(g.means[:, 2] - 3.0) < 1e-3)
    # Every block of the patch; the 26 on its edge with the sky are drawn per pixel (4 each).
    assert np.count_nonzero(np.abs(g.means[:, 2] - 6.0) < 1e-3) == 5 * 10 + 3 * 26
    g0 = reconstruct(textured(), depth, identity_cameras(), None, stride=2, floater_min_neighbors=0)
    assert np.any(np.abs(g0.means[:, 2] - 3.0) < 1e-3)


def test_identical_views_in_one_call_are_not_duplicated():
    depth = np.full((2, H, W), 5.0, np.float32)
    one = reconstruct(textured(1), depth[:1], identity_cameras(1), None)
    two = reconstruct(textured(2), depth, identity_cameras(2), None)
    assert len(two) == len(one)


def test_overlapping_views_add_only_the_new_part():
    # A wall 8 m ahead seen from two cameras 1 m apart sideways.
    poses = [Pose(np.array([0.0, 0.0, 0.0])), Pose(np.array([1.0, 0.0, 0.0]))]
    cams = Cameras(np.stack([p.w2c for p in poses]), np.repeat(K_()[None], 2, 0), W, H)
    depth = np.full((2, H, W), 8.0, np.float32)
    one = reconstruct(textured(1), depth[:1], cams[0], None)
    both = reconstruct(textured(2), depth, cams, None)
    # View 2 sees 1 m of new wall on its right: 1 m / (2 * 8 / 50 m per block) ~ 3 columns.
    new = len(both) - len(one)
    assert 2 * (H // 2) <= new <= 5 * (H // 2)
    assert both.means[len(one) :, 0].min() > 0.9 * (W / 2 * 8 / F)  # only beyond view 1's right edge


def test_grazing_ground_stays_closed():
    """A ground plane seen at a grazing angle is smooth: no block is taken for an edge."""
    w, h = 160, 90
    K = intrinsics_from_fov(w, h, math.radians(75))
    cam = Pose(np.zeros(3)).camera(w, h, math.radians(75))
    v = np.arange(h) + 0.5
    ray_y = (v - K[1, 2]) / K[1, 1]
    depth_col = np.where(ray_y > 0, 1.6 / np.maximum(ray_y, 1e-9), np.inf)  # ground 1.6 m below
    depth = np.repeat(depth_col[:, None], w, 1)[None].astype(np.float32)
    rgb = np.full((1, h, w, 3), 120, np.uint8)
    g = reconstruct(rgb, depth, cam, None, stride=2, max_depth=200.0)
    valid_blocks = np.isfinite(reduce_blocks(depth[0], 2, 200.0).depth).sum()
    assert len(g) >= 0.95 * valid_blocks - 2 * (w // 2)  # at most the skyline rows go
    np.testing.assert_allclose(g.means[:, 1], 1.6, atol=0.05 * 1.6)  # on the ground
    # Flat axis is vertical, and far footprints stretch along the ground.
    R = quat_wxyz_to_matrix(g.quats)
    flat_axis = R[np.arange(len(g)), :, np.argmin(g.log_scales, axis=1)]
    assert np.median(np.abs(flat_axis[:, 1])) > 0.99


def _grazing_ground(w: int, h: int, ends_at: float = math.inf):
    """A camera at the origin 1.6 m over flat ground (y down), 75 degrees: ``(camera, depth [1, h, w])``
    with the ground cut at ``ends_at`` m along the view (a brow: sky beyond), and a checker
    texture of 0.5 m squares ``[1, h, w, 3]``."""
    cam = Pose(np.zeros(3)).camera(w, h, math.radians(75))
    K = cam.K[0]
    v, u = np.mgrid[0:h, 0:w] + 0.5
    ray_x, ray_y = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    depth = np.where(ray_y > 0, 1.6 / np.maximum(ray_y, 1e-9), np.inf)
    depth = np.where(depth <= ends_at, depth, np.inf)
    with np.errstate(invalid="ignore"):
        checker = (np.floor(2 * ray_x * depth) + np.floor(2 * depth)) % 2
    rgb = np.where(np.isfinite(depth), 60 + 120 * np.nan_to_num(checker), 200)
    return cam, depth[None].astype(np.float32), np.repeat(rgb[None, ..., None], 3, -1).astype(np.uint8)


def test_no_needles_on_grazing_ground_or_past_its_edge():
    """Ground seen at a grazing angle up to a brow 12 m out: surfels stretch along the ground only
    as far as their neighbours on it support (at most MAX_STRETCH footprints), they stay on it,
    and the last rows reach past the brow by at most about one footprint (the symmetric stretch
    of a one-sided neighbour step reached 2.8 footprints: needles into the sky)."""
    edge = 12.0
    w, h = 160, 90
    cam, depth, rgb = _grazing_ground(w, h, ends_at=edge)
    g = reconstruct(rgb, depth, cam, None, stride=2)
    scales = np.sort(g.scales, axis=1)
    assert np.all(scales[:, 2] <= MAX_STRETCH * scales[:, 1] * (1 + 1e-4))  # bounded anisotropy
    R = quat_wxyz_to_matrix(g.quats)
    long_axis = R[np.arange(len(g)), :, np.argmax(g.log_scales, axis=1)]
    tips = np.concatenate([g.means + s * 2 * scales[:, 2:3] * long_axis for s in (-1, 1)])
    np.testing.assert_allclose(tips[:, 1], 1.6, atol=0.01)  # the surfels lie in the ground
    footprint = 2 * edge / cam.K[0, 1, 1]
    assert tips[:, 2].max() - edge <= 1.5 * footprint


def test_grazing_ground_is_drawn_sharper():
    """The stretch along a grazing ground follows the nearer neighbour, not the farther one: drawn
    at its own keyframe (no colour fitting), a checkered ground keeps more of its detail. Measured
    0.44 before supported extents and pre-sharpening, 0.58 after (2026-12-07)."""
    from bench.compare import sharpness
    from runtime.world.render.cpu import CpuRenderer
    from runtime.world.scene import Chunk, ChunkSource, SceneSnapshot
    from runtime.world.sky import Sky

    cam, depth, rgb = _grazing_ground(160, 90, ends_at=12.0)
    g = reconstruct(rgb, depth, cam, None, stride=2)
    drawn = CpuRenderer().render(SceneSnapshot(0, (Chunk.build(0, g, ChunkSource()),)), cam, Sky()).rgb[0]
    assert sharpness(drawn) >= 0.52 * sharpness(rgb[0])


def test_a_lone_block_in_front_of_a_wall_is_a_floater():
    """A single block hovering in front of a wall has no neighbour on its own surface: dropped. A
    pole one block wide keeps its neighbours along itself (see the thin-structure test)."""
    depth = np.full((1, H, W), 10.0, np.float32)
    depth[:, 20:22, 30:32] = 4.0
    g = reconstruct(textured(), depth, identity_cameras(), None, stride=2)
    assert not np.any(np.abs(g.means[:, 2] - 4.0) < 1e-3)
    assert np.count_nonzero(np.abs(g.means[:, 2] - 10.0) < 1e-3) == (H // 2) * (W // 2) - 1


def test_background_through_a_slit_is_kept():
    """A far wall seen through a slit one block wide between two near walls is a real surface (no
    neighbour is nearer on one side and farther on the other, as a flying pixel's is): kept, so
    no gap opens between the near walls."""
    depth = np.full((1, H, W), 3.0, np.float32)
    depth[:, :, 30:32] = 10.0
    g = reconstruct(textured(), depth, identity_cameras(), None, stride=2)
    assert np.count_nonzero(np.abs(g.means[:, 2] - 10.0) < 1e-3) == H // 2
    assert np.count_nonzero(np.abs(g.means[:, 2] - 3.0) < 1e-3) == (H // 2) * (W // 2 - 1)


def test_unproject_depth_round_trips():
    pose = Pose(np.array([1.0, -2.0, 0.5]), yaw=-1.1, pitch=0.3)
    depth = (3.0 + np.random.default_rng(0).random((H, W))).astype(np.float32)
    depth[:5] = np.inf
    pts, blocks = unproject_depth(depth, K_(), pose.w2c, stride=1)
    assert len(pts) == (H - 5) * W and blocks.shape == (len(pts), 2)
    pc = pts @ pose.w2c[:3, :3].T + pose.w2c[:3, 3]
    np.testing.assert_allclose(pc[:, 2], depth[blocks[:, 0], blocks[:, 1]], rtol=1e-4)
    u = F * pc[:, 0] / pc[:, 2] + W / 2
    np.testing.assert_allclose(u, blocks[:, 1] + 0.5, atol=1e-3)  # pixel centres at +0.5


def test_quaternion_round_trip():
    q = np.random.default_rng(1).normal(size=(500, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q *= np.sign(q[:, :1])
    np.testing.assert_allclose(matrix_to_quat_wxyz(quat_wxyz_to_matrix(q)), q, atol=1e-5)


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="depth"):
        reconstruct(textured(), np.ones((1, H, W + 1), np.float32), identity_cameras(), None)
    with pytest.raises(ValueError, match="existing_alpha"):
        reconstruct(textured(), np.ones((1, H, W), np.float32), identity_cameras(), np.ones((H, W)))
    with pytest.raises(ValueError, match="stride"):
        reconstruct(textured(), np.ones((1, H, W), np.float32), identity_cameras(), None, stride=0)
    with pytest.raises(ValueError, match="sharpen"):
        reconstruct(textured(), np.ones((1, H, W), np.float32), identity_cameras(), None, sharpen=-1.0)


# --------------------------------------------------------------------------- revisit consistency


def sky_over_wall_frame() -> Frame:
    """The identity camera saw a wall 10 m ahead in its lower half and sky above it."""
    depth = np.full((H, W), 10.0, np.float32)
    depth[: H // 2] = np.inf
    return Frame(0, textured()[0], depth, np.eye(4, dtype=np.float32), K_())


def camera_facing_splats(points: np.ndarray, sigma: float = 0.02) -> Gaussians:
    """Small round Gaussians at ``points`` ``[M, 3]``."""
    n = len(points)
    quats = np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1))
    return Gaussians(points, quats, np.full((n, 3), math.log(sigma)), np.full(n, 3.0), np.full((n, 3), 0.5))


def ray_point(row: float, col: float, depth: float) -> np.ndarray:
    """World point (identity camera) at pixel ``(row, col)`` centre and ``depth`` metres."""
    return np.array([(col + 0.5 - W / 2) / F * depth, (row + 0.5 - H / 2) / F * depth, depth], np.float32)


def test_shown_depth_is_empty_on_sky_and_dropped_edges():
    frame = sky_over_wall_frame()
    shown = shown_depth(frame.depth, stride=2)
    assert shown.shape == (H // 2, W // 2)
    assert np.all(np.isinf(shown[: H // 4]))  # sky shows nothing
    np.testing.assert_allclose(shown[H // 4 + 2 :], 10.0)  # the wall shows itself
    flying = np.full((H, W), 5.0, np.float32)
    flying[:, W // 2 :] = 10.0
    flying[:, W // 2 - 2 : W // 2] = 7.0  # a blurred edge: reconstruction drops it, so nothing shows
    assert np.all(np.isinf(shown_depth(flying, stride=2)[:, W // 4 - 1]))


def test_a_frame_that_saw_sky_blocks_splats_in_front():
    frame = sky_over_wall_frame()
    in_sky = ray_point(5, 20, 6.0)  # upper half: the frame saw sky along this ray
    in_front = ray_point(40, 20, 6.0)  # lower half, 4 m in front of the wall
    kept = drop_occluders(camera_facing_splats(np.stack([in_sky, in_front])), [frame])
    assert len(kept) == 0


def test_splats_behind_or_on_a_seen_surface_are_kept():
    frame = sky_over_wall_frame()
    behind = ray_point(40, 20, 14.0)  # hidden by the wall
    on_wall = ray_point(36, 40, 10.05)  # on it, within the margin
    g = camera_facing_splats(np.stack([behind, on_wall]))
    assert not occluder_mask(g, [frame]).any()
    # A frozen view a player was shown keeps only what lies clearly behind: a splat on its
    # surface would blend with the splats that made it and change its colour.
    assert occluder_mask(g, [frame], keep_on_surface=False).tolist() == [False, True]
    # Right under the skyline, a splat on the wall spills into the sky: dropped.
    at_skyline = camera_facing_splats(ray_point(H // 2, 20, 10.0)[None], sigma=0.3)
    assert occluder_mask(at_skyline, [frame]).all()


def test_a_hidden_splat_spilling_past_a_silhouette_is_dropped():
    frame = sky_over_wall_frame()
    frame = Frame(0, frame.rgb, np.where(np.isinf(frame.depth), 40.0, frame.depth), frame.w2c, frame.K)  # far wall above
    just_below_edge = camera_facing_splats(ray_point(H // 2 + 1, 20, 20.0)[None], sigma=0.3)  # behind the near wall
    deep_below = camera_facing_splats(ray_point(H - 4, 20, 20.0)[None], sigma=0.3)
    assert occluder_mask(just_below_edge, [frame]).all()  # its tail shows above the near wall
    assert not occluder_mask(deep_below, [frame]).any()


def test_frames_decide_only_about_points_seen_from_comparable_distance():
    frame = sky_over_wall_frame()
    g = camera_facing_splats(ray_point(5, 20, 6.0)[None])  # in the frame's sky, 6 m from it
    near_camera = g.means + np.array([0.0, 0.0, -1.0], np.float32)  # made from 1 m away
    far_camera = g.means + np.array([0.0, 0.0, -5.0], np.float32)  # made from 5 m away
    assert not occluder_mask(g, [frame], new_centers=near_camera, authority_ratio=3.0).any()
    assert occluder_mask(g, [frame], new_centers=far_camera, authority_ratio=3.0).all()


def test_a_views_own_frame_would_block_its_silhouette():
    """Why the world checks a chunk only against earlier jobs' frames: a view's own splats at a
    skyline spill into its sky. (The world adds a job's frames to memory after this check.)"""
    frame = sky_over_wall_frame()
    cams = Cameras(frame.w2c[None], frame.K[None], W, H)
    g = reconstruct(frame.rgb[None], frame.depth[None], cams, None, stride=2)
    own = occluder_mask(g, [frame])
    # Exactly the splats of the skyline's block row and the one under it (footprint + dilation).
    row = F * g.means[:, 1] / g.means[:, 2] + H / 2
    np.testing.assert_array_equal(own, row < H // 2 + 4)
    assert not occluder_mask(g, []).any()  # no earlier frames: nothing is dropped


def test_occluder_mask_names_bad_input():
    frame = sky_over_wall_frame()
    g = camera_facing_splats(ray_point(40, 20, 6.0)[None])
    with pytest.raises(ValueError, match="shown"):
        occluder_mask(g, [frame], shown=[])
    with pytest.raises(ValueError, match="margin"):
        occluder_mask(g, [frame], margin=1.5)


def test_a_splat_from_a_keyframe_pixel_lands_on_that_pixels_centre():
    """Pixel convention end to end: a keyframe pixel's splat projects back to the pixel's centre
    ``(u + 0.5, v + 0.5)``, and the CPU renderer draws it centred there (a half-pixel mismatch
    between keyframes, reconstruction and renderer would shift every novel view)."""
    from runtime.world.render.cpu import CpuRenderer
    from runtime.world.scene import Chunk, ChunkSource, SceneSnapshot
    pose = Pose(np.array([0.3, -0.2, 0.1], np.float32), 0.4, -0.1)
    cams = pose.camera(W, H, math.radians(60.0))
    depth = np.full((1, H, W), 4.0, np.float32)
    for stride in (1, 2):
        g = reconstruct(textured(), depth, cams, None, stride=stride, sharpen=0.0)
        pc = g.means @ cams.w2c[0, :3, :3].T + cams.w2c[0, :3, 3]
        u = cams.K[0, 0, 0] * pc[:, 0] / pc[:, 2] + cams.K[0, 0, 2]
        v = cams.K[0, 1, 1] * pc[:, 1] / pc[:, 2] + cams.K[0, 1, 2]
        # a block's centre: pixel centre (stride 1), between its pixels' centres (stride 2)
        np.testing.assert_allclose((u - stride / 2) / stride, np.round((u - stride / 2) / stride), atol=0.05 / stride)
        np.testing.assert_allclose((v - stride / 2) / stride, np.round((v - stride / 2) / stride), atol=0.05 / stride)
    # One small round splat at pixel (col 21, row 13)'s centre is drawn centred on it.
    g = reconstruct(textured(), depth, cams, None, stride=1, sharpen=0.0)
    pc = g.means @ cams.w2c[0, :3, :3].T + cams.w2c[0, :3, 3]
    u = cams.K[0, 0, 0] * pc[:, 0] / pc[:, 2] + cams.K[0, 0, 2]
    v = cams.K[0, 1, 1] * pc[:, 1] / pc[:, 2] + cams.K[0, 1, 2]
    k = int(np.argmin(np.hypot(u - 21.5, v - 13.5)))
    one = Gaussians(g.means[k:k + 1], np.array([[1.0, 0, 0, 0]], np.float32), np.log(np.full((1, 3), 0.01, np.float32)),
                    np.full(1, 2.0, np.float32), np.ones((1, 3), np.float32))
    alpha = CpuRenderer().render_alpha(SceneSnapshot(0, (Chunk.build(0, one, ChunkSource()),)), cams)[0]
    rows, cols = np.mgrid[0:H, 0:W] + 0.5
    assert np.unravel_index(np.argmax(alpha), alpha.shape) == (13, 21)
    assert abs((alpha * cols).sum() / alpha.sum() - 21.5) < 0.05
    assert abs((alpha * rows).sum() / alpha.sum() - 13.5) < 0.05


def test_a_silhouette_against_the_sky_is_drawn_to_the_keyframes_pixel():
    """Blocks at the sky's edge are drawn per pixel: the splats spill far less into the sky
    past a silhouette (a block's Gaussian reached a third of a block past it, and a block only
    partly covered drew all of it), the surface keeps its cover, and an edge against a farther
    surface keeps its one Gaussian per block (it also covers that surface's pixels there)."""
    from runtime.world.render.cpu import CpuRenderer
    from runtime.world.scene import Chunk, ChunkSource, SceneSnapshot
    renderer, cams, rgb = CpuRenderer(), identity_cameras(), np.full((1, H, W, 3), 128, np.uint8)

    def alpha(g):
        return renderer.render_alpha(SceneSnapshot(0, (Chunk.build(0, g, ChunkSource()),)), cams)[0]

    for top in (24, 25):  # the skyline on a block's edge, and through its middle
        depth = np.full((1, H, W), 5.0, np.float32)
        depth[:, :top] = np.inf
        split, whole = (alpha(reconstruct(rgb, depth, cams, None, stride=2, split_sky_edges=s)) for s in (True, False))
        sky = [split[top - k, 8:56].mean() for k in (1, 2, 3)]  # sky rows 1, 2, 3 px past the silhouette
        before = [whole[top - k, 8:56].mean() for k in (1, 2, 3)]
        # Measured: 0.79 / 0.37-0.42 / 0.09-0.14 (one Gaussian a block: 0.76-0.88 / 0.52-0.69 / 0.30-0.44).
        assert sky[1] <= 0.45 and sky[2] <= 0.15 and sum(sky) <= 0.8 * sum(before)
        # The wall's own pixels stay covered (its first row: min 0.88-0.92, against 0.87-0.94).
        assert split[top:-3, 8:56].min() >= 0.85 and split[top + 1:-3, 8:56].mean() >= 0.97
    near_far = np.full((1, H, W), 20.0, np.float32)
    near_far[:, 25:] = 5.0  # a near wall's top edge through blocks, a far wall behind it
    g = reconstruct(rgb, near_far, cams, None, stride=2)
    assert len(g) == len(reconstruct(rgb, near_far, cams, None, stride=2, split_sky_edges=False))
    assert alpha(g)[2:-2, 2:-2].min() >= 0.98  # no gap opens between the two surfaces


def test_sky_edge_opacity_fades_only_the_per_pixel_edge_splats():
    """``sky_edge_opacity`` is the per-pixel sky-edge splats' opacity and no other splat's;
    lower, it fades the spill past the skyline while the wall stays covered (measured on this
    skyline, 0.95 -> 0.75: 1 px into the sky 0.74 -> 0.66 / 0.77 -> 0.72, the wall's first row
    min 0.94 -> 0.90 / 0.89 -> 0.87)."""
    from runtime.world.keyframes.reconstruct import EDGE_OPACITY, OPACITY_LOGIT
    from runtime.world.render.cpu import CpuRenderer
    from runtime.world.scene import Chunk, ChunkSource, SceneSnapshot
    renderer, cams, rgb = CpuRenderer(), identity_cameras(), np.full((1, H, W, 3), 128, np.uint8)

    def alpha(g):
        return renderer.render_alpha(SceneSnapshot(0, (Chunk.build(0, g, ChunkSource()),)), cams)[0]

    for top in (24, 25):
        depth = np.full((1, H, W), 5.0, np.float32)
        depth[:, :top] = np.inf
        made = {op: reconstruct(rgb, depth, cams, None, stride=2, sky_edge_opacity=op) for op in (0.95, 0.75)}
        default = reconstruct(rgb, depth, cams, None, stride=2)
        np.testing.assert_array_equal(default.opacity_logits, made[EDGE_OPACITY].opacity_logits)
        g = made[0.75]
        opacity = 1.0 / (1.0 + np.exp(-g.opacity_logits))
        edge = np.abs(g.opacity_logits - OPACITY_LOGIT) > 1e-6
        np.testing.assert_allclose(opacity[edge], 0.75, atol=1e-5)
        np.testing.assert_allclose(opacity[~edge], 0.95, atol=1e-5)
        # the faded ones are exactly the per-pixel splats along the skyline (one per pixel of the top block row)
        assert edge.sum() == W * (2 if top % 2 == 0 else 1) and np.array_equal(g.means, made[0.95].means)
        a95, a75 = alpha(made[0.95]), alpha(g)
        assert a75[top - 1, 8:56].mean() <= a95[top - 1, 8:56].mean() - 0.04
        assert a75[top - 2, 8:56].mean() <= a95[top - 2, 8:56].mean()
        assert a75[top:-3, 8:56].min() >= 0.85 and a75[top + 1:-3, 8:56].mean() >= 0.97
    with pytest.raises(ValueError, match="sky_edge_opacity"):
        reconstruct(rgb, depth, cams, None, sky_edge_opacity=1.0)
