"""Coverage records and tests: sky directions, explored cells, uncovered views (real renderer + reconstruct)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.world.camera import Cameras, Pose
from runtime.world.frontier.coverage import (
    GENERATED,
    MAX_AHEAD_PROBES,
    UNKNOWN,
    VISITED,
    ExploredMap,
    SkyDirections,
    octahedral_uv,
    probe_cameras,
    probe_views,
    shown_hole_fractions,
    uncovered_fractions,
)
from runtime.world.keyframes.reconstruct import reconstruct
from runtime.world.movement.motion import EYE_HEIGHT
from runtime.world.render.cpu import CpuRenderer
from runtime.world.scene import ChunkSource, Scene
from runtime.world.sky import pixel_directions

W, H = 160, 90
FOV = math.radians(75.0)


def camera(yaw: float = 0.0, position=(0.0, 0.0, 0.0), w: int = W, h: int = H) -> Cameras:
    return Pose(np.array(position, np.float32), yaw, 0.0).camera(w, h, FOV)


def ground_depth(cams: Cameras, ground_y: float = 1.7) -> np.ndarray:
    """``[N, H, W]`` depth of the plane y = ground_y (below the eye); inf (sky) above the horizon."""
    d = pixel_directions(cams)  # [N,H,W,3] world rays
    fwd = cams.forwards[:, None, None, :]
    centers = cams.centers[:, None, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (ground_y - centers[..., 1]) / d[..., 1]  # distance along the ray
    hit = (d[..., 1] > 1e-3) & (t < 150.0)
    z = t * (d * fwd).sum(-1)  # depth along camera +z
    return np.where(hit, z, np.inf).astype(np.float32)


def generate_ground_view(scene: Scene, renderer: CpuRenderer, sky: SkyDirections, cams: Cameras) -> None:
    """Stand-in for a generation job: flat ground + sky, reconstructed into the scene."""
    depth = ground_depth(cams)
    rgb = np.full((len(cams), cams.height, cams.width, 3), 120, np.uint8)
    snap = scene.snapshot()
    existing = renderer.render_alpha(snap, cams) if snap.chunks else None
    g = reconstruct(rgb, depth, cams, existing)
    scene.append(g, ChunkSource())
    sky.mark(pixel_directions(cams)[~np.isfinite(depth)])


@pytest.fixture(scope="module")
def renderer():
    return CpuRenderer()


def test_empty_scene_is_uncovered(renderer):
    scene, sky = Scene(), SkyDirections()
    cams = camera().resized(64, 36)
    alpha = renderer.render_alpha(scene.snapshot(), cams)
    assert uncovered_fractions(alpha, cams, sky)[0] == pytest.approx(1.0)


def test_generated_view_is_covered_including_its_sky(renderer):
    scene, sky = Scene(), SkyDirections()
    generate_ground_view(scene, renderer, sky, camera())
    probe = camera().resized(64, 36)
    alpha = renderer.render_alpha(scene.snapshot(), probe)
    # Without the sky record, the upper half (sky, alpha 0) looks like a hole.
    assert uncovered_fractions(alpha, probe, SkyDirections())[0] > 0.4
    assert uncovered_fractions(alpha, probe, sky)[0] < 0.05
    # Turning around: the back has neither ground splats nor known sky.
    back = camera(math.pi).resized(64, 36)
    frac_back = uncovered_fractions(renderer.render_alpha(scene.snapshot(), back), back, sky)[0]
    assert frac_back > 0.4


def test_shown_holes_are_what_the_far_field_leaves_empty_near_or_far():
    """The holes a player is shown: the splats drawn over the far field, every pixel below
    the generated sky counts (the near-ground test counted only rays meeting the ground
    within 15 m)."""
    cams = camera().resized(64, 36)
    sky = SkyDirections()
    is_sky = ~np.isfinite(ground_depth(cams))
    sky.mark(pixel_directions(cams)[is_sky])
    alpha = np.zeros((1, 36, 64), np.float32)
    far = np.zeros_like(alpha)
    far[:, :, :32] = 1.0  # the far field covers the left half
    ground = ~sky.contains(pixel_directions(cams))
    expected = (ground & (far < 0.5)).mean()
    assert expected > 0.15
    assert shown_hole_fractions(alpha, far, cams, sky)[0] == pytest.approx(expected)
    assert shown_hole_fractions(alpha, np.ones_like(far), cams, sky)[0] == 0.0
    # Half-opaque splats over a half-opaque far field show 75 %: no hole.
    assert shown_hole_fractions(alpha + 0.5, far * 0 + 0.5, cams, sky)[0] == 0.0
    # Splats cover the ground within 15 m, nothing beyond: the near test sees no hole, the
    # player a band of sky-coloured ground below the horizon.
    near = (ground_depth(cams) < 15.0).astype(np.float32)
    assert uncovered_fractions(near, cams, sky, near_m=15.0)[0] == 0.0
    assert shown_hole_fractions(near, np.zeros_like(far), cams, sky)[0] > 0.02


def test_an_imported_scenes_edge_seen_from_inside_is_no_hole():
    """From a camera inside an imported scene, an empty pixel whose ray meets the ground in
    a cell nobody generated is no hole (the frontier extends the scene where players leave
    it). Cells generated and still empty, and cameras outside imported cells, count."""
    cams = camera().resized(64, 36)
    sky = SkyDirections()
    sky.mark_all_above(0.0)
    alpha = (ground_depth(cams, EYE_HEIGHT) < 16.0).astype(np.float32)  # splats on the ground to z = 16 m only
    none = np.zeros_like(alpha)
    explored = ExploredMap(4.0)
    cells = [(i, j) for i in range(-3, 3) for j in range(-1, 4)]  # x in [-12, 12), z in [-4, 16)
    explored.mark_generated_cells(cells)
    everywhere = shown_hole_fractions(alpha, none, cams, sky)[0]
    assert everywhere > 0.02  # the band below the horizon past 16 m
    assert shown_hole_fractions(alpha, none, cams, sky, explored)[0] == everywhere  # generated, not imported
    explored.mark_generated_cells(cells, imported=True)
    assert explored.is_imported(0.0, 0.0) and not explored.is_imported(0.0, 17.0)
    assert shown_hole_fractions(alpha, none, cams, sky, explored)[0] == 0.0  # past 16 m nobody generated
    explored.mark_generated_cells([(i, j) for i in range(-30, 30) for j in range(4, 40)])  # out to 160 m ahead
    inside = shown_hole_fractions(alpha, none, cams, sky, explored)[0]
    assert 0.02 < inside <= everywhere  # generated there and still empty: a hole again


def test_sky_directions_mark_and_contains():
    sky = SkyDirections(resolution=64)
    up = np.array([[0.0, -1.0, 0.0]])
    down = np.array([[0.0, 1.0, 0.0]])
    assert not sky.contains(up)[0]
    assert sky.mark(np.concatenate([up, down])) == 1  # far below the horizon is never sky
    assert sky.contains(up)[0] and not sky.contains(down)[0]
    restored = SkyDirections.from_state(sky.to_state())
    assert restored.contains(up)[0] and not restored.contains(down)[0]
    sky.mark_all_above(0.0)
    level = np.array([[math.cos(0.1), -math.sin(0.1), 0.0]])
    assert sky.contains(level)[0]


def test_octahedral_map_is_continuous_and_in_range():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(1000, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    uv = octahedral_uv(d)
    assert np.all(np.abs(uv) <= 1.0 + 1e-6)
    upper = -d[:, 1] >= 0
    assert np.all(np.abs(uv[upper]).sum(1) <= 1.0 + 1e-5)


def test_explored_map_states_and_round_trip():
    m = ExploredMap(4.0)
    assert m.state_at(1.0, 1.0) == UNKNOWN
    new = m.mark_generated_points(np.array([[1.0, 1.7, 1.0], [5.0, 1.7, -3.0], [1.5, 1.7, 2.0]]))
    assert sorted(new) == [(0, 0), (1, -1)]
    assert m.mark_generated_points(np.array([[1.0, 1.7, 1.0]])) == []
    assert m.state_at(1.0, 1.0) == GENERATED
    assert m.mark_visited(1.0, 1.0) and not m.mark_visited(2.0, 2.0)
    assert m.state_at(1.0, 1.0) == VISITED and m.is_generated(1.0, 1.0)
    assert m.mark_visited(-10.0, 0.0) and not m.is_generated(-10.0, 0.0)
    assert m.cells_in((0, -4, 8, 4)) == [(0, 0, VISITED), (1, -1, GENERATED)]
    r = ExploredMap.from_state(m.to_state())
    assert r.cells_in((-100, -100, 100, 100)) == m.cells_in((-100, -100, 100, 100))
    assert m.reaches_unknown(np.array([1.0, 0, 1.0]), 0.0, (0.0, 8.0))
    assert not m.reaches_unknown(np.array([1.0, 0, 1.0]), 0.0, (0.0, 1.0))


def test_probe_views_cover_view_ahead_and_ring():
    probes = probe_views(
        "p", Pose(yaw=0.3), np.array([2.0, 0.0, 0.0]), math.radians(60), lookahead_s=1.5,
        keyframe_fov_y=FOV, ring_yaws=(0.0, math.pi / 2, -math.pi / 2, math.pi),
    )
    kinds = [p.kind for p in probes]
    assert kinds == ["view", "soon", "ahead", "ring", "ring", "ring", "ring"]
    ahead = probes[2]
    np.testing.assert_allclose(ahead.position, [3.0, 0.0, 0.0], atol=1e-6)
    assert ahead.yaw == pytest.approx(math.pi / 2)
    # The player's own view a second on: where it will be, looking where it looks.
    soon = probes[1]
    np.testing.assert_allclose(soon.position, [2.0, 0.0, 0.0], atol=1e-6)
    assert (soon.yaw, soon.pitch, soon.fov_y) == (0.3, 0.0, pytest.approx(math.radians(60)))
    # Moving: the view ahead first (a job lands about when the player gets there), then
    # its view a second on, then its view now.
    assert probes[2].rank < probes[1].rank < probes[0].rank < min(p.rank for p in probes[3:])
    assert sorted(p.rank for p in probes[3:]) == [p.rank for p in probes[3:]]
    cams = probe_cameras(probes, 64, 36)
    assert len(cams) == 7 and cams.width == 64
    still = probe_views("p", Pose(), np.zeros(3), 1.0, lookahead_s=1.5, keyframe_fov_y=FOV, ring_yaws=(0.0,))
    assert [p.kind for p in still] == ["view", "ring"]
    assert still[0].rank < still[1].rank


def test_a_fast_player_is_probed_along_its_path_nearest_first():
    """Far ahead (a long lookahead at 6 m/s), the view ahead is tested at points along the
    way too: a keyframe 24 m ahead does not see the ground the player crosses to get there."""
    velocity = np.array([0.0, -0.5, 6.0])  # uphill: the probes rise with the walk
    probes = probe_views("p", Pose(), velocity, 1.0, lookahead_s=4.0, keyframe_fov_y=FOV, ring_yaws=(0.0,), ahead_step_m=8.0)
    ahead = [p for p in probes if p.kind == "ahead"]
    np.testing.assert_allclose([p.position for p in ahead], [[0, -2 * k / 3, 8 * k] for k in (1, 2, 3)], atol=1e-5)
    assert [p.rank for p in ahead] == sorted(p.rank for p in ahead)  # nearest first ...
    view = next(p for p in probes if p.kind == "view")
    assert max(p.rank for p in ahead) < view.rank  # ... and all before the player's own view
    many = probe_views("p", Pose(), velocity, 1.0, lookahead_s=8.0, keyframe_fov_y=FOV, ring_yaws=(), ahead_step_m=2.0)
    assert sum(p.kind == "ahead" for p in many) == MAX_AHEAD_PROBES  # bounded, evenly spread
    assert many[-1].position[2] == pytest.approx(48.0)
    one = probe_views("p", Pose(), velocity, 1.0, lookahead_s=4.0, keyframe_fov_y=FOV, ring_yaws=(), ahead_step_m=0.0)
    assert [p.position[2] for p in one if p.kind == "ahead"] == [pytest.approx(24.0)]
