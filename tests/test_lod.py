"""Level of detail in the CPU renderer: coarse levels, which blocks draw them, what it costs the picture,
and that levels are built where chunks land, not in frames."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from bench.compare import psnr, sharpness
from runtime.world import PlayerState, Pose, World, WorldConfig
from runtime.world.camera import Cameras
from runtime.world.gaussians import Gaussians
from runtime.world.generators.procedural import ProceduralGenerator
from runtime.world.render.cpu import CpuRenderer
from runtime.world.render.lod import build_levels
from runtime.world.render.projection import BLOCK, activate_chunk, visible_blocks
from runtime.world.scene import ChunkSource, Scene
from runtime.world.sky import Sky

VIEW_FOV = math.radians(60.0)


def patch(center_z: float, spacing: float, half: float, color=(0.3, 0.6, 0.2)) -> Gaussians:
    """Flat, nearly opaque surfels tiling a square of side ``2 half`` facing the camera at ``z``."""
    xs = np.arange(-half, half, spacing) + spacing / 2
    gx, gy = np.meshgrid(xs, xs)
    n = gx.size
    return Gaussians(
        means=np.stack([gx.ravel(), gy.ravel(), np.full(n, center_z)], -1),
        quats=np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)),
        log_scales=np.log(np.tile([spacing * 0.6, spacing * 0.6, spacing * 0.05], (n, 1))),
        opacity_logits=np.full(n, 3.0),
        colors=np.tile(color, (n, 1)),
    )


def camera(width=640, height=360) -> Cameras:
    return Pose(np.zeros(3, np.float32), yaw=0.0, pitch=0.0).camera(width, height, VIEW_FOV)


def test_levels_stand_for_their_fine_blocks():
    """Each coarse level has far fewer Gaussians, keeps the fine blocks (level rows per block),
    blurs monotonically more, and keeps each block's alpha-weighted colour (a smooth gradient:
    patches of nearly one colour merge)."""
    g = patch(20.0, 0.02, 3.0)
    ramp = (g.means[:, :1] + 3.0) / 6.0
    g = Gaussians(g.means, g.quats, g.log_scales, g.opacity_logits, np.concatenate([ramp, 1.0 - ramp, 0.5 + 0 * ramp], 1))
    packed = activate_chunk(g)
    levels = build_levels(packed.packed, BLOCK)
    assert len(levels) >= 2
    sizes = [len(packed)] + [len(v.packed) for v in levels]
    assert all(b * 2 < a for a, b in zip(sizes, sizes[1:])), sizes
    blocks = len(packed.block_lo)
    fine = packed.packed
    for v in levels:
        assert v.block_start.shape == (blocks + 1,) and v.block_start[0] == 0 and v.block_start[-1] == len(v.packed)
        assert (np.diff(v.block_start) > 0).all()
    assert all((b.block_blur >= a.block_blur).all() for a, b in zip(levels, levels[1:]))
    # A block's colour, weighted by alpha mass, is what its coarse copy shows.
    coarse = levels[-1].packed
    for b in range(blocks):
        f = fine[b * BLOCK:(b + 1) * BLOCK]
        c = coarse[levels[-1].block_start[b]:levels[-1].block_start[b + 1]]
        assert abs(f[:, 10:13].mean(0) - np.average(c[:, 10:13], axis=0, weights=c[:, 9] * (c[:, 3] + c[:, 6] + c[:, 8]))).max() < 0.05


def test_far_block_draws_coarse_and_near_block_fine():
    """Two patches of the same surfels, one 3 m away (splats ~6 px apart) and one 150 m away
    (~0.1 px apart): the far one's blocks draw a coarse level, the near one's the fine level."""
    renderer = CpuRenderer()
    scene = Scene(prepare=renderer.prepare)
    scene.append(patch(3.0, 0.06, 0.5), ChunkSource())
    scene.append(patch(150.0, 0.06, 6.0), ChunkSource())
    near, far_chunk = [renderer._chunks.get(c) for c in scene.snapshot().chunks]
    assert near.levels and far_chunk.levels
    rows, _ = visible_blocks([near, far_chunk], camera(), lod_px=renderer.lod_px)
    near_arrays = {0}
    far_fine = 1 + len(near.levels)
    drawn = {int(a) for a in rows[:, 0]}
    assert drawn & near_arrays and not drawn & set(range(1, far_fine)), drawn  # near: fine only
    assert far_fine not in drawn and drawn & set(range(far_fine + 1, far_fine + 1 + len(far_chunk.levels)))
    # Off: everything fine.
    rows_off, m_off = visible_blocks([near, far_chunk], camera(), lod_px=0.0)
    assert {int(a) for a in rows_off[:, 0]} == {0, far_fine}
    # The far patch is a handful of pixels either way: the picture hardly changes.
    off = CpuRenderer(lod_px=0.0)
    sky = Sky()
    a = renderer.render(scene.snapshot(), camera(), sky).rgb[0]
    b = off.render(scene.snapshot(), camera(), sky).rgb[0]
    assert psnr(a, b) > 40.0
    assert renderer.last_counts.projected < m_off


def test_texture_does_not_merge():
    """Neighbours of clearly different colours (texture the stream can show) stay unmerged."""
    rng = np.random.default_rng(0)
    g = patch(20.0, 0.02, 1.0)
    g = Gaussians(g.means, g.quats, g.log_scales, g.opacity_logits, rng.uniform(0, 1, (len(g), 3)))
    packed = activate_chunk(g)
    assert build_levels(packed.packed, BLOCK) == ()


def test_lod_px_out_of_range_is_refused():
    with pytest.raises(ValueError, match="lod_px"):
        CpuRenderer(lod_px=-1.0)
    with pytest.raises(ValueError, match="lod_px"):
        CpuRenderer(lod_px=100.0)


@pytest.fixture(scope="module")
def walked():
    """A generated forest world after a short fast-forwarded walk (spawn ring and 8 m along +z)."""
    renderer = CpuRenderer()
    world = World(WorldConfig("lod", seed=7, caption="a pine forest"), generator=ProceduralGenerator(), renderer=renderer)
    try:
        for z in (0.0, 4.0, 8.0):
            pose = world.spawn_pose()
            pose = Pose(pose.position + np.array([0.0, 0.0, z], np.float32), 0.0, 0.0)
            world.update([PlayerState("p", pose, np.array([0.0, 0.0, 1.5], np.float32), VIEW_FOV)])
            assert world.wait_idle(300)
        yield world, renderer
    finally:
        world.close()


def _views(world: World) -> list[Cameras]:
    spawn = world.spawn_pose().position
    out = []
    for k, yaw in enumerate((0.0, 0.6, math.pi, -1.2)):
        pos = spawn + np.array([0.0, 0.0, 2.0 * k], np.float32)
        out.append(Pose(pos, yaw, -0.05).camera(640, 360, VIEW_FOV))
    return out


def test_lod_keeps_the_picture_of_a_generated_world(walked):
    """On a real generated world, the frames with LOD stay within 35 dB of those without
    (measured ~40 dB and up) and as sharp, while drawing fewer Gaussians in some view."""
    world, renderer = walked
    off = CpuRenderer(lod_px=0.0)
    snapshot = world.scene.snapshot()
    fewer = False
    for cam in _views(world):
        a = renderer.render(snapshot, cam, world.sky)
        on_counts = renderer.last_counts
        b = off.render(snapshot, cam, world.sky)
        assert psnr(a.rgb, b.rgb) > 35.0
        assert sharpness(a.rgb[0]) >= 0.97 * sharpness(b.rgb[0])
        fewer |= on_counts.projected < off.last_counts.projected
    assert fewer


def test_levels_are_built_where_chunks_land_not_in_frames(walked):
    """Every chunk the world landed (and every far chunk) was activated with its levels before
    its version was published, on the generation worker: drawing the scene's frames (on
    another thread, as the frame loop does) derives nothing. (A frozen seen view's masked
    chunks are made when a camera first stands in it, and activated there, as before LOD.)"""
    world, renderer = walked
    snapshot = world.scene.snapshot()
    cached = set(renderer.cached_chunk_ids())
    assert {c.id for c in snapshot.chunks + snapshot.far} <= cached
    before = renderer.chunks_derived
    frames = []
    t = threading.Thread(target=lambda: frames.extend(renderer.render(snapshot, cam, world.sky) for cam in _views(world)))
    t.start()
    t.join()
    assert len(frames) == 4 and renderer.chunks_derived == before
