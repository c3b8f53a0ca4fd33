"""Image files built by the tests themselves (imported by test modules; not a test)."""

from __future__ import annotations

import struct
import zlib


def png_bytes(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG, all black: 20000x20000 of it is 50 MB unpacked, ~50 KB packed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def damaged_png() -> bytes:
    """A PNG whose header is fine and whose picture data is garbage."""
    return png_bytes(64, 64)[:60] + b"garbage" * 10
