"""The one interface every renderer implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from ..camera import Cameras
from ..scene import Chunk, SceneSnapshot
from ..sky import Sky

if TYPE_CHECKING:
    from .projection import PackedChunk


@dataclass(frozen=True)
class RenderOutput:
    """What a renderer returns for ``N`` cameras of ``H`` x ``W`` pixels.

    Attributes:
        rgb: ``[N, H, W, 3]`` uint8, splats composited over the sky.
        depth: ``[N, H, W]`` float32 expected depth along camera +z (metres),
            ``inf`` where alpha is ~0.
        alpha: ``[N, H, W]`` float32 accumulated splat opacity in [0, 1].
        scene_version: the snapshot version that was drawn.
    """

    rgb: np.ndarray
    depth: np.ndarray
    alpha: np.ndarray
    scene_version: int


def gather_outputs(parts: Sequence[tuple[np.ndarray, RenderOutput]], count: int) -> RenderOutput:
    """One output for ``count`` cameras from outputs rendered for subsets of them.

    Args:
        parts: ``(index, output)`` pairs; ``index`` ``[n]`` int gives the cameras (positions
            in the full batch) that ``output``'s ``n`` images belong to, in order. Together
            the indices must name every camera once. All outputs share one image size.
        count: cameras in the full batch.

    The ``scene_version`` is the first part's (callers render all parts from one snapshot).
    """
    if not parts:
        raise ValueError("gather_outputs: parts must not be empty")
    first = parts[0][1]
    h, w = first.rgb.shape[1:3]
    rgb = np.empty((count, h, w, 3), np.uint8)
    depth = np.empty((count, h, w), np.float32)
    alpha = np.empty((count, h, w), np.float32)
    filled = np.zeros(count, np.int32)
    for index, out in parts:
        index = np.asarray(index, np.int64)
        if out.rgb.shape != (len(index), h, w, 3):
            raise ValueError(f"gather_outputs: part for {len(index)} cameras has rgb {out.rgb.shape}, expected {(len(index), h, w, 3)}")
        rgb[index], depth[index], alpha[index] = out.rgb, out.depth, out.alpha
        np.add.at(filled, index, 1)
    if not (filled == 1).all():
        raise ValueError(f"gather_outputs: indices must name each of the {count} cameras once")
    return RenderOutput(rgb=rgb, depth=depth, alpha=alpha, scene_version=first.scene_version)


@dataclass(frozen=True)
class Backdrop:
    """What a renderer lays behind the scene at one camera of ``H`` x ``W`` pixels, for models
    of its picture (colour fitting: a pixel with transmittance ``T`` left after the splats
    shows ``T * (sky + w(T) * (background - sky))``, ``w`` ramping from 0 at ``T = far_from``
    to 1 at ``T = 1``; see :mod:`.far_pass`).

    Attributes:
        background: ``[H, W, 3]`` float32 in [0, 1], what shows where no splat covers a pixel:
            the sky with the snapshot's far field over it.
        sky: ``[H, W, 3]`` float32 in [0, 1], the sky alone; None when no far field is in view
            (then it is ``background``).
        far_from: the scene transmittance from which the far field shows, fully at 1; None:
            it lies behind the whole scene, as behind the sky (``w = 1``).
    """

    background: np.ndarray
    sky: np.ndarray | None
    far_from: float | None


class Renderer(Protocol):
    """Renders a scene snapshot from a batch of cameras.

    Implementations must be deterministic (same snapshot, cameras -> same pixels),
    thread-safe for concurrent ``render`` calls, and must not block on generation.
    """

    name: str
    far_see_through_from: float | None
    """How the far field is laid behind the scene (:func:`.far_pass.shown_alpha`): shown from
    this scene transmittance on (:data:`.far_pass.SEE_THROUGH_FROM`), or None: behind the
    whole scene, as a background."""
    packed_chunks: Callable[[Chunk], PackedChunk] | None
    """A chunk activated for the CPU kernels (:class:`.projection.PackedChunk`), from the cache
    this renderer's frames draw from, for the colour fit to share; None where the renderer keeps
    no such copies (it draws on a GPU)."""

    def render(self, snapshot: SceneSnapshot, cameras: Cameras, sky: Sky) -> RenderOutput: ...

    def render_alpha(self, snapshot: SceneSnapshot, cameras: Cameras) -> np.ndarray:
        """``[N, H, W]`` float32 opacity only (coverage tests); may be cheaper than ``render``."""
        ...

    def backdrop(self, snapshot: SceneSnapshot, camera: Cameras, sky: Sky) -> Backdrop:
        """What this renderer lays behind ``snapshot``'s chunks at one camera: the sky and the
        snapshot's far field (its chunks are not drawn); see :class:`Backdrop`."""
        ...
