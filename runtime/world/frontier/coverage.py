"""Coverage: which views would show unseen space, judged from the scene itself.

Three records, all cheap to query and small to save:

* :class:`SkyDirections` -- unit directions already generated as sky. Sky is never
  splats, so a sky pixel has alpha 0 like a hole; a zero-alpha pixel whose ray
  direction is marked here counts as covered. Sky lies at infinity, so one
  direction map serves every position.
* :class:`ExploredMap` -- a 2D grid over ``(x, z)`` of cells that generated frames
  have seen (``GENERATED``) or players have walked (``VISITED``). It gates
  planning: a view is only tested when it reaches into cells nobody generated.
* :func:`probe_views` + :func:`uncovered_fractions` -- the views worth testing for
  a player (their view now and a second on, the view ahead along their velocity, a
  ring around them) and the fraction of each view's pixels that neither splats nor
  known sky cover; :func:`shown_hole_fractions` -- the same with the far field drawn
  behind the splats: the holes a player is actually shown.
"""

from __future__ import annotations

import base64
import math
import threading
import zlib
from dataclasses import dataclass

import numpy as np

from ..camera import Cameras, Pose, intrinsics_from_fov
from ..movement.motion import EYE_HEIGHT
from ..render.far_pass import SEE_THROUGH_FROM, shown_alpha
from ..sky import pixel_directions

UNKNOWN, GENERATED, VISITED = 0, 1, 2
"""Cell states reported by :class:`ExploredMap` (``VISITED`` wins over ``GENERATED``)."""

_GENERATED_BIT, _VISITED_BIT, _IMPORTED_BIT = 1, 2, 4


# --------------------------------------------------------------------------- sky
def octahedral_uv(directions: np.ndarray) -> np.ndarray:
    """``[..., 3]`` unit world directions -> ``[..., 2]`` octahedral coordinates in [-1, 1].

    The octahedron's pole is world up (``-y``): the upper hemisphere maps to the
    inner diamond ``|u| + |v| <= 1`` and the lower one is folded outside it. Cells
    of a square grid over ``(u, v)`` have nearly equal solid angles, unlike an
    equirectangular grid whose cells shrink to nothing at the zenith.
    """
    d = np.asarray(directions, np.float32)
    x, h, z = d[..., 0], -d[..., 1], d[..., 2]
    n = np.abs(x) + np.abs(h) + np.abs(z)
    n = np.where(n > 0, n, 1.0)
    u, v = x / n, z / n
    below = h < 0
    fu = (1.0 - np.abs(v)) * np.where(u >= 0, 1.0, -1.0)
    fv = (1.0 - np.abs(u)) * np.where(v >= 0, 1.0, -1.0)
    return np.stack([np.where(below, fu, u), np.where(below, fv, v)], axis=-1)


class SkyDirections:
    """A bitmap over unit directions marking those already generated as sky.

    Args:
        resolution: cells per side of the octahedral grid; 128 gives cells of
            about 1.6 degrees, finer than a 64 px wide coverage probe's pixels.
        min_elevation: directions more than this far below the horizon (radians)
            are never marked: a generator that leaves far ground empty must not
            make the ground count as sky everywhere.
    """

    def __init__(self, resolution: int = 128, min_elevation: float = math.radians(-3.0)) -> None:
        if resolution < 8 or resolution > 4096:
            raise ValueError(f"SkyDirections.resolution must be in [8, 4096], got {resolution}")
        self.resolution = resolution
        self.min_elevation = min_elevation
        self._bits = np.zeros((resolution, resolution), bool)
        self._lock = threading.Lock()
        self.version = 0

    def _cells(self, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        uv = octahedral_uv(directions)
        ij = np.clip(((uv + 1.0) * 0.5 * self.resolution).astype(np.int64), 0, self.resolution - 1)
        return ij[..., 0], ij[..., 1]

    def mark(self, directions: np.ndarray) -> int:
        """Mark ``[..., 3]`` unit directions as sky; returns how many cells were new."""
        d = np.asarray(directions, np.float32).reshape(-1, 3)
        d = d[np.isfinite(d).all(axis=1)]
        d = d[-d[:, 1] >= math.sin(self.min_elevation)]
        if d.size == 0:
            return 0
        i, j = self._cells(d)
        with self._lock:
            before = int(self._bits.sum())
            bits = self._bits.copy()  # readers keep the old array: no torn reads
            bits[i, j] = True
            added = int(bits.sum()) - before
            if added:
                self._bits = bits
                self.version += 1
        return added

    def mark_all_above(self, elevation: float = 0.0) -> None:
        """Mark every direction at least ``elevation`` radians above the horizon (imported scenes)."""
        r = self.resolution
        u, v = np.meshgrid((np.arange(r) + 0.5) / r * 2 - 1, (np.arange(r) + 0.5) / r * 2 - 1, indexing="ij")
        inner = np.abs(u) + np.abs(v) <= 1.0
        h = np.where(inner, 1.0 - np.abs(u) - np.abs(v), -(np.abs(u) + np.abs(v) - 1.0))
        d = np.stack([u, -h, v], axis=-1)
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        with self._lock:
            self._bits = self._bits | (-d[..., 1] >= math.sin(elevation))
            self.version += 1

    def contains(self, directions: np.ndarray) -> np.ndarray:
        """``[..., 3]`` directions -> ``[...]`` bool: already generated as sky."""
        i, j = self._cells(directions)
        return self._bits[i, j]

    @property
    def marked_fraction(self) -> float:
        return float(self._bits.mean())

    def to_state(self) -> dict:
        packed = np.packbits(self._bits.ravel())
        return {
            "resolution": self.resolution,
            "min_elevation": self.min_elevation,
            "bits": base64.b64encode(zlib.compress(packed.tobytes())).decode("ascii"),
        }

    @staticmethod
    def from_state(state: dict) -> "SkyDirections":
        sky = SkyDirections(int(state["resolution"]), float(state.get("min_elevation", math.radians(-3.0))))
        packed = np.frombuffer(zlib.decompress(base64.b64decode(state["bits"])), np.uint8)
        r = sky.resolution
        sky._bits = np.unpackbits(packed)[: r * r].astype(bool).reshape(r, r)
        sky.version = 1
        return sky


# --------------------------------------------------------------------------- explored cells
class ExploredMap:
    """A sparse 2D grid over ``(x, z)`` of cells generated or visited (for planning and minimaps).

    Args:
        cell_size: cell edge in metres. Cell ``(i, j)`` spans
            ``[i*cell, (i+1)*cell) x [j*cell, (j+1)*cell)`` in ``x`` and ``z``.
    """

    def __init__(self, cell_size: float = 4.0) -> None:
        if not cell_size > 0:
            raise ValueError(f"ExploredMap.cell_size must be > 0, got {cell_size}")
        self.cell_size = float(cell_size)
        self._cells: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()
        self.version = 0

    def cell_of(self, x: float, z: float) -> tuple[int, int]:
        return (math.floor(x / self.cell_size), math.floor(z / self.cell_size))

    def mark_generated_points(self, points: np.ndarray) -> list[tuple[int, int]]:
        """Mark the cells that ``[P, 3]`` world points fall in; returns cells newly generated."""
        p = np.asarray(points, np.float64).reshape(-1, 3)
        p = p[np.isfinite(p).all(axis=1)]
        if p.size == 0:
            return []
        ij = np.unique(np.floor(p[:, [0, 2]] / self.cell_size).astype(np.int64), axis=0)
        return self.mark_generated_cells([(int(i), int(j)) for i, j in ij])

    def mark_generated_cells(self, cells, imported: bool = False) -> list[tuple[int, int]]:
        """Mark ``(i, j)`` cells generated (and, with ``imported``, part of an imported
        scene); returns cells newly generated."""
        new = []
        bits = _GENERATED_BIT | (_IMPORTED_BIT if imported else 0)
        with self._lock:
            for c in cells:
                flags = self._cells.get(c, 0)
                if flags & bits != bits:
                    self._cells[c] = flags | bits
                    if not flags & _GENERATED_BIT:
                        new.append(c)
            if new or imported:
                self.version += 1
        return new

    def is_imported(self, x: float, z: float) -> bool:
        """Does ``(x, z)`` lie in a cell an imported scene covers (``World.import_gaussians``)?"""
        return bool(self._cells.get(self.cell_of(x, z), 0) & _IMPORTED_BIT)

    def mark_visited(self, x: float, z: float) -> bool:
        """Mark the cell under ``(x, z)`` visited; True if it was not before."""
        c = self.cell_of(x, z)
        with self._lock:
            flags = self._cells.get(c, 0)
            if flags & _VISITED_BIT:
                return False
            self._cells[c] = flags | _VISITED_BIT
            self.version += 1
        return True

    def state(self, cell: tuple[int, int]) -> int:
        flags = self._cells.get(cell, 0)
        return VISITED if flags & _VISITED_BIT else GENERATED if flags & _GENERATED_BIT else UNKNOWN

    def state_at(self, x: float, z: float) -> int:
        return self.state(self.cell_of(x, z))

    def is_generated(self, x: float, z: float) -> bool:
        return bool(self._cells.get(self.cell_of(x, z), 0) & _GENERATED_BIT)

    def generated_at(self, xz: np.ndarray) -> np.ndarray:
        """``[...]`` bool: does each ``[..., 2]`` point ``(x, z)`` (metres) lie in a generated cell?"""
        p = np.asarray(xz, np.float64)
        out = np.zeros(p.shape[:-1], bool)
        ok = np.isfinite(p).all(axis=-1)
        if not ok.any():
            return out
        ij = np.floor(p[ok] / self.cell_size).astype(np.int64)
        cells, inverse = np.unique(ij, axis=0, return_inverse=True)
        with self._lock:  # a few distinct cells per view: look each up once
            gen = np.array([bool(self._cells.get((int(i), int(j)), 0) & _GENERATED_BIT) for i, j in cells])
        out[ok] = gen[inverse.reshape(-1)]
        return out

    def reaches_unknown(self, position: np.ndarray, yaw: float, distances) -> bool:
        """Does any point ``position + d * heading(yaw)`` (d in ``distances``) lie in an ungenerated cell?"""
        x, z = float(position[0]), float(position[2])
        sx, cz = math.sin(yaw), math.cos(yaw)
        return any(not self.is_generated(x + d * sx, z + d * cz) for d in distances)

    def cells_in(self, bounds) -> list[tuple[int, int, int]]:
        """``(i, j, state)`` of known cells overlapping ``bounds = (x_min, z_min, x_max, z_max)``."""
        x0, z0, x1, z1 = (float(b) for b in bounds)
        i0, j0 = self.cell_of(x0, z0)
        i1, j1 = self.cell_of(x1, z1)
        with self._lock:
            items = list(self._cells.items())
        return sorted((i, j, self.state((i, j))) for (i, j), _ in items if i0 <= i <= i1 and j0 <= j <= j1)

    def __len__(self) -> int:
        return len(self._cells)

    def to_state(self) -> dict:
        with self._lock:
            cells = [[i, j, f] for (i, j), f in sorted(self._cells.items())]
        return {"cell_size": self.cell_size, "cells": cells}

    @staticmethod
    def from_state(state: dict) -> "ExploredMap":
        m = ExploredMap(float(state["cell_size"]))
        m._cells = {(int(i), int(j)): int(f) for i, j, f in state["cells"]}
        m.version = 1
        return m


# --------------------------------------------------------------------------- probes
@dataclass(frozen=True)
class ProbeView:
    """A view tested for coverage on behalf of a player.

    Attributes:
        player_id: who it is for.
        kind: ``"view"`` (the player's own view), ``"soon"`` (that view a second
            along the player's motion), ``"ahead"`` (the predicted position, facing the
            direction of motion) or ``"ring"`` (around the player, so turning is
            anticipated).
        position: ``[3]`` eye position (metres, world).
        yaw, pitch: radians (see :class:`~runtime.world.camera.Pose`).
        fov_y: vertical field of view (radians).
        rank: planning priority, lower first: the player's view (while it moves:
            ahead, then soon, then its view), then the ring by angle away from the view
            direction.
    """

    player_id: str
    kind: str
    position: np.ndarray
    yaw: float
    pitch: float
    fov_y: float
    rank: float

    def pose(self) -> Pose:
        return Pose(self.position, self.yaw, self.pitch)

    @property
    def forward(self) -> np.ndarray:
        cp = math.cos(self.pitch)
        return np.array([math.sin(self.yaw) * cp, -math.sin(self.pitch), math.cos(self.yaw) * cp])


MAX_AHEAD_PROBES = 4
"""At most this many ``ahead`` probes per player (each is rendered every update it moves)."""

SOON_S = 1.0
"""Seconds ahead of a moving player its ``soon`` probe stands: the view it will be shown
about when a fill job asked for now lands."""


def probe_views(
    player_id: str,
    pose: Pose,
    velocity: np.ndarray,
    fov_y: float,
    *,
    lookahead_s: float,
    keyframe_fov_y: float,
    ring_yaws: tuple[float, ...],
    min_speed: float = 0.2,
    ahead_step_m: float = 0.0,
) -> list[ProbeView]:
    """The views to test for one player.

    * ``view``: the player's current view (own FOV and pitch); ranked first while the
      player stands, after ``ahead`` and ``soon`` while it moves.
    * ``soon``: the same view where the player will be in :data:`SOON_S` (``position +
      velocity x SOON_S``): a hole it shows is one the player is about to see. Left out
      when the player moves slower than ``min_speed`` m/s.
    * ``ahead``: at ``position + velocity * lookahead_s``, facing the horizontal
      direction of motion, at keyframe FOV -- so space is generated before arrival.
      With ``ahead_step_m`` > 0, also at points along the way, about that many metres
      apart (at most :data:`MAX_AHEAD_PROBES` in all, evenly spaced), nearest ranked
      first: a keyframe far ahead does not see the ground between the player and it, so
      a fast player asked for far ahead gets the path filled in the order it walks it.
      Left out when the player moves slower than ``min_speed`` m/s.
    * ``ring``: at the current position, level, at the headings ``yaw + ring_yaws``
      and keyframe FOV -- so turning around is anticipated. With a 16:9 keyframe
      of 75 degrees vertical FOV (107 degrees horizontal), four headings 90 degrees
      apart see all around.
    """
    position = np.asarray(pose.position, np.float32)
    v = np.asarray(velocity, np.float32).reshape(3)
    speed = float(math.hypot(v[0], v[2]))
    moving = math.isfinite(speed) and speed >= min_speed
    # Ranked by when a job's chunk would be seen: a job takes about the lookahead to land,
    # so a moving player is by then where the ahead probe stands, not in today's view.
    probes = [ProbeView(player_id, "view", position, pose.yaw, pose.pitch, fov_y, 1.5 if moving else 0.0)]
    if moving:
        probes.append(ProbeView(player_id, "soon", position + v * SOON_S, pose.yaw, pose.pitch, fov_y, 1.4))
        reach = speed * lookahead_s
        n = 1 if ahead_step_m <= 0 else max(1, min(MAX_AHEAD_PROBES, math.ceil(reach / ahead_step_m - 1e-6)))
        heading = math.atan2(v[0], v[2])
        for k in range(1, n + 1):
            ahead = position + v * (lookahead_s * k / n)  # vertical speed too: walking uphill rises
            probes.append(ProbeView(player_id, "ahead", ahead, heading, 0.0, keyframe_fov_y, 1.0 + 0.1 * (k - 1) / n))
    for offset in ring_yaws:
        yaw = math.remainder(pose.yaw + offset, math.tau)
        probes.append(ProbeView(player_id, "ring", position, yaw, 0.0, keyframe_fov_y, 2.0 + abs(math.remainder(offset, math.tau)) / math.pi))
    return probes


def probe_cameras(probes: list[ProbeView], width: int, height: int) -> Cameras:
    """One low-resolution camera per probe (square pixels, each probe's own FOV)."""
    w2c = np.stack([p.pose().w2c for p in probes])
    K = np.stack([intrinsics_from_fov(width, height, p.fov_y) for p in probes])
    return Cameras(w2c, K, width, height)


def uncovered_fractions(
    alpha: np.ndarray,
    cameras: Cameras,
    sky: SkyDirections,
    empty_below: float = 0.5,
    near_m: float | None = None,
    eye_height: float = EYE_HEIGHT,
) -> np.ndarray:
    """``[N]`` fraction of each view's pixels that show neither splats nor known sky.

    Args:
        alpha: ``[N, H, W]`` rendered splat opacity for ``cameras``.
        cameras: the ``N`` views, ``H`` x ``W`` pixels.
        sky: directions already generated as sky.
        empty_below: a pixel with alpha below this is empty (matches reconstruction's
            fill threshold, so what reconstruction fills counts as covered).
        near_m: count only pixels whose ray would meet level ground ``eye_height`` metres
            below the camera within ``near_m`` metres (horizontally): the holes near a
            player, not the far field at the horizon. None counts every pixel. The
            fraction is of all pixels either way.
    """
    empty = np.asarray(alpha) < empty_below
    if empty.any():
        directions = pixel_directions(cameras)
        empty &= ~sky.contains(directions)
        if near_m is not None:
            down, across = directions[..., 1], np.hypot(directions[..., 0], directions[..., 2])
            empty &= down * near_m >= eye_height * across  # +y is down
    return empty.reshape(len(cameras), -1).mean(axis=1)


def shown_hole_fractions(
    alpha: np.ndarray,
    far_alpha: np.ndarray,
    cameras: Cameras,
    sky: SkyDirections,
    explored: ExploredMap | None = None,
    eye_height: float = EYE_HEIGHT,
    see_through_from: float | None = SEE_THROUGH_FROM,
) -> np.ndarray:
    """``[N]`` fraction of each view's pixels that show the player a hole: the scene's
    opacity ``alpha`` ``[N, H, W]`` with the far field's ``far_alpha`` laid behind it as the
    renderer lays it (:func:`..render.far_pass.shown_alpha`, ``see_through_from``: the
    renderer's ``far_see_through_from``) below half, where no sky was generated. Distant
    terrain the far field shows is no hole; every pixel counts, near or far.

    With ``explored``, for a camera standing in an imported scene's cell, an empty pixel
    looking down whose ray would meet level ground ``eye_height`` metres below the camera
    in a cell nobody generated is left out: the imported scene's edge seen from inside it
    is no hole to generate into (the frontier extends it where players leave its borders).
    Empty pixels at or above the horizon, and every pixel of other cameras, count."""
    shown = shown_alpha(alpha, far_alpha, see_through_from)
    if explored is None:
        return uncovered_fractions(shown, cameras, sky)
    empty = shown < 0.5
    centers = np.asarray(cameras.centers, np.float64)
    inside = np.array([explored.is_imported(float(c[0]), float(c[2])) for c in centers], bool)
    if empty.any():
        directions = pixel_directions(cameras)
        empty &= ~sky.contains(directions)
        down = np.where(inside[:, None, None], directions[..., 1], 0.0)  # +y is down; 0: not left out
        t = np.where(down > 1e-6, eye_height / np.maximum(down, 1e-6), np.nan)  # metres along the ray
        ground = centers[:, None, None, [0, 2]] + t[..., None] * directions[..., [0, 2]]  # nan at or above the horizon
        empty &= ~(np.isfinite(t) & ~explored.generated_at(ground))
    return empty.reshape(len(cameras), -1).mean(axis=1)
