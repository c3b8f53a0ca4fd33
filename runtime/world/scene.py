"""The world's Gaussian scene: immutable chunks, appended atomically, read as snapshots.

Renderers never see a half-appended chunk: :meth:`Scene.snapshot` returns a
:class:`SceneSnapshot` (a version number and a tuple of chunks) that stays valid
however many chunks land afterwards. Appending copies no Gaussians: it builds a
new tuple of references.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .camera import Cameras
from .gaussians import Gaussians

MAX_CHUNK_GAUSSIANS = 262_144
"""Larger inputs (imported scenes) are split into spatial tiles so culling stays useful."""


@dataclass(frozen=True)
class ChunkSource:
    """What made a chunk: the generation job, generator and its settings."""

    job_id: int = -1
    generator: str = "unknown"
    seed: int = 0
    caption: str = ""
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Chunk:
    """An immutable piece of the scene.

    Attributes:
        id: unique within the world, increasing in the order chunks landed.
        gaussians: the chunk's Gaussians.
        bounds_min, bounds_max: ``[3]`` axis-aligned bounds of the means, padded by
            3 sigma of the largest Gaussian (metres).
        source: what generated it.
    """

    id: int
    gaussians: Gaussians
    bounds_min: np.ndarray
    bounds_max: np.ndarray
    source: ChunkSource

    @staticmethod
    def build(chunk_id: int, gaussians: Gaussians, source: ChunkSource) -> "Chunk":
        if len(gaussians) == 0:
            lo = hi = np.zeros(3, np.float32)
        else:
            pad = 3.0 * np.exp(gaussians.log_scales.max(axis=1))[:, None]
            lo = (gaussians.means - pad).min(axis=0)
            hi = (gaussians.means + pad).max(axis=0)
        return Chunk(chunk_id, gaussians, lo.astype(np.float32), hi.astype(np.float32), source)


@dataclass(frozen=True)
class SceneSnapshot:
    """A complete, immutable view of the scene at one version."""

    version: int
    chunks: tuple[Chunk, ...]

    @property
    def num_gaussians(self) -> int:
        return sum(len(c.gaussians) for c in self.chunks)

    def visible_chunks(self, cameras: Cameras, far: float = 1e4) -> tuple[Chunk, ...]:
        """Chunks whose bounds intersect any camera's frustum (conservative)."""
        if not self.chunks:
            return ()
        lo = np.stack([c.bounds_min for c in self.chunks])
        hi = np.stack([c.bounds_max for c in self.chunks])
        visible = frustum_cull_boxes(lo, hi, cameras, far).any(axis=0)
        return tuple(c for c, v in zip(self.chunks, visible) if v)

    def gaussians(self, chunks: tuple[Chunk, ...] | None = None) -> Gaussians:
        """All (or the given) chunks' Gaussians in one set (copies)."""
        return Gaussians.concat([c.gaussians for c in (self.chunks if chunks is None else chunks)])


def frustum_cull_boxes(lo: np.ndarray, hi: np.ndarray, cameras: Cameras, far: float = 1e4) -> np.ndarray:
    """``[N, B]`` bool: does box ``b`` (``lo``/``hi`` ``[B, 3]``) touch camera ``n``'s frustum.

    Tests the 8 corners of each box against the 4 side planes and the near plane
    in camera space; a box is culled only when all its corners are outside one plane.
    """
    corners = np.stack(
        [np.where(np.array([(i >> k) & 1 for k in range(3)], bool), hi, lo) for i in range(8)], axis=1
    )  # [B, 8, 3]
    R = cameras.w2c[:, :3, :3]  # [N,3,3]
    t = cameras.w2c[:, :3, 3]  # [N,3]
    pc = np.einsum("nij,bkj->nbki", R, corners) + t[:, None, None, :]  # [N,B,8,3]
    x, y, z = pc[..., 0], pc[..., 1], pc[..., 2]
    fx, fy = cameras.K[:, 0, 0], cameras.K[:, 1, 1]
    cx, cy = cameras.K[:, 0, 2], cameras.K[:, 1, 2]
    # Half-angle tangents of the frustum's sides, with a small margin.
    left = (cx / fx * 1.05)[:, None, None]
    right = ((cameras.width - cx) / fx * 1.05)[:, None, None]
    top = (cy / fy * 1.05)[:, None, None]
    bottom = ((cameras.height - cy) / fy * 1.05)[:, None, None]
    outside = (
        (z < 0.01).all(-1)
        | (z > far).all(-1)
        | (x < -left * z).all(-1)
        | (x > right * z).all(-1)
        | (y < -top * z).all(-1)
        | (y > bottom * z).all(-1)
    )
    return ~outside


class Scene:
    """A growing set of chunks. Thread-safe: appends may come from generation workers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = SceneSnapshot(0, ())
        self._next_id = 0

    def snapshot(self) -> SceneSnapshot:
        return self._snapshot  # a single reference read: atomic

    @property
    def version(self) -> int:
        return self._snapshot.version

    def append(self, gaussians: Gaussians, source: ChunkSource) -> list[Chunk]:
        """Add Gaussians as one or more new chunks (split into tiles if large); one new version."""
        parts = split_into_tiles(gaussians) if len(gaussians) > MAX_CHUNK_GAUSSIANS else [gaussians]
        with self._lock:
            chunks = []
            for part in parts:
                chunks.append(Chunk.build(self._next_id, part, source))
                self._next_id += 1
            self._snapshot = SceneSnapshot(self._snapshot.version + 1, self._snapshot.chunks + tuple(chunks))
        return chunks

    def restore(self, chunks: list[Chunk]) -> None:
        """Add chunks loaded from storage, keeping their ids."""
        with self._lock:
            merged = self._snapshot.chunks + tuple(chunks)
            self._next_id = max([self._next_id] + [c.id + 1 for c in chunks])
            self._snapshot = SceneSnapshot(self._snapshot.version + 1, merged)


def split_into_tiles(gaussians: Gaussians, max_per_tile: int = MAX_CHUNK_GAUSSIANS) -> list[Gaussians]:
    """Split into square tiles on the ground plane (x, z) of about ``max_per_tile`` Gaussians."""
    n = len(gaussians)
    tiles_per_side = int(np.ceil(np.sqrt(n / max_per_tile)))
    xz = gaussians.means[:, [0, 2]]
    lo, hi = xz.min(axis=0), xz.max(axis=0)
    cell = np.maximum((hi - lo) / tiles_per_side, 1e-6)
    ij = np.minimum(((xz - lo) / cell).astype(np.int64), tiles_per_side - 1)
    key = ij[:, 0] * tiles_per_side + ij[:, 1]
    order = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange(tiles_per_side * tiles_per_side + 1))
    return [gaussians.subset(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
