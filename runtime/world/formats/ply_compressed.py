"""SuperSplat's compressed PLY (``*.compressed.ply``, written by PlayCanvas SuperSplat and
splat-transform): Gaussians quantised in chunks of 256 with per-chunk bounds.

Layout, written from the published description (binary little-endian PLY)::

    element chunk ceil(N / 256)   float min_x min_y min_z max_x max_y max_z
                                  float min_scale_x .. min_scale_z max_scale_x .. max_scale_z
                                  [float min_r min_g min_b max_r max_g max_b]   (newer files)
    element vertex N              uint packed_position packed_rotation packed_scale packed_color
    [element sh N                 uchar f_rest_0 .. f_rest_{9|24|45 - 1}]

Vertex ``i`` belongs to chunk ``i // 256``; a field quantised to ``b`` bits is ``q / (2^b - 1)``
of the way from the chunk's min to its max:

* ``packed_position`` / ``packed_scale``: x in bits 21-31 (11 bits), y in 11-20 (10), z in
  0-10 (11); scales are log scales.
* ``packed_rotation``: bits 30-31 give which of (w, x, y, z) is largest (rebuilt from unit
  length); the other three follow in order, 10 bits each, as ``(q / 1023 - 0.5) * sqrt(2)``.
* ``packed_color``: r, g, b, opacity at bits 24, 16, 8, 0 (8 bits each); r, g, b are
  ``0.5 + SH_C0 * f_dc`` (between the chunk's colour bounds when it has them, else 0-1),
  opacity is the activated opacity.
* ``sh``: INRIA's ``f_rest`` order, each byte ``v`` meaning ``8 * (t - 0.5)`` with
  ``t = (v + 0.5) / 256`` (``t`` = 0 and 1 at ``v`` = 0 and 255).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import SplatFormatError
from .ply_layout import PlyHeader, read_elements

CHUNK_SPLATS = 256
CHUNK_BOUNDS = ("min_x", "min_y", "min_z", "max_x", "max_y", "max_z") + (
    "min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z"
)  # fmt: skip
CHUNK_COLOR_BOUNDS = ("min_r", "min_g", "min_b", "max_r", "max_g", "max_b")
PACKED = ("packed_position", "packed_rotation", "packed_scale", "packed_color")
FORMAT_NAME = "SuperSplat compressed PLY"


def is_compressed_ply(header: PlyHeader) -> bool:
    """Whether the header is SuperSplat's layout: a ``chunk`` element and packed vertices."""
    vertex = header.element("vertex")
    return (
        header.element("chunk") is not None
        and vertex is not None
        and {p.name for p in vertex.properties} >= set(PACKED)
    )


def read_compressed_ply(path: Path, header: PlyHeader) -> dict[str, np.ndarray]:
    """The Gaussians of a compressed PLY as float32 arrays before activation:
    ``means [N,3]``, ``quats [N,4]`` (w first), ``log_scales [N,3]``, ``opacity_logits [N]``,
    ``f_dc [N,3]`` and ``sh_rest [N,S,3]`` (absent without an ``sh`` element)."""
    n = header.element("vertex").count
    chunk_el, sh_el = header.element("chunk"), header.element("sh")
    problem = _layout_problem(header, n)
    if problem:
        raise SplatFormatError(path, f"looks like a {FORMAT_NAME} (it has a 'chunk' element), but {problem}")
    elements = read_elements(path, header, ("chunk", "vertex", "sh"))
    chunk, vertex = elements["chunk"], elements["vertex"]
    bounds = np.stack([chunk[name].astype(np.float32) for name in CHUNK_BOUNDS], axis=1)
    has_colors = all(name in chunk.dtype.names for name in CHUNK_COLOR_BOUNDS)
    if has_colors:
        bounds = np.concatenate([bounds, np.stack([chunk[name].astype(np.float32) for name in CHUNK_COLOR_BOUNDS], axis=1)], axis=1)
    bad = ~np.isfinite(bounds).all(axis=1)
    if bad.any():
        raise SplatFormatError(path, f"{FORMAT_NAME}: chunk {int(np.argmax(bad))} has non-finite bounds")
    chunk_of = np.arange(n) // CHUNK_SPLATS

    def lerp(t: np.ndarray, column: int) -> np.ndarray:
        low, high = bounds[chunk_of, column : column + 3], bounds[chunk_of, column + 3 : column + 6]
        return low * (1.0 - t) + high * t

    position = vertex["packed_position"].astype(np.uint32)
    scale = vertex["packed_scale"].astype(np.uint32)
    color = vertex["packed_color"].astype(np.uint32)
    rgba = np.stack([(color >> shift) & 0xFF for shift in (24, 16, 8, 0)], axis=1).astype(np.float32) / 255.0
    rgb = lerp(rgba[:, :3], 12) if has_colors else rgba[:, :3]
    alpha = np.clip(rgba[:, 3], 0.5 / 255.0, 254.5 / 255.0)  # 0 and 1 have no finite logit
    out = {
        "means": lerp(_unpack_11_10_11(position), 0),
        "log_scales": lerp(_unpack_11_10_11(scale), 6),
        "quats": _unpack_rotation(vertex["packed_rotation"].astype(np.uint32)),
        "opacity_logits": np.log(alpha / (1.0 - alpha)).astype(np.float32),
        "f_dc": ((rgb - 0.5) / np.float32(0.28209479177387814)).astype(np.float32),
    }
    if sh_el is not None:
        sh = elements["sh"]
        coeffs = len(sh_el.properties) // 3
        raw = np.stack([sh[f"f_rest_{i}"] for i in range(3 * coeffs)], axis=1).astype(np.float32)
        t = np.where(raw == 0, 0.0, np.where(raw == 255, 1.0, (raw + 0.5) / 256.0))
        values = ((t - 0.5) * 8.0).astype(np.float32)
        out["sh_rest"] = np.ascontiguousarray(values.reshape(n, 3, coeffs).transpose(0, 2, 1))
    return out


def _layout_problem(header: PlyHeader, n: int) -> str | None:
    """What about the header does not match the layout, in words; None if it matches."""
    chunk, vertex, sh = header.element("chunk"), header.element("vertex"), header.element("sh")
    names = {p.name: p.type for p in chunk.properties}
    missing = [b for b in CHUNK_BOUNDS if b not in names]
    if missing:
        return f"element 'chunk' lacks {', '.join(missing)}"
    if any(names[b] != "f4" for b in CHUNK_BOUNDS + tuple(c for c in CHUNK_COLOR_BOUNDS if c in names)):
        return "chunk bounds must be float"
    expected_chunks = -(-n // CHUNK_SPLATS)
    if chunk.count != expected_chunks:
        return f"{n} vertices need {expected_chunks} chunks of {CHUNK_SPLATS}, the file has {chunk.count}"
    types = {p.name: p.type for p in vertex.properties}
    if any(types[p] != "u4" for p in PACKED):
        return f"the packed vertex properties must be uint ({', '.join(PACKED)})"
    if sh is not None:
        count = len(sh.properties)
        if count not in (9, 24, 45) or [p.name for p in sh.properties] != [f"f_rest_{i}" for i in range(count)]:
            return f"element 'sh' must hold f_rest_0..f_rest_8, _23 or _44, got {count} properties"
        if any(p.type != "u1" for p in sh.properties) or sh.count != n:
            return f"element 'sh' must hold one uchar row per vertex ({n})"
    return None


def _unpack_11_10_11(packed: np.ndarray) -> np.ndarray:
    """``[N]`` uint32 -> ``[N, 3]`` float32 fractions in [0, 1] (x: 11 bits, y: 10, z: 11)."""
    x = (packed >> 21) & 0x7FF
    y = (packed >> 11) & 0x3FF
    z = packed & 0x7FF
    return np.stack([x / np.float32(2047.0), y / np.float32(1023.0), z / np.float32(2047.0)], axis=1).astype(np.float32)


def _unpack_rotation(packed: np.ndarray) -> np.ndarray:
    """``[N]`` uint32 -> ``[N, 4]`` float32 unit quaternions, w first."""
    largest = (packed >> 30).astype(np.int64)
    rest = np.stack([(packed >> shift) & 0x3FF for shift in (20, 10, 0)], axis=1).astype(np.float32)
    rest = (rest / np.float32(1023.0) - np.float32(0.5)) * np.float32(np.sqrt(2.0))
    big = np.sqrt(np.clip(1.0 - (rest**2).sum(axis=1), 0.0, None)).astype(np.float32)
    quats = np.empty((len(packed), 4), np.float32)
    rows = np.arange(len(packed))
    quats[rows, largest] = big
    # The stored three fill the other slots in order: slot j takes stored j - (j > largest).
    for slot in range(4):
        take = np.where(slot < largest, slot, slot - 1)
        mask = slot != largest
        quats[rows[mask], slot] = rest[rows[mask], take[mask]]
    return quats
