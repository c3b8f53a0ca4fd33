"""Rasterisation constants shared by every renderer, so CPU and gsplat frames agree.

The values are those of 3DGS and gsplat's "classic" mode. No heavy imports here:
the gsplat renderer uses these without loading numba.
"""

NEAR_PLANE = 0.01
"""Gaussians nearer than this (metres along camera +z) are dropped."""
FAR_PLANE = 1e10
EPS2D = 0.3
"""Low-pass filter added to the projected 2D covariance's diagonal (pixels^2)."""
ALPHA_MIN = 1.0 / 255.0
"""A splat contributes to a pixel only where its alpha reaches this; below it a
pixel counts as empty (depth ``inf``)."""
ALPHA_MAX = 0.99
"""Per-splat alpha is clamped to this (3DGS; gsplat 1.5 uses 0.999)."""
T_MIN = 1e-4
"""A pixel stops taking splats before its transmittance would fall below this."""
JACOBIAN_CLAMP = 0.3
"""How far past the image edge (as a fraction of the half field of view) the EWA
linearisation point may go; keeps huge off-screen Gaussians from blowing up."""
