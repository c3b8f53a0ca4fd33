"""Where a novel view's error is: ``bench.fidelity --error-budget``.

Each novel view's squared error against the generator (summed over RGB, so the parts add up
to its MSE and hence its PSNR) is split by pixel class, using the generator's own depth:

* **hole**: the world shows nothing there (the scene over the far field, alpha < 0.5) but the
  generator a surface (:func:`bench.fidelity.holes`);
* **sky**: the generator shows sky (depth beyond the reconstruction's cut);
* **depth edge**: within ``EDGE_PX`` pixels of a jump in the generator's depth (silhouettes,
  the sky line): where a splat blends foreground and background;
* **unseen**: a surface no keyframe saw (disoccluded, or outside every keyframe's view: the
  generator's point there projected into each keyframe's depth map, :mod:`bench.hole_causes`);
* **thin**: object pixels (more than ``OBJECT_M`` above the generator's ground) of structures
  narrower than ``THIN_PX`` pixels (trunks, branches, poles);
* **object**: the other object pixels (canopies, rocks, houses);
* **ground**: the rest (terrain texture).

The classes are tested in that order and each pixel has one, so they partition the view.
A second partition is by the generator's depth (``BANDS``); the sky's error is also split
by the depth band of the nearest surface within ``SKY_REACH_PX`` pixels (a splat bleeding
past a silhouette, or a misplaced skyline, shows there), the rest is "open sky" (all sky pixels, the depth-edge class's included). A third view of the error
asks *geometry or colour*: the MSE after the best whole-view shift of up to ``SHIFT_PX`` pixels
(a large gain is a projection / pixel-centre mismatch), the MSE when every pixel may match
any truth pixel within one pixel (an upper bound on what sub-pixel misplacement costs; the
rest is colour), and the PSNR against the truth low-passed by a Gaussian of 0.5, 1 and 2
pixels (a world closer to a blurred truth than to the truth is blurrier than it).

"PSNR if perfect" is the median over views of the view's PSNR with that class's error
removed: how far fixing only that class would move the median.

With ``sources`` (the scene's opacity at the view drawn from each kind of keyframe's chunks
alone: fill keyframes at 320x180, refining ones at 640x360, coarse fills), every class's
error is also split by the source with the most opacity at the pixel ("none": no source
reaches ``SOURCE_MIN_ALPHA``, the far field or the bare sky shows): which keyframes drew the
wrong pixels.
"""

from __future__ import annotations

import math

import numpy as np

from bench.hole_causes import keyframe_view, surface_points
from runtime.world.camera import Cameras
from runtime.world.generators.procedural.generator import ground_height_y
from runtime.world.keyframes.frames import Frame

EDGE_PX = 1
"""Pixels either side of a depth jump that count as the edge."""
EDGE_JUMP = 0.1
"""A depth jump: neighbouring depths differ by more than this fraction of the nearer."""
OBJECT_M = 0.15
"""A surface this far above the generator's ground is an object (trees, rocks, houses)."""
THIN_PX = 5
"""Object structures narrower than this (pixels) are thin."""
SHIFT_PX = 2
CLASSES = ("hole", "sky", "depth edge", "unseen", "thin", "object", "ground")
BANDS = ((0.0, 5.0, "< 5 m"), (5.0, 15.0, "5-15 m"), (15.0, 40.0, "15-40 m"), (40.0, math.inf, ">= 40 m"))
BLURS = (0.5, 1.0, 2.0)
SKY_REACH_PX = 4
SOURCE_MIN_ALPHA = 0.05
"""Below this opacity from every source a pixel is drawn by none of them."""


def _grow(mask: np.ndarray, r: int) -> np.ndarray:
    """``mask`` dilated by a (2r+1)^2 square."""
    out = mask.copy()
    H, W = mask.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out[max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] |= mask[max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
    return out


def _shrink(mask: np.ndarray, r: int) -> np.ndarray:
    return ~_grow(~mask, r)


def depth_edges(depth: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool: pixels within ``EDGE_PX`` of a jump in ``depth`` (sky counts as far)."""
    d = np.where(np.isfinite(depth), depth, 1e6)
    jump = np.zeros(d.shape, bool)
    for a, b, sl_a, sl_b in ((d[:, 1:], d[:, :-1], (slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                             (d[1:, :], d[:-1, :], (slice(1, None), slice(None)), (slice(None, -1), slice(None)))):
        j = np.abs(a - b) > EDGE_JUMP * np.minimum(a, b)
        jump[sl_a] |= j
        jump[sl_b] |= j
    return _grow(jump, EDGE_PX - 1) if EDGE_PX > 1 else jump


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """``[H, W, C]`` float64 Gaussian low-pass (separable, edges clamped)."""
    r = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    out = img
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (r, r)
        p = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        out = sum(w * np.take(p, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return out


def _psnr(mse: float) -> float:
    return 99.0 if mse <= 0 else 10.0 * math.log10(255.0**2 / mse)


def view_budget(world_rgb: np.ndarray, truth_rgb: np.ndarray, truth_depth: np.ndarray, shown_alpha: np.ndarray,
                camera: Cameras, frames: list[Frame], seed: int, sky_depth: float,
                sources: dict[str, np.ndarray] | None = None) -> dict:
    """One novel view's error split (see the module doc).

    Args:
        world_rgb, truth_rgb: ``[H, W, 3]`` uint8, the world's and the generator's pictures.
        truth_depth: ``[H, W]`` the generator's z-depth (metres, inf for sky).
        shown_alpha: ``[H, W]`` the scene's opacity composited over the far field's.
        camera: the view (one camera); frames: the world's keyframes.
        sources: optional ``{name: [H, W] opacity}`` of the scene drawn from one kind of
            keyframe's chunks alone (see the module doc).
    Returns a dict: ``sse`` / ``pixels`` per class and per band, ``mse``, and the geometry tests.
    """
    a = world_rgb.astype(np.float64)
    t = truth_rgb.astype(np.float64)
    se = ((a - t) ** 2).sum(axis=2) / 3.0  # per pixel, the mean over RGB: pixels' se average to the MSE
    H, W = se.shape
    surface = np.isfinite(truth_depth) & (truth_depth < sky_depth)
    points = surface_points(camera, np.where(surface, truth_depth, 1.0))
    above = np.zeros((H, W))
    above[surface] = ground_height_y(points[surface, 0], points[surface, 2], seed) - points[surface, 1]  # +y is down
    obj = surface & (above > OBJECT_M)
    thin = obj & ~_grow(_shrink(obj, THIN_PX // 2), THIN_PX // 2)
    seen = np.zeros((H, W), bool)
    ys, xs = np.nonzero(surface)
    if len(ys) and frames:
        seen[ys, xs] = keyframe_view(points[ys, xs], frames)[0]
    masks = {
        "hole": surface & (shown_alpha < 0.5),
        "sky": ~surface,
        "depth edge": depth_edges(truth_depth),
        "unseen": surface & ~seen,
        "thin": thin,
        "object": obj,
        "ground": np.ones((H, W), bool),
    }
    taken = np.zeros((H, W), bool)
    out = {"mse": float(se.mean()), "sse": {}, "pixels": {}, "band_sse": {}, "band_pixels": {}, "source_sse": {}}
    names = list(sources or {})
    if names:
        stack = np.stack([sources[n] for n in names])
        owner = np.where(stack.max(axis=0) >= SOURCE_MIN_ALPHA, stack.argmax(axis=0), len(names))
        names.append("none")
    for name in CLASSES:
        m = masks[name] & ~taken
        taken |= m
        out["sse"][name], out["pixels"][name] = float(se[m].sum()), int(m.sum())
        if names:
            out["source_sse"][name] = {n: float(se[m & (owner == k)].sum()) for k, n in enumerate(names)}
    for lo, hi, name in BANDS:
        m = surface & (truth_depth >= lo) & (truth_depth < hi)
        out["band_sse"][name], out["band_pixels"][name] = float(se[m].sum()), int(m.sum())
    out["band_sse"]["sky"], out["band_pixels"]["sky"] = out["sse"]["sky"], out["pixels"]["sky"]
    out["sky_sse"] = _sky_by_nearest_band(se, truth_depth, surface)

    # geometry or colour: whole-view shifts on a crop, per-pixel 1-px slack, a blurred truth
    c = SHIFT_PX
    crop = (slice(c, H - c), slice(c, W - c))
    shifts = {}
    for dy in range(-c, c + 1):
        for dx in range(-c, c + 1):
            moved = t[c + dy:H - c + dy, c + dx:W - c + dx]
            shifts[(dx, dy)] = float(((a[crop] - moved) ** 2).mean())
    best = min(shifts, key=shifts.get)
    out["shift_mse0"], out["shift_best"], out["shift_mse"] = shifts[(0, 0)], list(best), shifts[best]
    slack = np.full((H - 2, W - 2), np.inf)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            moved = t[1 + dy:H - 1 + dy, 1 + dx:W - 1 + dx]
            slack = np.minimum(slack, ((a[1:-1, 1:-1] - moved) ** 2).mean(axis=2))
    out["slack_mse0"], out["slack_mse"] = float(se[1:-1, 1:-1].mean()), float(slack.mean())
    out["blur_mse"] = {s: float(((a - _blur(t, s)) ** 2).mean()) for s in BLURS}
    return out


def _sky_by_nearest_band(se: np.ndarray, depth: np.ndarray, surface: np.ndarray) -> dict:
    """Sky pixels' summed error by the band of the nearest surface within ``SKY_REACH_PX``
    (grown one pixel ring at a time, nearer bands first on a tie), else ``open sky``."""
    owned = [surface & (depth >= lo) & (depth < hi) for lo, hi, _ in BANDS]
    free = ~surface
    out = {name: 0.0 for *_, name in BANDS}
    for _ in range(SKY_REACH_PX):
        for k, (*_, name) in enumerate(BANDS):
            reached = _grow(owned[k], 1) & free
            out[name] += float(se[reached].sum())
            free &= ~reached
            owned[k] |= reached
    out["open sky"] = float(se[free].sum())
    return out


def tables(views: list[dict]) -> tuple[list[dict], list[dict], dict]:
    """Over views' budgets: ``(class rows, band rows, geometry dict)``. Rows: class, share of
    pixels, share of the summed squared error, median PSNR of a view with that class perfect,
    and the class's own PSNR (its pixels' pooled MSE)."""
    budgets = [v["budget"] for v in views if "budget" in v]
    if not budgets:
        return [], [], {}
    npx = sum(sum(b["pixels"].values()) for b in budgets)
    total = sum(b["mse"] * sum(b["pixels"].values()) for b in budgets)

    def rows(sse_key, px_key, names):
        out = []
        for name in names:
            sse = sum(b[sse_key][name] for b in budgets)
            px = sum(b[px_key][name] for b in budgets)
            fixed = [_psnr(b["mse"] - b[sse_key][name] / sum(b["pixels"].values())) for b in budgets]
            out.append({"class": name, "pixels": px / npx, "mse_share": sse / max(total, 1e-9),
                        "psnr_if_perfect": float(np.median(fixed)), "psnr_in_class": _psnr(sse / px) if px else None})
        return out

    geometry = {
        "psnr": float(np.median([_psnr(b["mse"]) for b in budgets])),
        "psnr_crop": float(np.median([_psnr(b["shift_mse0"]) for b in budgets])),
        "psnr_best_shift": float(np.median([_psnr(b["shift_mse"]) for b in budgets])),
        "best_shifts": [tuple(b["shift_best"]) for b in budgets],
        "psnr_slack0": float(np.median([_psnr(b["slack_mse0"]) for b in budgets])),
        "psnr_slack": float(np.median([_psnr(b["slack_mse"]) for b in budgets])),
        "psnr_vs_blurred": {s: float(np.median([_psnr(b["blur_mse"][s]) for b in budgets])) for s in BLURS},
        "sky_share": {k: sum(b["sky_sse"][k] for b in budgets) / max(total, 1e-9) for k in budgets[0]["sky_sse"]},
        "source_share": _source_shares(budgets, total),
    }
    return (rows("sse", "pixels", CLASSES), rows("band_sse", "band_pixels", [n for *_, n in BANDS] + ["sky"]), geometry)


def _source_shares(budgets: list[dict], total: float) -> dict:
    """``{class: {source: share of all views' summed squared error}}`` (empty without sources)."""
    out: dict[str, dict[str, float]] = {}
    for b in budgets:
        for name, parts in b.get("source_sse", {}).items():
            row = out.setdefault(name, {})
            for source, sse in parts.items():
                row[source] = row.get(source, 0.0) + sse / max(total, 1e-9)
    return out


def print_tables(views: list[dict], format_table) -> None:
    """``--error-budget``: the two partitions and the geometry-or-colour line."""
    classes, bands, g = tables(views)
    if not classes:
        return
    cols = [("class", "class"), ("pixels", "share of pixels"), ("mse_share", "share of MSE"),
            ("psnr_if_perfect", "PSNR if perfect (median)"), ("psnr_in_class", "PSNR in class")]

    def fmt(rows):
        return [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]

    print(f"\nerror budget over {len([v for v in views if 'budget' in v])} novel views (median PSNR {g['psnr']:.2f} dB), by pixel class:")
    print(format_table(fmt(classes), cols))
    print("\nby the generator's depth:")
    print(format_table(fmt(bands), cols))
    print("sky's share of the MSE by the nearest surface within %d px: " % SKY_REACH_PX
          + ", ".join(f"{k} {v:.3f}" for k, v in g["sky_share"].items()))
    if g["source_share"]:
        print("share of the MSE by class and the keyframes that drew the pixel (most opacity): ")
        for name, parts in g["source_share"].items():
            print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(parts.items())))
    shifts = ", ".join(f"{dx:+d},{dy:+d}" for dx, dy in g["best_shifts"])
    blurs = ", ".join(f"sigma {s} px {v:.2f}" for s, v in g["psnr_vs_blurred"].items())
    print(f"\ngeometry or colour: PSNR on the crop {g['psnr_crop']:.2f} dB, after the best whole-view shift "
          f"{g['psnr_best_shift']:.2f} dB (best shifts x,y: {shifts}); every pixel allowed 1 px slack "
          f"{g['psnr_slack0']:.2f} -> {g['psnr_slack']:.2f} dB; against the truth blurred: {blurs}")
