"""Refinement and detail-aware planning: a closer keyframe remakes what far ones made coarsely."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.compare import psnr, sharpness
from bench.fidelity import Truth
from runtime.world import PlayerState, Pose, World, WorldConfig
from runtime.world.world import retired_mask
from runtime.world.frontier.coverage import ProbeView
from runtime.world.frontier.planner import UncoveredView
from runtime.world.gaussians import Gaussians
from runtime.world.generators.procedural import ProceduralGenerator
from runtime.world.generators.procedural.generator import ground_height_y
from runtime.world.keyframes.refine import coarse_mask
from runtime.world.render.cpu import CpuRenderer
from runtime.world.scene import ChunkSource, Scene

VIEW_FOV = math.radians(60.0)
SEED = 7


@pytest.fixture(scope="module")
def generator():
    g = ProceduralGenerator()
    g.warmup()
    return g


def eye(z: float, yaw: float = 0.0) -> Pose:
    return Pose(np.array([0.0, float(ground_height_y(0.0, z, SEED)) - 1.7, z], np.float32), yaw, 0.0)


def random_gaussians(n: int, scale: float, seed: int = 0) -> Gaussians:
    rng = np.random.default_rng(seed)
    return Gaussians(
        means=rng.uniform(-1, 1, (n, 3)).astype(np.float32) + np.float32([0, 0, 5]),
        quats=np.tile(np.float32([1, 0, 0, 0]), (n, 1)),
        log_scales=np.full((n, 3), math.log(scale), np.float32),
        opacity_logits=np.zeros(n, np.float32),
        colors=rng.uniform(0, 1, (n, 3)).astype(np.float32),
    )


def test_retiring_keeps_ids_and_comes_back_from_saved_masks():
    scene = Scene()
    (a,) = scene.append(random_gaussians(10, 0.1), ChunkSource())
    retire = np.zeros(10, bool)
    retire[[1, 4]] = True
    (b,) = scene.append(random_gaussians(5, 0.01, 1), ChunkSource(), {a.id: retire})
    chunks = {c.id: c for c in scene.snapshot().chunks}
    assert len(chunks[a.id].gaussians) == 8 and chunks[b.id] is b
    # A second retirement indexes the chunk as it is now; the saved mask indexes the original.
    again = np.zeros(8, bool)
    again[0] = True
    scene.append(random_gaussians(3, 0.01, 2), ChunkSource(), {a.id: again})
    saved = scene.retired_masks()[a.id]
    assert saved.tolist() == [True, True, False, False, True, False, False, False, False, False]
    loaded = Scene()
    loaded.restore([a, b])
    loaded.retire_original({a.id: saved})
    kept = {c.id: c for c in loaded.snapshot().chunks}[a.id].gaussians
    expect = a.gaussians.subset(np.flatnonzero(~saved))
    assert np.array_equal(kept.means, expect.means)


def test_the_scene_less_what_a_chunk_retires_lands_as_it_was_drawn():
    """``Scene.without`` builds the chunks a landing will leave (the colour fit draws them, and
    the renderer caches what it derives by the chunk's identity); ``append`` retiring the same
    masks publishes those very chunks, and rebuilds when a mask differs."""
    scene = Scene()
    (a,) = scene.append(random_gaussians(10, 0.1), ChunkSource())
    (b,) = scene.append(random_gaussians(6, 0.1, 1), ChunkSource())
    retire = {a.id: np.zeros(10, bool), b.id: np.ones(6, bool)}
    retire[a.id][[1, 4]] = True
    drawn = scene.without(scene.snapshot().chunks, retire)
    assert [c.id for c in drawn] == [a.id] and len(drawn[0].gaussians) == 8  # b loses all: it leaves
    assert scene.without(scene.snapshot().chunks, retire)[0] is drawn[0]  # asked again: the same chunk
    (c,) = scene.append(random_gaussians(3, 0.01, 2), ChunkSource(), retire)
    assert scene.snapshot().chunks == (drawn[0], c)
    other = np.zeros(8, bool)
    other[0] = True
    rest = scene.without(scene.snapshot().chunks, {a.id: other})[0]
    differs = other.copy()
    differs[1] = True
    scene.append(random_gaussians(3, 0.01, 3), ChunkSource(), {a.id: differs})
    landed = scene.snapshot().chunks[0]
    assert landed is not rest and len(landed.gaussians) == 6
    assert scene.retired_masks()[a.id].tolist() == [True, True, True, False, True, False, False, False, False, False]
    assert np.array_equal(landed.gaussians.means, a.gaussians.subset(np.array([3, 5, 6, 7, 8, 9])).means)


def test_frozen_views_keep_older_versions_as_bits_and_one_object(monkeypatch):
    """``as_of`` gives a chunk as it was when the cap chunk landed; older versions cost a bit
    per Gaussian, are drawn from one object while in use, and at most MAX_VERSIONS stay."""
    import runtime.world.scene as scene_module

    monkeypatch.setattr(scene_module, "MAX_VERSIONS", 6)
    scene = Scene()
    (a,) = scene.append(random_gaussians(4000, 0.1), ChunkSource())
    caps = [a.id]
    refinements = 9
    for k in range(refinements):
        live = {c.id: c for c in scene.snapshot().chunks}[a.id]
        retire = np.zeros(len(live.gaussians), bool)
        retire[:100] = True
        (b,) = scene.append(random_gaussians(10, 0.01, k + 1), ChunkSource(), {a.id: retire})
        caps.append(b.id)
    snap = scene.snapshot()
    chunk_as_of = lambda cap: {c.id: c for c in scene.as_of(snap, cap).chunks}[a.id]  # noqa: E731
    for back in range(6):  # the newest versions come back exactly, one object each
        old = chunk_as_of(caps[-1 - back])
        assert len(old.gaussians) == 4000 - 100 * (refinements - back)
        assert chunk_as_of(caps[-1 - back]) is old
    # A view frozen before the oldest kept version draws that one (refined a few times more).
    assert len(chunk_as_of(caps[0]).gaussians) == 4000 - 100 * (refinements - 5)
    assert scene.history_bytes() <= 6 * 4000 // 8


def test_coarse_means_wider_than_the_keyframe_would_make():
    cams = eye(0.0).camera(320, 180, math.radians(75))
    focal = float(cams.K[0, 0, 0])
    fine_width = 0.7 * 2 * 5.0 / focal  # stride 2 at 5 m
    assert not coarse_mask(random_gaussians(50, fine_width), cams, 2).any()
    assert coarse_mask(random_gaussians(50, 3 * fine_width), cams, 2).any()
    behind = random_gaussians(50, 1.0)
    behind = Gaussians(behind.means * np.float32([1, 1, -1]), behind.quats, behind.log_scales, behind.opacity_logits, behind.colors)
    assert not coarse_mask(behind, cams, 2).any()  # out of view: not this keyframe's business


def test_a_skylines_per_pixel_splats_are_as_coarse_as_their_blocks():
    """Reconstruction draws blocks at the sky's edge with a splat per pixel (half as wide at
    stride 2); a finer keyframe must still find them coarse where it finds their blocks
    coarse, or it would leave the coarse keyframe's skyline in place under its own."""
    from runtime.world.keyframes.reconstruct import reconstruct
    coarse_cam = eye(0.0).camera(160, 90, math.radians(75))
    depth = np.full((1, 90, 160), 6.0, np.float32)
    depth[:, :41] = np.inf  # sky over a wall, the skyline through a block row
    g = reconstruct(np.full((1, 90, 160, 3), 100, np.uint8), depth, coarse_cam, None, stride=2)
    split = np.exp(g.log_scales).max(axis=1) < 0.75 * np.exp(g.log_scales).max(axis=1).max()
    assert split.sum() == 160 and (~split).sum() == 1920  # the skyline's block row: a splat a wall pixel
    for width, coarse in ((240, False), (400, True), (640, True)):  # 1.5x finer: not coarse; 2.5x, 4x: coarse
        mask = coarse_mask(g, eye(0.0).camera(width, width * 9 // 16, math.radians(75)), 2)
        assert mask[~split].all() == coarse and mask[split].all() == coarse and mask.any() == coarse


def test_detail_planning_asks_where_only_far_keyframes_looked(generator):
    world = World(WorldConfig("refine", seed=SEED, caption="a pine forest"), generator=generator, renderer=CpuRenderer())
    try:
        world.update([PlayerState("p", eye(0.0))])
        assert world.wait_idle(120)
        planner = world._planner
        limit = world.config.detail_max_px
        ahead = np.float32([0, 0, 1])
        assert planner.footprint_px(eye(0.0).position, ahead) < limit
        assert planner.footprint_px(eye(12.0).position, ahead) > limit
    finally:
        world.close()


def test_refinement_keeps_content_and_sharpens(generator):
    """Seen first from 14 m back, then from where the camera stands: the picture gets sharper
    and, at the coarse scale (16 x 12 pixel blocks, where it was covered), stays the same
    place. Measured 31.7 dB on 2026-12-07 (32.4 without colour fitting); issue 16 asks for 35
    (not met: the generator's own fog, seen from the far and the near keyframe, differs by
    30 dB at this scale; and where the far view was wrong -- a rock smeared into the grass --
    the close one differs by design)."""
    cfg = WorldConfig("refine", seed=SEED, caption="a pine forest", generate_unexplored_ahead=False, detail_max_px=0)
    world = World(cfg, generator=generator, renderer=CpuRenderer())
    try:
        world.update([PlayerState("p", eye(0.0))])
        assert world.wait_idle(120)
        before = world.scene.snapshot()
        cam = eye(14.0, 0.15).camera(320, 180, VIEW_FOV)
        old = world.renderer.render(before, cam, world.sky)
        # A keyframe at the camera, through the world's own job path: the view there shows
        # holes beyond what the spawn keyframes saw, so they are filled first (coarse), then
        # the next update refines.
        world.config.detail_max_px = 10.0
        for _ in range(2):
            world.update([PlayerState("p", eye(14.0))])
            assert world.wait_idle(120)
        assert world.stats["detail_jobs"] > 0
        after = world.scene.snapshot()
        new = world.renderer.render(after, cam, world.sky)
        assert world.stats["gaussians_refined"] > 0
        # Sharper, and nearer the generator's own picture. (Sharper by 1.2x while earlier
        # keyframes vetoed the refining chunk where it would change their view: the sky
        # showing through the vetoed splats' holes counted as edges. Measured 2026-12-07
        # without that veto: sharpness 2.66 -> 3.00 (truth 5.61), PSNR against the
        # generator 18.5 -> 20.5 dB; with it 2.66 -> 3.28 and 18.5 -> 19.8 dB.)
        truth, _ = Truth("a pine forest", SEED).render(cam)
        assert sharpness(new.rgb[0]) > 1.1 * sharpness(old.rgb[0])
        assert psnr(new.rgb[0], truth[0]) >= psnr(old.rgb[0], truth[0]) + 1.0
        covered = old.alpha[0] > 0.99
        assert covered.mean() > 0.3
        coarse = lambda rgb: rgb.reshape(180 // 12, 12, 320 // 16, 16, 3).astype(np.float32).mean(axis=(1, 3))  # noqa: E731
        keep = covered.reshape(15, 12, 20, 16).all(axis=(1, 3))
        assert psnr(coarse(old.rgb[0])[keep].astype(np.uint8), coarse(new.rgb[0])[keep].astype(np.uint8)) >= 29.0
        # Saved, the retired Gaussians are named per chunk (the store reloads them that way).
        saved = world.state_dict()["retired"]
        assert saved and sum(int(retired_mask(p).sum()) for p in saved.values()) == world.stats["gaussians_refined"]
    finally:
        world.close()


def test_detail_keyframes_are_made_finer_while_the_generator_has_slack(generator):
    """Fill jobs keep the keyframe size (the frontier must keep up); a refining job for a
    player walking slower than ``coarse_speed`` is made at ``detail_scale`` x it, lands like
    any other (its frames keep their own size) and remakes the coarse splats it sees."""
    cfg = WorldConfig("fine", seed=SEED, caption="a pine forest", generate_unexplored_ahead=False)
    assert cfg.detail_scale == 2.0
    world = World(cfg, generator=generator, renderer=CpuRenderer())
    try:
        fill = world.update([PlayerState("p", eye(0.0))])
        assert fill and all((j.cameras.width, j.cameras.height) == (320, 180) for j in fill)
        assert world.wait_idle(120)
        # 14 m on, the view shows holes beyond what the spawn keyframes saw: filled first
        # (coarse: a hole is shown), no detail meanwhile; then refined.
        holes = world.update([PlayerState("p", eye(14.0))])
        assert holes and not any(j.refines for j in holes) and all(j.fills_holes for j in holes)
        assert world.wait_idle(120)
        jobs = world.update([PlayerState("p", eye(14.0))])
        detail = [j for j in jobs if j.refines]
        assert detail and all((j.cameras.width, j.cameras.height) == (640, 360) for j in detail)
        assert all((j.cameras.width, j.cameras.height) == (320, 180) for j in jobs if not j.refines)
        assert world.wait_idle(240)
        assert world.stats["fine_jobs"] == len(detail) and world.stats["gaussians_refined"] > 0
        assert {f.rgb.shape for f in world.memory.frames()} == {(180, 320, 3), (360, 640, 3)}
        # A running player's detail, and detail_scale 1, keep the keyframe size.
        planner = world._planner
        probe = ProbeView("p", "view", eye(14.0).position, 0.0, 0.0, VIEW_FOV, 0.0)
        cand = UncoveredView(probe, 0.0, np.float32([0, 0, 1]), detail=True)
        assert planner.keyframe_size(cand) == (640, 360)
        cand.speed = cfg.coarse_speed
        assert planner.keyframe_size(cand) == (320, 180)
        cand.speed, world.config.detail_scale = 0.0, 1.0
        assert planner.keyframe_size(cand) == (320, 180)
    finally:
        world.close()


@pytest.mark.parametrize("scale, size", [(0.5, (320, 180)), (5.0, (320, 180)), (4.0, (4096, 2304))])
def test_detail_scale_out_of_range_is_refused_naming_the_field(scale, size):
    """A detail size below the keyframe's, above 4x, or past 8192 pixels a side is a typed error naming ``detail_scale``."""
    with pytest.raises(ValueError, match="detail_scale"):
        WorldConfig("bad", keyframe_width=size[0], keyframe_height=size[1], detail_scale=scale)


def test_refining_keyframes_take_the_detail_field_of_view(generator):
    """With ``detail_fov_y`` set, a refining job's keyframes are made at that (narrower, finer)
    field of view; fill jobs keep ``keyframe_fov_y`` (they must cover the space)."""
    from runtime.world.camera import intrinsics_from_fov

    cfg = WorldConfig("narrow", seed=SEED, caption="a pine forest", detail_fov_y=math.radians(60.0))
    world = World(cfg, generator=generator, renderer=CpuRenderer())
    try:
        probe = ProbeView("p", "view", eye(4.0).position, 0.0, 0.0, VIEW_FOV, 0.0)
        for detail, fov in ((True, cfg.detail_fov_y), (False, cfg.keyframe_fov_y)):
            cand = UncoveredView(probe, 0.0, np.float32([0, 0, 1]), detail=detail)
            job = world._planner._make_job(cand, 0.0, cfg.caption, (640, 360))
            np.testing.assert_allclose(job.cameras.K[0], intrinsics_from_fov(640, 360, fov), rtol=1e-6)
    finally:
        world.close()
    with pytest.raises(ValueError, match="detail_fov_y"):
        WorldConfig("bad", detail_fov_y=-0.1)
