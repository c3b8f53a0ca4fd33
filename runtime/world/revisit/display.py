"""Drawing a batch of cameras: the plain snapshot, or what frozen seen views show.

A camera standing in a frozen seen view (:meth:`.seen_views.SeenViews.match_frozen`) must
see the scene as that view was shown, so it is drawn from a masked snapshot
(:class:`.seen_masks.HiddenSplats`). Every other camera is drawn from the plain snapshot
in one batched call, exactly as if no view had ever been seen; with no frozen view near
any camera, that one call is all :class:`Display` does (the streaming hot path).

Cameras in frozen views are grouped by view, one render call per group, and the outputs
are put back in camera order.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..camera import Cameras
from ..parts import WorldParts
from ..render.base import RenderOutput, gather_outputs
from ..render.video import GatheredVideoFrames, PendingVideoFrames, submit_video
from ..scene import SceneSnapshot
from .seen_masks import HiddenSplats
from .seen_views import SeenViews


class Display:
    """Renders camera batches, routing cameras in frozen seen views to masked snapshots.

    Args:
        parts: the world's shared state: its renderer and sky draw; it counts
            ``masked_renders`` (render calls for frozen-view groups).
        seen: the world's seen views.
        hidden: masked snapshots for frozen views.
    """

    def __init__(self, parts: WorldParts, seen: SeenViews, hidden: HiddenSplats) -> None:
        self.renderer, self.sky, self.stats = parts.renderer, parts.sky, parts.stats
        self.seen = seen
        self.hidden = hidden

    def render(self, snapshot: SceneSnapshot, cameras: Cameras) -> RenderOutput:
        """``RenderOutput`` for every camera, in order (see :meth:`.world.World.render`)."""
        groups = self.groups(snapshot, cameras)
        if groups is None:
            return self.renderer.render(snapshot, cameras, self.sky)
        if len(groups) == 1:  # every camera in one frozen view: no reassembly
            return self.renderer.render(groups[0][1], cameras, self.sky)
        parts = [(index, self.renderer.render(snap, cameras[index], self.sky)) for index, snap in groups]
        return gather_outputs(parts, len(cameras))

    def submit_video(self, snapshot: SceneSnapshot, cameras: Cameras, into: Sequence[np.ndarray | None] | None = None) -> PendingVideoFrames:
        """I420 pictures for every camera, in order (see :meth:`.world.World.submit_video`)."""
        groups = self.groups(snapshot, cameras)
        if groups is None:
            return submit_video(self.renderer, snapshot, cameras, self.sky, into)
        if len(groups) == 1:
            return submit_video(self.renderer, groups[0][1], cameras, self.sky, into)
        parts = [
            (index, submit_video(self.renderer, snap, cameras[index], self.sky, None if into is None else [into[k] for k in index]))
            for index, snap in groups
        ]
        return GatheredVideoFrames(parts, len(cameras))

    def groups(self, snapshot: SceneSnapshot, cameras: Cameras) -> list[tuple[np.ndarray, SceneSnapshot]] | None:
        """``(camera indices [n] int, snapshot to draw them from)`` per group, or None when
        every camera gets the plain snapshot. The plain group, if any, comes first."""
        views = self.seen.match_frozen(cameras)
        if views is None:
            return None
        by_view: dict[int, list[int]] = {}
        for i, v in enumerate(views):
            if v is not None:
                by_view.setdefault(v.record_id, []).append(i)
        plain = [i for i, v in enumerate(views) if v is None]
        masked = []
        for members in by_view.values():
            shown = self.hidden.snapshot(views[members[0]].in_snapshot(snapshot), snapshot)
            if shown is snapshot:  # unfinished, or nothing hidden: drawn with the plain batch
                plain.extend(members)
            else:
                masked.append((np.asarray(members, np.int64), shown))
        if not masked:
            return None
        self.stats.masked_renders += len(masked)
        return ([(np.asarray(sorted(plain), np.int64), snapshot)] if plain else []) + masked
