"""Tinting a biome with the dominant colours of a start image.

A start image is usually a landscape photo: its top rows are mostly sky and its bottom
rows mostly ground. We take a robust colour from each band (the per-channel median,
which ignores small bright or dark objects) and pull the biome's sky and ground colours
part of the way toward them, so the world inherits the picture's mood while keeping the
biome's contrast between grass, dirt and rock.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ...sky import Sky
from .biomes import RGB, Biome

SKY_PULL = 0.5
"""How far sky colours move toward the image's top band (0 = unchanged, 1 = replaced)."""
GROUND_PULL = 0.45
"""How far ground and vegetation colours move toward the image's bottom band."""


class StartImageError(ValueError):
    """The start image is not an ``[H, W, 3]`` uint8 array."""


def dominant_colors(image: np.ndarray) -> tuple[RGB, RGB]:
    """``[H, W, 3]`` uint8 image -> ``(top band colour, bottom band colour)`` in [0, 1]."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise StartImageError(f"start_image must be [H, W, 3] uint8, got shape {img.shape} dtype {img.dtype}")
    if img.shape[0] < 2 or img.shape[1] < 1:
        raise StartImageError(f"start_image must be at least 2 pixels tall, got {img.shape[0]}")
    # Subsample large images: medians of ~10k pixels are as good as of millions.
    step = max(1, int(np.sqrt(img.shape[0] * img.shape[1] / 10000)))
    small = img[::step, ::step].astype(np.float64) / 255.0
    h = small.shape[0]
    top = np.median(small[: max(1, h // 3)].reshape(-1, 3), axis=0)
    bottom = np.median(small[h - max(1, (2 * h) // 5) :].reshape(-1, 3), axis=0)
    return tuple(float(c) for c in top), tuple(float(c) for c in bottom)


def _toward(color: RGB, target: np.ndarray, amount: float, keep_luma: bool) -> RGB:
    c = np.asarray(color, np.float64)
    t = np.asarray(target, np.float64)
    if keep_luma:
        # Take the target's hue and saturation but keep the original brightness, so snow
        # stays bright and shadowed grass stays dark.
        luma = lambda x: 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
        t = t * (luma(c) / max(luma(t), 1e-3))
    out = np.clip(c + (t - c) * amount, 0.0, 1.0)
    return tuple(float(v) for v in out)


def tint_biome(biome: Biome, image: np.ndarray) -> Biome:
    """``biome`` with sky and ground colours pulled toward ``image``'s dominant colours."""
    top, bottom = dominant_colors(image)
    top_a = np.asarray(top)
    bottom_a = np.asarray(bottom)
    sky = biome.sky
    new_sky = Sky(
        zenith=_toward(sky.zenith, top_a, SKY_PULL, keep_luma=True),
        horizon=_toward(sky.horizon, top_a, SKY_PULL * 0.8, keep_luma=True),
        ground=_toward(sky.ground, bottom_a, SKY_PULL, keep_luma=False),
        sun_direction=sky.sun_direction,
        sun_color=sky.sun_color,
    )
    ground = {
        name: _toward(getattr(biome, name), bottom_a, GROUND_PULL, keep_luma=True)
        for name in ("grass_a", "grass_b", "dirt", "leaf_a", "leaf_b", "conifer")
    }
    return replace(biome, sky=new_sky, **ground)
