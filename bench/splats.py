"""Splat shapes: needles, floaters and gaps, seen from views off the keyframe.

``bench.fidelity --oracle`` draws one keyframe's reconstruction at the keyframe's own camera,
where a splat's shape hardly matters. Here each keyframe's reconstruction (colour-fitted, as
the world lands it) is drawn from novel cameras around it -- the keyframe camera itself,
moved ``--offset`` metres left and right, turned ``--yaw-deg`` left and right -- at the
stream's 640x360, 60 degrees, against the procedural generator's exact picture there.

Per splat (the generator is a signed-distance world, so the truth is exact):

* **anisotropy**: longest / shortest tangent axis (the normal axis of a surfel is thin by
  design), and longest axis / shortest of all three;
* **needle**: a tangent axis more than ``--needle`` (2.5) times the other, or a splat whose
  projected footprint in some novel view is longer than 3 pixels and more than 6 times as
  long as wide (an edge-on surfel drawn as a line);
* **floater**: its centre lies farther from every surface of the generator's world than
  ``max(0.05 m, half the block footprint)`` (the scene's distance bound at the centre);
* the cause, from the keyframe's block grid: **grazing** (normal at more than 75 degrees from
  the view ray), **edge** (a 4-neighbour block is sky or more than 10 % farther or nearer)
  and **facing** (no normal from the grid: a camera-facing fallback, thin structures).

Per novel view: PSNR over all pixels, and over the pixels whose surface the keyframe saw
("seen": the truth's surface point projects into the keyframe onto its surface, within
3 %); sharpness (world / generator mean luma gradient); **gaps**: seen pixels the world
leaves empty (alpha < 0.5). Then the same with each class removed, to show what it costs.

    .venv/bin/python -m bench.splats                       # forest, seed 7, 4 keyframes
    .venv/bin/python -m bench.splats --keyframes 2 --classes ''   # quicker, no class removal
    .venv/bin/python -m bench.splats --config scale_factor=0.6  # reconstruct() keyword overrides
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numba
import numpy as np

from bench.common import describe_machine, format_table, machine, write_json
from bench.compare import psnr, sharpness
from bench.fidelity import CAPTIONS, SKY_DEPTH, VIEW_FOV, Truth, eye_pose
from runtime.world.camera import Cameras, Pose, quat_wxyz_to_matrix
from runtime.world.gaussians import Gaussians
from runtime.world.generators.procedural import kernels
from runtime.world.keyframes.fit import fit_colors
from runtime.world.keyframes.reconstruct import reconstruct, reduce_blocks
from runtime.world.render import create_renderer
from runtime.world.scene import Chunk, ChunkSource, SceneSnapshot

SEEN_MARGIN = 0.03
"""A novel pixel's surface is seen by the keyframe when its depth there is within 3 % of the
keyframe's (over the 3x3 pixels around where it lands)."""
FLOATER_MIN_M = 0.05
EDGE_JUMP = 0.10
TIP_SIGMAS = 1.5
"""A splat's tips: its centre +- this many standard deviations along its longest axis."""
GRAZING_COS = math.cos(math.radians(75.0))
LINE_MIN_PX, LINE_ASPECT = 3.0, 6.0


# --------------------------------------------------------------------------- truth geometry
@numba.njit(cache=True)
def _distances(points, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, out):  # pragma: no cover
    for i in range(points.shape[0]):
        d, mat, rnd, gap = kernels.scene_sdf(points[i, 0], points[i, 1], points[i, 2], seed, e0, hg, hm, trees, tmeta, rocks, rmeta, 1.0)
        out[i] = abs(d)


def surface_distance(truth: Truth, points: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """``[M]`` metres from each point to the generator's nearest surface (its distance bound:
    the vertical gap to the terrain, the objects' signed distances), for points near ``origin``."""
    from runtime.world.generators.procedural.generator import _seed32

    gen = truth.generator
    seed = _seed32(truth.seed)
    biome = gen.biome(truth.caption)
    bp = biome.pack()
    e0 = float(kernels.lattice_height(0, 0, seed))
    hg, hm = gen._height_grid(np.asarray(origin, np.float64)[None], seed)
    trees, tmeta = gen._object_table(np.asarray(origin, np.float64), biome.tree_cell, seed, e0, hg, hm, bp, rocks=False)
    rocks, rmeta = gen._object_table(np.asarray(origin, np.float64), biome.rock_cell, seed, e0, hg, hm, bp, rocks=True)
    out = np.empty(len(points), np.float64)
    _distances(np.asarray(points, np.float64), seed, e0, hg, hm, trees, tmeta, rocks, rmeta, out)
    return out


def seen_mask(view: Cameras, view_depth: np.ndarray, key: Cameras, key_depth: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool: pixels of ``view`` whose surface (``view_depth`` ``[H, W]``) the keyframe
    saw: it lands inside the keyframe on a surface within :data:`SEEN_MARGIN` of its depth."""
    H, W = view_depth.shape
    v, u = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5
    K = view.K[0].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    surface = np.isfinite(view_depth) & (view_depth < SKY_DEPTH)
    pc = rays * np.where(surface, view_depth, 1.0)[..., None]
    c2w = view.c2w[0].astype(np.float64)
    world = pc @ c2w[:3, :3].T + c2w[:3, 3]
    w2c = key.w2c[0].astype(np.float64)
    q = world @ w2c[:3, :3].T + w2c[:3, 3]
    z = q[..., 2]
    Kk = key.K[0].astype(np.float64)
    safe = np.where(z > 1e-3, z, 1.0)
    ku = np.floor(Kk[0, 0] * q[..., 0] / safe + Kk[0, 2]).astype(np.int64)
    kv = np.floor(Kk[1, 1] * q[..., 1] / safe + Kk[1, 2]).astype(np.int64)
    kh, kw = key_depth.shape
    inside = surface & (z > 1e-3) & (ku >= 0) & (ku < kw) & (kv >= 0) & (kv < kh)
    d = np.where(np.isfinite(key_depth), key_depth, np.inf)
    pad = np.pad(d, 1, mode="edge")
    lo = np.min([pad[1 + a : 1 + a + kh, 1 + b : 1 + b + kw] for a in (-1, 0, 1) for b in (-1, 0, 1)], axis=0)
    hi = np.max([pad[1 + a : 1 + a + kh, 1 + b : 1 + b + kw] for a in (-1, 0, 1) for b in (-1, 0, 1)], axis=0)
    kvc, kuc = np.clip(kv, 0, kh - 1), np.clip(ku, 0, kw - 1)
    return inside & (z >= (1 - SEEN_MARGIN) * lo[kvc, kuc]) & (z <= (1 + SEEN_MARGIN) * hi[kvc, kuc])


# --------------------------------------------------------------------------- splat classes
def shape_classes(g: Gaussians, truth: Truth, origin: np.ndarray, needle: float) -> dict:
    """Per splat ``[G]`` arrays that need no keyframe: anisotropy, needles, floaters and tips."""
    scales = np.sort(g.scales, axis=1)  # ascending: normal axis first for surfels
    R = quat_wxyz_to_matrix(g.quats)
    rows = np.arange(len(g))
    long_axis = R[rows, :, np.argmax(g.log_scales, axis=1)]
    tol = np.maximum(FLOATER_MIN_M, scales[:, 1])
    centre = surface_distance(truth, g.means, origin)
    tips = np.maximum(*(surface_distance(truth, g.means + s * TIP_SIGMAS * scales[:, 2:3] * long_axis, origin) for s in (-1, 1)))
    tangent_ratio = scales[:, 2] / np.maximum(scales[:, 1], 1e-12)
    return {
        "tangent_ratio": tangent_ratio,
        "full_ratio": scales[:, 2] / np.maximum(scales[:, 0], 1e-12),
        "needle": tangent_ratio > needle,
        "floater": centre > tol,
        "sticks_out": (centre <= tol) & (tips > tol),
    }


def classify(g: Gaussians, key: Cameras, key_depth: np.ndarray, stride: int, shapes: dict) -> dict:
    """``shapes`` plus the causes seen from the keyframe ``key`` (see the module docstring)."""
    R = quat_wxyz_to_matrix(g.quats)
    normal = R[np.arange(len(g)), :, np.argmin(g.log_scales, axis=1)]
    center = key.centers[0]
    view = g.means - center
    dist = np.linalg.norm(view, axis=1)
    cos = np.abs((normal * view).sum(1)) / np.maximum(dist, 1e-9)
    # The block each splat came from, and whether a neighbour block is across a depth jump.
    blocks = reduce_blocks(key_depth, stride, SKY_DEPTH).depth
    Hb, Wb = blocks.shape
    w2c, K = key.w2c[0], key.K[0]
    pc = g.means @ w2c[:3, :3].T + w2c[:3, 3]
    z = np.maximum(pc[:, 2], 1e-3)
    r = np.clip(np.floor((K[1, 1] * pc[:, 1] / z + K[1, 2]) / stride).astype(int), 0, Hb - 1)
    c = np.clip(np.floor((K[0, 0] * pc[:, 0] / z + K[0, 2]) / stride).astype(int), 0, Wb - 1)
    pad = np.pad(blocks, 1, constant_values=np.inf)
    edge = np.zeros(len(g), bool)
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nb = pad[1 + r + dr, 1 + c + dc]
        with np.errstate(invalid="ignore"):
            edge |= ~np.isfinite(nb) | (np.abs(nb - blocks[r, c]) > EDGE_JUMP * blocks[r, c])
    return {**shapes, "grazing": cos < GRAZING_COS, "edge": edge, "facing": cos > 0.9999}


def projected_lines(g: Gaussians, cam: Cameras) -> np.ndarray:
    """``[G]`` bool: splats drawn in ``cam`` as lines: major axis > :data:`LINE_MIN_PX` pixels (1
    sigma) and > :data:`LINE_ASPECT` x the minor axis (EWA with the renderer's 0.3 px low-pass)."""
    R = quat_wxyz_to_matrix(g.quats).astype(np.float64)
    cov = np.einsum("gij,gj,gkj->gik", R, g.scales.astype(np.float64) ** 2, R)
    w2c = cam.w2c[0].astype(np.float64)
    W = w2c[:3, :3]
    pc = g.means @ W.T + w2c[:3, 3]
    z = pc[:, 2]
    ok = z > 0.2
    zs = np.where(ok, z, 1.0)
    fx, fy = cam.K[0, 0, 0], cam.K[0, 1, 1]
    J = np.zeros((len(g), 2, 3))
    J[:, 0, 0], J[:, 0, 2] = fx / zs, -fx * pc[:, 0] / zs**2
    J[:, 1, 1], J[:, 1, 2] = fy / zs, -fy * pc[:, 1] / zs**2
    M = J @ W
    c2 = np.einsum("gij,gjk,glk->gil", M, cov, M) + 0.3 * np.eye(2)
    tr, det = c2[:, 0, 0] + c2[:, 1, 1], c2[:, 0, 0] * c2[:, 1, 1] - c2[:, 0, 1] ** 2
    disc = np.sqrt(np.maximum(tr * tr / 4 - det, 0.0))
    major, minor = np.sqrt(tr / 2 + disc), np.sqrt(np.maximum(tr / 2 - disc, 1e-12))
    return ok & (major > LINE_MIN_PX) & (major > LINE_ASPECT * minor)


# --------------------------------------------------------------------------- views
def novel_cameras(pose: Pose, offset: float, yaw_deg: float, width: int, height: int) -> list[tuple[str, Cameras]]:
    """The keyframe pose itself, moved ``offset`` m left/right and turned ``yaw_deg`` left/right."""
    right = np.array([math.cos(pose.yaw), 0.0, -math.sin(pose.yaw)], np.float32)
    out = [("keyframe", pose)]
    if offset > 0:
        out += [(f"{-offset:+.1f} m", Pose(pose.position - offset * right, pose.yaw, pose.pitch)),
                (f"{offset:+.1f} m", Pose(pose.position + offset * right, pose.yaw, pose.pitch))]
    if yaw_deg > 0:
        y = math.radians(yaw_deg)
        out += [(f"{-yaw_deg:+.0f} deg", Pose(pose.position, pose.yaw - y, pose.pitch)),
                (f"{yaw_deg:+.0f} deg", Pose(pose.position, pose.yaw + y, pose.pitch))]
    return [(name, p.camera(width, height, VIEW_FOV)) for name, p in out]


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    if not mask.any():
        return math.nan
    return psnr(a[mask], b[mask])


def run(args, log=print) -> dict:
    truth = Truth(CAPTIONS.get(args.biome, args.biome), args.seed)
    sky = truth.generator.sky(truth.caption, args.seed)
    renderer = create_renderer(args.renderer)
    rng = np.random.default_rng(args.seed)
    kw, kh = args.keyframe
    key_fov = math.radians(args.keyframe_fov)
    splat_rows, view_rows = [], []
    recon_ms = []
    for k in range(args.keyframes):
        pose = eye_pose(rng.uniform(-2, 2), rng.uniform(0, args.distance), rng.uniform(-math.pi, math.pi), 0.0, args.seed)
        key = pose.camera(kw, kh, key_fov)
        k_rgb, k_depth = truth.render(key)
        t0 = time.perf_counter()
        g = reconstruct(k_rgb, k_depth, key, None, stride=args.stride, **args.overrides)
        recon_ms.append((time.perf_counter() - t0) * 1e3)

        def draw(gs, cams):
            out = renderer.render(SceneSnapshot(0, (Chunk.build(0, gs, ChunkSource()),)), cams, sky)
            return out

        g = fit_colors(g, k_rgb, k_depth, key, lambda gs: (lambda o: (o.rgb, o.depth))(draw(gs, key)), stride=args.stride,
                       iterations=args.fit)
        cls = classify(g, key, k_depth[0], args.stride, shape_classes(g, truth, pose.position, args.needle))
        cams = novel_cameras(pose, args.offset, args.yaw_deg, args.width, args.height)
        lines = np.zeros(len(g), bool)
        for _name, cam in cams:
            lines |= projected_lines(g, cam)
        cls["line"] = lines
        splat_rows.append({"keyframe": k, "gaussians": len(g), **{name: cls[name] for name in cls}})
        removals = {"": None}
        for name in filter(None, args.classes.split(",")):
            removals[name] = np.flatnonzero(~cls[name])
        for view_name, cam in cams:
            t_rgb, t_depth = truth.render(cam)
            seen = seen_mask(cam, t_depth[0], key, k_depth[0])
            for removed, keep in removals.items():
                gs = g if keep is None else g.subset(keep)
                out = draw(gs, cam)
                empty = out.alpha[0] < 0.5
                view_rows.append({
                    "keyframe": k, "view": view_name, "removed": removed or "-",
                    "psnr": psnr(out.rgb[0], t_rgb[0]),
                    "psnr_seen": masked_psnr(out.rgb[0], t_rgb[0], seen),
                    "sharp": sharpness(out.rgb[0]) / max(sharpness(t_rgb[0]), 1e-9),
                    "seen": float(seen.mean()),
                    "gaps": float((empty & seen).sum() / max(seen.sum(), 1)),
                })
        log(f"# keyframe {k}: {len(g)} Gaussians, {recon_ms[-1]:.0f} ms")
    return {"splats": splat_rows, "views": view_rows, "reconstruct_ms": recon_ms}


def walk_shapes(args, log=print) -> list[dict]:
    """The splats a fast-forwarded walk leaves in the world (every keyframe, refinement and
    coarse fill of it; not the far field), classified as :func:`shape_classes`."""
    from bench.fidelity import _fast_forward_walk, make_path
    from bench.paced import SimClock
    from runtime.world import PlayerState, World, WorldConfig

    caption = CAPTIONS.get(args.biome, args.biome)
    clock = SimClock()  # the fast-forward walk's: planning independent of the CPU's load
    world = World(WorldConfig("splats", seed=args.seed, caption=caption, **args.world_overrides), renderer=create_renderer(args.renderer),
                  clock=clock)
    try:
        spawn = eye_pose(0.0, 0.0, 0.0, 0.0, args.seed)
        world.update([PlayerState("p", spawn, np.zeros(3, np.float32), VIEW_FOV)])
        world.wait_idle(120.0)
        path = make_path("straight", args.distance, args.seed)
        ff = argparse.Namespace(update_hz=5.0, bootstrap_timeout_s=120.0, causes=False, paced=0.0)
        _fast_forward_walk(ff, world, clock, path, 3.0, args.seed)
        snapshot = world.scene.snapshot()
        g = Gaussians.concat([c.gaussians for c in snapshot.chunks])
    finally:
        world.close()
    truth = Truth(caption, args.seed)
    origin = np.array([0.0, 0.0, args.distance / 2], np.float32)
    log(f"# walk: {len(g)} Gaussians in {len(snapshot.chunks)} chunks")
    return [{"keyframe": "walk", "gaussians": len(g), **shape_classes(g, truth, origin, args.needle)}]


def splat_table(rows: list[dict]) -> list[dict]:
    """Anisotropy percentiles and each class's share of the splats, over all keyframes."""
    cat = {name: np.concatenate([r[name] for r in rows]) for name in rows[0] if name not in ("keyframe", "gaussians")}
    n = len(cat["needle"])
    out = {"gaussians": n}
    for p in (50, 90, 99):
        out[f"tangent p{p}"] = float(np.percentile(cat["tangent_ratio"], p))
    out["full p50"] = float(np.percentile(cat["full_ratio"], 50))
    out["full p99"] = float(np.percentile(cat["full_ratio"], 99))
    for name in ("needle", "line", "floater", "sticks_out", "grazing", "edge", "facing"):
        if name in cat:
            out[name] = f"{100 * cat[name].mean():.1f} %"
    for name in ("needle", "line", "floater", "sticks_out"):
        sel = cat.get(name)
        if sel is not None and sel.any() and "edge" in cat:
            out[f"{name}: grazing/edge/facing"] = " / ".join(f"{100 * (cat[c] & sel).sum() / sel.sum():.0f}" for c in ("grazing", "edge", "facing"))
    return [out]


def view_table(rows: list[dict]) -> list[dict]:
    """Medians per (view, class removed) over the keyframes."""
    out = []
    keys = []
    for r in rows:
        if (r["view"], r["removed"]) not in keys:
            keys.append((r["view"], r["removed"]))
    for view, removed in keys:
        sel = [r for r in rows if r["view"] == view and r["removed"] == removed]
        out.append({"view": view, "removed": removed, **{m: float(np.nanmedian([r[m] for r in sel])) for m in ("psnr", "psnr_seen", "sharp", "seen", "gaps")}})
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--biome", default="forest")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keyframes", type=int, default=4, help="keyframes drawn along the first --distance m")
    ap.add_argument("--distance", type=float, default=20.0)
    ap.add_argument("--keyframe-size", default="320x180")
    ap.add_argument("--keyframe-fov", type=float, default=75.0, help="degrees, vertical")
    ap.add_argument("--stride", type=int, default=2)
    ap.add_argument("--fit", type=int, default=3, help="colour-fitting steps")
    ap.add_argument("--offset", type=float, default=1.0, help="novel cameras moved this far left and right (m)")
    ap.add_argument("--yaw-deg", type=float, default=30.0, help="novel cameras turned this far left and right")
    ap.add_argument("--resolution", default="640x360")
    ap.add_argument("--needle", type=float, default=2.5, help="a tangent axis longer than this x the other is a needle")
    ap.add_argument("--classes", default="needle,line,floater,edge", help="classes removed one at a time to measure their cost")
    ap.add_argument("--renderer", default="cpu")
    ap.add_argument("--config", action="append", default=[], help="reconstruct() keyword override key=value (JSON value)")
    ap.add_argument("--walk", action="store_true", help="also classify the splats a fast-forwarded 3 m/s walk of --distance m leaves")
    ap.add_argument("--world-config", action="append", default=[], help="--walk: WorldConfig override key=value (JSON value)")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    args.keyframe = tuple(int(v) for v in args.keyframe_size.lower().split("x"))
    args.width, args.height = (int(v) for v in args.resolution.lower().split("x"))
    args.overrides = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.config)}
    args.world_overrides = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.world_config)}
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    print(describe_machine(machine()))
    report = run(args)
    shapes = splat_table(report["splats"])
    views = view_table(report["views"])
    print(format_table(shapes, list((k, k) for k in shapes[0])))
    print()
    print(format_table(views, [("view", "view"), ("removed", "removed"), ("psnr", "PSNR"), ("psnr_seen", "PSNR seen"),
                               ("sharp", "sharp"), ("seen", "seen"), ("gaps", "gaps (of seen)")]))
    if args.walk:
        walk = splat_table(walk_shapes(args))
        print("\nafter a fast-forwarded walk:")
        print(format_table(walk, list((k, k) for k in walk[0])))
        report["walk"] = walk
    print(f"\nreconstruct {np.mean(report['reconstruct_ms']):.0f} ms a keyframe (mean; CPU shared: noisy)")
    write_json(args.json_path, {"settings": {k: v for k, v in vars(args).items() if k != "config"}, "shapes": shapes, "views": views,
                                "reconstruct_ms": report["reconstruct_ms"], "walk": report.get("walk")})


if __name__ == "__main__":
    main()
