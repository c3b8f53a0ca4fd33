"""The procedural generator: determinism, 3D consistency, spawn contract, biomes, sky, cancel."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit

from runtime.world.camera import Cameras, Pose, intrinsics_from_fov
from runtime.world.generators import (
    CancelToken,
    GenerationCancelled,
    GenerationRequest,
    create_generator,
)
from runtime.world.generators.procedural import kernels
from runtime.world.generators.procedural import (
    EYE_HEIGHT,
    SPAWN_CLEAR_RADIUS,
    ProceduralGenerator,
    ProceduralRequestError,
    StartImageError,
    ground_height_y,
    to_uint8,
)

W, H = 96, 54


def _noop(fraction: float, message: str) -> None:
    pass


@pytest.fixture(scope="module")
def gen() -> ProceduralGenerator:
    g = ProceduralGenerator()
    g.warmup()  # compile (or load the cache) once for the module
    return g


def _cams(poses: list[Pose], w: int = W, h: int = H, fov_deg: float = 75.0) -> Cameras:
    return Cameras.concat([p.camera(w, h, math.radians(fov_deg)) for p in poses])


def _run(gen, cams, caption="", seed=0, start_image=None):
    req = GenerationRequest(cameras=cams, caption=caption, seed=seed, start_image=start_image)
    return gen.generate(req, _noop, CancelToken())


def _world_points(cams: Cameras, depth: np.ndarray) -> np.ndarray:
    """``[N,H,W,3]`` world points of every pixel (nan where depth is inf)."""
    u, v = np.meshgrid(np.arange(cams.width) + 0.5, np.arange(cams.height) + 0.5)
    pix = np.stack([u, v, np.ones_like(u)], -1)
    out = []
    for n in range(len(cams)):
        rays = pix @ np.linalg.inv(cams.K[n].astype(np.float64)).T  # camera coords with z = 1
        pc = rays * np.where(np.isfinite(depth[n]), depth[n], np.nan)[..., None]
        c2w = np.linalg.inv(cams.w2c[n].astype(np.float64))
        out.append(pc @ c2w[:3, :3].T + c2w[:3, 3])
    return np.stack(out)


def test_result_shapes_and_registry(gen):
    g = create_generator("procedural")
    assert g.name == "procedural"
    cams = _cams([Pose(), Pose(np.array([1.0, 0.0, 2.0]), yaw=0.5)])
    res = _run(gen, cams)
    assert res.rgb.shape == (2, H, W, 3) and res.rgb.dtype == np.uint8
    assert res.depth.shape == (2, H, W) and res.depth.dtype == np.float32
    assert np.all((res.depth > 0) | np.isinf(res.depth))
    assert 0.05 < np.isinf(res.depth).mean() < 0.9  # some sky, some ground at eye level


def test_any_intrinsics(gen):
    # Non-square pixels and an off-centre principal point must still trace the requested rays.
    K = np.array([[70.0, 0, 30.0], [0, 50.0, 20.0], [0, 0, 1]], np.float32)
    cams = Cameras(Pose(pitch=-0.4).w2c[None], K[None], 61, 37)
    res = _run(gen, cams)
    assert res.rgb.shape == (1, 37, 61, 3)
    # Every pixel's ray, pitched down from 1.7 m over the flat spawn ground, meets y = 1.7 at
    # depth (along camera z) 1.7 / (world y of the camera ray with z = 1).
    for u, v in ((30, 20), (10, 30), (50, 36)):
        ray_cam = np.linalg.inv(K.astype(np.float64)) @ np.array([u + 0.5, v + 0.5, 1.0])
        ray_world = np.linalg.inv(cams.w2c[0].astype(np.float64))[:3, :3] @ ray_cam
        assert res.depth[0, v, u] == pytest.approx(EYE_HEIGHT / ray_world[1], rel=0.003)


def test_deterministic_and_seeded(gen):
    cams = _cams([Pose(yaw=0.3), Pose(np.array([5.0, 0.0, -3.0]), yaw=2.0, pitch=-0.1)])
    a = _run(gen, cams, "forest", seed=7)
    b = _run(gen, cams, "forest", seed=7)
    assert np.array_equal(a.rgb, b.rgb)
    assert np.array_equal(a.depth, b.depth)
    c = _run(gen, cams, "forest", seed=8)
    assert np.mean(np.abs(a.rgb.astype(int) - c.rgb.astype(int))) > 2.0


def test_same_pixels_in_any_batch(gen):
    """A view's pixels do not depend on the other views in the request."""
    p1, p2 = Pose(yaw=1.0), Pose(np.array([40.0, 0.0, 40.0]), yaw=-2.0)
    both = _run(gen, _cams([p1, p2]), seed=3)
    alone = _run(gen, _cams([p2]), seed=3)
    assert np.array_equal(both.rgb[1], alone.rgb[0])
    assert np.array_equal(both.depth[1], alone.depth[0])


@pytest.mark.parametrize("caption", ["", "forest", "city"])
def test_views_agree_after_reprojection(gen, caption):
    w, h = 160, 90
    a = Pose(np.zeros(3), yaw=0.35, pitch=-0.12)
    right = np.array([math.cos(a.yaw), 0.0, -math.sin(a.yaw)])
    b = Pose(a.position + 0.5 * right, yaw=a.yaw + math.radians(10.0), pitch=-0.12)
    cams = _cams([a, b], w, h)
    res = _run(gen, cams, caption, seed=11)
    pts = _world_points(cams[0:1], res.depth[0:1])[0].reshape(-1, 3)
    cols = res.rgb[0].reshape(-1, 3).astype(np.float64)
    ok = np.isfinite(pts[:, 0])
    pts, cols = pts[ok], cols[ok]
    pc = pts @ cams.w2c[1, :3, :3].T.astype(np.float64) + cams.w2c[1, :3, 3]
    z = pc[:, 2]
    uv = pc @ cams.K[1].T.astype(np.float64)
    u = np.floor(uv[:, 0] / z).astype(int)
    v = np.floor(uv[:, 1] / z).astype(int)
    inside = (z > 0.1) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    u, v, z, cols = u[inside], v[inside], z[inside], cols[inside]
    agree = np.abs(res.depth[1, v, u] - z) < 0.01 * z + 0.02  # visible in B, not occluded
    assert agree.sum() > 0.3 * w * h
    err = np.abs(res.rgb[1, v[agree], u[agree]].astype(np.float64) - cols[agree]).mean()
    assert err < 12.0, f"mean abs colour error {err:.1f} after reprojection"


def test_spawn_ground_and_clearance():
    assert float(ground_height_y(0.0, 0.0)) == pytest.approx(EYE_HEIGHT, abs=1e-9)
    ang = np.linspace(0, 2 * np.pi, 64)
    r = np.linspace(0, SPAWN_CLEAR_RADIUS, 9)[:, None]
    for seed in (0, 1, 12345):
        y = ground_height_y(r * np.cos(ang), r * np.sin(ang), seed=seed)
        assert y.shape == (9, 64)
        assert np.allclose(y, EYE_HEIGHT, atol=1e-9)
    # Far away the ground is not flat (there are hills).
    far = ground_height_y(np.linspace(-200, 200, 50), np.full(50, 150.0), seed=1)
    assert far.max() - far.min() > 3.0
    assert ProceduralGenerator.ground_height_y(0.0, 0.0, seed=5) == pytest.approx(EYE_HEIGHT)


@pytest.mark.parametrize("caption", ["", "forest", "city", "beach", "desert", "snowy winter"])
def test_spawn_is_clear(gen, caption):
    # Looking straight down (wide lens) and all round at eye level, from the origin.
    down = Pose(pitch=-math.pi / 2 + 1e-4)
    around = [Pose(yaw=k * math.pi / 3, pitch=-0.25) for k in range(6)]
    for seed in (0, 5):
        cams = Cameras.concat([down.camera(64, 64, math.radians(120)), *[p.camera(64, 64, math.radians(70)) for p in around]])
        res = _run(gen, cams, caption, seed=seed)
        assert res.depth[0, 31:33, 31:33] == pytest.approx(EYE_HEIGHT, abs=0.01)
        pts = _world_points(cams, res.depth).reshape(-1, 3)
        pts = pts[np.isfinite(pts[:, 0])]
        near = np.hypot(pts[:, 0], pts[:, 2]) < SPAWN_CLEAR_RADIUS
        assert near.sum() > 500
        # Every surface within 4 m is the flat ground: no rock, tree, building or water.
        assert np.allclose(pts[near, 1], EYE_HEIGHT, atol=0.02), caption


def test_biomes_change_the_palette(gen):
    cams = _cams([Pose(yaw=k * math.pi / 2, pitch=-0.3) for k in range(4)])
    means = {}
    for caption in ("", "a dense forest", "desert dunes", "snow", "old town", "tropical island beach"):
        res = _run(gen, cams, caption, seed=2)
        ground = np.isfinite(res.depth)
        means[caption] = res.rgb[ground].astype(np.float64).mean(axis=0)
    desert, snow, meadow = means["desert dunes"], means["snow"], means[""]
    assert desert[0] > desert[2] + 30  # sandy: red well above blue
    assert snow.mean() > 150 and snow[2] > snow[0]  # bright, bluish-white ground
    assert meadow[1] > meadow[2] + 20  # green grass
    for a in means:
        for b in means:
            if a < b:
                assert np.abs(means[a] - means[b]).sum() > 10, (a, b)


def test_unknown_caption_falls_back_to_meadow(gen):
    cams = _cams([Pose(yaw=0.5)])
    a = _run(gen, cams, "zzz qqq", seed=4)
    b = _run(gen, cams, "", seed=4)
    assert np.array_equal(a.rgb, b.rgb)
    assert gen.sky("zzz") == gen.sky("")


@pytest.mark.parametrize("caption", ["", "desert", "snow", "beach"])
def test_sky_pixels_are_the_sky_objects_colours(gen, caption):
    cams = _cams([Pose(pitch=0.4), Pose(yaw=2.5, pitch=0.1)])
    res = _run(gen, cams, caption, seed=1)
    sky = gen.sky(caption, seed=1)
    expected = to_uint8(sky.colors(cams))
    is_sky = np.isinf(res.depth)
    assert is_sky.mean() > 0.3
    assert np.array_equal(res.rgb[is_sky], expected[is_sky])
    assert gen.sky("desert") != gen.sky("snow")


def test_start_image_tints_the_world(gen):
    cams = _cams([Pose(yaw=0.2, pitch=-0.2)])
    img = np.zeros((40, 60, 3), np.uint8)
    img[:15] = (250, 150, 90)  # orange sky
    img[15:] = (150, 40, 40)  # red ground
    plain = _run(gen, cams, seed=3)
    tinted = _run(gen, cams, seed=3, start_image=img)
    ground = np.isfinite(plain.depth[0])
    p = plain.rgb[0][ground].astype(np.float64).mean(0)
    t = tinted.rgb[0][ground].astype(np.float64).mean(0)
    assert (t[0] - t[1]) > (p[0] - p[1]) + 15  # redder ground
    sky = gen.sky(seed=3, start_image=img)
    assert sky != gen.sky()
    # The tinted sky is still what the sky pixels show.
    is_sky = np.isinf(tinted.depth)
    assert np.array_equal(tinted.rgb[is_sky], to_uint8(sky.colors(cams))[is_sky])
    with pytest.raises(StartImageError, match="start_image"):
        gen.sky(start_image=np.zeros((4, 4), np.uint8))


def test_cancel(gen):
    cams = _cams([Pose(), Pose(yaw=1.0)])
    token = CancelToken()
    token.cancel()
    with pytest.raises(GenerationCancelled):
        gen.generate(GenerationRequest(cameras=cams), _noop, token)

    # Cancelling mid-way (from the progress callback) stops before the next block of rows.
    token = CancelToken()
    seen = []

    def progress(fraction, message):
        seen.append(fraction)
        if fraction > 0.2:
            token.cancel()

    with pytest.raises(GenerationCancelled):
        gen.generate(GenerationRequest(cameras=cams), progress, token)
    assert 0.2 < max(seen) < 1.0


def test_progress_reaches_one(gen):
    seen = []
    gen.generate(GenerationRequest(cameras=_cams([Pose()])), lambda f, m: seen.append(f), CancelToken())
    assert seen[0] == 0.0 and seen[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in zip(seen, seen[1:]))


def test_bad_requests(gen):
    with pytest.raises(ProceduralRequestError, match="cameras"):
        gen.generate(GenerationRequest(cameras="nope"), _noop, CancelToken())
    K = intrinsics_from_fov(W, H, 1.0)
    K[0, 0] = 0.0
    K[1, 1] = 0.0
    with pytest.raises(ProceduralRequestError, match="K"):
        gen.generate(GenerationRequest(cameras=Cameras(np.eye(4)[None], K[None], W, H)), _noop, CancelToken())
    with pytest.raises(ProceduralRequestError, match="seed"):
        gen.generate(GenerationRequest(cameras=_cams([Pose()]), seed=1.5), _noop, CancelToken())
    with pytest.raises(ProceduralRequestError, match="max_distance"):
        ProceduralGenerator(max_distance=1.0)


def test_same_pixels_with_one_thread_and_from_worker_threads(gen):
    """Thread count and concurrent callers do not change pixels (rows are independent)."""
    import threading

    cams = _cams([Pose(yaw=0.7, pitch=-0.1)])
    ref = _run(gen, cams, "beach", seed=9)
    one = ProceduralGenerator(threads=1)
    out = {}

    def work(key, g):
        out[key] = _run(g, cams, "beach", seed=9)

    workers = [threading.Thread(target=work, args=(k, g)) for k, g in (("one", one), ("all", gen))]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    assert np.array_equal(out["one"].rgb, ref.rgb) and np.array_equal(out["all"].rgb, ref.rgb)
    assert np.array_equal(out["one"].depth, ref.depth)


def test_numpy_error_model_draws_the_same_pixels(gen, tmp_path, monkeypatch):
    """The kernels compile with ``error_model="numpy"`` (no zero test per division, faster).
    The generator is the world's ground truth, so its pictures must not change: a copy of
    the kernels compiled with numba's default ("python") error model draws every biome,
    near ground, objects, water and sky, bit for bit the same."""
    import importlib.util
    import sys

    from runtime.world.generators.procedural import generator as generator_module
    from runtime.world.generators.procedural import kernels

    source = open(kernels.__file__).read()
    assert 'error_model="numpy"' in source
    copy = tmp_path / "kernels_python_errors.py"
    copy.write_text(source.replace('error_model="numpy"', 'error_model="python"'))
    spec = importlib.util.spec_from_file_location("kernels_python_errors", copy)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "kernels_python_errors", module)
    spec.loader.exec_module(module)
    poses = [Pose(yaw=0.3, pitch=-0.25), Pose(np.array([4.0, 0.0, 30.0]), yaw=2.5, pitch=-0.05), Pose(yaw=-1.2, pitch=0.2)]
    cams = _cams(poses, 64, 36)
    fast = {caption: _run(gen, cams, caption, seed=7) for caption in ("forest", "city", "desert", "snow", "beach", "")}
    monkeypatch.setattr(generator_module, "kernels", module)
    reference = ProceduralGenerator()
    for caption, out in fast.items():
        ref = _run(reference, cams, caption, seed=7)
        assert np.array_equal(out.rgb, ref.rgb), caption
        assert np.array_equal(out.depth, ref.depth), caption


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def exact() -> ProceduralGenerator:
    return ProceduralGenerator(exact=True)


@pytest.mark.parametrize("caption", ["forest", "city", "desert", "snow", "beach", ""])
def test_fast_trace_draws_the_exact_picture(gen, exact, caption):
    """The default trace (tiles of rays marched as one cone first, shadows and occlusion
    interpolated where their samples agree) draws the reference picture of ``exact=True``
    (every ray from the camera, every pixel's shadow traced: the picture the generator drew
    before the fast trace, bit for bit): >= 36 dB in every view at a keyframe size, 38 dB
    over the biome's views, the same depth almost everywhere. What differs is a few
    silhouette pixels a ray grazes within the march's hit tolerance (0.3 pixel), which
    the two marches, stepping differently, decide differently."""
    poses = [Pose(yaw=0.3, pitch=-0.1), Pose(np.array([4.0, 0.0, 30.0]), yaw=2.5, pitch=-0.05), Pose(np.array([-3.0, 0.0, 15.0]), yaw=-1.2, pitch=0.1)]
    cams = _cams(poses, 320, 180)
    fast, ref = _run(gen, cams, caption, seed=7), _run(exact, cams, caption, seed=7)
    assert fast.info["trace"] != "exact" and ref.info["trace"] == "exact"
    for i in range(len(poses)):
        assert _psnr(fast.rgb[i], ref.rgb[i]) >= 36.0, (caption, i)
    assert _psnr(fast.rgb, ref.rgb) >= 38.0, caption
    assert (np.isfinite(fast.depth) != np.isfinite(ref.depth)).mean() < 0.001
    both = np.isfinite(fast.depth) & np.isfinite(ref.depth)
    assert (np.abs(fast.depth - ref.depth)[both] > 0.01 * ref.depth[both] + 0.01).mean() < 0.002


@njit(cache=False)
def _first_inside(origin, ray_matrix, u0, u1, v0, v1, t_end, step, seed, e0, hg, hm, trees, tmeta, rocks, rmeta):
    """The smallest distance below ``t_end`` (sampled every ``step`` metres) where a ray
    through a pixel centre of ``u0..u1-1 x v0..v1-1`` is inside terrain or an object; inf if none."""
    first = np.inf
    for v in range(v0, v1):
        for u in range(u0, u1):
            dx, dy, dz = kernels._ray(ray_matrix, u + 0.5, v + 0.5)
            t = 0.02
            while t < min(t_end, first):
                d, _m, _r, _g = kernels.scene_sdf(
                    origin[0] + dx * t, origin[1] + dy * t, origin[2] + dz * t, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, 1.0
                )
                if d < 0.0:
                    first = t
                t += step
    return first


def test_cone_march_never_skips_a_thin_object(gen):
    """A tile's rays start where its cone stopped, so the cone may pass nothing any of them
    meets: looking across forest, snow, city and desert at low resolution, where distant
    trunks, cacti and twigs are a pixel or less wide, no ray of any tile is inside anything
    (sampled every 5 cm) before its cone's stop, give or take a centimetre or two -- and the
    cones do skip most of the way."""
    w, h, tile = 128, 72, 8
    eyes = [(0.0, 0.0, 0.0), (2.0, 20.0, 1.6), (-3.0, 40.0, 3.1), (5.0, 30.0, -1.5)]
    poses = [Pose(np.array([x, float(ground_height_y(x, z, 7)) - EYE_HEIGHT, z]), yaw=yaw, pitch=0.02) for x, z, yaw in eyes]
    cams = _cams(poses, w, h)
    seed = 7
    e0 = float(kernels.lattice_height(0, 0, seed))
    hg, hm0 = gen._height_grid(cams.c2w[:, :3, 3].astype(np.float64), seed)
    skipped = []
    for caption in ("forest", "snow", "city", "desert"):
        biome = gen.biome(caption)
        bp = biome.pack()
        for n in range(len(cams)):
            origin = cams.c2w[n, :3, 3].astype(np.float64)
            ray_matrix = cams.c2w[n, :3, :3].astype(np.float64) @ np.linalg.inv(cams.K[n].astype(np.float64))
            trees, tmeta, rocks, rmeta, hm = gen._view_scene(origin, biome, seed, e0, hg, hm0, bp)
            for v0 in range(0, h, tile):
                for u0 in range(0, w, tile):
                    cx, cy, cz, alpha = kernels._tile_cone(ray_matrix, u0, u0 + tile, v0, v0 + tile)
                    t_cone = kernels.march_cone(*origin, cx, cy, cz, alpha, gen.max_distance, seed, e0, hg, hm, trees, tmeta, rocks, rmeta)
                    first = _first_inside(origin, ray_matrix, u0, u0 + tile, v0, v0 + tile, t_cone, 0.05, seed, e0, hg, hm, trees, tmeta, rocks, rmeta)
                    # Object distances are bounds only roughly (craggy rocks, leafy bumps): a cone
                    # may stop a centimetre or two inside a surface a ray meets, never past it.
                    assert first >= t_cone - (0.02 + 0.01 * t_cone), (caption, n, u0, v0, t_cone, first)
                    skipped.append(t_cone)
    assert np.median(skipped) > 3.0
