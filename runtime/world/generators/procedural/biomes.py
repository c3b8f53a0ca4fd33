"""Biomes: palettes, vegetation mixes and skies, picked from caption keywords.

Terrain *geometry* depends on the seed only (so regions generated with different captions
join without seams); a biome changes colours, water level, fog and which objects grow.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import numpy as np

from ...sky import Sky
from . import kernels as k

RGB = tuple[float, float, float]


def _unit(v: tuple[float, float, float]) -> tuple[float, float, float]:
    n = math.sqrt(sum(c * c for c in v))
    return (v[0] / n, v[1] / n, v[2] / n)


@dataclass(frozen=True)
class Biome:
    """A look for the procedural world. Colours are display RGB in [0, 1].

    Heights (``water_level``, ``snowline``) are metres up from the spawn ground; cell sizes
    and ``rock_size`` are metres; the ``mix_*`` fields are relative weights of object kinds.
    """

    name: str
    grass_a: RGB = (0.33, 0.52, 0.15)
    grass_b: RGB = (0.55, 0.62, 0.24)
    dirt: RGB = (0.47, 0.37, 0.25)
    rock: RGB = (0.50, 0.48, 0.45)
    sand: RGB = (0.80, 0.72, 0.52)
    snow: RGB = (0.93, 0.95, 0.98)
    water_shallow: RGB = (0.22, 0.45, 0.42)
    water_deep: RGB = (0.05, 0.18, 0.26)
    leaf_a: RGB = (0.22, 0.42, 0.12)
    leaf_b: RGB = (0.38, 0.52, 0.15)
    trunk: RGB = (0.36, 0.26, 0.18)
    conifer: RGB = (0.13, 0.28, 0.14)
    wall_a: RGB = (0.78, 0.72, 0.62)
    wall_b: RGB = (0.62, 0.40, 0.32)
    roof: RGB = (0.55, 0.25, 0.18)
    sun_color: RGB = (1.0, 0.93, 0.80)
    flower: RGB = (0.95, 0.85, 0.30)
    street: RGB = (0.27, 0.27, 0.29)
    water_level: float = -6.0
    snowline: float = 70.0
    beach_width: float = 1.2
    fog_density: float = 1.0 / 420.0
    ice: float = 0.0
    street_cell: float = 0.0
    strata: float = 0.0
    flower_density: float = 0.5
    snow_on_trees: float = 0.0
    tree_cell: float = 9.0
    tree_density: float = 0.35
    mix_round: float = 1.0
    mix_conifer: float = 0.3
    mix_palm: float = 0.0
    mix_cactus: float = 0.0
    mix_bush: float = 0.8
    mix_block: float = 0.0
    mix_house: float = 0.0
    rock_cell: float = 13.0
    rock_density: float = 0.18
    rock_size: float = 1.3
    tree_scale: float = 1.0
    ambient: float = 0.55
    sun_strength: float = 1.25
    grove_scale: float = 60.0
    sky: Sky = field(default_factory=Sky)

    def pack(self) -> np.ndarray:
        """``[BIOME_FIELDS]`` float64 parameter vector in the kernels' layout."""
        p = np.zeros(k.BIOME_FIELDS, np.float64)
        for index, value in (
            (k.B_GRASS_A, self.grass_a), (k.B_GRASS_B, self.grass_b), (k.B_DIRT, self.dirt),
            (k.B_ROCK, self.rock), (k.B_SAND, self.sand), (k.B_SNOW, self.snow),
            (k.B_WATER_SHALLOW, self.water_shallow), (k.B_WATER_DEEP, self.water_deep),
            (k.B_LEAF_A, self.leaf_a), (k.B_LEAF_B, self.leaf_b), (k.B_TRUNK, self.trunk),
            (k.B_CONIFER, self.conifer), (k.B_WALL_A, self.wall_a), (k.B_WALL_B, self.wall_b),
            (k.B_ROOF, self.roof), (k.B_SUN_COLOR, self.sun_color), (k.B_FLOWER, self.flower),
            (k.B_STREET, self.street),
        ):
            p[index : index + 3] = value
        for index, value in (
            (k.B_WATER_LEVEL, self.water_level), (k.B_SNOWLINE, self.snowline),
            (k.B_BEACH_WIDTH, self.beach_width), (k.B_FOG_DENSITY, self.fog_density),
            (k.B_ICE, self.ice), (k.B_STREET_CELL, self.street_cell), (k.B_STRATA, self.strata),
            (k.B_FLOWER_DENSITY, self.flower_density), (k.B_SNOW_ON_TREES, self.snow_on_trees),
            (k.B_TREE_CELL, self.tree_cell), (k.B_TREE_DENSITY, self.tree_density),
            (k.B_MIX_ROUND, self.mix_round), (k.B_MIX_CONIFER, self.mix_conifer),
            (k.B_MIX_PALM, self.mix_palm), (k.B_MIX_CACTUS, self.mix_cactus),
            (k.B_MIX_BUSH, self.mix_bush), (k.B_MIX_BLOCK, self.mix_block),
            (k.B_MIX_HOUSE, self.mix_house), (k.B_ROCK_CELL, self.rock_cell),
            (k.B_ROCK_DENSITY, self.rock_density), (k.B_ROCK_SIZE, self.rock_size),
            (k.B_TREE_SCALE, self.tree_scale), (k.B_AMBIENT, self.ambient),
            (k.B_SUN_STRENGTH, self.sun_strength), (k.B_GROVE_SCALE, self.grove_scale),
        ):
            p[index] = value
        return p


def pack_sky(sky: Sky) -> np.ndarray:
    """``[SKY_FIELDS]`` float64 sky parameters for the kernels (sun direction normalised)."""
    p = np.zeros(k.SKY_FIELDS, np.float64)
    p[k.S_ZENITH : k.S_ZENITH + 3] = sky.zenith
    p[k.S_HORIZON : k.S_HORIZON + 3] = sky.horizon
    p[k.S_GROUND : k.S_GROUND + 3] = sky.ground
    p[k.S_SUN_DIR : k.S_SUN_DIR + 3] = _unit(sky.sun_direction)
    p[k.S_SUN_COLOR : k.S_SUN_COLOR + 3] = sky.sun_color
    return p


# The sun stands to the right and behind the spawn view (+z), so the first view is side-lit.
_SUN = _unit((0.55, -0.52, -0.42))

MEADOW = Biome(
    name="meadow",
    sky=Sky(zenith=(0.24, 0.46, 0.86), horizon=(0.74, 0.85, 0.95), ground=(0.45, 0.52, 0.42), sun_direction=_SUN),
)

FOREST = replace(
    MEADOW,
    name="forest",
    grass_a=(0.22, 0.38, 0.11),
    grass_b=(0.36, 0.42, 0.16),
    dirt=(0.36, 0.28, 0.19),
    leaf_a=(0.16, 0.34, 0.10),
    leaf_b=(0.30, 0.44, 0.12),
    conifer=(0.10, 0.24, 0.12),
    flower=(0.80, 0.80, 0.85),
    flower_density=0.25,
    tree_cell=7.0,
    tree_density=0.8,
    mix_round=1.0,
    mix_conifer=1.2,
    mix_bush=0.5,
    rock_density=0.22,
    tree_scale=1.2,
    fog_density=1.0 / 260.0,
    grove_scale=90.0,
    sky=Sky(zenith=(0.30, 0.50, 0.80), horizon=(0.76, 0.85, 0.88), ground=(0.35, 0.42, 0.33), sun_direction=_SUN),
)

DESERT = replace(
    MEADOW,
    name="desert",
    grass_a=(0.86, 0.69, 0.45),
    grass_b=(0.80, 0.58, 0.36),
    dirt=(0.74, 0.50, 0.31),
    rock=(0.66, 0.40, 0.26),
    sand=(0.88, 0.75, 0.52),
    trunk=(0.45, 0.36, 0.24),
    leaf_a=(0.45, 0.50, 0.25),
    leaf_b=(0.55, 0.52, 0.28),
    water_level=-1000.0,
    flower_density=0.0,
    strata=1.0,
    tree_cell=12.0,
    tree_density=0.22,
    mix_round=0.0,
    mix_conifer=0.0,
    mix_cactus=1.0,
    mix_bush=0.6,
    rock_cell=12.0,
    rock_density=0.3,
    rock_size=1.6,
    sun_color=(1.0, 0.92, 0.78),
    sun_strength=1.4,
    fog_density=1.0 / 330.0,
    sky=Sky(zenith=(0.34, 0.55, 0.86), horizon=(0.93, 0.87, 0.76), ground=(0.70, 0.58, 0.45), sun_direction=_unit((0.45, -0.72, -0.35))),
)

SNOW = replace(
    MEADOW,
    name="snow",
    grass_a=(0.92, 0.94, 0.98),
    grass_b=(0.84, 0.88, 0.95),
    dirt=(0.78, 0.80, 0.86),
    rock=(0.38, 0.38, 0.40),
    sand=(0.80, 0.84, 0.90),
    water_shallow=(0.75, 0.85, 0.92),
    water_deep=(0.55, 0.70, 0.82),
    conifer=(0.10, 0.22, 0.16),
    leaf_a=(0.20, 0.26, 0.18),
    leaf_b=(0.28, 0.30, 0.22),
    trunk=(0.30, 0.24, 0.20),
    ice=1.0,
    snowline=-1000.0,
    flower_density=0.0,
    snow_on_trees=0.85,
    tree_cell=8.0,
    tree_density=0.5,
    mix_round=0.0,
    mix_conifer=1.0,
    mix_bush=0.0,
    rock_density=0.2,
    sun_color=(1.0, 0.88, 0.75),
    sun_strength=1.05,
    ambient=0.7,
    fog_density=1.0 / 240.0,
    sky=Sky(zenith=(0.42, 0.56, 0.78), horizon=(0.86, 0.89, 0.93), ground=(0.78, 0.80, 0.84), sun_direction=_unit((0.6, -0.32, -0.45)), sun_color=(1.0, 0.85, 0.7)),
)

CITY = replace(
    MEADOW,
    name="city",
    grass_a=(0.36, 0.50, 0.20),
    grass_b=(0.45, 0.52, 0.26),
    flower_density=0.0,
    street_cell=26.0,
    tree_cell=26.0,
    tree_density=0.92,
    mix_round=0.0,
    mix_conifer=0.0,
    mix_bush=0.0,
    mix_block=1.0,
    mix_house=1.2,
    rock_density=0.04,
    wall_a=(0.80, 0.76, 0.68),
    wall_b=(0.58, 0.34, 0.28),
    roof=(0.45, 0.22, 0.17),
    fog_density=1.0 / 300.0,
    sky=Sky(zenith=(0.30, 0.48, 0.80), horizon=(0.80, 0.84, 0.90), ground=(0.45, 0.46, 0.48), sun_direction=_SUN),
)

BEACH = replace(
    MEADOW,
    name="beach",
    grass_a=(0.45, 0.60, 0.22),
    grass_b=(0.60, 0.66, 0.30),
    sand=(0.92, 0.84, 0.64),
    water_shallow=(0.25, 0.75, 0.72),
    water_deep=(0.03, 0.30, 0.50),
    water_level=-0.9,
    beach_width=3.5,
    flower_density=0.2,
    flower=(0.95, 0.45, 0.55),
    tree_cell=11.0,
    tree_density=0.45,
    mix_round=0.15,
    mix_conifer=0.0,
    mix_palm=1.0,
    mix_bush=0.5,
    rock_density=0.12,
    leaf_a=(0.25, 0.50, 0.14),
    leaf_b=(0.40, 0.58, 0.18),
    sun_strength=1.35,
    fog_density=1.0 / 480.0,
    sky=Sky(zenith=(0.14, 0.48, 0.90), horizon=(0.70, 0.87, 0.97), ground=(0.30, 0.55, 0.62), sun_direction=_SUN),
)

BIOMES: dict[str, Biome] = {b.name: b for b in (MEADOW, FOREST, DESERT, SNOW, CITY, BEACH)}

# Caption words -> biome. The first keyword found (earliest in the caption) wins.
KEYWORDS: dict[str, str] = {
    "forest": "forest", "woods": "forest", "woodland": "forest", "jungle": "forest", "pine": "forest", "trees": "forest",
    "desert": "desert", "dune": "desert", "dunes": "desert", "canyon": "desert", "sahara": "desert", "mesa": "desert",
    "snow": "snow", "snowy": "snow", "winter": "snow", "arctic": "snow", "ice": "snow", "frozen": "snow", "tundra": "snow",
    "city": "city", "town": "city", "village": "city", "street": "city", "streets": "city", "urban": "city", "houses": "city",
    "beach": "beach", "ocean": "beach", "island": "beach", "sea": "beach", "coast": "beach", "tropical": "beach", "lagoon": "beach",
    "meadow": "meadow", "hills": "meadow", "grassland": "meadow", "field": "meadow", "valley": "meadow",
}


def biome_for_caption(caption: str) -> Biome:
    """The biome named by the first keyword in ``caption``; the meadow when none matches."""
    for word in re.findall(r"[a-z]+", caption.lower()):
        name = KEYWORDS.get(word)
        if name is not None:
            return BIOMES[name]
    return MEADOW
