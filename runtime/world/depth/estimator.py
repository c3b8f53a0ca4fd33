"""Monocular depth through ``transformers`` (Depth Anything-class models), loaded once per process.

Weights are never fetched: a model is read from a local folder, or from a model id
already in the local Hugging Face cache (``local_files_only=True``). Both Depth Anything
kinds work:

* **metric** models (``config.depth_estimation_type == "metric"``, e.g. the
  Depth-Anything-V2-Metric checkpoints) predict metres; values near ``config.max_depth``
  are sky;
* **relative** models predict disparity up to an affine map: we invert it with the
  scale that puts the median non-sky pixel at ``relative_median_m`` metres (a guess,
  corrected by :mod:`.align` wherever the world already knows the depth); pixels below
  ``sky_fraction`` x the 99th-percentile disparity are sky.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

DEPTH_DOWNLOAD_HINT = (
    "download a Depth Anything checkpoint in transformers format, e.g. "
    "`huggingface-cli download depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf --local-dir DIR`, "
    "and pass --depth-model DIR"
)

BATCH = 8
"""Frames per forward pass (bounds GPU memory for long jobs)."""


class DepthModelMissing(RuntimeError):
    """The depth model named by the user is not on this machine (one line: what to download)."""


class TransformersDepthEstimator:
    """:class:`..generators.base.DepthEstimator` backed by a ``transformers`` depth model.

    Thread-safe: calls from several worlds take turns on the one model.

    Args:
        model: a loaded ``*ForDepthEstimation`` model (eval mode, on ``device``).
        processor: its image processor.
        device: torch device string the model runs on.
        relative_median_m: relative models only: metres given to the median non-sky pixel.
        sky_fraction: relative models: disparity below this x the 99th percentile is sky.
        sky_max_depth_ratio: metric models: depth at or above this x ``max_depth`` is sky.
    """

    def __init__(
        self,
        model,
        processor,
        device: str = "cpu",
        *,
        name: str = "depth",
        relative_median_m: float = 4.0,
        sky_fraction: float = 0.02,
        sky_max_depth_ratio: float = 0.97,
    ) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.name = name
        config = model.config
        self.metric = getattr(config, "depth_estimation_type", "relative") == "metric"
        self.max_depth = float(getattr(config, "max_depth", 0.0) or 0.0)
        self.relative_median_m = float(relative_median_m)
        self.sky_fraction = float(sky_fraction)
        self.sky_max_depth_ratio = float(sky_max_depth_ratio)
        self._lock = threading.Lock()

    def estimate(self, rgb: np.ndarray, cameras=None, memory: Sequence = ()) -> np.ndarray:
        """``rgb [N,H,W,3]`` uint8 -> ``[N,H,W]`` float32 z-depth in metres, ``inf`` for sky.

        ``cameras`` and ``memory`` are accepted for the protocol; a monocular model
        sees the pixels only (alignment to known geometry is :mod:`.align`'s job).
        """
        rgb = np.asarray(rgb)
        if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be [N, H, W, 3] uint8, got {rgb.shape} {rgb.dtype}")
        raw = self.predict(rgb)
        return np.stack([self._to_metres(r) for r in raw]) if len(raw) else np.zeros(rgb.shape[:3], np.float32)

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """The model's raw output resized to ``[N, H, W]`` float32 (metres or disparity)."""
        import torch

        N, H, W = rgb.shape[:3]
        out = np.empty((N, H, W), np.float32)
        with self._lock, torch.inference_mode():
            for start in range(0, N, BATCH):
                batch = list(rgb[start : start + BATCH])
                inputs = self.processor(images=batch, return_tensors="pt")
                pixels = inputs["pixel_values"].to(self.device, self.model.dtype)
                pred = self.model(pixel_values=pixels).predicted_depth  # [B, h, w]
                pred = torch.nn.functional.interpolate(pred[:, None].float(), size=(H, W), mode="bilinear", align_corners=False)
                out[start : start + len(batch)] = pred[:, 0].cpu().numpy()
        return out

    def _to_metres(self, raw: np.ndarray) -> np.ndarray:
        if self.metric:
            depth = np.where(np.isfinite(raw) & (raw > 0), raw, np.inf).astype(np.float32)
            if self.max_depth > 0:
                depth[depth >= self.sky_max_depth_ratio * self.max_depth] = np.inf
            return depth
        finite = raw[np.isfinite(raw) & (raw > 0)]
        if finite.size == 0:
            return np.full(raw.shape, np.inf, np.float32)
        ground = self.sky_fraction * float(np.percentile(finite, 99))
        solid = np.isfinite(raw) & (raw > ground)
        if not solid.any():
            return np.full(raw.shape, np.inf, np.float32)
        scale = self.relative_median_m * float(np.median(raw[solid]))
        with np.errstate(divide="ignore"):
            return np.where(solid, scale / np.where(solid, raw, 1.0), np.inf).astype(np.float32)


_loaded: dict[tuple[str, str, str], TransformersDepthEstimator] = {}
_load_lock = threading.Lock()


def load_depth_estimator(model: str, device: str | None = None, dtype: str | None = None, **options) -> TransformersDepthEstimator:
    """The depth estimator for ``model`` (a local folder, or a model id in the local HF cache).

    Loaded once per process and shared: later calls with the same ``(model, device, dtype)``
    return the same object. ``device`` defaults to ``cuda`` when available; ``dtype`` to
    float16 on CUDA and float32 on the CPU. ``options`` go to :class:`TransformersDepthEstimator`.

    Raises :class:`DepthModelMissing` (one line naming what to download) when the files
    are not on this machine; nothing is downloaded.
    """
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("float16" if device.startswith("cuda") else "float32")
    key = (str(model), device, dtype)
    with _load_lock:
        if key in _loaded:
            return _loaded[key]
        try:
            from transformers import AutoImageProcessor, AutoModelForDepthEstimation
        except ImportError:
            raise DepthModelMissing("the depth estimator needs transformers: pip install 'worldstream[diffusion]'") from None
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # no progress bars in server logs
        try:
            processor = AutoImageProcessor.from_pretrained(str(model), local_files_only=True)
            net = AutoModelForDepthEstimation.from_pretrained(str(model), local_files_only=True, dtype=getattr(torch, dtype))
        except OSError as e:
            looks_like_path = os.sep in str(model) or str(model).startswith(".")
            detail = "no such folder" if looks_like_path and not os.path.exists(model) else _first_line(e)
            raise DepthModelMissing(f"no depth model at {model!r} on this machine ({detail}); {DEPTH_DOWNLOAD_HINT}") from None
        net = net.to(device).eval()
        estimator = TransformersDepthEstimator(net, processor, device, name=f"depth:{model}", **options)
        log.info("depth model %s loaded on %s (%s, %s)", model, device, dtype, "metric" if estimator.metric else "relative")
        _loaded[key] = estimator
        return estimator


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
