"""Renderers: the CPU rasteriser against a slow numpy reference, geometry checks, caching, gsplat parity."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from bench.compare import psnr
from bench.synthetic import scene_from_chunks, typical_world
from runtime.world.camera import Cameras, Pose, intrinsics_from_fov, quat_wxyz_to_matrix
from runtime.world.gaussians import Gaussians
from runtime.world.render import create_renderer, cuda_available, gsplat_installed
from runtime.world.render.chunk_cache import ChunkCache
from runtime.world.render.cpu import CpuRenderer
from runtime.world.render.projection import BLOCK, activate_chunk, visible_blocks
from runtime.world.scene import ChunkSource, Scene
from runtime.world.sky import Sky

SKY = Sky()


# ---------------------------------------------------------------- reference
def reference_render(g: Gaussians, cam: Cameras, sky: Sky) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Straightforward 3DGS forward pass in float64 numpy: every pixel against every Gaussian.

    Same conventions as the renderers: EWA projection with gsplat's Jacobian clamp,
    0.3 px low-pass, alpha = min(0.99, o exp(power)), splats below 1/255 skipped, a pixel
    stops before T would drop below 1e-4, global depth order. Returns rgb ``[H,W,3]``
    uint8, depth ``[H,W]`` (expected, inf where alpha < 1/255), alpha ``[H,W]``.
    """
    W, H = cam.width, cam.height
    K = cam.K[0].astype(np.float64)
    Rw = cam.w2c[0, :3, :3].astype(np.float64)
    tw = cam.w2c[0, :3, 3].astype(np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    R = quat_wxyz_to_matrix(g.quats).astype(np.float64)
    S2 = np.exp(2.0 * g.log_scales.astype(np.float64))
    cov3 = np.einsum("gij,gj,gkj->gik", R, S2, R)
    p = g.means.astype(np.float64) @ Rw.T + tw
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    keep = z >= 0.01
    x, y, z, cov3 = x[keep], y[keep], z[keep], cov3[keep]
    opacity = (1.0 / (1.0 + np.exp(-g.opacity_logits.astype(np.float64))))[keep]
    colors = g.colors.astype(np.float64)[keep]
    u, v = fx * x / z + cx, fy * y / z + cy
    lim_x = (W - cx) / fx + 0.3 * 0.5 * W / fx, cx / fx + 0.3 * 0.5 * W / fx
    lim_y = (H - cy) / fy + 0.3 * 0.5 * H / fy, cy / fy + 0.3 * 0.5 * H / fy
    tx = z * np.clip(x / z, -lim_x[1], lim_x[0])
    ty = z * np.clip(y / z, -lim_y[1], lim_y[0])
    J = np.zeros((len(z), 2, 3))
    J[:, 0, 0] = fx / z
    J[:, 0, 2] = -fx * tx / z**2
    J[:, 1, 1] = fy / z
    J[:, 1, 2] = -fy * ty / z**2
    cov_cam = np.einsum("ij,gjk,lk->gil", Rw, cov3, Rw)
    cov2 = np.einsum("gij,gjk,glk->gil", J, cov_cam, J) + 0.3 * np.eye(2)
    conic = np.linalg.inv(cov2)
    order = np.argsort(z, kind="stable")
    px, py = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    px, py = px.ravel(), py.ravel()
    T = np.ones(px.size)
    done = np.zeros(px.size, bool)
    C = np.zeros((px.size, 3))
    D = np.zeros(px.size)
    for i in order:
        dx, dy = u[i] - px, v[i] - py
        power = -0.5 * (conic[i, 0, 0] * dx * dx + conic[i, 1, 1] * dy * dy) - conic[i, 0, 1] * dx * dy
        a = np.minimum(0.99, opacity[i] * np.exp(power))
        a[(power > 0) | (a < 1.0 / 255.0) | done] = 0.0
        t_new = T * (1.0 - a)
        stop = (a > 0) & (t_new < 1e-4)
        done |= stop
        a[stop] = 0.0
        w = a * T
        C += w[:, None] * colors[i]
        D += w * z[i]
        T *= 1.0 - a
    alpha = 1.0 - T
    sky_rgb = sky.colors(cam)[0].reshape(-1, 3)
    rgb = np.clip((C + T[:, None] * sky_rgb) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    depth = np.where(alpha >= 1.0 / 255.0, D / np.maximum(alpha, 1e-12), np.inf)
    return rgb.reshape(H, W, 3), depth.reshape(H, W), alpha.reshape(H, W)


# ---------------------------------------------------------------- scenes
def camera(width=64, height=48, yaw=0.3, pitch=-0.1, position=(0.0, 0.0, 0.0), fov_deg=60.0) -> Cameras:
    return Pose(np.asarray(position, np.float32), yaw=yaw, pitch=pitch).camera(width, height, math.radians(fov_deg))


def random_gaussians(n: int, seed: int, center=(0.0, 0.0, 4.0), spread=1.5) -> Gaussians:
    """Anisotropic, semi-transparent Gaussians: exercises rotation, blending order and partial alpha."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    return Gaussians(
        means=np.asarray(center) + rng.uniform(-spread, spread, (n, 3)),
        quats=q / np.linalg.norm(q, axis=1, keepdims=True),
        log_scales=np.log(rng.uniform(0.02, 0.25, (n, 3))),
        opacity_logits=rng.uniform(-2.0, 4.0, n),
        colors=rng.uniform(0.0, 1.0, (n, 3)),
    )


def plane(z: float, x_range=(-5.0, 5.0), y_range=(-4.0, 4.0), spacing=0.05, color=(0.8, 0.3, 0.2)) -> Gaussians:
    """Flat, nearly opaque Gaussians tiling the plane ``z = const`` (camera-facing)."""
    xs = np.arange(x_range[0], x_range[1], spacing) + spacing / 2
    ys = np.arange(y_range[0], y_range[1], spacing) + spacing / 2
    gx, gy = np.meshgrid(xs, ys)
    n = gx.size
    means = np.stack([gx.ravel(), gy.ravel(), np.full(n, z)], -1)
    return Gaussians(
        means=means,
        quats=np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)),
        log_scales=np.log(np.tile([spacing, spacing, 1e-3], (n, 1))),
        opacity_logits=np.full(n, 4.6),  # ~0.99
        colors=np.tile(color, (n, 1)),
    )


@pytest.fixture(scope="module")
def tiny_world() -> Gaussians:
    parts = typical_world(num_views=3, width=40, height=24, seed=3, num_shapes=30, radius=20.0)
    return Gaussians.concat(parts + [random_gaussians(300, seed=1)])


@pytest.fixture(scope="module")
def renderer() -> CpuRenderer:
    return CpuRenderer()


def single_chunk_scene(g: Gaussians) -> Scene:
    scene = Scene()
    scene.append(g, ChunkSource())
    return scene


# ---------------------------------------------------------------- tests
def test_cpu_matches_numpy_reference(renderer, tiny_world):
    scene = single_chunk_scene(tiny_world)
    for yaw in (0.3, 2.0):
        cam = camera(yaw=yaw)
        out = renderer.render(scene.snapshot(), cam, SKY)
        ref_rgb, ref_depth, ref_alpha = reference_render(tiny_world, cam, SKY)
        assert out.rgb.shape == (1, 48, 64, 3) and out.rgb.dtype == np.uint8
        assert 0.2 < ref_alpha.mean() < 0.95  # the view shows splats and sky
        assert psnr(out.rgb[0], ref_rgb) >= 35.0
        assert np.abs(out.alpha[0] - ref_alpha).mean() < 2e-3
        both = np.isfinite(ref_depth) & np.isfinite(out.depth[0]) & (ref_alpha > 0.5)
        rel = np.abs(out.depth[0][both] - ref_depth[both]) / ref_depth[both]
        assert np.median(rel) < 1e-3


def test_opaque_plane_depth_and_alpha(renderer):
    scene = single_chunk_scene(plane(5.0))
    cam = Cameras(np.eye(4, dtype=np.float32), intrinsics_from_fov(64, 48, math.radians(60.0)), 64, 48)
    out = renderer.render(scene.snapshot(), cam, SKY)
    # A pixel stops before the splat that would take T below 1e-4: with alpha <= 0.99
    # per splat, T can end anywhere up to 1e-2.
    assert out.alpha.min() > 0.99
    np.testing.assert_allclose(out.depth, 5.0, rtol=1e-4)
    assert np.abs(out.rgb[0, 10, 10].astype(float) - np.array([0.8, 0.3, 0.2]) * 255).max() <= 1.0


def test_half_plane_leaves_sky_where_empty(renderer):
    scene = single_chunk_scene(plane(5.0, x_range=(-5.0, -1.0)))
    cam = Cameras(np.eye(4, dtype=np.float32), intrinsics_from_fov(64, 48, math.radians(60.0)), 64, 48)
    out = renderer.render(scene.snapshot(), cam, SKY)
    # Pixel column where x/z = 0.2 (1 m at 5 m): well right of the plane's edge at -1 m.
    right = out.alpha[0][:, 40:]
    assert right.max() == 0.0 and np.isinf(out.depth[0][:, 40:]).all()
    sky = np.clip(SKY.colors(cam)[0] * 255 + 0.5, 0, 255).astype(np.uint8)
    assert np.abs(out.rgb[0][:, 40:].astype(int) - sky[:, 40:].astype(int)).max() <= 1
    assert out.alpha[0][:, :10].min() > 0.99


def test_empty_scene_is_pure_sky(renderer):
    for width, height, tolerance in ((64, 48, 1), (640, 360, 2)):
        cam = camera(width, height, pitch=0.2)
        out = renderer.render(Scene().snapshot(), cam, SKY)
        sky = np.clip(SKY.colors(cam)[0] * 255 + 0.5, 0, 255).astype(np.uint8)
        assert np.abs(out.rgb[0].astype(int) - sky.astype(int)).max() <= tolerance
        assert out.alpha.max() == 0.0 and np.isinf(out.depth).all()
        assert out.scene_version == 0
        assert renderer.render_alpha(Scene().snapshot(), cam.resized(64, 36)).max() == 0.0


def test_deterministic_and_thread_safe(tiny_world):
    renderer = CpuRenderer()
    scene = scene_from_chunks([tiny_world.subset(np.arange(0, len(tiny_world), 2)), tiny_world.subset(np.arange(1, len(tiny_world), 2))])
    cams = [camera(96, 64, yaw=y) for y in (0.0, 0.7, 1.4, 2.1)]
    serial = [renderer.render(scene.snapshot(), c, SKY) for c in cams]
    again = renderer.render(scene.snapshot(), cams[0], SKY)
    np.testing.assert_array_equal(serial[0].rgb, again.rgb)
    np.testing.assert_array_equal(serial[0].depth, again.depth)
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda c: renderer.render(scene.snapshot(), c, SKY), cams * 3))
    for i, out in enumerate(parallel):
        np.testing.assert_array_equal(out.rgb, serial[i % 4].rgb)
        np.testing.assert_array_equal(out.alpha, serial[i % 4].alpha)


def test_batch_equals_single_views(renderer, tiny_world):
    scene = single_chunk_scene(tiny_world)
    cams = Cameras.concat([camera(yaw=0.2), camera(yaw=1.0)])
    batch = renderer.render(scene.snapshot(), cams, SKY)
    for i in range(2):
        single = renderer.render(scene.snapshot(), cams[i], SKY)
        np.testing.assert_array_equal(batch.rgb[i], single.rgb[0])
        np.testing.assert_array_equal(batch.depth[i], single.depth[0])


def test_render_alpha_matches_render(renderer, tiny_world):
    scene = single_chunk_scene(tiny_world)
    cams = Cameras.concat([camera(64, 36, yaw=0.2), camera(64, 36, yaw=-0.5)])
    alpha = renderer.render_alpha(scene.snapshot(), cams)
    assert alpha.shape == (2, 36, 64) and alpha.dtype == np.float32
    np.testing.assert_allclose(alpha, renderer.render(scene.snapshot(), cams, SKY).alpha, atol=1e-5)


def test_culling_skips_invisible_chunks(tiny_world):
    renderer = CpuRenderer()
    scene = Scene()
    front = scene.append(plane(5.0, x_range=(-1, 1), y_range=(-1, 1), spacing=0.1), ChunkSource())[0]
    behind = scene.append(plane(-5.0), ChunkSource())[0]
    cam = Cameras(np.eye(4, dtype=np.float32), intrinsics_from_fov(64, 48, math.radians(60.0)), 64, 48)
    out = renderer.render(scene.snapshot(), cam, SKY)
    renderer.render_alpha(scene.snapshot(), cam)
    assert renderer.cached_chunk_ids() == [front.id]
    alone = CpuRenderer().render(single_chunk_scene(front.gaussians).snapshot(), cam, SKY)
    np.testing.assert_array_equal(out.rgb, alone.rgb)
    assert behind.id not in renderer.cached_chunk_ids()


def test_chunk_cache_budget_and_lifetime():
    derived = []
    cache = ChunkCache(lambda c: derived.append(c.id) or np.zeros(100, np.uint8), lambda a: a.nbytes, max_bytes=250)
    scene = Scene()
    chunks = [scene.append(plane(float(i + 1), spacing=1.0), ChunkSource())[0] for i in range(3)]
    for c in chunks:
        cache.get(c)
    assert cache.chunk_ids() == [chunks[1].id, chunks[2].id] and cache.nbytes == 200  # LRU dropped
    cache.get(chunks[2])
    assert derived == [c.id for c in chunks]  # a hit derives nothing
    del scene, c
    last_id = chunks[2].id
    chunks.clear()
    import gc

    gc.collect()
    assert cache.chunk_ids() == [] or last_id not in cache.chunk_ids()


def test_create_renderer_names():
    assert create_renderer("cpu").name == "cpu"
    with pytest.raises(ValueError, match="name"):
        create_renderer("vulkan")
    if not cuda_available():
        assert create_renderer("auto").name == "cpu"
        with pytest.raises(RuntimeError, match="CUDA"):
            create_renderer("gsplat")
    with pytest.raises(ValueError, match="t_min"):
        CpuRenderer(t_min=0.0)


@pytest.mark.skipif(gsplat_installed(), reason="gsplat is installed here: auto asks torch about CUDA")
def test_auto_picks_the_cpu_renderer_without_importing_torch_where_gsplat_is_missing():
    """Torch costs a CPU-only server ~1-3 s of CPU and ~180 MiB at start; without gsplat
    "auto" cannot pick the GPU renderer, so it need not ask torch about CUDA."""
    code = (
        "import sys; from runtime.app import _gpu_renderer; from runtime.world.render import create_renderer;"
        "print(create_renderer('auto').name, _gpu_renderer('auto'), 'torch' in sys.modules)"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.split() == ["cpu", "False", "False"], out.stdout + out.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gsplat_matches_cpu():
    pytest.importorskip("gsplat")
    parts = typical_world(num_views=6, width=160, height=90, seed=5)
    scene = scene_from_chunks(parts)
    cams = Cameras.concat([camera(320, 180, yaw=y) for y in (0.0, 1.5, 3.0)])
    cpu = CpuRenderer().render(scene.snapshot(), cams, SKY)
    gpu = create_renderer("gsplat")
    out = gpu.render(scene.snapshot(), cams, SKY)
    assert out.rgb.shape == cpu.rgb.shape and out.rgb.dtype == np.uint8
    for i in range(len(cams)):
        assert psnr(out.rgb[i], cpu.rgb[i]) >= 30.0
    assert np.abs(out.alpha - cpu.alpha).mean() < 0.01
    alpha = gpu.render_alpha(scene.snapshot(), cams.resized(64, 36))
    np.testing.assert_allclose(alpha.mean(), CpuRenderer().render_alpha(scene.snapshot(), cams.resized(64, 36)).mean(), atol=0.02)
    empty = gpu.render(Scene().snapshot(), cams[0], SKY)
    assert empty.alpha.max() == 0.0 and np.isinf(empty.depth).all()


def test_chunk_in_view_with_no_block_in_view_renders_sky(renderer):
    """A chunk whose bounds cross the view while each of its blocks lies outside it (one
    cluster left of the camera, one far right; their depths put each in its own block) once
    made ``visible_blocks`` raise ValueError, failing every frame of the session; it must
    draw sky."""
    left = random_gaussians(BLOCK, seed=5, center=(-30.0, 0.0, 2.0), spread=0.5)
    right = random_gaussians(BLOCK, seed=6, center=(60.0, 0.0, 40.0), spread=0.5)
    scene = single_chunk_scene(Gaussians.concat([left, right]))
    cam = Cameras(np.eye(4, dtype=np.float32), intrinsics_from_fov(64, 48, math.radians(60.0)), 64, 48)
    (chunk,) = scene.snapshot().visible_chunks(cam)
    packed = activate_chunk(chunk.gaussians)
    assert len(packed.block_lo) == 2
    blocks, rows = visible_blocks([packed], cam)
    assert blocks.shape == (0, 4) and rows == 0
    out = renderer.render(scene.snapshot(), cam, SKY)
    np.testing.assert_array_equal(out.alpha, 0.0)
