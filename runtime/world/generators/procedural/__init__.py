"""The default, weight-free generator: a seeded signed-distance world, ray-marched with numba.

Terrain with fBm hills and far ridges, water, rocks, trees or buildings, sky, lit by a sun
with soft shadows and ambient occlusion, fogged toward the horizon. Captions pick a biome
(forest, desert, snow, city, beach, meadow); a start image tints its palette.
"""

from .biomes import BIOMES, Biome, biome_for_caption
from .generator import ProceduralGenerator, ProceduralRequestError, ground_height_y, to_uint8
from .kernels import EYE_HEIGHT, SPAWN_CLEAR_RADIUS
from .palette import StartImageError

__all__ = [
    "BIOMES",
    "Biome",
    "EYE_HEIGHT",
    "ProceduralGenerator",
    "ProceduralRequestError",
    "SPAWN_CLEAR_RADIUS",
    "StartImageError",
    "biome_for_caption",
    "ground_height_y",
    "to_uint8",
]
