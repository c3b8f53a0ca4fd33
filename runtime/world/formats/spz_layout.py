"""What every ``.spz`` version shares: the header fields and the attribute arrays' sizes.

Versions 1-3 gzip the 16-byte header and the arrays as one stream; version 4 keeps a
32-byte header in the clear and zstd-compresses each array as its own stream (``spz_v4``).
The arrays themselves are the same in versions 3 and 4.
"""

from __future__ import annotations

from pathlib import Path

from .errors import SplatFormatError

SPZ_MAGIC = 0x5053474E
"""``NGSP`` read as a little-endian u32."""
SUPPORTED_VERSIONS = (1, 2, 3, 4)
SH_COEFFS = {0: 0, 1: 3, 2: 8, 3: 15}
"""Higher-order SH coefficients per colour channel for each SH degree we read (0-3)."""
FLAG_ANTIALIASED = 0x1
FLAG_HAS_EXTENSIONS = 0x2
ATTRIBUTES = ("positions", "alphas", "colors", "scales", "rotations", "sh")
MAX_RATIO = 64
"""Most a file's arrays may inflate to, as a multiple of the file's size. Quantised splat
arrays are close to incompressible (worlds we export inflate ~2:1, trained scenes 2-4:1);
a header claiming more is corrupt or a decompression bomb. This is what bounds the memory
a read may cost by the file's real size (deflate alone would allow 1032:1, zstd more)."""


def plausible_bytes(file_bytes: int) -> int:
    """Most bytes of arrays a file of ``file_bytes`` may inflate to."""
    return MAX_RATIO * max(file_bytes, 1024)


def check_plausible_size(path: str | Path, count: int, data_bytes: int, file_bytes: int) -> None:
    """Raise unless ``data_bytes`` of arrays for ``count`` points could come from ``file_bytes``."""
    if data_bytes > plausible_bytes(file_bytes):
        raise SplatFormatError(
            path,
            f"header declares {count:,} points ({data_bytes:,} bytes of arrays), more than {MAX_RATIO} times the "
            f"{file_bytes:,}-byte file: SPZ data does not compress that well (corrupt, or a decompression bomb)",
        )


def attribute_sizes(version: int, count: int, sh_degree: int) -> list[int]:
    """Bytes of each array in :data:`ATTRIBUTES` order for ``count`` points.

    Positions are float16 in version 1, 24-bit fixed point after; rotations are three
    bytes in versions 1-2, a 32-bit "smallest three" word from version 3.
    """
    position = 6 if version == 1 else 9
    rotation = 4 if version >= 3 else 3
    return [count * position, count, count * 3, count * 3, count * rotation, count * SH_COEFFS[sh_degree] * 3]
