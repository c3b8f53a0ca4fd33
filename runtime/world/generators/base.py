"""The generator protocol: target cameras (+ context) in, RGB (+ depth) frames out.

A generator is anything with a ``name`` and a ``generate(request, progress, cancel)``
method. The procedural generator needs no weights; diffusion generators run on GPUs.
Generators run in a worker thread or process, never on the event loop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from ..camera import Cameras
from ..keyframes.frames import Frame

if TYPE_CHECKING:
    from ..render.base import RenderOutput

ProgressCallback = Callable[[float, str], None]
"""``progress(fraction in [0, 1], message)``; called from the generating thread."""


class GenerationCancelled(Exception):
    """Raised inside ``generate`` when its :class:`CancelToken` is set."""


class GeneratorUnavailable(RuntimeError):
    """A generator that cannot run on this machine (weights or packages missing), raised by
    its factory. The message is one line for the user: the option to set and what to get."""


class CancelToken:
    """Set by the scheduler when a job is no longer wanted; generators poll it."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise GenerationCancelled()


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate.

    Attributes:
        cameras: the ``N`` target views (``w2c [N,4,4]``, ``K [N,3,3]``, width, height).
        caption: text describing the region to generate.
        memory: past frames retrieved for these views (Lyra 2's spatial memory), best first.
        seed: the world's seed; a deterministic generator must give the same pixels for
            the same (seed, caption, cameras).
        start_image: ``[H, W, 3]`` uint8 image the world started from, or None.
        scene: draws the world's current scene at any cameras, ``scene(cameras) ->
            RenderOutput`` (``rgb``, ``depth``, ``alpha``), for generators that condition on
            what the world already shows; None outside a world.
    """

    cameras: Cameras
    caption: str = ""
    memory: tuple[Frame, ...] = ()
    seed: int = 0
    start_image: np.ndarray | None = None
    scene: Callable[[Cameras], "RenderOutput"] | None = None


@dataclass(frozen=True)
class GenerationResult:
    """Generated frames for a request's ``N`` cameras (or for ``cameras`` of its own).

    Attributes:
        rgb: ``[N, H, W, 3]`` uint8.
        depth: ``[N, H, W]`` float32 metres along camera +z, ``inf`` for sky; None when the
            generator makes RGB only (the world then runs its depth estimator, aligned to
            the depth its scene shows there).
        info: free-form facts for logs (timings, model name).
        cameras: where the frames were made when that is not the request's cameras (a
            video generator returns keyframes along the path it generated); the same
            width and height as the request's. None: the request's ``N`` cameras.
    """

    rgb: np.ndarray
    depth: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    cameras: Cameras | None = None


class Generator(Protocol):
    name: str

    def generate(
        self, request: GenerationRequest, progress: ProgressCallback, cancel: CancelToken
    ) -> GenerationResult: ...


class DepthEstimator(Protocol):
    """Turns RGB frames into metric depth for generators that output RGB only."""

    def estimate(self, rgb: np.ndarray, cameras: Cameras, memory: tuple[Frame, ...]) -> np.ndarray:
        """``rgb [N,H,W,3]`` uint8 -> ``[N,H,W]`` float32 depth in metres (``inf`` for sky)."""
        ...
