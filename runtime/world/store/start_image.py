"""A world's start image on disk: the PNG or JPEG bytes it came as, never a raw pixel array.

A 56 KB PNG of 4096 x 4096 pixels is 50 MB as an array; kept encoded it stays 56 KB.
Images that arrive as pixels (the CLI reads any format FFmpeg decodes) are stored as
lossless PNG. Decoding checks the picture's size before decoding it, so a small file
claiming a huge picture (a decompression bomb) is refused without allocating it.
"""

from __future__ import annotations

import io

import av
import numpy as np

from ..formats.media import MAX_IMAGE_PIXELS, encode_png

__all__ = ["FILE_NAMES", "MAX_IMAGE_PIXELS", "MAX_PIXELS", "StartImageError", "decode", "encode_png", "image_format"]

MAX_PIXELS = 4096 * 4096
"""Largest new start image (width x height) decoded; a saved one may be as large as the CLI
reads (``formats.media.MAX_IMAGE_PIXELS``)."""
MIN_SIDE = 16

_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg"}
FILE_NAMES = {"png": "start.png", "jpeg": "start.jpg"}


class StartImageError(ValueError):
    """Bytes that are not a usable PNG/JPEG start image; the message says why."""


def image_format(data: bytes) -> str | None:
    """``"png"`` or ``"jpeg"`` from the leading bytes, else None."""
    for magic, fmt in _MAGIC.items():
        if data.startswith(magic):
            return fmt
    return None


def decode(data: bytes, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> np.ndarray:
    """PNG/JPEG bytes -> ``[H, W, 3]`` uint8 RGB; raises :class:`StartImageError`.

    ``min_side`` applies to new images; a saved one loads whatever its size."""
    fmt = image_format(data)
    if fmt is None:
        raise StartImageError("start_image must be PNG or JPEG bytes")
    try:
        with av.open(io.BytesIO(data), format=f"{fmt}_pipe") as container:
            ctx = container.streams.video[0].codec_context
            if ctx.width * ctx.height > max_pixels:  # before decoding: no decompression bombs
                raise StartImageError(f"start_image is {ctx.width}x{ctx.height}, at most {max_pixels} pixels")
            rgb = next(container.decode(video=0)).to_ndarray(format="rgb24")
    except StartImageError:
        raise
    except Exception as exc:  # FFmpeg and PyAV raise many kinds for broken files
        raise StartImageError(f"start_image could not be decoded: {exc}") from None
    if rgb.shape[0] < min_side or rgb.shape[1] < min_side:
        raise StartImageError(f"start_image must be at least {min_side}x{min_side}, got {rgb.shape[1]}x{rgb.shape[0]}")
    return np.ascontiguousarray(rgb)
