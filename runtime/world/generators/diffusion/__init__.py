"""``wan-vace``: a video diffusion generator (diffusers' Wan VACE) conditioned on
geometry-routed memory, as Lyra 2 grows its worlds. Needs ``worldstream[diffusion]`` and
weights the user downloaded (docs/generators.md)."""

from .generator import VideoDiffusionGenerator
from .path import CameraPath, camera_path, frames_for_budget, start_pose
from .routing import Conditioning, forward_warp, route

__all__ = [
    "CameraPath",
    "Conditioning",
    "VideoDiffusionGenerator",
    "camera_path",
    "forward_warp",
    "frames_for_budget",
    "route",
    "start_pose",
]
