"""Images in (PNG, JPEG, ... via PyAV/FFmpeg) and video out: H.264 MP4 or GIF, as the file name says."""

from __future__ import annotations

import io
import os
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .errors import SplatFormatError


_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def image_header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` in pixels from a PNG's IHDR or a JPEG's frame header, read without
    decoding anything (so a picture's size can be refused before it costs memory); None when
    the bytes are not a PNG or JPEG whose header can be read."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        width, height = struct.unpack(">II", data[16:24])
        return (width, height) if width and height else None
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 4 <= len(data):  # segments: FF, marker, 2-byte length (which counts itself)
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # stand-alone markers carry no length
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return (width, height) if width and height else None
        if marker in (0xD9, 0xDA) or length < 2:  # end of image / start of scan before any frame header
            return None
        i += 2 + length
    return None


MAX_IMAGE_PIXELS = 8192 * 8192
"""Largest image :func:`read_image` decodes (checked before decoding: no decompression bombs)."""


def read_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB of the image at ``path`` (any format FFmpeg decodes)."""
    path = Path(path)
    if not path.is_file():
        raise SplatFormatError(path, "no such file")
    with open(path, "rb") as f:
        size = image_header_size(f.read(1 << 18))  # PNG/JPEG: the size from the header, decoding nothing
    if size is not None and size[0] * size[1] > max_pixels:
        raise SplatFormatError(path, f"image is {size[0]}x{size[1]} pixels; at most {max_pixels:,} pixels are read")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise SplatFormatError(path, "not an image (no picture in it)")
            context = container.streams.video[0].codec_context  # other formats: as FFmpeg probed them
            if context.width * context.height > max_pixels:
                raise SplatFormatError(path, f"image is {context.width}x{context.height} pixels; at most {max_pixels:,} pixels are read")
            for frame in container.decode(video=0):
                return frame.to_ndarray(format="rgb24")
    except SplatFormatError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError) as e:
        raise SplatFormatError(path, f"not a readable image ({e})") from None
    raise SplatFormatError(path, "image has no picture in it")


def resize_image(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB resampled to ``height x width`` (area averaging when shrinking)."""
    rgb = np.ascontiguousarray(rgb, np.uint8)
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb.copy()
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return frame.reformat(width=width, height=height, interpolation="AREA").to_ndarray(format="rgb24")


def encode_png(rgb: np.ndarray) -> bytes:
    """``[H, W, 3]`` uint8 RGB as lossless PNG bytes."""
    rgb = np.ascontiguousarray(rgb, np.uint8)
    out = io.BytesIO()
    with av.open(out, mode="w", format="image2pipe") as container:
        stream = container.add_stream("png")
        stream.height, stream.width = rgb.shape[:2]
        stream.pix_fmt = "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """Write ``[H, W, 3]`` uint8 RGB as a PNG."""
    Path(path).write_bytes(encode_png(rgb))


def read_video_frames(path: str | Path) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 RGB frames of a video file (for tests and tools)."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# suffix -> (container format, encoder, pixel format, what it is, in words)
VIDEO_FORMATS = {
    ".mp4": ("mp4", "libx264", "yuv420p", "H.264"),
    # GIF's palette is FFmpeg's fixed 3-3-2 one (rgb8): quick and honest, banded on gradients.
    ".gif": ("gif", "gif", "rgb8", "GIF, 256 fixed colours"),
}


def video_format_error(path: str | Path) -> str | None:
    """Why ``path`` cannot be written as a video (an unsupported suffix), or None."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_FORMATS:
        return None
    supported = ", ".join(f"{s} ({VIDEO_FORMATS[s][3]})" for s in VIDEO_FORMATS)
    return f"cannot write video as {suffix or '(no suffix)'!r}; name the file with one of {supported}"


class VideoWriter:
    """Writes RGB frames as the video format the file's suffix names (:data:`VIDEO_FORMATS`).

    H.264 (yuv420p) needs an even width and height. The file appears under its final name
    only when :meth:`close` succeeds.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float = 16.0, crf: int = 18) -> None:
        problem = video_format_error(path)
        if problem is not None:
            raise SplatFormatError(path, problem)
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        container_format, encoder, pix_fmt, _ = VIDEO_FORMATS[suffix]
        if width <= 0 or height <= 0 or (encoder == "libx264" and (width % 2 or height % 2)):
            raise ValueError(f"H.264 video needs an even, positive width and height, got {width}x{height}")
        self.width, self.height = width, height
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp-{os.getpid()}{suffix}")
        self._container = av.open(str(self._tmp), mode="w", format=container_format)
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream(encoder, rate=rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = pix_fmt
        if encoder == "libx264":
            self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        """Append one ``[height, width, 3]`` uint8 frame."""
        rgb = np.ascontiguousarray(rgb, np.uint8)
        if rgb.shape != (self.height, self.width, 3):
            raise ValueError(f"frame must be [{self.height}, {self.width}, 3], got {list(rgb.shape)}")
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None
            os.replace(self._tmp, self.path)
        finally:
            if self._container is not None:
                self._container.close()
                self._container = None
            self._tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        """Stop without producing the file."""
        if self._container is not None:
            self._container.close()
            self._container = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
