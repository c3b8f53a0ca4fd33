"""A photo's field of view from its EXIF: the 35 mm-equivalent focal length cameras record.

Only what the start image needs is read: a JPEG's APP1 ``Exif`` segment, its first IFD, the
Exif sub-IFD it points to, and there ``FocalLengthIn35mmFilm`` (tag 0xA405). Nothing else is
parsed, every offset is bounds-checked, and anything unexpected gives None.
"""

from __future__ import annotations

import math
import struct

FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)
"""A 35 mm-equivalent focal length is defined against this diagonal (43.27 mm)."""

_EXIF_IFD_POINTER = 0x8769
_FOCAL_35MM = 0xA405


def focal_length_35mm(data: bytes) -> float | None:
    """The 35 mm-equivalent focal length (mm) a JPEG's EXIF records, or None."""
    tiff = _exif_tiff(data)
    if tiff is None or len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    ifd0 = struct.unpack(order + "I", tiff[4:8])[0]
    pointer = _tag_value(tiff, order, ifd0, _EXIF_IFD_POINTER)
    if pointer is None:
        return None
    focal = _tag_value(tiff, order, pointer, _FOCAL_35MM)
    return float(focal) if focal else None


def fov_y_from_exif(data: bytes, width: int, height: int) -> float | None:
    """Vertical field of view (radians) of a ``width`` x ``height`` photo from its EXIF, or None."""
    focal = focal_length_35mm(data)
    if focal is None or not 4.0 <= focal <= 2000.0:
        return None
    focal_px = focal * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM
    return 2.0 * math.atan(0.5 * height / focal_px)


def _exif_tiff(data: bytes) -> bytes | None:
    """The TIFF block inside a JPEG's APP1 ``Exif`` segment."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no more metadata
            return None
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2:
            return None
        if marker == 0xE1 and data[i + 4 : i + 10] == b"Exif\0\0":
            return data[i + 10 : i + 2 + length]
        i += 2 + length
    return None


def _tag_value(tiff: bytes, order: str, offset: int, tag: int) -> int | None:
    """The value of a SHORT/LONG ``tag`` in the IFD at ``offset``, or None."""
    if offset + 2 > len(tiff):
        return None
    count = struct.unpack(order + "H", tiff[offset : offset + 2])[0]
    for k in range(count):
        entry = offset + 2 + 12 * k
        if entry + 12 > len(tiff):
            return None
        entry_tag, kind, n = struct.unpack(order + "HHI", tiff[entry : entry + 8])
        if entry_tag != tag or n != 1:
            continue
        if kind == 3:  # SHORT, left-aligned in the 4-byte value field
            return struct.unpack(order + "H", tiff[entry + 8 : entry + 10])[0]
        if kind == 4:  # LONG
            return struct.unpack(order + "I", tiff[entry + 8 : entry + 12])[0]
        return None
    return None
