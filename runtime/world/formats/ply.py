"""INRIA 3D Gaussian Splatting PLY files (the layout 3DGS, gsplat, SuperSplat, Spark and Lyra 2 use).

One ``vertex`` element, binary little-endian float32 properties, stored *before*
activation::

    x y z  nx ny nz  f_dc_0..2  [f_rest_0..(3*S-1)]  opacity  scale_0..2  rot_0..3

* ``opacity`` is the logit (opacity = sigmoid(stored)); ``scale_*`` are natural logs.
* ``rot_*`` is a quaternion, w first (``rot_0``), not necessarily normalised.
* ``f_dc`` is the degree-0 SH coefficient: ``rgb = 0.5 + SH_C0 * f_dc``.
* ``f_rest`` holds ``S`` = 3, 8 or 15 higher-order coefficients per channel,
  channel-major: ``f_rest[c * S + k]`` is coefficient ``k`` of channel ``c``.
  17 floats per Gaussian at SH degree 0 (Lyra 2's ``reconstructed_scene.ply``), 62 at degree 3.

Reading accepts binary (either endianness) and ASCII PLY, any numeric property type,
extra properties and elements (ignored; see ``ply_layout`` for what is refused), and
SuperSplat's compressed PLY (``ply_compressed``).

Exactness: every array we store before activation round-trips bit for bit. Colours
do not quite: ``Gaussians.colors`` is activated RGB and float32 ``f_dc`` is too coarse
to hit every float32 colour below ~0.25 (errors up to ~3e-8, far below 1/255).
``write_ply(..., lossless=True)`` adds three worldstream-only properties
``ws_rgb_0..2`` holding the exact colours (viewers ignore unknown properties and
still use ``f_dc``); :func:`read_ply` prefers them when present.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..gaussians import SH_C0, Gaussians
from .errors import SplatFormatError
from .limits import check_gaussian_count
from .ply_compressed import FORMAT_NAME as COMPRESSED_FORMAT_NAME
from .ply_compressed import PACKED, is_compressed_ply, read_compressed_ply
from .ply_layout import check_data_size, read_elements, read_header

REST_COEFFS_FOR_DEGREE = {0: 0, 1: 3, 2: 8, 3: 15}
"""Higher-order SH coefficients per colour channel for each SH degree."""

OPACITY_LOGIT_LIMIT = 40.0
"""Opacity logits are clipped to +-40 (opacity 1 - 4e-18): files may store +-inf for 1 and 0."""

REQUIRED_PROPERTIES = (
    ("x", "y", "z")
    + tuple(f"f_dc_{i}" for i in range(3))
    + ("opacity",)
    + tuple(f"scale_{i}" for i in range(3))
    + tuple(f"rot_{i}" for i in range(4))
)


def property_names(sh_degree: int) -> list[str]:
    """The PLY property names, in file order, for Gaussians of SH degree ``sh_degree`` (0-3)."""
    rest = 3 * REST_COEFFS_FOR_DEGREE[sh_degree]
    return (
        ["x", "y", "z", "nx", "ny", "nz"]
        + [f"f_dc_{i}" for i in range(3)]
        + [f"f_rest_{i}" for i in range(rest)]
        + ["opacity"]
        + [f"scale_{i}" for i in range(3)]
        + [f"rot_{i}" for i in range(4)]
    )


# ---------------------------------------------------------------- colours <-> f_dc
def colors_from_dc(f_dc: np.ndarray) -> np.ndarray:
    """``[..., 3]`` SH degree-0 coefficients -> float32 RGB (``0.5 + SH_C0 * f_dc``, in float64, rounded once)."""
    return (0.5 + SH_C0 * np.asarray(f_dc, np.float32).astype(np.float64)).astype(np.float32)


def dc_from_colors(colors: np.ndarray) -> np.ndarray:
    """``[..., 3]`` float32 RGB -> float32 f_dc that :func:`colors_from_dc` maps back to the same bits.

    The straightforward ``(rgb - 0.5) / SH_C0`` is off by one float32 step for some
    values; we try the neighbouring float32 values and keep one that decodes
    exactly. Every colour >= 0.25 has such a neighbour; a few darker values have
    none (f_dc's float32 spacing is coarser than theirs) and keep the nearest,
    at most ~3e-8 away.
    """
    colors = np.asarray(colors, np.float32)
    first = ((colors.astype(np.float64) - 0.5) / SH_C0).astype(np.float32)
    best = first.copy()
    unresolved = colors_from_dc(best) != colors
    if not unresolved.any():
        return best
    for direction in (np.float32(np.inf), np.float32(-np.inf)):
        candidate = first.copy()
        for _ in range(3):
            candidate = np.nextafter(candidate, direction)
            hit = unresolved & (colors_from_dc(candidate) == colors)
            best[hit] = candidate[hit]
            unresolved &= ~hit
            if not unresolved.any():
                return best
    return best


# ---------------------------------------------------------------- writing
EXACT_COLOR_PROPERTIES = ("ws_rgb_0", "ws_rgb_1", "ws_rgb_2")
"""worldstream-only properties with exact float32 colours (written with ``lossless=True``)."""


def gaussians_to_rows(gaussians: Gaussians, lossless: bool = False) -> tuple[np.ndarray, list[str]]:
    """``[G, P]`` little-endian float32 rows in INRIA order, and the ``P`` property names."""
    degree = gaussians.sh_degree
    names = property_names(degree) + (list(EXACT_COLOR_PROPERTIES) if lossless else [])
    g = len(gaussians)
    rows = np.zeros((g, len(names)), dtype="<f4")
    rows[:, 0:3] = gaussians.means
    # columns 3:6 are the normals: always zero
    rows[:, 6:9] = dc_from_colors(gaussians.colors)
    col = 9
    if gaussians.sh_rest is not None:
        s = gaussians.sh_rest.shape[1]
        # [G, S, 3] -> channel-major [G, 3, S] -> [G, 3*S]
        rows[:, col : col + 3 * s] = np.transpose(gaussians.sh_rest, (0, 2, 1)).reshape(g, 3 * s)
        col += 3 * s
    rows[:, col] = gaussians.opacity_logits
    rows[:, col + 1 : col + 4] = gaussians.log_scales
    rows[:, col + 4 : col + 8] = gaussians.quats
    if lossless:
        rows[:, col + 8 : col + 11] = gaussians.colors
    return rows, names


def ply_header(count: int, names: list[str], comments: tuple[str, ...] = ()) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0"]
    lines += [f"comment {c}" for c in comments]
    lines.append(f"element vertex {count}")
    lines += [f"property float {n}" for n in names]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def write_ply(
    path: str | Path,
    gaussians: Gaussians,
    lossless: bool = False,
    comments: tuple[str, ...] = ("generated by worldstream",),
) -> int:
    """Write ``gaussians`` as an INRIA 3DGS PLY at ``path``; returns the bytes written.

    ``lossless`` also writes the exact colours (``ws_rgb_*``, 12 more bytes per Gaussian).
    Written to a temporary file beside ``path`` and renamed, so a reader never
    sees a half-written file.
    """
    path = Path(path)
    rows, names = gaussians_to_rows(gaussians, lossless)
    header = ply_header(len(gaussians), names, comments)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(memoryview(np.ascontiguousarray(rows)).cast("B"))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(header) + rows.nbytes


# ---------------------------------------------------------------- reading
def read_ply(path: str | Path, max_gaussians: int | None = None) -> Gaussians:
    """Read an INRIA-layout 3DGS PLY (SH degree 0-3) into :class:`Gaussians`.

    SuperSplat's compressed PLY (``ply_compressed``) is recognised by its ``chunk`` element
    and read too. Opacity logits of +-inf mean opacity 1 and 0 (clipped to +-40).

    Raises :class:`SplatFormatError` naming the file and the problem: not a PLY,
    truncated data, no ``vertex`` element, a missing property, an ``f_rest``
    count that is not an SH degree 0-3 layout, or NaN (or infinite, except opacity) values.
    """
    path = Path(path)
    header = read_header(path)
    if header.element("vertex") is None:
        names = ", ".join(el.name for el in header.elements) or "none"
        raise SplatFormatError(path, f"no 'vertex' element (elements: {names})")
    check_data_size(path, header)
    check_gaussian_count(path, header.element("vertex").count, max_gaussians)
    if is_compressed_ply(header):
        return _gaussians(read_compressed_ply(path, header))
    vertex = read_elements(path, header, ("vertex",))["vertex"]
    present = set(vertex.dtype.names or ())
    missing = [p for p in REQUIRED_PROPERTIES if p not in present]
    if missing:
        hint = ""
        if "f_dc_0" in missing and {"red", "green", "blue"} <= present:
            hint = " (it looks like a coloured point cloud, not a Gaussian splat scene)"
        elif present & set(PACKED):
            hint = f" (packed_* properties: a {COMPRESSED_FORMAT_NAME}, but without its 'chunk' element)"
        raise SplatFormatError(
            path, f"missing propert{'y' if len(missing) == 1 else 'ies'} {', '.join(repr(m) for m in missing)} in element 'vertex'{hint}"
        )
    rest_names = sorted((n for n in present if n.startswith("f_rest_")), key=lambda n: int(n[7:]) if n[7:].isdigit() else -1)
    rest_total = len(rest_names)
    degree = {3 * s: d for d, s in REST_COEFFS_FOR_DEGREE.items()}.get(rest_total)
    if degree is None:
        raise SplatFormatError(path, f"{rest_total} f_rest_* properties is not an SH degree 0-3 layout (0, 9, 24 or 45)")
    if rest_names != [f"f_rest_{i}" for i in range(rest_total)]:
        raise SplatFormatError(path, f"f_rest_* properties are not numbered 0..{rest_total - 1}")

    def column(names: list[str] | tuple[str, ...]) -> np.ndarray:
        out = np.empty((len(vertex), len(names)), np.float32)
        for i, n in enumerate(names):
            out[:, i] = vertex[n]
            if n == "opacity":  # +-inf logits are opacity 1 and 0 (Niantic's spz_to_ply writes them)
                np.clip(out[:, i], -OPACITY_LOGIT_LIMIT, OPACITY_LOGIT_LIMIT, out=out[:, i])
            bad = ~np.isfinite(out[:, i])
            if bad.any():
                raise SplatFormatError(
                    path, f"property {n!r} has {int(bad.sum())} non-finite value(s) (first at vertex {int(np.argmax(bad))})"
                )
        return out

    means = column(("x", "y", "z"))
    f_dc = column([f"f_dc_{i}" for i in range(3)])
    opacity = column(("opacity",))[:, 0]
    log_scales = column([f"scale_{i}" for i in range(3)])
    quats = normalize_quaternions(column([f"rot_{i}" for i in range(4)]))
    sh_rest = None
    if degree > 0:
        s = REST_COEFFS_FOR_DEGREE[degree]
        sh_rest = np.ascontiguousarray(column(rest_names).reshape(-1, 3, s).transpose(0, 2, 1))
    if all(n in present for n in EXACT_COLOR_PROPERTIES):
        colors = column(EXACT_COLOR_PROPERTIES)
    else:
        colors = colors_from_dc(f_dc)
    return Gaussians(means, quats, log_scales, opacity, colors, sh_rest)


def _gaussians(arrays: dict[str, np.ndarray]) -> Gaussians:
    """Gaussians from decoded arrays before activation (see ``read_compressed_ply``)."""
    return Gaussians(
        arrays["means"],
        normalize_quaternions(arrays["quats"]),
        arrays["log_scales"],
        arrays["opacity_logits"],
        colors_from_dc(arrays["f_dc"]),
        arrays.get("sh_rest"),
    )


def normalize_quaternions(q: np.ndarray) -> np.ndarray:
    """``[G, 4]`` quaternions scaled to unit length; zero ones become the identity.

    Rows already unit length to float32 precision are left bit-for-bit unchanged,
    so our own files round-trip exactly.
    """
    q = np.asarray(q, np.float32).copy()
    norm = np.linalg.norm(q.astype(np.float64), axis=1)
    zero = norm < 1e-12
    q[zero] = (1.0, 0.0, 0.0, 0.0)
    fix = ~zero & (np.abs(norm - 1.0) > 1e-6)
    q[fix] = (q[fix] / norm[fix, None]).astype(np.float32)
    return q
