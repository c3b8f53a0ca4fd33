"""Splat file formats: INRIA 3DGS PLY (reference), ``.splat`` and ``.spz`` (browser formats).

:func:`read_splats` / :func:`write_splats` pick the format from the file suffix.
"""

from __future__ import annotations

import errno
from pathlib import Path

from ..gaussians import Gaussians
from .errors import SplatFormatError
from .limits import MAX_GAUSSIANS, check_positions
from .ply import read_ply, write_ply
from .splat import read_splat, write_splat
from .spz import read_spz, write_spz

SPLAT_SUFFIXES = (".ply", ".splat", ".spz")


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SPLAT_SUFFIXES:
        raise SplatFormatError(path, f"unknown splat format {suffix or '(no suffix)'!r}; use one of {', '.join(SPLAT_SUFFIXES)}")
    return suffix


def read_splats(path: str | Path, max_gaussians: int | None = None) -> Gaussians:
    """Read Gaussians from a ``.ply``, ``.splat`` or ``.spz`` file.

    A file holding more than ``max_gaussians`` (default :data:`MAX_GAUSSIANS`) is refused
    before its Gaussians are allocated, and one placing Gaussians beyond the world's
    coordinate range (:data:`~runtime.world.config.MAX_COORD_M`) after reading.
    """
    path = Path(path)
    gaussians = {".ply": read_ply, ".splat": read_splat, ".spz": read_spz}[_suffix(path)](path, max_gaussians)
    check_positions(path, gaussians.means)
    return gaussians


def write_splats(path: str | Path, gaussians: Gaussians, lossless: bool = False) -> int:
    """Write Gaussians to ``path`` in the format its suffix names; returns bytes written.

    ``lossless`` applies to PLY only (exact colours in extra properties).
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.parent.is_dir():  # checked here: the writers' temp file would otherwise be the name in the error
        raise FileNotFoundError(errno.ENOENT, "no such folder to write into", str(path.parent))
    if suffix == ".ply":
        return write_ply(path, gaussians, lossless=lossless)
    return {".splat": write_splat, ".spz": write_spz}[suffix](path, gaussians)


__all__ = [
    "MAX_GAUSSIANS",
    "SPLAT_SUFFIXES",
    "SplatFormatError",
    "read_ply",
    "read_splat",
    "read_splats",
    "read_spz",
    "write_ply",
    "write_splat",
    "write_splats",
    "write_spz",
]
