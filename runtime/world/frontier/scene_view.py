"""``GenerationRequest.scene``: the world's scene, drawable at any cameras, wherever the generator runs.

In the world's process a :class:`SceneView` draws the scene as it is at the call, with the
world's renderer. A generator in another process (a Ray actor: ``runtime/scale``) gets it
pickled: the copy carries the scene snapshot taken when the request was sent, and the sky,
and draws with a renderer of its own process (``create_renderer("auto")``: gsplat on a GPU
actor, else the CPU one), made once per process.
"""

from __future__ import annotations

import threading

from ..camera import Cameras
from ..render.base import Renderer, RenderOutput
from ..scene import Scene, SceneSnapshot
from ..sky import Sky

_renderer: Renderer | None = None  # this process's renderer for pickled views
_renderer_lock = threading.Lock()


def _process_renderer() -> Renderer:
    global _renderer
    with _renderer_lock:
        if _renderer is None:
            from ..render import create_renderer

            _renderer = create_renderer("auto")
        return _renderer


class SceneView:
    """Callable ``view(cameras) -> RenderOutput`` (``rgb``, ``depth``, ``alpha``) of a world's scene."""

    def __init__(self, scene: Scene, sky: Sky, renderer: Renderer) -> None:
        self._scene: Scene | None = scene
        self._snapshot: SceneSnapshot | None = None
        self._sky, self._renderer = sky, renderer

    def __call__(self, cameras: Cameras) -> RenderOutput:
        snapshot = self._scene.snapshot() if self._scene is not None else self._snapshot
        renderer = self._renderer if self._renderer is not None else _process_renderer()
        return renderer.render(snapshot, cameras, self._sky)

    def __getstate__(self) -> dict:
        # Plain data only: the live scene and the renderer stay in the world's process.
        snapshot = self._scene.snapshot() if self._scene is not None else self._snapshot
        return {"snapshot": snapshot, "sky": self._sky}

    def __setstate__(self, state: dict) -> None:
        self._scene, self._renderer = None, None
        self._snapshot, self._sky = state["snapshot"], state["sky"]
