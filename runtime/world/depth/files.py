"""Depth maps that come with a start image: 16-bit PNG in millimetres, or ``.npy`` in metres."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np

from ..formats.media import image_header_size

from ..formats.npy import NpyError, read_npy

MAX_DEPTH_PIXELS = 4096 * 4096


class DepthMapError(ValueError):
    """A depth map that cannot be used; the message names the source and the problem."""


def read_depth_map(path: str | Path) -> np.ndarray:
    """``[H, W]`` float32 z-depth in metres (``inf`` = sky/unknown) from a file.

    * ``.npy``: float metres; NaN, ``inf`` and values <= 0 mean sky.
    * anything else: a 16-bit greyscale PNG in millimetres; 0 means sky.
    """
    path = Path(path)
    if not path.is_file():
        raise DepthMapError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        try:
            with open(path, "rb") as f:
                data = read_npy(f, MAX_DEPTH_PIXELS)  # header checked first: np.load would trust its shape
        except NpyError as e:
            raise DepthMapError(f"{path}: depth array {e}") from None
        except OSError as e:
            raise DepthMapError(f"{path}: not a readable .npy file ({e})") from None
        return _metres(data, str(path))
    return decode_depth_png(path.read_bytes(), str(path))


def decode_depth_png(data: bytes, source: str = "depth") -> np.ndarray:
    """A 16-bit greyscale PNG in millimetres (0 = sky) -> ``[H, W]`` float32 metres."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise DepthMapError(f"{source}: a depth image must be a 16-bit greyscale PNG in millimetres (or .npy in metres)")
    size = image_header_size(data)  # checked before decoding: a small file may unpack to gigabytes
    if size is None:
        raise DepthMapError(f"{source}: not a readable PNG (its header is damaged or missing)")
    if size[0] * size[1] > MAX_DEPTH_PIXELS:
        raise DepthMapError(f"{source}: depth map is {size[0]}x{size[1]}, at most {MAX_DEPTH_PIXELS} pixels")
    try:
        with av.open(io.BytesIO(data), format="png_pipe") as container:
            frame = next(container.decode(video=0))
            if frame.format.name not in ("gray16be", "gray16le"):
                raise DepthMapError(f"{source}: depth PNG must be 16-bit greyscale (millimetres), got {frame.format.name}")
            mm = frame.to_ndarray(format="gray16le")
    except DepthMapError:
        raise
    except Exception as e:
        raise DepthMapError(f"{source}: not a readable PNG ({e})") from None
    metres = mm.astype(np.float32) / 1000.0
    metres[mm == 0] = np.inf
    return metres


def _metres(data: np.ndarray, source: str) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 2 or data.dtype.kind not in "fiu":
        raise DepthMapError(f"{source}: depth must be an [H, W] array of numbers, got {data.shape} {data.dtype}")
    if data.size > MAX_DEPTH_PIXELS:
        raise DepthMapError(f"{source}: depth map is {data.shape[1]}x{data.shape[0]}, at most {MAX_DEPTH_PIXELS} pixels")
    depth = data.astype(np.float32)
    depth[~np.isfinite(depth) | (depth <= 0)] = np.inf
    return depth


def resize_depth(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    """``[H, W]`` depth resampled to ``height x width`` by nearest neighbour (no blended edges)."""
    H, W = depth.shape
    if (W, H) == (width, height):
        return depth.astype(np.float32, copy=True)
    rows = np.minimum(((np.arange(height) + 0.5) * H / height).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * W / width).astype(np.int64), W - 1)
    return np.ascontiguousarray(depth[rows][:, cols], np.float32)
