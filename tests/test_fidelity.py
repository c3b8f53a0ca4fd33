"""The fidelity benchmark (bench/fidelity.py) and the comparisons it rests on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import fidelity
from bench.compare import psnr, sharpness, ssim


def test_ssim_and_sharpness_on_known_pictures():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert ssim(img, img) == pytest.approx(1.0)
    flat = np.full_like(img, 128)
    assert ssim(img, flat) < 0.2
    assert sharpness(flat) == 0.0
    blurred = ((img.astype(np.float32) + np.roll(img, 1, 0) + np.roll(img, 1, 1) + np.roll(img, 1, (0, 1))) / 4).astype(np.uint8)
    assert sharpness(blurred) < 0.7 * sharpness(img)


def test_shade_from_the_camera_itself_changes_nothing():
    """The ceiling's generator option: view-dependent terms from the camera's own centre
    give the plain picture; from elsewhere, fog shifts only slightly."""
    truth = fidelity.Truth("a pine forest", 7)
    pose = fidelity.eye_pose(0.0, 3.0, 0.4, -0.1, 7)
    cam = pose.camera(96, 54, math.radians(60))
    plain, depth = truth.render(cam)
    same, same_depth = truth.render(cam, shade_from=pose.position[None].astype(np.float64))
    assert np.array_equal(plain, same) and np.array_equal(depth, same_depth)
    moved, _ = truth.render(cam, shade_from=(pose.position + np.float32([3, 0, 0]))[None].astype(np.float64))
    assert 35.0 < psnr(plain, moved) < math.inf


def test_paths_have_their_length_and_start_at_the_spawn():
    for kind in ("straight", "loop", "turns"):
        path = fidelity.make_path(kind, 20.0, 7)
        assert path.length == pytest.approx(20.0, abs=0.06)
        assert path.at(0.0)[:2] == (0.0, 0.0)
        steps = np.linalg.norm(np.diff(path.xz, axis=0), axis=1)
        assert np.allclose(steps, path.step, atol=1e-6)


def test_quick_run_reports_every_measure(tmp_path):
    args = fidelity.parse_args(["--quick"])
    args.novel, args.distance = 2, 4.0
    report = fidelity.run(args, log=lambda *a: None)
    (row,) = report["rows"]
    assert row["views"] == 2
    for key in ("psnr_med", "ssim_med", "sharp_med", "psnr_enc_med", "ceiling_med", "holes_novel", "holes_walk_mean", "holes_near_mean"):
        assert row[key] is not None and np.isfinite(row[key]), key
    assert abs(row["psnr_enc_med"] - row["psnr_med"]) < 3.0
    assert report["walks"][0]["samples"], "the walk kept hole samples"
    # Floors with margins. Measured on CPU-2, 2026-12-07 at load 24-27, the keyframe revisit
    # check off: PSNR 19.9 dB, sharpness 0.64, novel-view holes 11.9 % in each of 3 real-time
    # and 2 fast-forwarded runs (13:05-13:10 UTC; this short walk is the spawn's bootstrap,
    # which the run waits for); 20.6 dB / 0.73 with the sharpened block colours (13:20, one
    # run each). Issue 16 asks for 24 dB / 0.75 here: not met yet.
    assert row["psnr_med"] >= 18.5
    assert row["sharp_med"] >= 0.6
    assert row["holes_novel"] <= 0.2
    assert row["ceiling_med"] >= 35.0  # view-dependent terms are not what limits fidelity


def test_fast_walk_hole_bound():
    """A real-time 6 m/s walk of 24 m (past the spawn ring's reach, so generation is
    outrun): the player's own view stays mostly whole. Measured on CPU-2 at load 19-25
    (docs/benchmarks.md), 7 runs: mean 0.9-8.6 %, worst sample 1.8-12 %, a visible hole
    (> 1 % of the view) open for 0.5-4 s at most; generation's share of the loaded cores
    decides where in those ranges a run falls, so the bounds are wide. Issue 16 asks for
    <= 5 % and about 1 s."""
    args = fidelity.parse_args(["--quick"])
    args.speeds, args.novel, args.distance, args.encoder, args.settle_s = "6", 1, 24.0, False, 2.0
    assert_walk_holes(args, mean=0.12, worst=0.3, longest_s=6.0)


def test_hole_causes_on_known_views():
    """The far field the player is shown covers holes; a hole's surface is 'seen' by a keyframe
    whose depth there matches, 'occluded' behind something nearer, 'unseen' outside all views."""
    from bench import hole_causes
    from runtime.world.camera import Pose
    from runtime.world.keyframes.frames import Frame

    cam = Pose(np.zeros(3, np.float32), 0.0, 0.0).camera(16, 10, math.radians(60))
    depth = np.full((10, 16), 10.0, np.float32)
    depth[:2] = np.inf  # sky: never a hole
    alpha = np.zeros((10, 16), np.float32)
    far = np.zeros((10, 16), np.float32)
    far[:, :8] = 1.0
    assert fidelity.holes(alpha, depth) == pytest.approx(0.8)
    assert fidelity.holes(alpha, depth, far_alpha=far) == pytest.approx(0.4)

    def frame(d: float) -> Frame:
        return Frame(0, np.zeros((10, 16, 3), np.uint8), np.full((10, 16), d, np.float32), cam.w2c[0], cam.K[0])

    for frames, cause in (([frame(10.0)], "seen"), ([frame(4.0)], "occluded"), ([], "unseen")):
        out = hole_causes.classify(alpha, far, depth, cam, frames, fidelity.SKY_DEPTH, fidelity.NEAR_M)
        assert out["holes"] == pytest.approx(0.8) and out["near"] == pytest.approx(0.8)
        assert out["far_covered"] == pytest.approx(0.4) and out["visible"] == pytest.approx(0.4)
        assert out[cause] == pytest.approx(0.8), (cause, out)


def test_fast_forward_walk_holes_are_few_and_brief():
    """Generation waited for at every update (load-independent): a 6 m/s walk of 24 m up the
    forest's slope shows the player few holes -- the scene composited over the far field, as
    it is streamed -- and none for long. Measured on CPU-2 (docs/benchmarks.md) on main at
    13:21: mean 0.09 %, worst sample 0.6 %, no sample over 1 % (over 30 m: 0.16 %, 1.7 %, a
    hole open 0.2 s; 0.84 %, 5.1 % and 0.6 s without the views along the path)."""
    args = fidelity.parse_args(["--fast-forward", "--speeds", "6", "--distance", "24", "--novel", "0", "--no-encoder"])
    assert_walk_holes(args, mean=0.006, worst=0.03, longest_s=1.0)


@pytest.mark.timeout(900)
def test_a_slow_walk_shows_no_hole_for_more_than_a_second():
    """Issue 16 item 5 at 1.5 m/s, on the paced clock (bench/paced.py: every job generates for
    its modelled quiet-CPU-2 time on a simulated clock, so the machine's load does not change
    how long a hole stays open): no visible hole (> 1 % of the view) lasts more than about a
    second of simulated time. The slow walk was the worst: its holes -- grazing ground and
    tree bases along the horizon, 7-170 m off, that the scene covers only partly -- grow
    slowly as the player walks on, and the hole test's probes, at 64x36, where the renderer's
    0.3-pixel low-pass closes gaps that thin, saw a tenth of them and asked for the fill a
    second late. Measured on CPU-2 (docs/benchmarks.md, "The hole test at 160x90"), this walk
    over 30 m: longest hole 1.6 s with 64x36 hole probes, 0.4 s with 160x90 ones (mean 0.46 /
    0.31 %, worst sample 3.0 / 1.3 %); its long hole is 20-22 m along."""
    args = fidelity.parse_args(["--paced", "1", "--speeds", "1.5", "--distance", "24", "--novel", "0", "--no-encoder",
                                "--bootstrap-timeout-s", "600"])
    assert_walk_holes(args, mean=0.006, worst=0.03, longest_s=1.0)


def test_fast_forward_walks_plan_the_same_jobs_every_run():
    """The fast-forward walk plans on a simulated clock: two runs of one walk plan the same
    jobs at the same simulated times and places, however long each took on this CPU (on
    the wall clock the lookahead followed the CPU's load, and with it the jobs)."""
    args = fidelity.parse_args(["--fast-forward", "--speeds", "6", "--distance", "8", "--novel", "0", "--no-encoder"])

    def jobs() -> list[tuple]:
        (walk,) = fidelity.run(args, log=lambda *a: None)["walks"]
        return [(j["id"], j["planned"], j["x"], j["z"], j["yaw_deg"], j["size"], j["refines"]) for j in walk["jobs"]]

    first = jobs()
    assert first and all(0.0 <= planned for _, planned, *_ in first)
    assert jobs() == first


def test_splat_shapes_bench_classifies_against_the_generator():
    """``bench/splats.py`` on one small keyframe: every splat classified, the generator's own
    surfaces hold the splats' centres (few floaters), and each view reports seen pixels and gaps."""
    from bench import splats

    args = splats.parse_args(["--keyframes", "1", "--keyframe-size", "160x90", "--resolution", "160x90", "--yaw-deg", "0",
                              "--classes", "floater", "--fit", "1"])
    report = splats.run(args, log=lambda *a: None)
    (row,) = report["splats"]
    assert row["gaussians"] > 1000 and len(row["floater"]) == row["gaussians"]
    assert row["floater"].mean() < 0.02
    views = splats.view_table(report["views"])
    assert [v["view"] for v in views if v["removed"] == "-"] == ["keyframe", "-1.0 m", "+1.0 m"]
    assert all(0.3 < v["seen"] <= 1.0 and 0.0 <= v["gaps"] < 0.1 for v in views)
    assert splats.splat_table(report["splats"])[0]["gaussians"] == row["gaussians"]


def assert_walk_holes(args, *, mean: float, worst: float, longest_s: float) -> None:
    """Run the one walk ``args`` name; its player's view shows holes at most ``mean`` of the
    view on average, ``worst`` in any sample, and none open longer than ``longest_s``."""
    report = fidelity.run(args, log=lambda *a: None)
    (row,) = report["rows"]
    assert row["holes_walk_mean"] <= mean, row
    assert row["holes_walk_max"] <= worst, row
    assert row["hole_longest_s"] <= longest_s, row
