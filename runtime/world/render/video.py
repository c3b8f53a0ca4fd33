"""Frames for streaming: I420 (yuv420p) pictures in host memory, nothing else.

A video stream needs neither depth nor alpha, and its encoder wants yuv420p, so
:func:`render_video` asks a renderer for exactly that. A renderer may implement
``render_video`` / ``submit_video`` itself (gsplat: sky, compositing and colour
conversion on the GPU, copies into pinned memory on a side stream); any other renderer
gets the default here: ``render()`` then RGB -> I420 on the CPU.

Colour conversion is BT.601 limited range, as libswscale does it for rgb24 -> yuv420p
(PyAV's ``reformat``): luma ``16 + (65.481 R + 128.553 G + 24.966 B) / 255``; chroma from
the average of a horizontal pixel pair, then a vertical [1, 3, 3, 1] / 8 filter over rows
``2j-1 .. 2j+2`` (edge rows repeated). Measured against swscale on noise: at most 1 code
value apart, on 0.6% (Y) and ~7% (U, V) of samples.

Layout of one picture (``I420``): ``H*W`` luma bytes, then ``H/2 * W/2`` U, then as many
V, row-major, no padding. ``I420.reshape(H * 3 // 2, W)`` is what
``av.VideoFrame.from_ndarray(..., format="yuv420p")`` takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import numpy as np

from ..camera import Cameras
from ..scene import SceneSnapshot
from ..sky import Sky
from .i420 import CHROMA_ROW_TAPS, RGB_TO_YUV, YUV_OFFSET, i420_size

@dataclass(frozen=True)
class VideoFrames:
    """What :func:`render_video` returns for ``N`` cameras of ``H`` x ``W`` pixels.

    Attributes:
        i420: ``[N, H*W*3/2]`` uint8, one I420 picture per camera (layout: module doc).
            May be a view of pinned memory; it stays valid as long as it is referenced.
            A camera's row is left unwritten where its picture went to a caller's buffer.
        width, height: picture size in pixels (even).
        scene_version: the snapshot version that was drawn.
        written: per camera, the caller's buffer (``into`` of :func:`submit_video`) that
            holds its picture instead of ``i420``, or None; all None when omitted.
    """

    i420: np.ndarray
    width: int
    height: int
    scene_version: int
    written: Optional[Sequence[Optional[np.ndarray]]] = None

    def __len__(self) -> int:
        return int(self.i420.shape[0])

    def picture(self, index: int) -> np.ndarray:
        """Camera ``index``'s picture ``[H*W*3/2]``: its caller's buffer, or its ``i420`` row."""
        if self.written is not None and self.written[index] is not None:
            return self.written[index]
        return self.i420[index]

    def planes(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(Y [H,W], U [H/2,W/2], V [H/2,W/2])`` views of camera ``index``'s picture."""
        return split_planes(self.picture(index), self.width, self.height)

    def side_by_side(self, start: int, count: int) -> np.ndarray:
        """Cameras ``start .. start+count-1`` stitched left to right (VR eyes): one I420
        picture ``[H * count*W * 3/2]``; a single camera is returned as it is (no copy)."""
        if count == 1:
            return self.picture(start)
        return stitch_i420([self.picture(start + k) for k in range(count)], self.width, self.height)


def split_planes(i420: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views ``(Y [H,W], U [H/2,W/2], V [H/2,W/2])`` of one flat I420 picture."""
    luma, chroma = width * height, (width // 2) * (height // 2)
    y = i420[:luma].reshape(height, width)
    u = i420[luma : luma + chroma].reshape(height // 2, width // 2)
    v = i420[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2)
    return y, u, v


def stitch_i420(pictures: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """Equal-size I420 pictures placed left to right: one ``[H * k*W * 3/2]`` picture.

    Every plane is concatenated along its rows, so this equals converting the
    side-by-side RGB image (the chroma filter is per column pair, and W is even).
    """
    k = len(pictures)
    out = np.empty(i420_size(width * k, height), np.uint8)
    out_planes = split_planes(out, width * k, height)
    parts = [split_planes(p, width, height) for p in pictures]
    for plane in range(3):
        np.concatenate([p[plane] for p in parts], axis=1, out=out_planes[plane])
    return out


def rgb_to_i420_reference(rgb: np.ndarray) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 RGB -> ``[N, H*W*3/2]`` uint8 I420, in numpy (slow, exact spec).

    The specification the fast paths (numba, GPU) are tested against.
    """
    n, h, w, _ = rgb.shape
    if h % 2 or w % 2:
        raise ValueError(f"rgb_to_i420: size must be even, got {w}x{h}")
    x = rgb.astype(np.float32)
    yuv = x @ RGB_TO_YUV.T  # [N,H,W,3], offsets not yet added
    out = np.empty((n, i420_size(w, h)), np.uint8)
    pair = 0.5 * (yuv[:, :, 0::2, 1:] + yuv[:, :, 1::2, 1:])  # [N,H,W/2,2] horizontal pair average
    rows = np.arange(h // 2) * 2
    chroma = sum(tap * pair[:, np.clip(rows + dy, 0, h - 1)] for tap, dy in zip(CHROMA_ROW_TAPS, (-1, 0, 1, 2)))
    for i in range(n):
        y_plane, u_plane, v_plane = split_planes(out[i], w, h)
        y_plane[:] = _quantise(yuv[i, ..., 0] + YUV_OFFSET[0])
        u_plane[:] = _quantise(chroma[i, ..., 0] + YUV_OFFSET[1])
        v_plane[:] = _quantise(chroma[i, ..., 1] + YUV_OFFSET[2])
    return out


def _quantise(x: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def rgb_to_i420(rgb: np.ndarray) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 RGB -> ``[N, H*W*3/2]`` uint8 I420: numba (all cores) when
    it imports, else the numpy reference. Same numbers either way (± float rounding)."""
    try:
        from .i420_cpu import rgb_to_i420_numba
    except ImportError:  # machines without numba (some GPU images)
        return rgb_to_i420_reference(rgb)
    return rgb_to_i420_numba(rgb)


class PendingVideoFrames(Protocol):
    """Frames whose rendering (and copy to the host) may still be running."""

    def wait(self) -> VideoFrames: ...


class DoneVideoFrames:
    """A :class:`PendingVideoFrames` that is already complete."""

    def __init__(self, frames: VideoFrames) -> None:
        self._frames = frames

    def wait(self) -> VideoFrames:
        return self._frames


def gather_video_frames(parts: Sequence[tuple[np.ndarray, VideoFrames]], count: int) -> VideoFrames:
    """One :class:`VideoFrames` for ``count`` cameras from frames rendered for subsets of them.

    ``parts`` are ``(index, frames)`` pairs: ``index`` ``[n]`` int names the cameras (positions
    in the full batch) of ``frames``' ``n`` pictures, in order; together the indices name every
    camera once. Pictures are copied out (a part may be a view of reused pinned memory),
    except those in callers' buffers (``written``), which stay there.
    """
    if not parts:
        raise ValueError("gather_video_frames: parts must not be empty")
    first = parts[0][1]
    size = i420_size(first.width, first.height)
    i420 = np.empty((count, size), np.uint8)
    written: list[np.ndarray | None] = [None] * count
    filled = np.zeros(count, np.int32)
    for index, frames in parts:
        index = np.asarray(index, np.int64)
        if (frames.width, frames.height) != (first.width, first.height) or len(frames) != len(index):
            raise ValueError(
                f"gather_video_frames: part of {len(frames)} {frames.width}x{frames.height} pictures for "
                f"{len(index)} cameras of {first.width}x{first.height}"
            )
        i420[index] = frames.i420
        if frames.written is not None:
            for k, buffer in zip(index, frames.written):
                written[k] = buffer
        np.add.at(filled, index, 1)
    if not (filled == 1).all():
        raise ValueError(f"gather_video_frames: indices must name each of the {count} cameras once")
    return VideoFrames(i420, first.width, first.height, first.scene_version, written if any(w is not None for w in written) else None)


class GatheredVideoFrames:
    """A :class:`PendingVideoFrames` made of several pending parts (see :func:`gather_video_frames`).

    The parts run concurrently (each may have queued GPU work); ``wait()`` waits on each
    in turn and puts their pictures in camera order.
    """

    def __init__(self, parts: Sequence[tuple[np.ndarray, PendingVideoFrames]], count: int) -> None:
        self._parts = list(parts)
        self._count = count
        self._result: VideoFrames | None = None

    def wait(self) -> VideoFrames:
        if self._result is None:
            self._result = gather_video_frames([(index, part.wait()) for index, part in self._parts], self._count)
            self._parts = []
        return self._result


def render_video_via_rgb(renderer, snapshot: SceneSnapshot, cameras: Cameras, sky: Sky) -> VideoFrames:
    """The default ``render_video`` for any renderer: ``render()``'s RGB converted on the CPU."""
    out = renderer.render(snapshot, cameras, sky)
    return VideoFrames(rgb_to_i420(out.rgb), cameras.width, cameras.height, out.scene_version)


def render_video(renderer, snapshot: SceneSnapshot, cameras: Cameras, sky: Sky) -> VideoFrames:
    """I420 pictures of ``snapshot`` from every camera, in host memory (blocking)."""
    own = getattr(renderer, "render_video", None)
    if own is not None:
        return own(snapshot, cameras, sky)
    return render_video_via_rgb(renderer, snapshot, cameras, sky)


def check_into(into: Sequence[np.ndarray | None] | None, cameras: Cameras) -> list[np.ndarray | None] | None:
    """``into`` as a list, checked: one entry per camera, each None or a C-contiguous
    ``[H*W*3/2]`` uint8 array; None when no camera has a buffer."""
    if into is None:
        return None
    into = list(into)
    size = i420_size(cameras.width, cameras.height)
    if len(into) != len(cameras):
        raise ValueError(f"submit_video: into has {len(into)} entries for {len(cameras)} cameras")
    for i, buffer in enumerate(into):
        if buffer is not None and (buffer.dtype != np.uint8 or buffer.shape != (size,) or not buffer.flags.c_contiguous):
            raise ValueError(f"submit_video: into[{i}] must be a contiguous [{size}] uint8 array, got {buffer.dtype} {buffer.shape}")
    return into if any(b is not None for b in into) else None


def submit_video(
    renderer, snapshot: SceneSnapshot, cameras: Cameras, sky: Sky, into: Sequence[np.ndarray | None] | None = None
) -> PendingVideoFrames:
    """Start rendering I420 pictures; ``.wait()`` returns them.

    Renderers with their own ``submit_video`` (gsplat) return at once with GPU work and
    the copy to the host queued, so a caller can queue the next batch before waiting:
    the copy of one batch then overlaps the rendering of the next. Others render here.

    Args:
        into: per camera, a ``[H*W*3/2]`` uint8 host buffer its picture goes to instead
            of the batch's buffer (``VideoFrames.written``), or None. The GPU renderer
            copies straight from device memory into it: page-locked buffers (see
            ``GsplatRenderer.pin_host_memory``) make that a DMA that costs no CPU.
            A buffer must not be read or freed before ``wait()`` returns.
    """
    into = check_into(into, cameras)
    own = getattr(renderer, "submit_video", None)
    if own is not None:
        return own(snapshot, cameras, sky, into) if into is not None else own(snapshot, cameras, sky)
    frames = render_video(renderer, snapshot, cameras, sky)
    if into is not None:
        for buffer, picture in zip(into, frames.i420):
            if buffer is not None:
                np.copyto(buffer, picture)
        frames = VideoFrames(frames.i420, frames.width, frames.height, frames.scene_version, into)
    return DoneVideoFrames(frames)
