"""Seams between keyframes: how much more the world's picture is wrong where two chunks meet.

Each chunk is one keyframe's splats. Per pixel, the chunk that *owns* it is the one whose
splats alone make the most opacity there (each visible chunk's alpha is drawn on its own).
Neighbouring pixels (right and down) that are both solidly covered (world alpha >= 0.9) form
*seam* pairs when different chunks own them and *interior* pairs otherwise; only pairs on one smooth surface of the generator's picture count
(depths within ``SMOOTH_DEPTH``: a silhouette is an edge of the picture, not a seam). Across each pair
the world's step is compared with the generator's step at the same pixels:
``| (w_p - w_q) - (t_p - t_q) |`` (mean over RGB), so real edges of the picture cancel and only
steps the world adds remain: a colour jump where one keyframe's shading meets another's, or a
see-through line where one chunk's soft edge ends before the next begins. The score is the mean
over seam pairs and its ratio to the mean over interior pairs (1 = seams invisible in this sense).

Run as a benchmark, it walks a world per setting (as ``bench/far_field.py`` does: fast-forwarded,
so both see complete worlds) and scores the same novel views in each::

    .venv/bin/python -m bench.seams                                  # seam blending off vs on
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from runtime.world.camera import Cameras
from runtime.world.scene import SceneSnapshot

SOLID_ALPHA = 0.9
"""Both pixels of a pair must be covered at least this much by the world's splats."""

SMOOTH_DEPTH = 0.03
"""Both pixels of a pair lie on one surface when the generator's depths agree within this fraction."""


def owners(renderer, snapshot: SceneSnapshot, camera: Cameras) -> tuple[np.ndarray, np.ndarray]:
    """``(owner [H, W] int chunk index or -1, alpha [H, W])`` for one camera: the chunk whose
    splats alone reach the highest alpha at each pixel, and that alpha."""
    chunks = snapshot.visible_chunks(camera)
    h, w = camera.height, camera.width
    best = np.zeros((h, w), np.float32)
    owner = np.full((h, w), -1, np.int64)
    for k, chunk in enumerate(chunks):
        alpha = renderer.render_alpha(SceneSnapshot(0, (chunk,)), camera)[0]
        better = alpha > best
        owner[better], best[better] = k, alpha[better]
    return owner, best


def step_errors(
    world_rgb: np.ndarray, truth_rgb: np.ndarray, truth_depth: np.ndarray, owner: np.ndarray, alpha: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(seam, interior)``: per neighbouring pixel pair of one picture on one smooth surface of
    the generator's, the step error ``|(w_p - w_q) - (t_p - t_q)|`` (mean over RGB), split by
    whether one chunk owns both."""
    err = world_rgb.astype(np.float64) - truth_rgb.astype(np.float64)  # [H, W, 3]
    seam, interior = [], []
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        step = np.abs(err[a] - err[b]).mean(axis=-1)
        solid = (alpha[a] >= SOLID_ALPHA) & (alpha[b] >= SOLID_ALPHA) & (owner[a] >= 0) & (owner[b] >= 0)
        with np.errstate(invalid="ignore"):
            solid &= np.abs(truth_depth[a] - truth_depth[b]) <= SMOOTH_DEPTH * np.minimum(truth_depth[a], truth_depth[b])
        crossing = owner[a] != owner[b]
        seam.append(step[solid & crossing])
        interior.append(step[solid & ~crossing])
    return np.concatenate(seam), np.concatenate(interior)


def seam_score(
    renderer, snapshot: SceneSnapshot, cameras: Cameras, world_rgb: np.ndarray, truth_rgb: np.ndarray, truth_depth: np.ndarray
) -> dict:
    """Seam and interior step errors over ``N`` cameras: ``world_rgb`` / ``truth_rgb``
    ``[N, H, W, 3]`` uint8 are the world's and the generator's pictures at them, ``truth_depth``
    ``[N, H, W]`` the generator's depth."""
    seams, interiors = [], []
    for i in range(len(cameras)):
        owner, alpha = owners(renderer, snapshot, cameras[i])
        s, t = step_errors(world_rgb[i], truth_rgb[i], truth_depth[i], owner, alpha)
        seams.append(s)
        interiors.append(t)
    seam, interior = np.concatenate(seams), np.concatenate(interiors)
    seam_mean = float(seam.mean()) if len(seam) else float("nan")
    interior_mean = float(interior.mean()) if len(interior) else float("nan")
    return {
        "seam_pairs": int(len(seam)),
        "seam_step_error": seam_mean,
        "interior_step_error": interior_mean,
        "seam_ratio": seam_mean / interior_mean if interior_mean > 0 else float("nan"),
    }


def main(argv=None) -> None:
    from bench.common import describe_machine, format_table, machine, write_json
    from bench.compare import psnr
    from bench.far_field import build_world
    from bench.fidelity import VIEW_FOV, Truth, eye_pose

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--caption", default="a pine forest")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--distance", type=float, default=20.0)
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--resolution", default="320x180")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.resolution.split("x"))
    print(describe_machine(machine()))
    truth = Truth(args.caption, args.seed)
    rng = np.random.default_rng(args.seed)
    poses = [eye_pose(rng.uniform(-1, 1), rng.uniform(0, args.distance), rng.uniform(-math.pi, math.pi), math.radians(rng.uniform(-15, 5)), args.seed)
             for _ in range(args.views)]
    cams = Cameras.concat([p.camera(width, height, VIEW_FOV) for p in poses])
    truth_rgb, truth_depth = truth.render(cams)
    rows = []
    for name, config in (("off", {"seam_blend_px": 0.0}), ("on", {})):
        world, seconds = build_world(args, **config)
        try:
            out = world.render(cams)
            score = seam_score(world.renderer, world.scene.snapshot(), cams, out.rgb, truth_rgb, truth_depth)
            p = [psnr(out.rgb[i], truth_rgb[i]) for i in range(len(cams))]
            rows.append({"blend": name, "jobs": world.stats["jobs_done"], **score, "psnr_med": float(np.median(p))})
        finally:
            world.close()
    print(format_table(rows, [("blend", "seam blending"), ("jobs", "jobs"), ("seam_pairs", "seam pairs"), ("seam_step_error", "seam step error"),
                              ("interior_step_error", "interior step error"), ("seam_ratio", "ratio"), ("psnr_med", "PSNR med")]))
    write_json(args.json_path, {"settings": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
