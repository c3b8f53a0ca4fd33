"""The ``.splat`` browser format: 32 bytes per Gaussian, no header, appendable.

Each record, little-endian::

    position  float32 x3   (world coordinates, metres)
    scale     float32 x3   (linear standard deviations, i.e. exp(log scale))
    rgba      uint8   x4   (colour * 255, opacity * 255)
    rotation  uint8   x4   (unit quaternion, w first, each q * 128 + 128)

Lossy: colour, opacity and rotation are quantised to 8 bits (rotation to within
~1/128 per component); higher-order SH is dropped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..gaussians import Gaussians
from .errors import SplatFormatError
from .limits import check_gaussian_count

SPLAT_RECORD = np.dtype(
    [("position", "<f4", (3,)), ("scale", "<f4", (3,)), ("rgba", "u1", (4,)), ("rotation", "u1", (4,))]
)
assert SPLAT_RECORD.itemsize == 32


def gaussians_to_splat_records(gaussians: Gaussians) -> np.ndarray:
    """``[G]`` structured records (:data:`SPLAT_RECORD`) for ``gaussians``."""
    rec = np.empty(len(gaussians), SPLAT_RECORD)
    rec["position"] = gaussians.means
    rec["scale"] = np.exp(gaussians.log_scales)
    rgba = np.concatenate([np.clip(gaussians.colors, 0.0, 1.0), gaussians.opacities[:, None]], axis=1)
    rec["rgba"] = np.round(rgba * 255.0).astype(np.uint8)
    rec["rotation"] = np.clip(np.round(gaussians.quats * 128.0 + 128.0), 0, 255).astype(np.uint8)
    return rec


def splat_records_to_gaussians(rec: np.ndarray) -> Gaussians:
    rgba = rec["rgba"].astype(np.float32) / 255.0
    # Opacity 0 or 1 has no finite logit: keep it half a quantisation step inside.
    alpha = np.clip(rgba[:, 3], 0.5 / 255.0, 254.5 / 255.0)
    quats = (rec["rotation"].astype(np.float32) - 128.0) / 128.0
    norm = np.linalg.norm(quats, axis=1, keepdims=True)
    quats = np.where(norm > 1e-6, quats / np.maximum(norm, 1e-6), np.array([1, 0, 0, 0], np.float32))
    scale = np.maximum(rec["scale"].astype(np.float32), 1e-12)
    return Gaussians(
        rec["position"],
        quats,
        np.log(scale),
        np.log(alpha / (1.0 - alpha)),
        rgba[:, :3],
    )


def write_splat(path: str | Path, gaussians: Gaussians) -> int:
    """Write ``gaussians`` as ``.splat`` (written beside and renamed); returns bytes written."""
    path = Path(path)
    rec = gaussians_to_splat_records(gaussians)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(rec.tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return rec.nbytes


def read_splat(path: str | Path, max_gaussians: int | None = None) -> Gaussians:
    """Read a ``.splat`` file; its size must be a multiple of 32 bytes and positions/scales finite."""
    path = Path(path)
    if not path.is_file():
        raise SplatFormatError(path, "no such file")
    size = path.stat().st_size
    if size % SPLAT_RECORD.itemsize:
        raise SplatFormatError(
            path, f"size {size} bytes is not a multiple of the 32-byte .splat record (truncated or not a .splat file)"
        )
    check_gaussian_count(path, size // SPLAT_RECORD.itemsize, max_gaussians)
    rec = np.fromfile(path, SPLAT_RECORD)
    for field in ("position", "scale"):
        bad = ~np.isfinite(rec[field]).all(axis=1)
        if bad.any():
            raise SplatFormatError(path, f"{field} of {int(bad.sum())} splat(s) is not finite (first at {int(np.argmax(bad))})")
    return splat_records_to_gaussians(rec)
