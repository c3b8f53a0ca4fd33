"""What a splat file may hold: how many Gaussians (the readers refuse more before allocating
them) and where (positions within the world's coordinate range)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import MAX_COORD_M
from .errors import SplatFormatError

MAX_GAUSSIANS = 10_000_000
"""Default limit on Gaussians read from one file (~0.6 GB of arrays at SH degree 0,
~2.4 GB at degree 3). Trained 3DGS scenes hold a few million; callers may pass a larger limit."""


def check_gaussian_count(path: str | Path, count: int, max_gaussians: int | None) -> None:
    """Raise :class:`SplatFormatError` if a file declaring ``count`` Gaussians exceeds the limit."""
    limit = MAX_GAUSSIANS if max_gaussians is None else max_gaussians
    if count > limit:
        raise SplatFormatError(path, f"holds {count:,} Gaussians, more than the limit of {limit:,}")


def check_positions(path: str | Path, means: np.ndarray) -> None:
    """Raise :class:`SplatFormatError` if a ``[G, 3]`` position is beyond :data:`MAX_COORD_M`."""
    far = ~(np.abs(means) <= MAX_COORD_M).all(axis=1)
    if far.any():
        i = int(np.argmax(far))
        raise SplatFormatError(
            path, f"{int(far.sum())} Gaussian(s) lie beyond {MAX_COORD_M:.0e} m of the origin (first: #{i} at {means[i].tolist()})"
        )
