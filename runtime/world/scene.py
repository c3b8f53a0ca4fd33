"""The world's Gaussian scene: immutable chunks, appended atomically, read as snapshots.

Renderers never see a half-appended chunk: :meth:`Scene.snapshot` returns a
:class:`SceneSnapshot` (a version number and a tuple of chunks) that stays valid
however many chunks land afterwards. Appending copies no Gaussians: it builds a
new tuple of references.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Sequence

import numpy as np

from .camera import Cameras
from .gaussians import Gaussians, column_bounds

MAX_CHUNK_GAUSSIANS = 262_144
"""Larger inputs (imported scenes) are split into spatial tiles so culling stays useful."""

MAX_VERSIONS = 1024
"""Versions kept per refined chunk for frozen views (:meth:`Scene.as_of`), at a bit per
Gaussian each: 1.25 KB per version of a 10k-Gaussian chunk, so at most ~1.3 MB per chunk
however often it is refined. Past this the oldest goes and views frozen before it draw the
next. (A count of 4 or 16 was too few: spawn chunks are refined by most detail jobs that
look back at them, and the revisit test's view, shown before a 43 m walk, changed.)"""

BUILT_VERSIONS = 64
"""Older chunk versions kept built (as chunks) for the frozen views drawing them."""


@dataclass(frozen=True)
class ChunkSource:
    """What made a chunk: the generation job, generator and its settings."""

    job_id: int = -1
    generator: str = "unknown"
    seed: int = 0
    caption: str = ""
    created_at: float = field(default_factory=time.time)
    origin: tuple[float, float, float] | None = None
    """Where the job's keyframe cameras stood (their mean centre, world metres), for far-field
    chunks: which far cell they belong to (:meth:`Scene.land_far`). None where not recorded."""


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
    far_parts: tuple[tuple[int, int], ...] = ()
    """A far-field chunk merged from several landings (:meth:`Scene.land_far`): per landing,
    ``(its landing id, Gaussians held once it had landed)``, oldest first; () for a chunk
    that landed whole. Landings append, so the chunk as of any landing is a prefix."""

    @staticmethod
    def build(chunk_id: int, gaussians: Gaussians, source: ChunkSource, far_parts: tuple[tuple[int, int], ...] = ()) -> "Chunk":
        if len(gaussians) == 0:
            lo = hi = np.zeros(3, np.float32)
        else:
            lo, hi = column_bounds(gaussians.means, 3.0 * np.exp(gaussians.largest_log_scale))
        return Chunk(chunk_id, gaussians, lo.astype(np.float32), hi.astype(np.float32), source, tuple(far_parts))


@dataclass(frozen=True)
class SceneSnapshot:
    """A complete, immutable view of the scene at one version.

    ``far`` holds the far field's chunks (see :mod:`.keyframes.far_field`): coarse splats of
    what keyframes saw beyond where scene splats pay off. Renderers draw them *behind*
    ``chunks``, as the background the scene is composited over (in place of the bare sky);
    they are not part of the scene's geometry: coverage, collision, refinement and alpha
    read ``chunks`` only. Far chunks take their ids from the same counter as scene chunks,
    so an id says which landed first.
    """

    version: int
    chunks: tuple[Chunk, ...]
    far: tuple[Chunk, ...] = ()

    @property
    def num_gaussians(self) -> int:
        return sum(len(c.gaussians) for c in self.chunks)

    def visible_chunks(self, cameras: Cameras, far: float = 1e4) -> tuple[Chunk, ...]:
        """Chunks whose bounds intersect any camera's frustum (conservative)."""
        if not self.chunks:
            return ()
        lo, hi = self._bounds
        visible = frustum_cull_boxes(lo, hi, cameras, far).any(axis=0)
        return tuple(c for c, v in zip(self.chunks, visible) if v)

    @cached_property
    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``([B, 3], [B, 3])`` chunk bounds, stacked once per snapshot (every frame culls)."""
        return np.stack([c.bounds_min for c in self.chunks]), np.stack([c.bounds_max for c in self.chunks])

    def visible_far(self, cameras: Cameras) -> tuple[Chunk, ...]:
        """Far-field chunks whose bounds intersect any camera's frustum (conservative)."""
        if not self.far:
            return ()
        lo, hi = self._far_bounds
        visible = frustum_cull_boxes(lo, hi, cameras).any(axis=0)
        return tuple(c for c, v in zip(self.far, visible) if v)

    @cached_property
    def _far_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``([F, 3], [F, 3])`` far-chunk bounds, stacked once per snapshot."""
        return np.stack([c.bounds_min for c in self.far]), np.stack([c.bounds_max for c in self.far])

    def gaussians(self, chunks: tuple[Chunk, ...] | None = None) -> Gaussians:
        """All (or the given) chunks' Gaussians in one set (copies)."""
        return Gaussians.concat([c.gaussians for c in (self.chunks if chunks is None else chunks)])


def frustum_planes(cameras: Cameras, far: float = 1e4, margin: float = 1.05) -> tuple[np.ndarray, np.ndarray]:
    """World-space planes bounding each camera's frustum: ``(normals [N, 6, 3], offsets [N, 6])``.

    A point ``p`` is inside when ``normals @ p + offsets >= 0`` for all six planes: near
    (z >= 0.01 m), far (z <= ``far``) and the four sides, widened by ``margin`` (tangents).
    """
    n = len(cameras)
    fx, fy = cameras.K[:, 0, 0], cameras.K[:, 1, 1]
    cx, cy = cameras.K[:, 0, 2], cameras.K[:, 1, 2]
    left, right = cx / fx * margin, (cameras.width - cx) / fx * margin
    top, bottom = cy / fy * margin, (cameras.height - cy) / fy * margin
    normals_cam = np.zeros((n, 6, 3), np.float64)
    offsets_cam = np.zeros((n, 6), np.float64)
    normals_cam[:, 0, 2], offsets_cam[:, 0] = 1.0, -0.01  # near
    normals_cam[:, 1, 2], offsets_cam[:, 1] = -1.0, far  # far
    normals_cam[:, 2, 0], normals_cam[:, 2, 2] = 1.0, left  # x >= -left z
    normals_cam[:, 3, 0], normals_cam[:, 3, 2] = -1.0, right  # x <= right z
    normals_cam[:, 4, 1], normals_cam[:, 4, 2] = 1.0, top  # y >= -top z
    normals_cam[:, 5, 1], normals_cam[:, 5, 2] = -1.0, bottom  # y <= bottom z
    R = cameras.w2c[:, :3, :3].astype(np.float64)
    t = cameras.w2c[:, :3, 3].astype(np.float64)
    # n_c . (R p + t) + d = (R^T n_c) . p + (n_c . t + d)
    normals = normals_cam @ R
    offsets = offsets_cam + np.einsum("npk,nk->np", normals_cam, t)
    return normals, offsets


def frustum_cull_boxes(lo: np.ndarray, hi: np.ndarray, cameras: Cameras, far: float = 1e4) -> np.ndarray:
    """``[N, B]`` bool: does box ``b`` (``lo``/``hi`` ``[B, 3]``) touch camera ``n``'s frustum.

    A box is culled only when all its corners are outside one plane (conservative). The
    corner farthest along a plane's normal decides that (the "p-vertex"), so each box
    costs one dot product per plane instead of eight.
    """
    normals, offsets = frustum_planes(cameras, far)  # [N,6,3], [N,6]
    lo64, hi64 = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    # max over corners of n . p = sum_k max(n_k lo_k, n_k hi_k)
    reach = np.maximum(normals[:, :, None, :] * lo64[None, None], normals[:, :, None, :] * hi64[None, None]).sum(-1)
    return (reach + offsets[:, :, None] >= 0.0).all(axis=1)


class Scene:
    """A growing set of chunks. Thread-safe: appends may come from generation workers.

    Refinement retires Gaussians: a closer keyframe remakes a surface that far keyframes
    made coarsely, and the coarse Gaussians it replaces leave the scene in the same
    version that adds the fine ones (:meth:`append` with ``retire``). A chunk that loses
    Gaussians keeps its id and source; its :class:`Chunk` is rebuilt from the rest (a new
    ``gaussians`` object, so renderers' caches, keyed by identity, rebuild theirs). Which
    of a chunk's *original* Gaussians are gone is kept (:meth:`retired_masks`) so a saved
    world, whose chunk files hold the originals, comes back the same.

    Args:
        prepare: called with every chunk :meth:`append` or :meth:`land_far` builds (new,
            rebuilt after refinement, merged far chunks) *before* the version holding them is
            published, on the appending thread: the world's renderer derives its per-chunk
            data there (activation, levels of detail), so no frame has to.
    """

    def __init__(self, prepare: Callable[[Sequence[Chunk]], None] | None = None) -> None:
        self._prepare = prepare
        self._lock = threading.Lock()
        self._snapshot = SceneSnapshot(0, ())
        self._next_id = 0
        # chunk id -> (the chunk as it landed, [G_original] bool kept now)
        self._originals: dict[int, tuple[Chunk, np.ndarray]] = {}
        # chunk id -> [(id of the chunk whose landing made this version, its kept Gaussians
        # of the original as packed bits)], oldest first: views frozen earlier keep drawing
        # older versions. Bits, not copies: a version costs G / 8 bytes.
        self._versions: dict[int, list[tuple[int, np.ndarray]]] = {}
        # (chunk id, landing id) -> an older version built for as_of, so that it stays one
        # object (renderers' caches are keyed by identity) while views draw it.
        self._built: OrderedDict[tuple[int, int], Chunk | None] = OrderedDict()
        # chunk id -> (the chunk, the mask, the chunk less the masked Gaussians) that the last
        # without() built: append() with the same mask publishes that very chunk (see without).
        self._rebuilt: dict[int, tuple[Chunk, np.ndarray, Chunk]] = {}

    def snapshot(self) -> SceneSnapshot:
        return self._snapshot  # a single reference read: atomic

    @property
    def version(self) -> int:
        return self._snapshot.version

    def append(self, gaussians: Gaussians, source: ChunkSource, retire: dict[int, np.ndarray] | None = None) -> list[Chunk]:
        """Add Gaussians as one or more new chunks (split into tiles if large); one new version.

        ``retire`` maps chunk ids to ``[G]`` bool masks over those chunks' *current*
        Gaussians: the ones to take out of the scene in the same version (refinement).
        Unknown ids are ignored (a chunk may have been restored without them). A chunk
        that :meth:`without` last rebuilt with the same mask joins the scene as it was built.
        """
        parts = split_into_tiles(gaussians) if len(gaussians) > MAX_CHUNK_GAUSSIANS else [gaussians]
        with self._lock:
            chunks = []
            for part in parts:
                chunks.append(Chunk.build(self._next_id, part, source))
                self._next_id += 1
            kept = self._retired(self._snapshot.chunks, retire or {}, chunks[0].id if chunks else self._next_id)
            self._rebuilt = {}
            old = {id(c) for c in self._snapshot.chunks}
            self._prepared([c for c in kept if id(c) not in old] + chunks)
            self._snapshot = SceneSnapshot(self._snapshot.version + 1, kept + tuple(chunks), self._snapshot.far)
        return chunks

    def without(self, chunks: Sequence[Chunk], masks: dict[int, np.ndarray]) -> tuple[Chunk, ...]:
        """``chunks`` less the Gaussians ``masks`` marks (``[G]`` bool per chunk id): a chunk that
        loses some is rebuilt from the rest (same id and source, a new Gaussians object, so
        renderers' caches, keyed by identity, never mistake it for the scene's); one that loses
        all leaves. The chunks rebuilt are remembered until the next call or :meth:`append`:
        the same mask again gives the same chunk, and :meth:`append` retiring it publishes that
        chunk as it is, so what a renderer derived from it meanwhile (the colour fit draws the
        scene less what the new chunk retires) stays cached."""
        with self._lock:
            earlier = self._rebuilt
        out, rebuilt = [], {}
        for chunk in chunks:
            mask = masks.get(chunk.id)
            if mask is None:
                out.append(chunk)
                continue
            if mask.all():
                continue
            rest = _same_rebuild(earlier, chunk, mask)
            if rest is None:
                rest = Chunk.build(chunk.id, chunk.gaussians.subset(np.flatnonzero(~mask)), chunk.source)
            rebuilt[chunk.id] = (chunk, mask, rest)
            out.append(rest)
        with self._lock:
            self._rebuilt = rebuilt
        return tuple(out)

    def append_far(self, gaussians: Gaussians, source: ChunkSource) -> Chunk:
        """Add far-field Gaussians as one far chunk (an id from the scene's counter); one new version."""
        chunk, _ = self.land_far(gaussians, source)
        return chunk

    def land_far(
        self, gaussians: Gaussians, source: ChunkSource, cell_m: float = 0.0, max_gaussians: int = 0
    ) -> tuple[Chunk, tuple[int, ...]]:
        """Add far-field Gaussians (one new version), merged into the far chunk of their far
        cell, and keep the far field within ``max_gaussians``.

        Far cells are ``cell_m`` x ``cell_m`` squares of the ground plane (x, z) holding the
        keyframes' ``source.origin``: keyframes taken near each other see the same distant land,
        and one far chunk per cell bounds the count by the ground explored, not by the jobs.
        A merged chunk keeps its id (the cell's first landing's; frozen views capped before a
        later landing draw the prefix they were shown: :func:`far_as_of`) and takes this job's
        ``source`` (with the cell's origin), so the job's save writes it. Each landing still
        takes an id from the counter, so ids keep ordering landings. ``cell_m`` 0 or no origin:
        a chunk of its own, as before merging existed.

        Past ``max_gaussians`` (0: no cap), the far chunks whose origin is farthest from this
        landing's are dropped (never the one just landed): a long walk's far field stays
        bounded, keeping what the player near here sees.

        Returns:
            (the far chunk landed or merged into, ids of the far chunks dropped).
        """
        with self._lock:
            landing = self._next_id
            self._next_id += 1
            s = self._snapshot
            far = list(s.far)
            home = _far_cell(source.origin, cell_m)
            at = next((k for k, c in enumerate(far) if home is not None and _far_cell(c.source.origin, cell_m) == home), None)
            if at is None:
                chunk = Chunk.build(landing, gaussians, source)
                far.append(chunk)
            else:
                old = far[at]
                parts = old.far_parts or ((old.id, len(old.gaussians)),)
                merged = Gaussians.concat([old.gaussians, gaussians])
                cell_source = dataclasses.replace(source, origin=old.source.origin)
                chunk = far[at] = Chunk.build(old.id, merged, cell_source, parts + ((landing, len(merged)),))
            dropped = []
            if max_gaussians > 0 and source.origin is not None:
                here = np.asarray(source.origin, np.float64)
                total = sum(len(c.gaussians) for c in far)
                by_distance = sorted(
                    (c for c in far if c is not chunk),
                    key=lambda c: -np.inf if c.source.origin is None else -float(np.linalg.norm(np.asarray(c.source.origin) - here)),
                )
                for victim in by_distance:
                    if total <= max_gaussians:
                        break
                    total -= len(victim.gaussians)
                    dropped.append(victim.id)
                far = [c for c in far if c.id not in dropped]
            self._prepared([chunk])
            self._snapshot = SceneSnapshot(s.version + 1, s.chunks, tuple(far))
        return chunk, tuple(dropped)

    def _prepared(self, chunks: list[Chunk]) -> None:
        """Let the ``prepare`` callback see ``chunks`` (call under the lock, before publishing)."""
        if self._prepare is not None and chunks:
            self._prepare(chunks)

    def _retired(self, chunks: tuple[Chunk, ...], retire: dict[int, np.ndarray], by: int) -> tuple[Chunk, ...]:
        """``chunks`` with the masked Gaussians taken out by chunk ``by`` (call under the lock);
        empty chunks leave; those :meth:`without` rebuilt with the same mask are used as built."""
        out = []
        for chunk in chunks:
            mask = retire.get(chunk.id)
            if mask is None or not np.any(mask):
                out.append(chunk)
                continue
            mask = np.asarray(mask, bool)
            if mask.shape != (len(chunk.gaussians),):
                raise ValueError(f"retire[{chunk.id}] must be [{len(chunk.gaussians)}] bool, got {mask.shape}")
            landed, kept = self._originals.get(chunk.id, (chunk, np.ones(len(chunk.gaussians), bool)))
            history = self._versions.setdefault(chunk.id, [(-1, np.packbits(kept))])
            kept = kept.copy()
            kept[np.flatnonzero(kept)[mask]] = False
            self._originals[chunk.id] = (landed, kept)
            history.append((by, np.packbits(kept)))
            if len(history) > MAX_VERSIONS:
                # The oldest goes: views frozen before it draw the next one -- the same place,
                # refined once more (refinement keeps content).
                del history[0]
            if kept.any():
                ready = _same_rebuild(self._rebuilt, chunk, mask)
                if ready is None:
                    ready = Chunk.build(chunk.id, landed.gaussians.subset(np.flatnonzero(kept)), chunk.source)
                out.append(ready)
        return tuple(out)

    def as_of(self, snapshot: SceneSnapshot, cap_chunk_id: int) -> SceneSnapshot:
        """The chunks of ``snapshot`` up to ``cap_chunk_id`` as they were when that chunk was the
        newest: refinements by later chunks undone (same version number).

        A view frozen with that cap keeps drawing what it showed (see :mod:`..revisit`)."""
        chunks = {c.id: c for c in snapshot.chunks if c.id <= cap_chunk_id}
        with self._lock:
            for cid, history in self._versions.items():
                if cid > cap_chunk_id:
                    continue
                then = [k for k, (by, _) in enumerate(history) if by <= cap_chunk_id]
                k = then[-1] if then else 0  # older than what is kept: the oldest kept
                if k == len(history) - 1:
                    continue  # the version live now: the snapshot's own chunk (or none)
                chunk = self._version_chunk(cid, history[k])
                if chunk is None:
                    chunks.pop(cid, None)
                else:
                    chunks[cid] = chunk
        return SceneSnapshot(snapshot.version, tuple(chunks[k] for k in sorted(chunks)), far_as_of(snapshot.far, cap_chunk_id))

    def _version_chunk(self, cid: int, version: tuple[int, np.ndarray]) -> Chunk | None:
        """Chunk ``cid`` as one of its versions made it (None: empty); call under the lock."""
        key = (cid, version[0])
        if key in self._built:
            self._built.move_to_end(key)
            return self._built[key]
        landed, _ = self._originals[cid]
        kept = np.unpackbits(version[1], count=len(landed.gaussians)).astype(bool)
        if kept.all():
            chunk = landed
        else:
            chunk = Chunk.build(cid, landed.gaussians.subset(np.flatnonzero(kept)), landed.source) if kept.any() else None
        self._built[key] = chunk
        if len(self._built) > BUILT_VERSIONS:
            self._built.popitem(last=False)
        return chunk

    def history_bytes(self) -> int:
        """Bytes the scene keeps for older versions of refined chunks (their bit masks)."""
        with self._lock:
            return sum(bits.nbytes for history in self._versions.values() for _, bits in history)

    def retired_masks(self) -> dict[int, np.ndarray]:
        """Per chunk that lost Gaussians to refinement: ``[G_original]`` bool, True = retired."""
        with self._lock:
            return {cid: ~kept for cid, (_, kept) in self._originals.items()}

    def retire_original(self, masks: dict[int, np.ndarray]) -> None:
        """Take out, per chunk id, the Gaussians a saved :meth:`retired_masks` names (one new version).

        For loading: ``masks`` index the chunks' original Gaussians, as restored."""
        with self._lock:
            current = {c.id: c for c in self._snapshot.chunks}
            retire = {}
            for cid, mask in masks.items():
                chunk = current.get(int(cid))
                if chunk is None or int(cid) in self._originals or len(mask) != len(chunk.gaussians):
                    continue  # unknown, already applied, or not the original it was saved for
                retire[chunk.id] = np.asarray(mask, bool)
            if retire:  # loaded: which chunk retired them is not kept, so frozen views see them gone too
                s = self._snapshot
                self._snapshot = SceneSnapshot(s.version + 1, self._retired(s.chunks, retire, -1), s.far)
                for cid in retire:
                    self._versions[cid] = self._versions[cid][1:]

    def restore(self, chunks: list[Chunk], far: list[Chunk] = ()) -> None:
        """Add chunks (and far-field chunks) loaded from storage, keeping their ids."""
        with self._lock:
            merged = self._snapshot.chunks + tuple(chunks)
            merged_far = self._snapshot.far + tuple(sorted(far, key=lambda c: c.id))
            landings = [by + 1 for c in far for by, _ in c.far_parts]  # merged far chunks' later landings
            self._next_id = max([self._next_id] + [c.id + 1 for c in (*chunks, *far)] + landings)
            self._snapshot = SceneSnapshot(self._snapshot.version + 1, merged, merged_far)


def _same_rebuild(rebuilt: dict[int, tuple[Chunk, np.ndarray, Chunk]], chunk: Chunk, mask: np.ndarray) -> Chunk | None:
    """The chunk :meth:`Scene.without` built from ``chunk`` less ``mask``, if it did (else None)."""
    hit = rebuilt.get(chunk.id)
    if hit is None or hit[0] is not chunk or not np.array_equal(hit[1], mask):
        return None
    return hit[2]


def _far_cell(origin: tuple[float, float, float] | None, cell_m: float) -> tuple[int, int] | None:
    """The far cell (ground-plane square) of a keyframe origin; None: merges with nothing."""
    if origin is None or cell_m <= 0.0:
        return None
    return int(np.floor(origin[0] / cell_m)), int(np.floor(origin[2] / cell_m))


_FAR_PREFIXES: OrderedDict[tuple[int, int, int], tuple[Gaussians, Chunk]] = OrderedDict()
_FAR_PREFIXES_LOCK = threading.Lock()


def far_as_of(far: tuple[Chunk, ...], cap_chunk_id: int) -> tuple[Chunk, ...]:
    """The far-field chunks as they were when ``cap_chunk_id`` was the newest landing: those
    landed since left out, merged ones cut back to the prefix they held then. A prefix chunk
    is built once and kept (renderers' caches are keyed by identity)."""
    out = []
    for c in far:
        if c.id > cap_chunk_id:
            continue
        if not c.far_parts or c.far_parts[-1][0] <= cap_chunk_id:
            out.append(c)
            continue
        count = max(n for by, n in c.far_parts if by <= cap_chunk_id)
        key = (c.id, count, id(c.gaussians))
        with _FAR_PREFIXES_LOCK:
            hit = _FAR_PREFIXES.get(key)
            if hit is not None and hit[0] is c.gaussians:
                _FAR_PREFIXES.move_to_end(key)
                out.append(hit[1])
                continue
        kept = tuple(p for p in c.far_parts if p[1] <= count)
        prefix = Chunk.build(c.id, c.gaussians.subset(np.arange(count)), c.source, kept)
        with _FAR_PREFIXES_LOCK:
            _FAR_PREFIXES[key] = (c.gaussians, prefix)  # holding the Gaussians keeps id() unique
            while len(_FAR_PREFIXES) > BUILT_VERSIONS:
                _FAR_PREFIXES.popitem(last=False)
        out.append(prefix)
    return tuple(out)


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
