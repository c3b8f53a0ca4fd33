"""What the CUDA paths (the gsplat renderer, chunk optimisation) need, checked with a clear error.

No heavy imports at module level: torch and gsplat are imported when asked for.
"""

from __future__ import annotations


def require_cuda_and_gsplat(what: str, fallback: str = ""):
    """``(torch, gsplat)`` imported, or RuntimeError saying precisely what ``what`` is missing
    (``fallback``, e.g. "; use the cpu renderer", ends the no-GPU message)."""
    try:
        import torch
    except ImportError as exc:  # torch is in the gpu extra, not a dependency
        raise RuntimeError(f"{what} needs torch with CUDA (pip install 'worldstream[gpu]'): {exc}") from exc
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"{what} needs a CUDA GPU, but torch sees none (torch {torch.__version__}, CUDA build {torch.version.cuda}){fallback}"
        )
    try:
        import gsplat
    except Exception as exc:  # broken CUDA builds raise more than ImportError
        raise RuntimeError(f"{what} needs the gsplat package (pip install 'worldstream[gpu]'): import failed: {exc}") from exc
    return torch, gsplat
