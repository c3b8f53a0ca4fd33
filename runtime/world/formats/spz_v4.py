"""The ``.spz`` version 4 container (Niantic's default since 2026): a plaintext header,
a table of contents, and one zstd stream per attribute array.

Layout, all little-endian, written from the published description::

    header (32 bytes)  magic u32 "NGSP", version u32 = 4, num_points u32, sh_degree u8,
                       fractional_bits u8, flags u8, num_streams u8,
                       toc_byte_offset u32, 12 reserved bytes
    extensions         bytes 32 .. toc_byte_offset (when flags & 0x2): vendor records, skipped
    table of contents  num_streams x (compressed_size u64, uncompressed_size u64)
    streams            the compressed streams back to back, in attribute order:
                       positions, alphas, colors, scales, rotations, then sh (absent at degree 0)

Each stream inflates to the same array version 3 stores (see ``spz.py``). Memory is bounded
before anything is inflated: the point count is checked against the limit and against the
file's size (``spz_layout.MAX_RATIO``), every declared size against the one the point count
implies, and each stream is inflated through a reader that stops at its expected size (a
zstd bomb costs nothing beyond it).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np

from .errors import SplatFormatError
from .limits import check_gaussian_count
from .spz_layout import SH_COEFFS, SPZ_MAGIC, attribute_sizes, check_plausible_size

HEADER_V4 = struct.Struct("<IIIBBBBI12x")
TOC_ENTRY = struct.Struct("<QQ")
MAX_ZSTD_WINDOW = 1 << 27
"""Largest zstd window a stream may ask for (128 MiB, zstd's own default limit)."""


def is_v4(data: bytes) -> bool:
    """Whether ``data`` starts with the plaintext ``NGSP`` header of version 4 and later."""
    return len(data) >= 4 and struct.unpack_from("<I", data)[0] == SPZ_MAGIC


def unpack_v4(data: bytes, path: str | Path, max_gaussians: int | None) -> tuple[int, int, int, list[np.ndarray]]:
    """``(count, sh_degree, fractional_bits, arrays)`` of a version 4 file; ``arrays`` are the
    uint8 attribute arrays in ``spz_layout.ATTRIBUTES`` order (an empty ``sh`` at degree 0)."""
    if len(data) < HEADER_V4.size:
        raise SplatFormatError(path, f"truncated: shorter than the {HEADER_V4.size}-byte SPZ version 4 header")
    _, version, count, degree, bits, _flags, num_streams, toc_offset = HEADER_V4.unpack_from(data)
    if version in (1, 2, 3):
        raise SplatFormatError(path, f"SPZ version {version} data must be gzip-compressed, and this file's header is not")
    if version != 4:
        raise SplatFormatError(path, f"SPZ version {version} is not supported (reads versions 1, 2, 3, 4)")
    if degree not in SH_COEFFS:
        raise SplatFormatError(path, f"SPZ SH degree {degree} is not supported (reads 0-3)")
    check_gaussian_count(path, count, max_gaussians)
    sizes = attribute_sizes(4, count, degree)
    if not degree:
        sizes = sizes[:-1]  # no sh stream at degree 0
    if num_streams != len(sizes):
        raise SplatFormatError(path, f"SPZ version 4 at SH degree {degree} has {len(sizes)} streams, the header says {num_streams}")
    toc_end = toc_offset + num_streams * TOC_ENTRY.size
    if toc_offset < HEADER_V4.size or toc_end > len(data):
        raise SplatFormatError(path, f"SPZ table of contents at byte {toc_offset} lies outside the {len(data)}-byte file")
    entries = [TOC_ENTRY.unpack_from(data, toc_offset + i * TOC_ENTRY.size) for i in range(num_streams)]
    for i, ((_, declared), expected) in enumerate(zip(entries, sizes)):
        if declared != expected:
            raise SplatFormatError(path, f"SPZ stream {i} declares {declared:,} bytes; {count:,} points need {expected:,}")
    check_plausible_size(path, count, sum(sizes), len(data))
    if toc_end + sum(compressed for compressed, _ in entries) > len(data):
        raise SplatFormatError(path, "truncated: the SPZ streams end past the end of the file")
    decompressor = _zstd(path).ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW)
    arrays, offset = [], toc_end
    for i, ((compressed, _), expected) in enumerate(zip(entries, sizes)):
        arrays.append(_inflate(decompressor, memoryview(data)[offset : offset + compressed], expected, path, i))
        offset += compressed
    if not degree:
        arrays.append(np.empty(0, np.uint8))
    return count, degree, bits, arrays


def _inflate(decompressor, stream: memoryview, size: int, path: str | Path, index: int) -> np.ndarray:
    """Exactly ``size`` bytes from one zstd stream; more or fewer is an error."""
    out = np.empty(size, np.uint8)
    view = memoryview(out)
    filled = 0
    try:
        with decompressor.stream_reader(io.BytesIO(stream), read_across_frames=True) as reader:
            while filled < size:
                got = reader.readinto(view[filled:])
                if not got:
                    break
                filled += got
            extra = reader.read(1)
    except _zstd(path).ZstdError as e:
        raise SplatFormatError(path, f"SPZ stream {index} is not a readable zstd stream ({e})") from None
    if filled != size or extra:
        found = "more than that" if extra else f"{filled:,} bytes"
        raise SplatFormatError(path, f"SPZ stream {index} should inflate to {size:,} bytes, found {found}")
    return out


def _zstd(path: str | Path):
    try:
        import zstandard
    except ImportError:  # a core dependency; only a hand-trimmed install lacks it
        raise SplatFormatError(path, "reading .spz version 4 needs the 'zstandard' package (pip install zstandard)") from None
    return zstandard
