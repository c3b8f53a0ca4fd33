"""Renderers: one interface (:class:`~runtime.world.render.base.Renderer`), a CPU and a gsplat implementation."""

from __future__ import annotations

import importlib.util

from .base import Backdrop, Renderer, RenderOutput
from .cuda import require_cuda_and_gsplat

RENDERER_NAMES = ("auto", "cpu", "gsplat")


def cuda_available() -> bool:
    """True when torch sees a CUDA device (torch is imported lazily)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def gsplat_importable() -> bool:
    """True when the ``gsplat`` package imports (it does not mean CUDA works)."""
    try:
        import gsplat  # noqa: F401
    except Exception:  # broken CUDA builds raise more than ImportError
        return False
    return True


def gsplat_installed() -> bool:
    """True when the ``gsplat`` package is installed: found, not imported (nor torch with it)."""
    return importlib.util.find_spec("gsplat") is not None


def auto_renderer() -> str:
    """The renderer ``"auto"`` names: ``"gsplat"`` when CUDA and gsplat are both there, else
    ``"cpu"``. Without gsplat installed it is decided without importing torch (2.8 s of CPU
    and its memory at every start of a CPU-only server)."""
    return "gsplat" if gsplat_installed() and cuda_available() and gsplat_importable() else "cpu"


def create_renderer(name: str = "auto", **options) -> Renderer:
    """A renderer by name.

    Args:
        name: ``"cpu"`` (numba, any machine), ``"gsplat"`` (CUDA, needs the ``gsplat``
            package) or ``"auto"`` (gsplat when CUDA and gsplat are both there, else cpu).
        options: passed to the renderer's constructor.
    Raises:
        ValueError: unknown name.
        RuntimeError: ``"gsplat"`` asked for where CUDA or the package is missing.
    """
    if name not in RENDERER_NAMES:
        raise ValueError(f"create_renderer: name must be one of {RENDERER_NAMES}, got {name!r}")
    if name == "auto":
        name = auto_renderer()
    if name == "cpu":
        from .cpu import CpuRenderer

        return CpuRenderer(**options)
    from .gsplat_renderer import GsplatRenderer

    return GsplatRenderer(**options)


__all__ = ["Backdrop", "Renderer", "RenderOutput", "auto_renderer", "create_renderer", "cuda_available", "gsplat_importable", "gsplat_installed", "require_cuda_and_gsplat", "RENDERER_NAMES"]
