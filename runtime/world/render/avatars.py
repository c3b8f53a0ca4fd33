"""Other players drawn into a streamed picture: a body, a head and a name tag.

Avatars are composited straight into the I420 picture after the scene is rendered, so
the renderer (CPU or GPU) is untouched and the cost is a few small numpy fills per
visible player. Each avatar is a flat, camera-facing figure (a real 3D model would
need the renderer); it shrinks with distance like the scene around it, and its
name tag keeps a fixed pixel size so it stays readable.

There is no depth test: the video path carries no depth, so an avatar behind a wall
shows through it (like a name tag in most games). Avatars are painted far to near, so
a nearer player covers a farther one.

This module knows nothing of players or networking: callers pass plain
:class:`Avatar` data (world coordinates, metres, radians; world +y points down).
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass
from typing import Sequence

import numba
import numpy as np

from .i420 import RGB_TO_YUV, YUV_OFFSET

HEAD_RADIUS = 0.14  # m
BODY_HALF_WIDTH = 0.22  # m, at the shoulders
SHOULDER_DROP = 0.22  # m below the eyes
EYE_HEIGHT = 1.7  # m, eyes above the feet (as walking keeps them)
NEAR = 0.25  # m: closer than this (in front of the camera) nothing is drawn
LABEL_MAX_DISTANCE = 40.0  # m: farther avatars get no name tag
MAX_LABEL_CHARS = 16
OUTLINE = 0.35  # outline colour = body colour times this

# 5x7 glyphs: seven rows of five bits each (bit 4 = leftmost column). Lower case is drawn
# as upper case; anything else as '?'.
_GLYPH_ROWS = {
    "A": "0e11111f111111", "B": "1e11111e11111e", "C": "0e11101010110e", "D": "1e11111111111e",
    "E": "1f10101e10101f", "F": "1f10101e101010", "G": "0e11101711110f", "H": "1111111f111111",
    "I": "0e04040404040e", "J": "0702020202120c", "K": "11121418141211", "L": "1010101010101f",
    "M": "111b1515111111", "N": "11111915131111", "O": "0e11111111110e", "P": "1e11111e101010",
    "Q": "0e11111115120d", "R": "1e11111e141211", "S": "0f10100e01011e", "T": "1f040404040404",
    "U": "1111111111110e", "V": "11111111110a04", "W": "1111111515150a",
    "X": "11110a040a1111", "Y": "11110a04040404", "Z": "1f01020408101f", "0": "0e11131519110e",
    "1": "040c040404040e", "2": "0e11010204081f", "3": "1f02040201110e", "4": "02060a121f0202",
    "5": "1f101e0101110e", "6": "0608101e11110e", "7": "1f010204080808", "8": "0e11110e11110e",
    "9": "0e11110f01020c", "-": "0000001f000000", "_": "0000000000001f", ".": "00000000000c0c",
    " ": "00000000000000", "?": "0e110102040004", "!": "04040404040004", "'": "04040800000000",
}
GLYPH_W, GLYPH_H = 5, 7


def _glyph(rows_hex: str) -> np.ndarray:
    rows = [int(rows_hex[i : i + 2], 16) for i in range(0, 2 * GLYPH_H, 2)]
    return np.array([[(r >> (GLYPH_W - 1 - c)) & 1 for c in range(GLYPH_W)] for r in rows], bool)


_GLYPHS = {ch: _glyph(rows) for ch, rows in _GLYPH_ROWS.items()}


@dataclass(frozen=True)
class Avatar:
    """One player as others see it.

    Attributes:
        position: ``[3]`` the player's eye position in world coordinates (metres).
        yaw: radians about world up; 0 faces world +z (as :class:`~runtime.world.camera.Pose`).
        name: shown above the head (at most :data:`MAX_LABEL_CHARS` characters are drawn).
        color: ``(r, g, b)`` 0-255 body colour; :func:`avatar_color` gives each id its own.
    """

    position: tuple[float, float, float]
    yaw: float
    name: str
    color: tuple[int, int, int]


def avatar_color(key: str) -> tuple[int, int, int]:
    """A saturated colour chosen by ``key`` (a player id): stable across runs and processes."""
    hue = (zlib.crc32(key.encode()) % 360) / 60.0
    x = 1.0 - abs(hue % 2.0 - 1.0)
    r, g, b = [(1, x, 0), (x, 1, 0), (0, 1, x), (0, x, 1), (x, 0, 1), (1, 0, x)][int(hue) % 6]
    return (int(40 + 200 * r), int(40 + 200 * g), int(40 + 200 * b))


def label_text(name: str) -> str:
    """What the name tag shows: upper case, unknown characters as '?', at most
    :data:`MAX_LABEL_CHARS` characters ('.' marks a cut)."""
    text = "".join(ch if ch in _GLYPHS else "?" for ch in name.upper())
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "."


def _yuv(rgb: Sequence[float]) -> tuple[int, int, int]:
    return _yuv_of(tuple(int(round(float(c))) for c in rgb))


@functools.lru_cache(maxsize=1024)
def _yuv_of(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    yuv = np.clip(np.round(RGB_TO_YUV @ np.asarray(rgb, np.float32) + YUV_OFFSET), 0, 255)
    return (int(yuv[0]), int(yuv[1]), int(yuv[2]))


@functools.lru_cache(maxsize=1024)
def _text_bitmap(text: str, scale: int) -> np.ndarray:
    """``text`` in the 5x7 font, one pixel between letters, scaled: ``[7*scale, ...]`` bool."""
    glyphs = np.zeros((GLYPH_H, len(text) * (GLYPH_W + 1)), bool)
    for i, ch in enumerate(text):
        glyphs[:, i * (GLYPH_W + 1) : i * (GLYPH_W + 1) + GLYPH_W] = _GLYPHS[ch]
    return glyphs.repeat(scale, 0).repeat(scale, 1)


class _Canvas:
    """Fills of boolean masks into one I420 picture ``[H*W*3/2]`` (layout: :mod:`.video`)."""

    def __init__(self, i420: np.ndarray, width: int, height: int) -> None:
        luma, chroma = width * height, (width // 2) * (height // 2)
        self.y = i420[:luma].reshape(height, width)
        self.u = i420[luma : luma + chroma].reshape(height // 2, width // 2)
        self.v = i420[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2)
        self.width, self.height = width, height

    def box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int] | None:
        """The even-aligned integer box covering ``[x0, x1) x [y0, y1)``, clipped; None when empty."""
        ix0 = max(int(np.floor(x0)) & ~1, 0)
        iy0 = max(int(np.floor(y0)) & ~1, 0)
        ix1 = min(int(np.ceil(x1)), self.width)
        iy1 = min(int(np.ceil(y1)), self.height)
        if ix1 <= ix0 or iy1 <= iy0:
            return None
        return ix0, iy0, ix1 + (ix1 & 1), iy1 + (iy1 & 1)

    def fill(self, box: tuple[int, int, int, int], mask: np.ndarray, yuv: tuple[int, int, int]) -> None:
        """Paint ``yuv`` where ``mask`` (``[y1-y0, x1-x0]`` bool over ``box``) is set; a chroma
        sample takes the colour when the top-left pixel of its 2x2 block is covered."""
        x0, y0, x1, y1 = box
        self.y[y0:y1, x0:x1][mask] = yuv[0]
        half = mask[0::2, 0::2]
        self.u[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2][half] = yuv[1]
        self.v[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2][half] = yuv[2]



# Shapes are filled a row span at a time in numba: a near avatar covers a large part of the
# picture, and boolean masks over its box cost ~20x more in numpy. A pixel is covered when
# its centre is; a chroma sample takes the colour when the top-left pixel of its 2x2 is.


@numba.njit(cache=True, nogil=True)
def _span(yp, up, vp, row, x0, x1, Y, U, V):
    """Pixels of ``row`` whose centres lie in ``[x0, x1]``."""
    w = yp.shape[1]
    c0 = max(int(math.ceil(x0 - 0.5)), 0)
    c1 = min(int(math.floor(x1 - 0.5)), w - 1)
    for c in range(c0, c1 + 1):
        yp[row, c] = Y
    if row % 2 == 0:
        for c in range(c0 + (c0 & 1), c1 + 1, 2):
            up[row // 2, c // 2] = U
            vp[row // 2, c // 2] = V


@numba.njit(cache=True, nogil=True)
def _fill_disc(yp, up, vp, cx, cy, r, Y, U, V):
    h = yp.shape[0]
    for row in range(max(int(math.floor(cy - r)), 0), min(int(math.ceil(cy + r)), h - 1) + 1):
        dy = row + 0.5 - cy
        if dy * dy <= r * r:
            half = math.sqrt(r * r - dy * dy)
            _span(yp, up, vp, row, cx - half, cx + half, Y, U, V)


@numba.njit(cache=True, nogil=True)
def _fill_trapezoid(yp, up, vp, tx, ty, tw, bx, by, bw, Y, U, V):
    h = yp.shape[0]
    for row in range(max(int(math.floor(ty)), 0), min(int(math.ceil(by)), h - 1) + 1):
        yc = row + 0.5
        if yc < ty or yc > by:
            continue
        t = (yc - ty) / (by - ty)
        cx, hw = tx + t * (bx - tx), tw + t * (bw - tw)
        _span(yp, up, vp, row, cx - hw, cx + hw, Y, U, V)


def _disc(canvas: _Canvas, cx: float, cy: float, r: float, yuv: tuple[int, int, int]) -> None:
    _fill_disc(canvas.y, canvas.u, canvas.v, float(cx), float(cy), float(r), *yuv)


def _trapezoid(canvas: _Canvas, top: tuple[float, float, float], bottom: tuple[float, float, float], yuv: tuple[int, int, int]) -> None:
    """A horizontal-edged trapezoid from ``top = (cx, y, half_width)`` to ``bottom`` (pixels)."""
    (tx, ty, tw), (bx, by, bw) = top, bottom
    if by > ty:
        _fill_trapezoid(canvas.y, canvas.u, canvas.v, *(float(v) for v in (tx, ty, tw, bx, by, bw)), *yuv)


def _label(canvas: _Canvas, text: str, cx: float, bottom: float, scale: int) -> None:
    """``text`` in white on a dark tag, centred on ``cx`` with its lower edge at ``bottom``."""
    pad = scale
    w, h = _label_size(text, scale)
    x0, y0 = int(round(cx - w / 2)) & ~1, int(round(bottom - h)) & ~1
    box = canvas.box(x0, y0, x0 + w, y0 + h)
    if box is None:
        return
    canvas.fill(box, np.ones((box[3] - box[1], box[2] - box[0]), bool), _yuv((20, 20, 24)))
    glyphs = _text_bitmap(text, scale)
    # Text pixels only (luma): chroma of white on the dark tag is neutral already.
    gx0, gy0 = x0 + pad, y0 + pad
    sx0, sy0 = max(gx0, 0), max(gy0, 0)
    sx1, sy1 = min(gx0 + glyphs.shape[1], canvas.width), min(gy0 + glyphs.shape[0], canvas.height)
    if sx1 > sx0 and sy1 > sy0:
        region = canvas.y[sy0:sy1, sx0:sx1]
        region[glyphs[sy0 - gy0 : sy1 - gy0, sx0 - gx0 : sx1 - gx0]] = 235


@dataclass(frozen=True)
class _Placed:
    """One avatar projected into a camera: pixel positions of its head centre ``(hu, hv)``,
    shoulders and feet, head radius ``r``, half widths at the shoulders and feet, outline
    width, and its depth (metres along the view)."""

    avatar: Avatar
    eye: np.ndarray
    depth: float
    hu: float
    hv: float
    su: float
    sv: float
    fu: float
    fv: float
    r: float
    sw: float
    fw: float
    edge: float


def _place(avatar: Avatar, w2c: np.ndarray, K: np.ndarray) -> _Placed | None:
    """``avatar`` in the camera ``(w2c [4, 4], K [3, 3])``; None when not in front of it."""
    fx, fy, cx0, cy0 = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    eye = np.asarray(avatar.position, np.float64)
    head = w2c[:3, :3] @ eye + w2c[:3, 3]
    feet = w2c[:3, :3] @ (eye + (0.0, EYE_HEIGHT, 0.0)) + w2c[:3, 3]
    if head[2] < NEAR or feet[2] < NEAR:
        return None
    shoulder = w2c[:3, :3] @ (eye + (0.0, SHOULDER_DROP, 0.0)) + w2c[:3, 3]
    r = fx * HEAD_RADIUS / head[2]
    return _Placed(
        avatar, eye, float(head[2]),
        fx * head[0] / head[2] + cx0, fy * head[1] / head[2] + cy0,
        fx * shoulder[0] / shoulder[2] + cx0, fy * shoulder[1] / shoulder[2] + cy0,
        fx * feet[0] / feet[2] + cx0, fy * feet[1] / feet[2] + cy0,
        r, fx * BODY_HALF_WIDTH / shoulder[2], fx * 0.6 * BODY_HALF_WIDTH / feet[2], max(1.0, r * 0.15),
    )


def _label_size(text: str, scale: int) -> tuple[int, int]:
    """Width and height (pixels) of a name tag showing ``text``."""
    return len(text) * (GLYPH_W + 1) * scale + scale, GLYPH_H * scale + 2 * scale


def _touches(p: _Placed, width: int, height: int, scale: int) -> bool:
    """Whether anything of avatar ``p`` (body, head, name tag) can fall inside the picture:
    a box around all of it, a few pixels generous."""
    label_w, label_h = _label_size(label_text(p.avatar.name), scale) if p.depth <= LABEL_MAX_DISTANCE else (0, 0)
    half = max(p.sw, p.fw, p.r, label_w / 2) + p.edge + 2
    x0, x1 = min(p.hu, p.su, p.fu) - half, max(p.hu, p.su, p.fu) + half
    y0 = p.hv - p.r - p.edge - 2 * scale - label_h - 2
    y1 = p.fv + p.edge + 2
    return x1 >= 0 and x0 <= width and y1 >= 0 and y0 <= height


def visible_avatars(width: int, height: int, w2c: np.ndarray, K: np.ndarray, avatars: Sequence[Avatar]) -> list[Avatar]:
    """The ``avatars`` :func:`draw_avatars` would draw any pixel of in this camera's picture
    (same arguments): what a cached picture of the scene needs drawn on it, and so what it
    changes with."""
    w2c = np.asarray(w2c, np.float64)
    scale = max(1, height // 240)
    placed = (_place(a, w2c, K) for a in avatars)
    return [p.avatar for p in placed if p is not None and _touches(p, width, height, scale)]


def draw_avatars(i420: np.ndarray, width: int, height: int, w2c: np.ndarray, K: np.ndarray, avatars: Sequence[Avatar]) -> int:
    """Draw ``avatars`` seen by one camera into its I420 picture, in place.

    Args:
        i420: ``[H*W*3/2]`` uint8, one picture (layout: :mod:`.video`); written in place.
        width, height: the picture's size in pixels (even).
        w2c: ``[4, 4]`` the camera's world-to-camera matrix (OpenCV).
        K: ``[3, 3]`` its intrinsics in pixels.
        avatars: the players to draw (the viewer's own avatar must not be among them).
    Returns:
        How many avatars were in front of the camera and drawn (possibly off-screen parts clipped).
    """
    if not avatars:
        return 0
    canvas = _Canvas(i420, width, height)
    w2c = np.asarray(w2c, np.float64)
    fx, fy, cx0, cy0 = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    scale = max(1, height // 240)
    placed = [p for p in (_place(a, w2c, K) for a in avatars) if p is not None]
    placed.sort(key=lambda p: -p.depth)  # far to near
    for p in placed:
        avatar, edge, r = p.avatar, p.edge, p.r
        body, rim = _yuv(avatar.color), _yuv(np.asarray(avatar.color) * OUTLINE)
        _trapezoid(canvas, (p.su, p.sv - edge, p.sw + edge), (p.fu, p.fv + edge, p.fw + edge), rim)
        _trapezoid(canvas, (p.su, p.sv, p.sw), (p.fu, p.fv, p.fw), body)
        _disc(canvas, p.hu, p.hv, r + edge, rim)
        _disc(canvas, p.hu, p.hv, r, _yuv((235, 205, 180)))
        # A dark "visor" on the side the player faces (world +z at yaw 0, +x at yaw pi/2).
        ahead = p.eye + HEAD_RADIUS * 0.8 * np.array([np.sin(avatar.yaw), 0.0, np.cos(avatar.yaw)])
        front = w2c[:3, :3] @ ahead + w2c[:3, 3]
        if front[2] < p.depth and front[2] > NEAR:
            _disc(canvas, fx * front[0] / front[2] + cx0, fy * front[1] / front[2] + cy0, r * 0.45, _yuv((30, 30, 40)))
        if p.depth <= LABEL_MAX_DISTANCE:
            _label(canvas, label_text(avatar.name), p.hu, p.hv - r - edge - 2 * scale, scale)
    return len(placed)
