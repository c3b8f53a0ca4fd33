"""Landing a generation result: keyframes -> a new scene chunk, memory frames and map updates.

:class:`ChunkBuilder` checks a :class:`.generators.base.GenerationResult`, reconstructs
its keyframes into Gaussians where the scene is thin, drops the Gaussians that would
change what earlier keyframes show (revisits render the same), optionally fits the new
Gaussians to the keyframes (:mod:`.keyframes.optimise`), appends the chunk and keeps the
keyframes in frame memory, marking the sky-direction and explored maps.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from typing import Sequence

import numba
import numpy as np

from ..camera import Cameras
from ..depth.align import align_to_known
from ..gaussians import Gaussians
from ..generators.base import GenerationResult
from ..keyframes.far_field import far_gaussians
from ..keyframes.colour_solve import FitView, solve_colours
from ..keyframes.fit import fit_colors
from ..keyframes.frames import Frame
from ..keyframes.seams import blend_keyframes
from ..keyframes.start_frame import START_IMAGE_SOURCE
from ..keyframes.reconstruct import AUTHORITY_RATIO, occluder_mask, reconstruct, shown_depth
from ..parts import WorldParts
from ..keyframes.refine import coarse_mask, remade_blocks, retire_mask
from ..scene import Chunk, ChunkSource, SceneSnapshot
from ..sky import pixel_directions
from .jobs import GenerationJob

SHOWN_DEPTH_CACHE_FRAMES = 512
"""Keyframes whose shown-depth maps (revisit checks) are cached: ~57 KB each at 320x180, stride 2."""

SKY_DEPTH = 200.0
"""Depth (metres) from which a keyframe pixel counts as sky: reconstruction's sky cut."""

INSIDE_DEPTH = 0.05
"""A keyframe whose median depth (metres) is nearer than this was made from inside geometry
(a camera under the terrain or in a trunk sees its inside at ~1 cm everywhere): it shows
nothing of the world and lands nothing (see :meth:`ChunkBuilder.build`)."""


class ChunkBuilder:
    """Turns jobs' generation results into scene chunks and memory frames.

    :meth:`build` must run under the world's apply lock: one chunk lands at a time, so
    each sees the chunks before it (and the shown-depth cache needs no lock of its own).

    Args:
        parts: the world's shared state. The builder reads its reconstruction settings,
            generator (named in chunk sources) and depth estimator; the chunk, frames and
            map marks go to its scene, memory and coverage maps; its lock guards the frame
            id counter ``state_dict`` reads; its optimiser, if any, fits each new chunk to
            its keyframes; it counts ``gaussians_dropped``, ``revisit_check_ms`` and the
            ``chunks_optimised`` / ``optimise_*`` counters.
    """

    def __init__(self, parts: WorldParts) -> None:
        self.parts = parts
        self.config, self.generator, self.depth_estimator = parts.config, parts.generator, parts.depth_estimator
        self.renderer, self.scene, self.memory = parts.renderer, parts.scene, parts.memory
        self.stats, self._lock = parts.stats, parts.lock
        # job id -> far-field chunk ids its landing dropped (the far field's cap), until the world emits them
        self.far_dropped: dict[int, tuple[int, ...]] = {}
        self.next_frame_id = 0
        # Per keyframe id, what its reconstruction shows (reconstruct.shown_depth); LRU.
        self._shown_depth_cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def checked_result(self, job: GenerationJob, result: GenerationResult) -> tuple[Cameras, np.ndarray, np.ndarray]:
        """``(cameras, rgb [N,H,W,3] uint8, depth [N,H,W] float32)`` of ``result``: the job's
        cameras unless the result names its own; depth estimated if missing, and aligned (in
        inverse depth) to what the scene already shows at those cameras.

        Raises ValueError when the result's shapes do not match its cameras, and
        RuntimeError for an RGB-only result without a depth estimator.
        """
        cams = job.cameras if result.cameras is None else result.cameras
        if (cams.width, cams.height) != (job.cameras.width, job.cameras.height):
            raise ValueError(
                f"GenerationResult.cameras must be {job.cameras.width}x{job.cameras.height} like the request's, got {cams.width}x{cams.height}"
            )
        N, H, W = len(cams), cams.height, cams.width
        rgb = np.asarray(result.rgb)
        if rgb.shape != (N, H, W, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"GenerationResult.rgb must be [{N},{H},{W},3] uint8, got {rgb.shape} {rgb.dtype}")
        depth = result.depth
        if depth is None:
            if self.depth_estimator is None:
                raise RuntimeError(
                    f"generator {getattr(self.generator, 'name', '?')!r} returned no depth and the world has no depth_estimator"
                )
            depth = self._estimated_depth(rgb, cams)
        depth = np.asarray(depth, np.float32)
        if depth.shape != (N, H, W):
            raise ValueError(f"GenerationResult.depth must be [{N},{H},{W}] float32, got {depth.shape}")
        depth = np.where(np.isnan(depth), np.inf, depth)  # NaN would poison reconstruction; treat as sky
        return cams, rgb, depth

    def _estimated_depth(self, rgb: np.ndarray, cams: Cameras) -> np.ndarray:
        """The depth estimator's ``[N,H,W]`` metres, aligned to the scene's rendered depth where
        it is opaque (a monocular model's scale and shift are otherwise unknown)."""
        depth = self.depth_estimator.estimate(rgb, cams, ())
        snapshot = self.scene.snapshot()
        if not snapshot.chunks:
            return depth
        known = self.renderer.render(snapshot, cams, self.parts.sky)
        return align_to_known(depth, known.depth, known.alpha)

    def build(
        self, job: GenerationJob, cams: Cameras, rgb: np.ndarray, depth: np.ndarray
    ) -> tuple[list[Chunk], list[Frame], list[tuple[int, int]]]:
        """Land checked keyframes made at ``cams`` (call under the apply lock): ``(chunks,
        frames, newly explored cells)``."""
        cfg = self.config
        # A camera inside geometry: lifted, its ~1 cm depths became one dense blob of splats
        # under the ground, which walkers took for the floor and sank onto (issue 16).
        inside = np.median(depth.reshape(len(depth), -1), axis=1) < INSIDE_DEPTH
        if inside.any():
            self.stats.keyframes_inside += int(inside.sum())
            keep = np.flatnonzero(~inside)
            if not keep.size:
                return [], [], []
            cams, rgb, depth = cams[keep], rgb[keep], depth[keep]
        snapshot = self.scene.snapshot()
        # Refinement: Gaussians far coarser than these keyframes make count as empty here,
        # so the keyframes remake those surfaces finely; the coarse ones they remade retire.
        coarse = self._coarse(snapshot, cams)
        shown = None  # the scene drawn at the keyframes (colour too when seams are blended)
        if snapshot.chunks and cfg.seam_blend_px > 0:
            shown = self.renderer.render(self._without(snapshot, coarse), cams, self.parts.sky)
            existing = shown.alpha
        elif snapshot.chunks:
            existing = self.renderer.render_alpha(self._without(snapshot, coarse), cams)
        else:
            existing = None
        # Splat colours come from the keyframes matched to the scene along the seam (memory
        # keeps them as generated; see keyframes.seams).
        colours = rgb if shown is None else blend_keyframes(rgb, depth, shown.rgb, shown.alpha, shown.depth, cfg.seam_blend_px)
        gaussians = reconstruct(colours, depth, cams, existing, stride=cfg.reconstruct_stride, split_sky_edges=cfg.split_sky_edges,
                                 sky_edge_opacity=cfg.sky_edge_opacity)
        # A job the hole test asked for fills what a player is looking at now: its near
        # Gaussians stay even where an earlier keyframe saw the spot otherwise (what the
        # player itself was shown is kept by its frozen seen views; see Revisits).
        spare = cfg.hole_reach_m if job.fills_holes else 0.0
        gaussians = self._keep_earlier_views(gaussians, cams, spare)
        retire = {}
        remade = remade_blocks(gaussians, depth, cams, cfg.reconstruct_stride, fine_alpha=existing) if coarse else None
        for chunk in snapshot.chunks:
            if chunk.id in coarse:
                mask = retire_mask(chunk.gaussians, coarse[chunk.id], gaussians, depth, cams, cfg.reconstruct_stride,
                                   fine_alpha=existing, remade=remade)
                if mask.any():
                    retire[chunk.id] = mask
                    self.stats.gaussians_refined += int(mask.sum())
        made = gaussians
        if self.parts.optimiser is not None and len(gaussians):
            gaussians = self._optimised(gaussians, snapshot, retire, cams, colours, spare)
        source = ChunkSource(job.id, getattr(self.generator, "name", "unknown"), cfg.seed, job.caption)
        # Not optimised (no CUDA, or the optimiser kept nothing): fit the colours -- unless the
        # job was traced coarse (generation is behind: land it fast; its upsampled keyframe
        # has no detail to fit, and detail comes after).
        # The scene less what the chunk retires: fitted against, then landed as it is (its
        # activation, cached by the renderer for the fit, is what frames draw).
        kept = self._without(snapshot, retire)
        if gaussians is made and job.scale >= 1.0:
            gaussians = self._fit(gaussians, kept, colours, depth, cams, source)
        return self.land(source, gaussians, rgb, depth, cams, retire)

    def _fit(
        self, gaussians: Gaussians, base: SceneSnapshot, rgb: np.ndarray, depth: np.ndarray, cams: Cameras, source: ChunkSource
    ) -> Gaussians:
        """The new Gaussians' colours fitted so that the scene they join (``base``, the
        snapshot less what they retire) shows the keyframes ``rgb`` sharply: by least squares
        (:mod:`.keyframes.colour_solve`, with ``fit_neighbour_views`` earlier keyframes too),
        or with ``fit_solve_iterations = 0`` by Jacobi steps (:mod:`.keyframes.fit`)."""
        cfg = self.config
        if len(gaussians) == 0 or (cfg.fit_solve_iterations <= 0 and cfg.fit_iterations <= 0):
            return gaussians
        started, cpu = time.perf_counter(), time.thread_time()
        if cfg.fit_solve_iterations > 0:
            views = self._fit_views(gaussians, base, rgb, depth, cams)
            threads = numba.get_num_threads()
            numba.set_num_threads(1)  # this thread only: its CPU time is the whole cost
            try:
                fitted, _ = solve_colours(gaussians, base, views, iterations=cfg.fit_solve_iterations,
                                          packed=self.renderer.packed_chunks)
            finally:
                numba.set_num_threads(threads)
            self.stats.fit_views += len(views)
        else:

            def draw(candidate: Gaussians) -> tuple[np.ndarray, np.ndarray]:
                # A temporary chunk: its own Gaussians object, so no renderer cache mistakes it.
                out = self.renderer.render(dataclasses.replace(base, chunks=base.chunks + (Chunk.build(-1, candidate, source),)), cams, self.parts.sky)
                return out.rgb, out.depth

            base_alpha = self.renderer.render_alpha(base, cams) if base.chunks else None
            fitted = fit_colors(
                gaussians, rgb, depth, cams, draw, stride=cfg.reconstruct_stride, iterations=cfg.fit_iterations, base_alpha=base_alpha
            )
        self.stats.chunks_fitted += 1
        self.stats.fit_ms += (time.perf_counter() - started) * 1e3
        self.stats.fit_cpu_ms += (time.thread_time() - cpu) * 1e3
        return fitted

    def _fit_views(self, gaussians: Gaussians, base: SceneSnapshot, rgb: np.ndarray, depth: np.ndarray, cams: Cameras) -> list[FitView]:
        """The pictures the least-squares fit matches: the job's keyframes (``rgb``, seam-blended),
        then up to ``fit_neighbour_views`` earlier keyframes from memory that see the new
        Gaussians (nearest first), each with the sky and far field the renderer lays behind."""
        frames = self._neighbour_frames(gaussians, cams) if self.config.fit_neighbour_views > 0 else []
        pictures = [(cams[i], rgb[i], depth[i]) for i in range(len(cams))]
        pictures += [(Cameras(f.w2c[None], f.K[None], f.width, f.height), f.rgb, f.depth) for f in frames]
        views = []
        for cam, picture, picture_depth in pictures:
            back = self.renderer.backdrop(base, cam, self.parts.sky)
            views.append(FitView(cam, picture, picture_depth, back.background, back.sky, back.far_from))
        return views

    def _neighbour_frames(self, gaussians: Gaussians, cams: Cameras) -> list[Frame]:
        """Up to ``fit_neighbour_views`` memory frames whose frustum touches ``gaussians``' box from
        no farther than the new keyframes' farthest splat, nearest to the new cameras first."""
        center = cams.centers.astype(np.float32).mean(axis=0)
        reach = float(np.linalg.norm(gaussians.means - center, axis=1).max())
        frames = self.memory.frames_viewing(gaussians.means.min(axis=0), gaussians.means.max(axis=0), reach)
        frames.sort(key=lambda f: (float(np.linalg.norm(f.center - center)), f.id))
        return frames[: self.config.fit_neighbour_views]

    def _optimised(
        self,
        gaussians: Gaussians,
        snapshot: SceneSnapshot,
        retire: dict[int, np.ndarray],
        cams: Cameras,
        rgb: np.ndarray,
        spare_within: float = 0.0,
    ) -> Gaussians:
        """``gaussians`` fitted to the keyframes ``rgb`` at ``cams`` (see :mod:`.keyframes.optimise`),
        drawn with what the scene keeps that the keyframes see, over the world's sky; then
        the revisit check again, so the fit changes no earlier keyframe's view."""
        kept = self._without(snapshot, retire)
        fixed = kept.gaussians(kept.visible_chunks(cams))
        fitted, report = self.parts.optimiser.optimise(gaussians, fixed, cams, rgb, self.parts.sky.colors(cams))
        self.stats.optimise_ms += report.ms
        if not report.kept:
            self.stats.chunks_optimise_rejected += 1
            return gaussians
        self.stats.chunks_optimised += 1
        self.stats.optimise_gain_db += report.gain_db
        return self._keep_earlier_views(fitted, cams, spare_within)

    def _coarse(self, snapshot: SceneSnapshot, cams: Cameras) -> dict[int, np.ndarray]:
        """Per visible chunk with any, ``[G]`` bool: Gaussians coarse for these keyframes."""
        ratio = self.config.refine_ratio
        if ratio <= 0 or not snapshot.chunks:
            return {}
        out = {}
        for chunk in snapshot.visible_chunks(cams):
            mask = coarse_mask(chunk.gaussians, cams, self.config.reconstruct_stride, ratio)
            if mask.any():
                out[chunk.id] = mask
        return out

    def land(
        self,
        source: ChunkSource,
        gaussians: Gaussians,
        rgb: np.ndarray,
        depth: np.ndarray,
        cams: Cameras,
        retire: dict[int, np.ndarray] | None = None,
    ) -> tuple[list[Chunk], list[Frame], list[tuple[int, int]]]:
        """Append ``gaussians`` as a chunk (retiring ``retire``'s Gaussians; see
        :meth:`.scene.Scene.append`) and keep ``rgb [N,H,W,3]`` / ``depth [N,H,W]`` as
        memory frames at ``cams``; mark sky directions and explored cells (under the apply lock).

        The keyframes' far surfaces go to the far field first (:meth:`_land_far`), so its
        chunk's id is below the scene chunk's: a view frozen with that chunk shows both."""
        self._land_far(source, rgb, depth, cams)
        chunks = self.scene.append(gaussians, source, retire) if len(gaussians) else []
        chunk_id = chunks[0].id if chunks else -1
        frames = []
        with self._lock:
            for i in range(len(cams)):
                frames.append(Frame(self.next_frame_id, rgb[i], depth[i], cams.w2c[i], cams.K[i], chunk_id, source.caption))
                self.next_frame_id += 1
        for f in frames:
            self.memory.add(f)
        sky = ~np.isfinite(depth) | (depth >= SKY_DEPTH)
        if sky.any():
            self.parts.sky_directions.mark(pixel_directions(cams)[sky])
        new_cells = self._mark_explored(frames)
        return chunks, frames, new_cells

    def _land_far(self, source: ChunkSource, rgb: np.ndarray, depth: np.ndarray, cams: Cameras) -> None:
        """Add the keyframes' far surfaces where the far field is thin (see
        :mod:`.keyframes.far_field`), merged into their far cell's chunk (:meth:`.scene.Scene.land_far`;
        the far chunks that dropped go to ``far_dropped[job id]``); nothing when it is off."""
        near = self.config.far_field_near_m
        if near <= 0:
            return
        started = time.perf_counter()
        far = self.scene.snapshot().far
        existing = self.renderer.render_alpha(SceneSnapshot(0, far), cams) if far else None
        gaussians = far_gaussians(rgb, depth, cams, existing, near_m=near, stride=self.config.far_field_stride)
        if len(gaussians):
            origin = tuple(float(x) for x in cams.centers.mean(axis=0))
            _, dropped = self.scene.land_far(
                gaussians, dataclasses.replace(source, origin=origin),
                cell_m=self.config.far_field_cell_m, max_gaussians=self.config.far_field_max_gaussians,
            )
            self.far_dropped[source.job_id] = dropped
            self.stats.far_gaussians += len(gaussians)
        self.stats.far_field_ms += (time.perf_counter() - started) * 1e3

    def _keep_earlier_views(self, gaussians: Gaussians, cams: Cameras, spare_within: float = 0.0) -> Gaussians:
        """Drop the new Gaussians that would change what earlier keyframes show.

        A place once seen must render the same when revisited, so a new chunk may not put
        splats in front of what an earlier keyframe's reconstruction shows, nor where it
        shows nothing (sky, holes), where that keyframe saw the spot from no farther than
        ``AUTHORITY_RATIO`` x the new cameras (see :func:`.reconstruct.occluder_mask`).
        Only frames already in memory count: this job's own keyframes are added after.

        The dropped Gaussians' directions from the job's cameras are marked as sky: those
        pixels of the job's views stay empty for good, and planning must count them as
        covered rather than ask for them again.

        Gaussians within ``spare_within`` metres of a new camera are never dropped (a job
        filling the holes a player looks at; see :meth:`build`).

        Every earlier keyframe counts only with ``WorldConfig.keep_keyframe_views`` (off by
        default): what players were shown is kept by the frozen seen views (:mod:`.revisit`),
        and keyframes are mostly of places no one was shown. The start image's keyframe always
        counts: the user chose that picture, so the world must keep showing it from there.
        """
        if len(gaussians) == 0 or len(self.memory) == 0:
            return gaussians
        protected = None if self.config.keep_keyframe_views else self._start_frame_ids()
        if protected is not None and not protected:
            return gaussians
        started = time.perf_counter()
        centers = cams.centers.astype(np.float32)  # [C, 3]
        offsets = gaussians.means[:, None, :] - centers[None, :, :]  # [G, C, 3]
        distances = np.linalg.norm(offsets, axis=2)  # [G, C] metres
        reach = AUTHORITY_RATIO * float(distances.min(axis=1).max())
        frames = self.memory.frames_viewing(gaussians.means.min(axis=0), gaussians.means.max(axis=0), reach)
        if protected is not None:
            frames = [f for f in frames if f.id in protected]
        if frames:
            shown = [self._shown_depth(f) for f in frames]
            occluder = occluder_mask(gaussians, frames, new_centers=centers, shown=shown, stride=self.config.reconstruct_stride)
            if spare_within > 0:
                spared = occluder & (distances.min(axis=1) <= spare_within)
                self.stats.gaussians_spared += int(spared.sum())
                occluder &= ~spared
            if occluder.any():
                rows = np.flatnonzero(occluder)
                nearest = distances[rows].argmin(axis=1)
                directions = offsets[rows, nearest] / np.maximum(distances[rows, nearest], 1e-6)[:, None]
                self.parts.sky_directions.mark(directions)
                self.stats.gaussians_dropped += len(rows)
                gaussians = gaussians.subset(np.flatnonzero(~occluder))
        self.stats.revisit_check_ms += (time.perf_counter() - started) * 1e3
        return gaussians

    def _start_frame_ids(self) -> set[int]:
        """Ids of the memory frames made from the world's start image (none for most worlds)."""
        start_chunks = {c.id for c in self.scene.snapshot().chunks if c.source.generator == START_IMAGE_SOURCE}
        return {f.id for f in self.memory.frames() if f.chunk_id in start_chunks} if start_chunks else set()

    def _shown_depth(self, frame: Frame) -> np.ndarray:
        """``[Hb, Wb]`` what ``frame``'s reconstruction shows (LRU-cached)."""
        cached = self._shown_depth_cache.get(frame.id)
        if cached is not None:
            self._shown_depth_cache.move_to_end(frame.id)
            return cached
        shown = shown_depth(frame.depth, stride=self.config.reconstruct_stride)
        self._shown_depth_cache[frame.id] = shown
        if len(self._shown_depth_cache) > SHOWN_DEPTH_CACHE_FRAMES:
            self._shown_depth_cache.popitem(last=False)
        return shown

    def _mark_explored(self, frames: Sequence[Frame]) -> list[tuple[int, int]]:
        """Mark explored cells from frames' surface points near their cameras (where splats are dense)."""
        new: list[tuple[int, int]] = []
        reach = self.config.explored_mark_distance
        for f in frames:
            pts = self.memory.points(f.id)
            if len(pts) == 0:
                continue
            c = f.center
            d = np.hypot(pts[:, 0] - c[0], pts[:, 2] - c[2])
            new.extend(self.parts.explored.mark_generated_points(pts[d <= reach]))
        return new

    def _without(self, snapshot: SceneSnapshot, masks: dict[int, np.ndarray]) -> SceneSnapshot:
        """``snapshot``'s chunks less the masked Gaussians (:meth:`.scene.Scene.without`: the
        chunk that lands retiring ``masks`` takes the same rebuilt chunks), with its far field:
        the fit and the seam blend see the layers the renderer draws (a refining job once fitted
        its colours against the bare sky, issue 16)."""
        if not masks:
            return snapshot
        return dataclasses.replace(snapshot, chunks=self.scene.without(snapshot.chunks, masks))

    def restore(self, next_frame_id: int) -> None:
        """Take a loaded world's frame counter (call under the planner lock)."""
        self.next_frame_id = next_frame_id

