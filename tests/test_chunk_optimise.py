"""Chunk optimisation (issue 16 item 3): a new chunk fitted to its keyframes before it lands.

On any machine: the plain-torch rasterisers draw what the CPU renderer draws (and agree on
gradients), the fitting
loop (with it) gains PSNR while keeping every Gaussian within its limits, a real world
fits its chunks through the chunk builder, a fit that does not help is not kept, and
asking for optimisation without CUDA fails with a message naming what is missing.
Marked ``gpu``: the same through gsplat's CUDA rasteriser (parity and a real world).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from runtime.world import PlayerState, Pose, World, WorldConfig  # noqa: E402
from runtime.world.camera import Cameras  # noqa: E402
from runtime.world.gaussians import Gaussians  # noqa: E402
from runtime.world.generators.procedural import ProceduralGenerator  # noqa: E402
from runtime.world.generators.procedural.generator import ground_height_y  # noqa: E402
from runtime.world.keyframes.optimise import (  # noqa: E402
    MAX_STEPS,
    ChunkOptimiser,
    OptimiseSettings,
    composite,
    gsplat_rasteriser,
)
from runtime.world.keyframes.torch_raster import dense_rasteriser, windowed_rasteriser  # noqa: E402
from runtime.world.render import cuda_available, gsplat_importable  # noqa: E402
from runtime.world.render.cpu import CpuRenderer  # noqa: E402
from runtime.world.scene import ChunkSource, Scene  # noqa: E402
from runtime.world.sky import Sky  # noqa: E402

SKY = Sky()
SEED = 7
needs_gsplat = pytest.mark.skipif(not (cuda_available() and gsplat_importable()), reason="needs CUDA and gsplat")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The dense rasteriser's tensors are tiny: on a busy two-core machine torch's intra-op
    threads spin-wait on each other and a step takes ~1000x longer than on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def camera(width: int = 40, height: int = 24, yaw: float = 0.3) -> Cameras:
    return Pose(np.zeros(3, np.float32), yaw=yaw, pitch=-0.1).camera(width, height, math.radians(60.0))


def random_gaussians(n: int, seed: int) -> Gaussians:
    """Anisotropic, semi-transparent Gaussians in front of ``camera()``."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    return Gaussians(
        means=np.float32([1.2, 0.0, 4.0]) + rng.uniform(-1.2, 1.2, (n, 3)),
        quats=q / np.linalg.norm(q, axis=1, keepdims=True),
        log_scales=np.log(rng.uniform(0.05, 0.25, (n, 3))),
        opacity_logits=rng.uniform(-1.0, 4.0, n),
        colors=rng.uniform(0.0, 1.0, (n, 3)),
    )


def perturbed(g: Gaussians, seed: int) -> Gaussians:
    """``g`` as a rough reconstruction would make it: colours, sizes and opacities off."""
    rng = np.random.default_rng(seed)
    return Gaussians(
        g.means + rng.normal(0, 0.01, g.means.shape),
        g.quats,
        g.log_scales + 0.2,
        g.opacity_logits - 0.5,
        np.clip(g.colors + rng.normal(0, 0.15, g.colors.shape), 0, 1),
    )


def tensors(g: Gaussians, cams: Cameras, device: str = "cpu"):
    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(device)

    quats = g.quats / np.linalg.norm(g.quats, axis=1, keepdims=True)
    return t(g.means), t(quats), t(g.scales), t(g.opacities), t(g.colors), t(cams.w2c), t(cams.K), cams.width, cams.height


def cpu_picture(g: Gaussians, cams: Cameras):
    scene = Scene()
    scene.append(g, ChunkSource())
    return CpuRenderer().render(scene.snapshot(), cams, SKY)


def eye(z: float, yaw: float = 0.0) -> Pose:
    return Pose(np.array([0.0, float(ground_height_y(0.0, z, SEED)) - 1.7, z], np.float32), yaw, 0.0)


# ---------------------------------------------------------------- any machine
def test_dense_rasteriser_draws_what_the_cpu_renderer_draws():
    g, cams = random_gaussians(150, seed=1), camera()
    rgb, alpha = dense_rasteriser(*tensors(g, cams))
    picture = composite(rgb, alpha, torch.from_numpy(SKY.colors(cams)))
    mine = (picture[0].numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    out = cpu_picture(g, cams)
    assert np.abs(mine.astype(int) - out.rgb[0].astype(int)).max() <= 1
    assert np.abs(alpha[0].numpy() - out.alpha[0]).max() < 1e-3


def test_windowed_rasteriser_draws_and_differentiates_as_the_dense_one():
    """Same pictures as the CPU renderer, and the same gradients as the dense rasteriser
    (every Gaussian here fits its window, so nothing is cut)."""
    g, cams = random_gaussians(200, seed=9), camera(72, 48)
    out = cpu_picture(g, cams)
    grads = {}
    for name, rasterise in (("dense", dense_rasteriser), ("windowed", windowed_rasteriser)):
        args = list(tensors(g, cams))
        for t in args[:5]:
            t.requires_grad_(True)
        rgb, alpha = rasterise(*args)
        picture = composite(rgb, alpha, torch.from_numpy(SKY.colors(cams)))
        (picture * torch.linspace(0, 1, picture.numel()).reshape(picture.shape)).sum().backward()
        mine = (picture[0].detach().numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
        assert np.abs(mine.astype(int) - out.rgb[0].astype(int)).max() <= 1, name
        grads[name] = [t.grad for t in args[:5]]
    for d, w in zip(grads["dense"], grads["windowed"]):
        assert torch.allclose(d, w, rtol=1e-3, atol=1e-4 * float(d.abs().max()))


def test_fit_gains_psnr_within_its_limits():
    truth, cams = random_gaussians(80, seed=2), camera()
    target = cpu_picture(truth, cams).rgb
    start = perturbed(truth, seed=3)
    settings = OptimiseSettings(steps=25, ssim_weight=0.2, max_seconds=0)
    optimiser = ChunkOptimiser(settings, dense_rasteriser)
    fitted, report = optimiser.optimise(start, Gaussians.empty(), cams, target, SKY.colors(cams))
    assert report.kept and report.psnr_after > report.psnr_before + 3.0, report
    assert report.gaussians == 80 and report.steps == 25 and optimiser.reports[-1] is report
    # The limits: centres within max_shift of their own largest standard deviation,
    # scales within [-max_shrink, +max_grow] in log, colours in [0, 1], unit quaternions.
    sigma = np.exp(start.log_scales.max(axis=1))
    assert (np.linalg.norm(fitted.means - start.means, axis=1) <= settings.max_shift * sigma * 1.0001 + 1e-6).all()
    d = fitted.log_scales - start.log_scales
    assert d.max() <= settings.max_grow + 1e-5 and d.min() >= -settings.max_shrink - 1e-5
    assert fitted.colors.min() >= 0.0 and fitted.colors.max() <= 1.0
    assert np.allclose(np.linalg.norm(fitted.quats, axis=1), 1.0, atol=1e-5)
    # The fit is judged on the picture players get: the CPU renderer agrees it improved.
    from bench.compare import psnr

    assert psnr(cpu_picture(fitted, cams).rgb[0], target[0]) > psnr(cpu_picture(start, cams).rgb[0], target[0]) + 3.0


def test_fixed_gaussians_are_drawn_but_never_changed():
    """The scene's Gaussians take part in the picture (an opaque wall in front hides the new
    ones, so they start out nearly right) and are never written to."""
    cams = camera()
    wall = Gaussians(  # an opaque disc in front of everything, fixed
        np.float32([[0.0, 0.0, 1.0]]), np.float32([[1, 0, 0, 0]]), np.log(np.float32([[2.0, 2.0, 0.01]])),
        np.float32([9.0]), np.float32([[0.2, 0.4, 0.6]]),
    )
    before = [a.copy() for a in (wall.means, wall.quats, wall.log_scales, wall.opacity_logits, wall.colors)]
    hidden = random_gaussians(20, seed=4)
    target = cpu_picture(Gaussians.concat([wall, hidden]), cams).rgb
    start = perturbed(hidden, seed=5)
    optimiser = ChunkOptimiser(OptimiseSettings(steps=1), dense_rasteriser)
    _, behind_wall = optimiser.optimise(start, wall, cams, target, SKY.colors(cams))
    _, alone = optimiser.optimise(start, Gaussians.empty(), cams, target, SKY.colors(cams))
    assert behind_wall.fixed == 1 and alone.fixed == 0
    assert behind_wall.psnr_before > 35.0 and behind_wall.psnr_before > alone.psnr_before + 15.0
    after = (wall.means, wall.quats, wall.log_scales, wall.opacity_logits, wall.colors)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_a_fit_stops_at_its_time_limit():
    truth, cams = random_gaussians(40, seed=7), camera()
    target = cpu_picture(truth, cams).rgb
    settings = OptimiseSettings(steps=MAX_STEPS, max_seconds=0.05)
    _, report = ChunkOptimiser(settings, dense_rasteriser).optimise(perturbed(truth, 8), Gaussians.empty(), cams, target, SKY.colors(cams))
    assert 1 <= report.steps < MAX_STEPS  # (its time is not asserted: a first step also loads parts of torch)


def test_a_fit_that_does_not_help_is_not_kept():
    truth, cams = random_gaussians(60, seed=6), camera()
    target = cpu_picture(truth, cams).rgb
    frozen = OptimiseSettings(steps=3, lr_shift=0, lr_log_scale=0, lr_quat=0, lr_opacity=0, lr_color=0)
    out, report = ChunkOptimiser(frozen, dense_rasteriser).optimise(truth, Gaussians.empty(), cams, target, SKY.colors(cams))
    assert out is truth and not report.kept and report.gain_db == 0.0


def test_settings_are_checked_by_name():
    for bad, field in ((dict(steps=0), "steps"), (dict(steps=MAX_STEPS + 1), "steps"), (dict(steps=2.5), "steps"),
                       (dict(steps=True), "steps"), (dict(ssim_weight=1.5), "ssim_weight"), (dict(max_shift=-1), "max_shift"),
                       (dict(max_seconds=-1), "max_seconds")):
        with pytest.raises(ValueError, match=field):
            OptimiseSettings(**bad)
    with pytest.raises(ValueError, match=r"\[1,4,5,3\]"):
        ChunkOptimiser(OptimiseSettings(steps=1), dense_rasteriser).optimise(
            random_gaussians(3, 0), Gaussians.empty(), camera(5, 4), np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 4, 5, 3))
        )


@pytest.mark.skipif(cuda_available(), reason="checks the error where CUDA is missing")
def test_without_cuda_optimisation_says_what_is_missing():
    """(The server's and the CLI's one-line refusals: tests/test_cli.py.)"""
    with pytest.raises(RuntimeError, match="chunk optimisation needs a CUDA GPU"):
        ChunkOptimiser.for_cuda(100)


def test_world_fits_new_chunks_before_they_land():
    """A real world (procedural generator, CPU renderer) with tiny keyframes, so the plain-torch
    rasteriser can fit them: chunks land fitted and the counters say so."""
    optimiser = ChunkOptimiser(OptimiseSettings(steps=8), dense_rasteriser)
    cfg = WorldConfig("optimise", seed=SEED, caption="a pine forest", keyframe_width=32, keyframe_height=18,
                      generate_unexplored_ahead=False, detail_max_px=0)
    world = World(cfg, generator=ProceduralGenerator(), renderer=CpuRenderer(), chunk_optimiser=optimiser)
    try:
        world.update([PlayerState("p", eye(0.0))])
        assert world.wait_idle(180)
        stats = world.stats
        assert stats["jobs_done"] >= 1 and stats["jobs_failed"] == 0
        reports = list(optimiser.reports)
        assert reports and all(r.keyframes >= 1 and r.width == 32 for r in reports)
        assert stats["chunks_optimised"] + stats["chunks_optimise_rejected"] == len([r for r in reports if r.gaussians])
        assert stats["chunks_optimised"] >= 1 and stats["optimise_gain_db"] > 0 and stats["optimise_ms"] > 0
        assert world.scene.snapshot().num_gaussians > 0
    finally:
        world.close()


def test_bench_quick_run_reports_chunks_and_views(tmp_path, capsys):
    """bench.chunk_optimise end to end with the plain-torch rasteriser (the GPU run differs only in it)."""
    import json

    from bench import chunk_optimise

    out = tmp_path / "co.json"
    chunk_optimise.main(["--quick", "--rasteriser", "dense", "--renderer", "cpu", "--json", str(out)])
    run = json.loads(out.read_text())["runs"][0]
    assert run["steps"] == 20 and run["chunks"] and len(run["views"]) == 2
    assert run["summary"]["kept"] >= 1 and all(c["ms"] > 0 for c in run["chunks"])
    text = capsys.readouterr().out
    assert "ms per chunk: median" in text and "held-out views: PSNR median" in text
    single = tmp_path / "single.json"
    chunk_optimise.main(["--single", "--rasteriser", "dense", "--renderer", "cpu", "--config", "keyframe_width=32",
                         "--config", "keyframe_height=18", "--steps", "5", "--novel", "2", "--resolution", "64x36", "--json", str(single)])
    (row,) = json.loads(single.read_text())["single"]
    assert row["steps"] == 5 and row["views"] == 2 and row["key_after"] > row["key_before"]


# ---------------------------------------------------------------- CUDA + gsplat
@pytest.mark.gpu
@needs_gsplat
def test_gsplat_rasteriser_matches_the_dense_one():
    import gsplat

    g, cams = random_gaussians(150, seed=1), camera(64, 40)
    rgb_d, alpha_d = dense_rasteriser(*tensors(g, cams))
    rgb_g, alpha_g = gsplat_rasteriser(gsplat)(*tensors(g, cams, "cuda"))
    assert rgb_g.shape == rgb_d.shape and alpha_g.shape == alpha_d.shape
    # gsplat clamps per-splat alpha at 0.999 (the CPU renderer at 0.99): near, not equal.
    assert (rgb_g.cpu() - rgb_d).abs().mean() < 0.01
    assert (alpha_g.cpu() - alpha_d).abs().mean() < 0.01


@pytest.mark.gpu
@needs_gsplat
def test_gsplat_fit_gains_psnr():
    truth, cams = random_gaussians(400, seed=2), camera(160, 96)
    target = cpu_picture(truth, cams).rgb
    optimiser = ChunkOptimiser.for_cuda(200)
    fitted, report = optimiser.optimise(perturbed(truth, seed=3), Gaussians.empty(), cams, target, SKY.colors(cams))
    print(f"gsplat fit: {report}")
    assert report.kept and report.psnr_after > report.psnr_before + 3.0, report


@pytest.mark.gpu
@needs_gsplat
def test_gsplat_world_fits_its_chunks():
    from runtime.world.render import create_renderer

    optimiser = ChunkOptimiser.for_cuda(100)
    cfg = WorldConfig("optimise-gpu", seed=SEED, caption="a pine forest", generate_unexplored_ahead=False, detail_max_px=0)
    world = World(cfg, generator=ProceduralGenerator(), renderer=create_renderer("gsplat"), chunk_optimiser=optimiser)
    try:
        world.update([PlayerState("p", eye(0.0))])
        assert world.wait_idle(300)
        print(f"gsplat world: {[(r.gaussians, round(r.ms), round(r.psnr_before, 2), round(r.psnr_after, 2)) for r in optimiser.reports]}")
        assert world.stats["jobs_failed"] == 0 and world.stats["chunks_optimised"] >= 1
    finally:
        world.close()
