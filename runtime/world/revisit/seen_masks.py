"""What a frozen seen view hides: the Gaussians of later chunks that would change its picture.

A frozen view (:mod:`.seen_views`) with cap ``c`` has a **picture**: the scene's chunks
with ids up to ``c`` rendered from the view at 128x72 (alpha and depth). It *shows* a
surface at a pixel whose alpha is at least 0.99, and nothing (sky, a hole, a soft edge)
elsewhere. A Gaussian of a later chunk is **hidden** from the view when it would change
that picture -- :func:`.reconstruct.occluder_mask`, the keyframe check of reconstruction,
run per pixel against the picture:

* its 2-sigma footprint, widened by 2 pixels, touches a pixel that shows nothing;
* it lies in front of the shown surface (8 % margin plus one sigma along the ray), or on it
  (less than 8 % behind it: it would blend with the surface's own splats -- a later,
  closer keyframe remaking the same surface -- and change its colour);
* it hides behind the surface, but its footprint spills past a silhouette onto a farther one.

Gaussians clearly behind the opaque surface stay: they cannot change the picture at the
view, and hiding them would only make more of the scene pop for views nearby.

A view frozen while the world was still being generated there is not kept as it was: when
more of its picture is empty (alpha < 0.5, and not a direction known as sky) than
planning tolerates (``uncovered_fraction``), the picture was a world still loading -- a
player who looked around at the spawn before the first chunks landed -- and the view is
shown as the plain scene. Freezing it would keep those holes forever.

:class:`HiddenSplats` serves **masked snapshots**: the scene with every later chunk
replaced by the subset of its Gaussians the view does not hide. Chunks are immutable, so
a masked chunk, once made for a (view, cap), is valid forever; it is cached (LRU,
bounded in bytes) with its identity, so renderers' per-chunk caches (activated data, GPU
uploads) keep hitting frame after frame. Masked chunks get fresh negative ids, never
those of scene chunks, so no cache keyed by chunk id can take one for the other.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..camera import Cameras
from ..frontier.coverage import uncovered_fractions
from ..gaussians import Gaussians
from ..keyframes.reconstruct import OCCLUSION_FOOTPRINT_SIGMAS, OCCLUSION_MARGIN, occluder_mask
from ..parts import WorldParts
from ..scene import Chunk, SceneSnapshot, far_as_of, frustum_cull_boxes
from .seen_views import FrozenView

PICTURE_WIDTH, PICTURE_HEIGHT = 128, 72
"""Size of a frozen view's picture (pixels, 16:9): ~0.5 degrees per pixel at 60 degrees FOV."""

OPAQUE_ALPHA = 0.99
"""A picture pixel shows a surface from this alpha on; below it, the sky (or a hole) shows through."""

FOOTPRINT_MARGIN_PX = 2
"""Pixels added around a Gaussian's footprint when looking for pixels that show nothing: the
picture is coarser than most displays, and splats' tails reach past 2 sigma."""

MAX_FOOTPRINT_PX = 12
"""A footprint is tested at most this many picture pixels from its centre (stretched far splats)."""

DEFAULT_CACHE_BYTES = 256 << 20
"""Budget for masked chunks' Gaussians (~4.8M Gaussians at 56 bytes)."""

PICTURES_KEPT = 256
"""Frozen views whose pictures are cached (~37 KB each)."""

SNAPSHOTS_KEPT = 64
"""Masked snapshots cached, one per (view, cap, scene version)."""

_masked_ids = itertools.count(-2, -1)  # -1 means "no chunk" elsewhere (frames, caps)


@dataclass(frozen=True)
class ViewPicture:
    """A frozen view's picture, as :func:`.reconstruct.occluder_mask` reads a keyframe.

    Attributes:
        w2c: ``[4, 4]`` float32 world-to-camera (OpenCV).
        K: ``[3, 3]`` float32 intrinsics for ``PICTURE_WIDTH`` x ``PICTURE_HEIGHT``.
        shown: ``[PICTURE_HEIGHT, PICTURE_WIDTH]`` float32 depth (metres) of the shown
            surface; ``inf`` where alpha < ``OPAQUE_ALPHA``.
        uncovered: fraction of pixels showing neither splats (alpha >= 0.5) nor known sky.
    """

    w2c: np.ndarray
    K: np.ndarray
    shown: np.ndarray
    uncovered: float


def capped(snapshot: SceneSnapshot, cap_chunk_id: int) -> SceneSnapshot:
    """``snapshot`` with only the chunks (and far-field chunks) whose ids are at most ``cap_chunk_id`` (same version)."""
    return SceneSnapshot(snapshot.version, tuple(c for c in snapshot.chunks if c.id <= cap_chunk_id), far_as_of(snapshot.far, cap_chunk_id))


class HiddenSplats:
    """Masked snapshots for frozen views: later chunks without the Gaussians a view hides.

    Thread-safe; work is done outside the lock (two threads may compute the same mask at
    once; the first result is kept, so identities stay stable).

    Args:
        parts: the world's shared state: its renderer draws the views' pictures over its
            sky (only their alpha and depth are read); its sky-direction map and
            ``uncovered_fraction`` decide when a picture is unfinished, so that its view is
            shown plain; it counts ``hidden_gaussians``, ``masks_computed``, ``mask_ms`` and
            ``seen_views_unfinished``.
        cache_bytes: budget for masked chunks.
    """

    def __init__(self, parts: WorldParts, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if cache_bytes <= 0:
            raise ValueError(f"HiddenSplats.cache_bytes must be positive, got {cache_bytes}")
        max_uncovered = parts.config.uncovered_fraction
        if not 0.0 <= max_uncovered <= 1.0:
            raise ValueError(f"HiddenSplats.max_uncovered must be in [0, 1], got {max_uncovered}")
        self.parts = parts
        self.renderer, self.sky, self.stats = parts.renderer, parts.sky, parts.stats
        self.max_uncovered = max_uncovered
        self.cache_bytes = cache_bytes
        self._lock = threading.Lock()
        self._pictures: OrderedDict[tuple[int, int], ViewPicture] = OrderedDict()  # (record, cap)
        # (record, cap, chunk id, chunk size) -> (masked chunk, or the chunk itself, or None when all is hidden; bytes)
        self._chunks: OrderedDict[tuple[int, int, int], tuple[Chunk | None, int]] = OrderedDict()
        self._bytes = 0
        self._snapshots: OrderedDict[tuple[int, int, int], SceneSnapshot] = OrderedDict()  # (record, cap, version)
        self._finished_views: dict[tuple[int, int], bool] = {}  # (record, cap) -> picture was finished; ~100 B each

    # ------------------------------------------------------------------ public
    def snapshot(self, view: FrozenView, snapshot: SceneSnapshot) -> SceneSnapshot:
        """``snapshot`` as ``view`` shows it: chunks up to its cap as they are, later ones masked.

        Returns ``snapshot`` itself when the view's picture is unfinished (see module doc) or
        when it hides nothing, so those cameras join the plain batch.
        """
        key = (view.record_id, view.cap_chunk_id, snapshot.version)
        with self._lock:
            hit = self._snapshots.get(key)
            if hit is not None:
                self._snapshots.move_to_end(key)
                return hit
        if not self._finished(view, snapshot):
            masked = snapshot
        else:
            # Up to the cap, chunks as the view showed them (refinements after it undone).
            chunks = list(self.parts.scene.as_of(snapshot, view.cap_chunk_id).chunks)
            for chunk in snapshot.chunks:
                if chunk.id > view.cap_chunk_id:
                    shown = self._masked_chunk(view, chunk, snapshot)
                    if shown is not None:
                        chunks.append(shown)
            # The far field (the background) as it was: far chunks that landed since stay out.
            far = far_as_of(snapshot.far, view.cap_chunk_id)
            # Nothing hidden (no chunk landed in view since the freeze: the common case): the
            # plain snapshot itself, so the display draws this camera in the plain batch.
            unchanged = len(chunks) == len(snapshot.chunks) and all(a is b for a, b in zip(chunks, snapshot.chunks))
            unchanged = unchanged and len(far) == len(snapshot.far) and all(a is b for a, b in zip(far, snapshot.far))
            masked = snapshot if unchanged else SceneSnapshot(snapshot.version, tuple(chunks), far)
        with self._lock:
            masked = self._snapshots.setdefault(key, masked)
            while len(self._snapshots) > SNAPSHOTS_KEPT:
                self._snapshots.popitem(last=False)
        return masked

    def hidden(self, view: FrozenView, chunk: Chunk, snapshot: SceneSnapshot) -> np.ndarray:
        """``[G]`` bool over ``chunk``'s Gaussians: those that would change ``view``'s picture.

        ``snapshot`` supplies the chunks up to the view's cap (any snapshot holding them).
        """
        picture = self.picture(view, snapshot)
        g = chunk.gaussians
        if len(g) == 0:
            return np.zeros(0, np.bool_)
        cam = Cameras(picture.w2c[None], picture.K[None], PICTURE_WIDTH, PICTURE_HEIGHT)
        if not frustum_cull_boxes(chunk.bounds_min[None], chunk.bounds_max[None], cam)[0, 0]:
            return np.zeros(len(g), np.bool_)  # outside the view: nothing to change
        return occluder_mask(
            g,
            [picture],
            shown=[picture.shown],
            stride=1,
            margin=OCCLUSION_MARGIN,
            footprint_sigmas=OCCLUSION_FOOTPRINT_SIGMAS,
            dilation=FOOTPRINT_MARGIN_PX,
            max_radius=MAX_FOOTPRINT_PX,
            keep_on_surface=False,
        )

    def picture(self, view: FrozenView, snapshot: SceneSnapshot) -> ViewPicture:
        """``view``'s picture: the chunks up to its cap rendered from it (cached per (view, cap))."""
        key = (view.record_id, view.cap_chunk_id)
        with self._lock:
            hit = self._pictures.get(key)
            if hit is not None:
                self._pictures.move_to_end(key)
                return hit
        started = time.perf_counter()
        cam = view.camera(PICTURE_WIDTH, PICTURE_HEIGHT)
        shown_chunks = self.parts.scene.as_of(snapshot, view.cap_chunk_id)
        if shown_chunks.chunks:
            out = self.renderer.render(shown_chunks, cam, self.sky)
            alpha, depth = out.alpha, out.depth[0]
        else:
            alpha = np.zeros((1, PICTURE_HEIGHT, PICTURE_WIDTH), np.float32)
            depth = np.full((PICTURE_HEIGHT, PICTURE_WIDTH), np.inf, np.float32)
        shown = np.where(alpha[0] >= OPAQUE_ALPHA, depth, np.float32(np.inf)).astype(np.float32)
        uncovered = float(uncovered_fractions(alpha, cam, self.parts.sky_directions)[0])
        picture = ViewPicture(cam.w2c[0], cam.K[0], shown, uncovered)
        self.stats.mask_ms += (time.perf_counter() - started) * 1e3
        with self._lock:
            picture = self._pictures.setdefault(key, picture)
            while len(self._pictures) > PICTURES_KEPT:
                self._pictures.popitem(last=False)
        return picture

    def _finished(self, view: FrozenView, snapshot: SceneSnapshot) -> bool:
        """Was the world done generating ``view`` when it froze? Decided once per (view, cap)
        and kept apart from the picture: an evicted picture drawn again later, against a sky
        map that has grown since, must not turn a view shown plain into a masked one."""
        key = (view.record_id, view.cap_chunk_id)
        finished = self._finished_views.get(key)
        if finished is None:
            finished = self.picture(view, snapshot).uncovered <= self.max_uncovered
            with self._lock:
                if key not in self._finished_views and not finished:
                    self.stats.seen_views_unfinished += 1
                finished = self._finished_views.setdefault(key, finished)
        return finished

    @property
    def nbytes(self) -> int:
        """Bytes of masked chunks held."""
        return self._bytes

    # ------------------------------------------------------------------ masked chunks
    def _masked_chunk(self, view: FrozenView, chunk: Chunk, snapshot: SceneSnapshot) -> Chunk | None:
        """``chunk`` without what ``view`` hides: itself when nothing is, None when everything is."""
        # The size too: refinement rebuilds a chunk smaller under the same id.
        key = (view.record_id, view.cap_chunk_id, chunk.id, len(chunk.gaussians))
        with self._lock:
            hit = self._chunks.get(key)
            if hit is not None:
                self._chunks.move_to_end(key)
                return hit[0]
        self.picture(view, snapshot)  # timed on its own
        started = time.perf_counter()
        hidden = self.hidden(view, chunk, snapshot)
        count = int(hidden.sum())
        if count == 0:
            shown, size = chunk, 0  # the scene's own chunk: renderers' caches already hold it
        elif count == len(hidden):
            shown, size = None, 0
        else:
            part = chunk.gaussians.subset(np.flatnonzero(~hidden))
            shown, size = Chunk.build(next(_masked_ids), part, chunk.source), _nbytes(part)
        self.stats.masks_computed += 1
        self.stats.hidden_gaussians += count
        self.stats.mask_ms += (time.perf_counter() - started) * 1e3
        with self._lock:
            hit = self._chunks.get(key)
            if hit is not None:  # another thread was first: keep its identity
                return hit[0]
            self._chunks[key] = (shown, size)
            self._bytes += size
            while self._bytes > self.cache_bytes and len(self._chunks) > 1:
                _, (_, dropped) = self._chunks.popitem(last=False)
                self._bytes -= dropped
        return shown


def _nbytes(g: Gaussians) -> int:
    arrays = (g.means, g.quats, g.log_scales, g.opacity_logits, g.colors, g.sh_rest)
    return sum(a.nbytes for a in arrays if a is not None)
