"""Depth for frames that come without it: a ``transformers`` monocular estimator, its
alignment to the depth the world already knows, and depth maps read from files."""

from .align import align_inverse_depth, align_to_known
from .estimator import DepthModelMissing, TransformersDepthEstimator, load_depth_estimator
from .files import DepthMapError, decode_depth_png, read_depth_map, resize_depth

__all__ = [
    "DepthMapError",
    "DepthModelMissing",
    "TransformersDepthEstimator",
    "align_inverse_depth",
    "align_to_known",
    "decode_depth_png",
    "load_depth_estimator",
    "read_depth_map",
    "resize_depth",
]
