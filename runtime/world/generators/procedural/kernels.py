"""Numba kernels of the procedural world: noise, terrain, objects, ray marching, shading.

Every JIT-compiled function of the procedural generator lives in this module so it is
compiled once per process (and cached on disk with ``cache=True``). Kernels release the
GIL (``nogil=True``) so a worker thread can generate while the server renders.

Conventions are worldstream's: OpenCV cameras, world ``+y`` points **down**, metres.
*Elevation* means metres **up** (``-y``) above the spawn ground, which lies at
``y = +EYE_HEIGHT``; so ``ground_y = EYE_HEIGHT - elevation``.

Everything drawn is a pure function of world position, the seed and the biome
parameters: never of the camera (apart from distance fog and water reflections,
which are view-dependent by nature), so overlapping views agree after reprojection.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

EYE_HEIGHT = 1.7
"""Spawn eye height above the ground (metres); the ground at the origin is at y = +1.7."""
SPAWN_CLEAR_RADIUS = 4.0
"""No object or water within this horizontal distance (metres) of the origin."""
SPAWN_FLAT_RADIUS = 5.0
"""The ground is exactly flat (y = +1.7) within this radius and blends into hills by SPAWN_BLEND_RADIUS."""
SPAWN_BLEND_RADIUS = 32.0
MAX_STEPS = 240
SHADOW_STEPS = 20
SHADOW_RANGE = 50.0

# error_model="numpy": a float division by zero gives inf/nan instead of raising, so numba
# emits no zero test per division (~5 % of a trace). Where the old model would not have
# raised, every pixel is bit-identical (tests/test_procedural.py checks it against the
# python error model).
_JIT = dict(fastmath=True, cache=True, nogil=True, error_model="numpy")

# ---- materials ----
MAT_SKY = 0
MAT_TERRAIN = 1
MAT_WATER = 2
MAT_TRUNK = 3
MAT_LEAVES = 4
MAT_CONIFER = 5
MAT_CACTUS = 6
MAT_PALM = 7
MAT_WALL = 8
MAT_ROOF = 9
MAT_ROCK = 10

# ---- object kinds (column 0 of an object table) ----
KIND_NONE = 0
KIND_ROUND_TREE = 1
KIND_CONIFER = 2
KIND_PALM = 3
KIND_CACTUS = 4
KIND_BLOCK = 5
KIND_HOUSE = 6
KIND_BUSH = 7
KIND_ROCK = 8

# Object table columns: one record per grid cell, ``[nx, nz, OBJ_FIELDS]`` float64.
O_KIND, O_X, O_Z, O_BASE_Y, O_HEIGHT, O_FOOT, O_CROWN, O_HX, O_HZ, O_RND, O_TOP_Y, O_ROT = range(12)
OBJ_FIELDS = 12
# Table meta ``[4]``: first cell index x, first cell index z, cell size (m), min top y over the table.
M_IX0, M_IZ0, M_CELL, M_TOP = range(4)

# ---- biome parameter vector (float64), filled by biomes.Biome.pack ----
# The seven B_MIX_* weights are in KIND_* order (round tree .. bush), so weight k picks kind k + 1.
B_GRASS_A = 0
B_GRASS_B = 3
B_DIRT = 6
B_ROCK = 9
B_SAND = 12
B_SNOW = 15
B_WATER_SHALLOW = 18
B_WATER_DEEP = 21
B_LEAF_A = 24
B_LEAF_B = 27
B_TRUNK = 30
B_CONIFER = 33
B_WALL_A = 36
B_WALL_B = 39
B_ROOF = 42
B_SUN_COLOR = 45
B_FLOWER = 48
B_STREET = 51
B_WATER_LEVEL = 54
B_SNOWLINE = 55
B_BEACH_WIDTH = 56
B_FOG_DENSITY = 57
B_ICE = 58
B_STREET_CELL = 59
B_STRATA = 60
B_FLOWER_DENSITY = 61
B_SNOW_ON_TREES = 62
B_TREE_CELL = 63
B_TREE_DENSITY = 64
B_MIX_ROUND = 65
B_MIX_CONIFER = 66
B_MIX_PALM = 67
B_MIX_CACTUS = 68
B_MIX_BLOCK = 69
B_MIX_HOUSE = 70
B_MIX_BUSH = 71
B_ROCK_CELL = 72
B_ROCK_DENSITY = 73
B_ROCK_SIZE = 74
B_TREE_SCALE = 75
B_AMBIENT = 76
B_SUN_STRENGTH = 77
B_GROVE_SCALE = 78
BIOME_FIELDS = 80

# ---- sky parameter vector: zenith, horizon, ground, unit sun direction, sun colour ----
S_ZENITH, S_HORIZON, S_GROUND, S_SUN_DIR, S_SUN_COLOR = 0, 3, 6, 9, 12
SKY_FIELDS = 15


# =====================================================================================
# noise
# =====================================================================================
@njit(**_JIT)
def hash_u32(ix, iz, seed):
    """Integer lattice point + seed -> well-mixed 32-bit integer (int64 holding it)."""
    h = (ix * 73856093) ^ (iz * 19349663) ^ (seed * 83492791)
    h = h & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    return (h >> 16) ^ h


@njit(**_JIT)
def hash01(ix, iz, seed):
    """Lattice point + seed -> float in [0, 1)."""
    return hash_u32(ix, iz, seed) * (1.0 / 4294967296.0)


@njit(**_JIT)
def _corner(ix, iz, seed, dx, dz):
    h = hash_u32(ix, iz, seed)
    gx = (h & 0xFFFF) * (2.0 / 65535.0) - 1.0
    gz = (h >> 16) * (2.0 / 65535.0) - 1.0
    return gx * dx + gz * dz


@njit(**_JIT)
def gnoise(x, z, seed):
    """2D gradient noise, roughly in [-0.7, 0.7], smooth (quintic fade), lattice spacing 1."""
    fx0 = math.floor(x)
    fz0 = math.floor(z)
    ix = np.int64(fx0)
    iz = np.int64(fz0)
    fx = x - fx0
    fz = z - fz0
    ux = fx * fx * fx * (fx * (fx * 6.0 - 15.0) + 10.0)
    uz = fz * fz * fz * (fz * (fz * 6.0 - 15.0) + 10.0)
    a = _corner(ix, iz, seed, fx, fz)
    b = _corner(ix + 1, iz, seed, fx - 1.0, fz)
    c = _corner(ix, iz + 1, seed, fx, fz - 1.0)
    d = _corner(ix + 1, iz + 1, seed, fx - 1.0, fz - 1.0)
    return a + (b - a) * ux + (c - a) * uz + (a - b - c + d) * ux * uz


@njit(**_JIT)
def smoothstep(e0, e1, x):
    t = (x - e0) / (e1 - e0)
    t = min(max(t, 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


@njit(**_JIT)
def clamp01(x):
    return min(max(x, 0.0), 1.0)


# =====================================================================================
# terrain (depends on the seed only, so regions of different biomes join without seams)
# =====================================================================================
HILL_SCALE = 120.0
"""Wavelength of the largest hills (metres)."""
HILL_AMPLITUDE = 20.0
HILL_GAIN = 0.46
GEOMETRY_OCTAVES = 5
"""Octaves in the terrain's shape (finest wavelength ~7 m); finer ones only bend shading normals."""
DETAIL_OCTAVES = 7
"""Octaves of the shading heightfield (finest wavelength ~1.7 m)."""
GRID_STEP = 1.0
"""Spacing (metres) of the world-anchored height lattice the terrain interpolates."""
TERRAIN_LIPSCHITZ = 1.0
"""Steepest terrain slope (rise/run) the marcher assumes when stepping along a ray."""


@njit(**_JIT)
def hills(x, z, seed, octaves):
    """fBm hills (metres up) from the first ``octaves`` octaves of gradient noise."""
    # Each octave is rotated ~37 degrees against grid-aligned artefacts.
    px = x * (1.0 / HILL_SCALE)
    pz = z * (1.0 / HILL_SCALE)
    h = 0.0
    a = HILL_AMPLITUDE
    for i in range(octaves):
        h += a * gnoise(px, pz, seed + i * 1013)
        a *= HILL_GAIN
        qx = (0.8 * px - 0.6 * pz) * 2.03
        pz = (0.6 * px + 0.8 * pz) * 2.03
        px = qx
    return h


@njit(**_JIT)
def mountains(x, z, seed):
    """Ridged mountains on a continental scale (metres up), rising only away from the spawn."""
    r2 = x * x + z * z
    if r2 <= 140.0 * 140.0:
        return 0.0
    mx = x * (1.0 / 480.0)
    mz = z * (1.0 / 480.0)
    ridge = 0.0
    a = 1.0
    for i in range(3):
        n = 1.0 - abs(gnoise(mx, mz, seed + 7919 + i * 31) * 1.4)
        ridge += a * n * n
        a *= 0.5
        qx = (0.8 * mx - 0.6 * mz) * 2.1
        mz = (0.6 * mx + 0.8 * mz) * 2.1
        mx = qx
    return max(ridge - 0.7, 0.0) * 90.0 * smoothstep(140.0, 420.0, math.sqrt(r2))


@njit(**_JIT)
def lattice_height(i, j, seed):
    """Raw terrain height (metres up) at lattice node ``(i, j)``, i.e. world ``(i, j) * GRID_STEP``."""
    x = i * GRID_STEP
    z = j * GRID_STEP
    return hills(x, z, seed, GEOMETRY_OCTAVES) + mountains(x, z, seed)


@njit(parallel=True, **_JIT)
def fill_height_grid(i0, j0, seed, out):
    """``out [ni, nj]`` float64 <- lattice heights of nodes ``i0.., j0..`` (a cache of lattice_height)."""
    for a in prange(out.shape[0]):
        for b in range(out.shape[1]):
            out[a, b] = lattice_height(i0 + a, j0 + b, seed)


@njit(**_JIT)
def raw_elevation(x, z, seed, hg, hm):
    """Unflattened terrain height (metres up): the lattice heights, bilinearly interpolated.

    ``hg [ni, nj]`` caches lattice heights from node ``hm = (i0, j0)``; outside it the nodes are
    computed on the spot, so the result never depends on what the cache covers.
    """
    fx = x * (1.0 / GRID_STEP)
    fz = z * (1.0 / GRID_STEP)
    ffx = math.floor(fx)
    ffz = math.floor(fz)
    tx = fx - ffx
    tz = fz - ffz
    i = np.int64(ffx) - np.int64(hm[0])
    j = np.int64(ffz) - np.int64(hm[1])
    if i >= 0 and j >= 0 and i + 1 < hg.shape[0] and j + 1 < hg.shape[1]:
        h00 = hg[i, j]
        h10 = hg[i + 1, j]
        h01 = hg[i, j + 1]
        h11 = hg[i + 1, j + 1]
    else:
        ii = np.int64(ffx)
        jj = np.int64(ffz)
        h00 = lattice_height(ii, jj, seed)
        h10 = lattice_height(ii + 1, jj, seed)
        h01 = lattice_height(ii, jj + 1, seed)
        h11 = lattice_height(ii + 1, jj + 1, seed)
    return (h00 * (1.0 - tx) + h10 * tx) * (1.0 - tz) + (h01 * (1.0 - tx) + h11 * tx) * tz


@njit(**_JIT)
def spawn_weight(x, z):
    """0 within SPAWN_FLAT_RADIUS of the origin, rising smoothly to 1 at SPAWN_BLEND_RADIUS."""
    return smoothstep(SPAWN_FLAT_RADIUS, SPAWN_BLEND_RADIUS, math.sqrt(x * x + z * z))


@njit(**_JIT)
def elevation(x, z, seed, e0, hg, hm):
    """Terrain height (metres up) relative to the spawn ground; ``e0 = lattice_height(0, 0, seed)``.

    Exactly 0 within SPAWN_FLAT_RADIUS of the origin, so the spawn is flat and walkable.
    """
    w = spawn_weight(x, z)
    if w <= 0.0:
        return 0.0
    return (raw_elevation(x, z, seed, hg, hm) - e0) * w


@njit(**_JIT)
def shading_elevation(x, z, seed, e0):
    """The terrain with all DETAIL_OCTAVES, analytic: used only for shading normals (bump mapping)."""
    w = spawn_weight(x, z)
    return (hills(x, z, seed, DETAIL_OCTAVES) + mountains(x, z, seed) - e0) * w


@njit(**_JIT)
def ground_y_array(x, z, seed, out):
    """Vectorised ground height: ``x, z, out`` are flat float64 arrays of equal length."""
    e0 = lattice_height(0, 0, seed)
    hg = np.zeros((0, 0))
    hm = np.zeros(2)
    for i in range(x.shape[0]):
        out[i] = EYE_HEIGHT - elevation(x[i], z[i], seed, e0, hg, hm)


# =====================================================================================
# objects: one per grid cell, precomputed into a table per view so marching is cheap
# =====================================================================================
@njit(**_JIT)
def build_object_table(ix0, iz0, nx, nz, cell, seed, e0, hg, hm, bp, rocks, out, meta):
    """Fill ``out [nx, nz, OBJ_FIELDS]`` with the objects of cells ``ix0.., iz0..``.

    ``rocks`` selects the rock layer (else trees/buildings). Each object lies entirely inside
    its cell (footprint radius O_FOOT), which lets the marcher bound the distance to all
    objects outside a 2x2 block of cells by the distance to that block's border.
    """
    water = bp[B_WATER_LEVEL]
    street = bp[B_STREET_CELL]
    top_min = 1e9
    layer_seed = seed + (50021 if rocks else 40009)
    for i in range(nx):
        for j in range(nz):
            ci = ix0 + i
            cj = iz0 + j
            rec = out[i, j]
            rec[:] = 0.0
            rec[O_TOP_Y] = 1e9
            cx = (ci + 0.5) * cell
            cz = (cj + 0.5) * cell
            u_presence = hash01(ci, cj, layer_seed)
            u_kind = hash01(ci, cj, layer_seed + 1)
            u_jx = hash01(ci, cj, layer_seed + 2)
            u_jz = hash01(ci, cj, layer_seed + 3)
            u_size = hash01(ci, cj, layer_seed + 4)
            u_rnd = hash01(ci, cj, layer_seed + 5)
            if rocks:
                density = bp[B_ROCK_DENSITY]
            else:
                # Groves and clearings: density follows a low-frequency noise field.
                g = gnoise(cx / bp[B_GROVE_SCALE], cz / bp[B_GROVE_SCALE], seed + 777)
                density = bp[B_TREE_DENSITY] * clamp01(0.55 + 1.6 * g)
            if u_presence >= density:
                continue
            if rocks:
                kind = KIND_ROCK
            else:
                kind = KIND_NONE
                acc = 0.0
                total = 0.0
                for k in range(7):
                    total += bp[B_MIX_ROUND + k]
                pick = u_kind * total
                for k in range(7):
                    acc += bp[B_MIX_ROUND + k]
                    if pick < acc:
                        kind = k + 1
                        break
                if kind == KIND_NONE:
                    continue
            s = bp[B_TREE_SCALE] * (0.75 + 0.5 * u_size)
            height = 0.0
            foot = 0.0
            crown = 0.0
            hx = 0.0
            hz = 0.0
            if kind == KIND_ROUND_TREE:
                height = 7.5 * s
                crown = 2.4 * s
                foot = crown * 1.45
            elif kind == KIND_CONIFER:
                height = 11.0 * s
                crown = 2.3 * s
                foot = crown + 0.2
            elif kind == KIND_PALM:
                height = 8.0 * s
                crown = 3.2 * s
                foot = crown + 1.7 * s + 0.3
            elif kind == KIND_CACTUS:
                height = 3.6 * s
                crown = 0.33 * s
                foot = 1.4 * s
            elif kind == KIND_BUSH:
                crown = 1.1 * s
                height = crown * 1.3
                foot = crown * 1.05 + 0.2
            elif kind == KIND_BLOCK:
                hx = cell * (0.22 + 0.12 * u_jx)
                hz = cell * (0.22 + 0.12 * u_jz)
                height = 9.0 + 34.0 * u_size * u_size
                foot = math.sqrt(hx * hx + hz * hz) + 0.5
            elif kind == KIND_HOUSE:
                hx = cell * (0.14 + 0.07 * u_jx)
                hz = cell * (0.11 + 0.05 * u_jz)
                height = 3.0 + 3.2 * u_size
                crown = 1.5 + 1.5 * u_rnd  # roof height
                foot = math.sqrt(hx * hx + hz * hz) + 0.8
            elif kind == KIND_ROCK:
                rsz = bp[B_ROCK_SIZE] * (0.35 + 1.3 * u_size * u_size)
                hx = rsz * (0.8 + 0.5 * u_jx)
                hz = rsz * (0.8 + 0.5 * u_jz)
                height = rsz * (0.55 + 0.35 * u_rnd)
                foot = max(hx, hz) * 1.2 + 0.1
            margin = 0.5 * cell - foot
            if margin < 0.0:
                continue
            if kind == KIND_BLOCK or kind == KIND_HOUSE:
                px = cx  # buildings stay on the street grid
                pz = cz
            else:
                px = cx + (2.0 * u_jx - 1.0) * margin
                pz = cz + (2.0 * u_jz - 1.0) * margin
            clear = SPAWN_CLEAR_RADIUS + foot + 0.3
            if px * px + pz * pz < clear * clear:
                continue
            el = elevation(px, pz, seed, e0, hg, hm)
            if el < water + 0.35:
                continue
            # Slope from the corners of the footprint: nothing on cliffs, and buildings sink to
            # their lowest corner so none floats over a slope.
            r = max(foot * 0.7, 0.5)
            e1 = elevation(px + r, pz, seed, e0, hg, hm)
            e2 = elevation(px - r, pz, seed, e0, hg, hm)
            e3 = elevation(px, pz + r, seed, e0, hg, hm)
            e4 = elevation(px, pz - r, seed, e0, hg, hm)
            slope = max(max(abs(e1 - el), abs(e2 - el)), max(abs(e3 - el), abs(e4 - el))) / r
            if slope > (1.2 if kind == KIND_ROCK else 0.55):
                continue
            if kind == KIND_PALM and el > water + 6.0 + 2.0 * u_rnd:
                continue  # palms stay near the shore
            if street > 0.0 and kind != KIND_ROCK and kind != KIND_BLOCK and kind != KIND_HOUSE:
                # In towns, trees line the plots, away from the streets.
                fx = px / street - math.floor(px / street)
                fz = pz / street - math.floor(pz / street)
                edge = min(min(fx, 1.0 - fx), min(fz, 1.0 - fz)) * street
                if edge < 4.5 + foot:
                    continue
            lowest = min(min(min(e1, e2), min(e3, e4)), el)
            base_y = EYE_HEIGHT - (lowest if (kind == KIND_BLOCK or kind == KIND_HOUSE) else el)
            top = base_y - height - (crown if kind == KIND_HOUSE else 0.0) - 0.5
            rec[O_KIND] = kind
            rec[O_X] = px
            rec[O_Z] = pz
            rec[O_BASE_Y] = base_y
            rec[O_HEIGHT] = height
            rec[O_FOOT] = foot
            rec[O_CROWN] = crown
            rec[O_HX] = hx
            rec[O_HZ] = hz
            rec[O_RND] = u_rnd
            rec[O_TOP_Y] = top
            rec[O_ROT] = u_rnd * 6.2831853
            top_min = min(top_min, top)
    meta[M_IX0] = ix0
    meta[M_IZ0] = iz0
    meta[M_CELL] = cell
    meta[M_TOP] = top_min


@njit(**_JIT)
def _ellipsoid(x, y, z, rx, ry, rz):
    """Approximate signed distance to an axis-aligned ellipsoid at the origin (a bound)."""
    k0 = math.sqrt((x / rx) ** 2 + (y / ry) ** 2 + (z / rz) ** 2)
    k1 = math.sqrt((x / (rx * rx)) ** 2 + (y / (ry * ry)) ** 2 + (z / (rz * rz)) ** 2)
    if k1 < 1e-9:
        return -min(rx, min(ry, rz))
    return k0 * (k0 - 1.0) / k1


@njit(**_JIT)
def _capsule(x, y, z, ax, ay, az, bx, by, bz, r):
    pax = x - ax
    pay = y - ay
    paz = z - az
    bax = bx - ax
    bay = by - ay
    baz = bz - az
    h = clamp01((pax * bax + pay * bay + paz * baz) / (bax * bax + bay * bay + baz * baz))
    dx = pax - bax * h
    dy = pay - bay * h
    dz = paz - baz * h
    return math.sqrt(dx * dx + dy * dy + dz * dz) - r


@njit(**_JIT)
def _box(x, y, z, hx, hy, hz):
    qx = abs(x) - hx
    qy = abs(y) - hy
    qz = abs(z) - hz
    ox = max(qx, 0.0)
    oy = max(qy, 0.0)
    oz = max(qz, 0.0)
    return math.sqrt(ox * ox + oy * oy + oz * oz) + min(max(qx, max(qy, qz)), 0.0)


@njit(**_JIT)
def _smin(a, b, k):
    h = clamp01(0.5 + 0.5 * (b - a) / k)
    return b + (a - b) * h - k * h * (1.0 - h)


@njit(**_JIT)
def object_sdf(px, py, pz, rec):
    """Distance bound (metres) from world point to the object ``rec`` and its material.

    Local frame: ``lx, lz`` horizontal offsets from the object's foot, ``h`` metres **up**
    from its base.
    """
    kind = int(rec[O_KIND])
    lx = px - rec[O_X]
    lz = pz - rec[O_Z]
    h = rec[O_BASE_Y] - py
    H = rec[O_HEIGHT]
    rc = rec[O_CROWN]
    q = math.sqrt(lx * lx + lz * lz)
    if kind == KIND_ROUND_TREE:
        trunk_top = H - rc * 0.9
        rt = 0.11 + 0.05 * rc
        d_trunk = max(q - rt * (1.0 - 0.25 * clamp01(h / trunk_top)), abs(h - 0.5 * (trunk_top - 0.6)) - 0.5 * (trunk_top + 0.6))
        hc = H - rc
        ang = rec[O_ROT]
        ox = math.cos(ang) * rc * 0.55
        oz = math.sin(ang) * rc * 0.55
        d1 = _ellipsoid(lx, h - hc, lz, rc, rc * 0.85, rc)
        d2 = _ellipsoid(lx - ox, h - hc + rc * 0.35, lz - oz, rc * 0.72, rc * 0.62, rc * 0.72)
        d3 = _ellipsoid(lx + oz, h - hc + rc * 0.2, lz - ox, rc * 0.65, rc * 0.6, rc * 0.65)
        d_crown = _smin(_smin(d1, d2, 0.5), d3, 0.5)
        if d_crown < 0.6:  # leafy bumps only near the crown surface; pure functions of position
            d_crown += 0.13 * math.sin(2.9 * px) * math.sin(3.1 * py) * math.sin(2.7 * pz) * rc * 0.5
        d_crown *= 0.8
        if d_crown < d_trunk:
            return d_crown, MAT_LEAVES
        return d_trunk, MAT_TRUNK
    if kind == KIND_BUSH:
        d = _ellipsoid(lx, h - rc * 0.45, lz, rc, rc * 0.75, rc)
        if d < 0.5:
            d += 0.08 * math.sin(3.7 * px) * math.sin(3.3 * py) * math.sin(3.9 * pz)
        return d * 0.85, MAT_LEAVES
    if kind == KIND_CONIFER:
        rt = 0.1 + 0.04 * rc
        d_trunk = max(q - rt, abs(h - 0.4 * H + 0.3) - 0.4 * H - 0.3)
        d = d_trunk
        mat = MAT_TRUNK
        for i in range(3):
            hb = H * (0.18 + 0.22 * i)
            ch = H * (0.5 - 0.07 * i)
            rb = rc * (1.0 - 0.22 * i)
            apex = min(hb + ch, H)
            ch = apex - hb
            s = (apex - h) / ch
            cos_a = ch / math.sqrt(ch * ch + rb * rb)
            dc = max((q - rb * s) * cos_a, max(hb - h, h - apex))
            if dc < d:
                d = dc
                mat = MAT_CONIFER
        return d, mat
    if kind == KIND_PALM:
        ang = rec[O_ROT]
        lean = 1.6 * rc / 3.2
        t = clamp01(h / H)
        ox = math.cos(ang) * lean * t * t
        oz = math.sin(ang) * lean * t * t
        d_trunk = max(math.sqrt((lx - ox) ** 2 + (lz - oz) ** 2) - (0.2 - 0.05 * t), max(-h - 0.5, h - H)) * 0.8
        # Crown: a drooping disc cut into fronds.
        cx = lx - math.cos(ang) * lean
        cz = lz - math.sin(ang) * lean
        cq = math.sqrt(cx * cx + cz * cz)
        hh = h - H + 0.09 * cq * cq
        d_crown = _ellipsoid(cx, hh, cz, rc, 0.35, rc)
        theta = math.atan2(cz, cx)
        d_crown += 0.45 * max(0.0, -math.cos(7.0 * theta + ang * 3.0)) * min(cq, 1.0)
        d_crown *= 0.6
        if d_crown < d_trunk:
            return d_crown, MAT_PALM
        return d_trunk, MAT_TRUNK
    if kind == KIND_CACTUS:
        r = rc
        d = _capsule(lx, h, lz, 0.0, -0.5, 0.0, 0.0, H - r, 0.0, r)
        ang = rec[O_ROT]
        ca = math.cos(ang)
        sa = math.sin(ang)
        ha = H * (0.35 + 0.15 * rec[O_RND])
        d = _smin(d, _capsule(lx, h, lz, 0.0, ha, 0.0, ca * 0.75, ha, sa * 0.75, r * 0.7), 0.15)
        d = _smin(d, _capsule(lx, h, lz, ca * 0.75, ha, sa * 0.75, ca * 0.75, ha + 1.0, sa * 0.75, r * 0.7), 0.1)
        if rec[O_RND] > 0.4:
            hb = H * 0.55
            d = _smin(d, _capsule(lx, h, lz, 0.0, hb, 0.0, -ca * 0.65, hb, -sa * 0.65, r * 0.65), 0.15)
            d = _smin(d, _capsule(lx, h, lz, -ca * 0.65, hb, -sa * 0.65, -ca * 0.65, hb + 0.8, -sa * 0.65, r * 0.65), 0.1)
        return d, MAT_CACTUS
    if kind == KIND_BLOCK:
        hx = rec[O_HX]
        hz = rec[O_HZ]
        d = _box(lx, h - 0.5 * (H - 4.0), lz, hx, 0.5 * (H + 4.0), hz)
        # A roof rim: the top storey is a little narrower.
        return d, (MAT_ROOF if h > H - 0.05 else MAT_WALL)
    if kind == KIND_HOUSE:
        hx = rec[O_HX]
        hz = rec[O_HZ]
        d_walls = _box(lx, h - 0.5 * (H - 3.0), lz, hx, 0.5 * (H + 3.0), hz)
        roof = rc
        w = hz + 0.35
        inv = 1.0 / math.sqrt(roof * roof + w * w)
        d_roof = max(max(abs(lx) - hx - 0.35, (abs(lz) * roof + (h - H - roof) * w) * inv), H - 0.25 - h)
        if d_roof < d_walls:
            return d_roof, MAT_ROOF
        return d_walls, MAT_WALL
    if kind == KIND_ROCK:
        ang = rec[O_ROT]
        ca = math.cos(ang)
        sa = math.sin(ang)
        rx = ca * lx + sa * lz
        rz = -sa * lx + ca * lz
        ry = H
        d = _ellipsoid(rx, h - ry * 0.3, rz, rec[O_HX], ry, rec[O_HZ])
        if d < 0.8:
            # Craggy faces: two octaves of ridged sine bumps, scaled to the rock's size.
            s = 0.14 * min(rec[O_HX], ry)
            b1 = abs(math.sin(2.1 * px + 0.3) * math.sin(2.6 * py + 1.1) * math.sin(2.3 * pz + 2.0))
            b2 = math.sin(5.3 * px + 1.7 * py) * math.sin(5.9 * pz - 1.3 * py)
            d += s * (2.2 * b1 - 0.8 + 0.45 * b2)
        return d * 0.7, MAT_ROCK
    return 1e9, MAT_SKY


@njit(**_JIT)
def objects_sdf(px, py, pz, tab, meta, d_max):
    """Nearest object in a table: the 2x2 block of cells around the point, bounded by its border.

    Returns ``(distance bound, material, record rnd)``; the distance never exceeds the distance
    to objects outside the block, nor ``d_max`` (callers pass their current best).
    """
    top = meta[M_TOP]
    if py < top:  # above every object's top
        vertical = top - py
        if vertical >= d_max:
            return d_max, MAT_SKY, 0.0
    cell = meta[M_CELL]
    gx = px / cell
    gz = pz / cell
    bx = math.floor(gx - 0.5)
    bz = math.floor(gz - 0.5)
    border = min(min(gx - bx, bx + 2.0 - gx), min(gz - bz, bz + 2.0 - gz)) * cell
    if py < top:
        border = max(border, top - py)
    d = min(d_max, border)
    mat = MAT_SKY
    rnd = 0.0
    nx = tab.shape[0]
    nz = tab.shape[1]
    for a in range(2):
        i = np.int64(bx) + a - np.int64(meta[M_IX0])
        if i < 0 or i >= nx:
            continue
        for b in range(2):
            j = np.int64(bz) + b - np.int64(meta[M_IZ0])
            if j < 0 or j >= nz:
                continue
            rec = tab[i, j]
            if rec[O_KIND] == 0.0:
                continue
            dx = px - rec[O_X]
            dz = pz - rec[O_Z]
            bound = max(math.sqrt(dx * dx + dz * dz) - rec[O_FOOT], rec[O_TOP_Y] - py)
            if bound >= d:
                continue
            od, om = object_sdf(px, py, pz, rec)
            if od < d:
                d = od
                mat = om
                rnd = rec[O_RND]
    return d, mat, rnd


@njit(**_JIT)
def scene_sdf(px, py, pz, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, k_terrain):
    """Scene distance bound at a world point: ``(d, material, object rnd, terrain gap)``.

    The terrain term is the vertical gap to the ground times ``k_terrain`` (the heightfield
    safety factor); the gap itself is returned too, unscaled.
    """
    gap = (EYE_HEIGHT - elevation(px, pz, seed, e0, hg, hm)) - py
    d = gap * k_terrain
    mat = MAT_TERRAIN
    rnd = 0.0
    od, om, orr = objects_sdf(px, py, pz, trees, tmeta, max(d, 0.02))
    if om != MAT_SKY and od < d:
        d = od
        mat = om
        rnd = orr
    elif om == MAT_SKY and od < d:
        d = od  # a border bound, not a surface
    od, om, orr = objects_sdf(px, py, pz, rocks, rmeta, max(d, 0.02))
    if om != MAT_SKY and od < d:
        d = od
        mat = om
        rnd = orr
    elif om == MAT_SKY and od < d:
        d = od
    return d, mat, rnd, gap


# =====================================================================================
# sky (a copy of runtime.world.sky.Sky.colors_for_directions for reflections and fog)
# =====================================================================================
@njit(**_JIT)
def sky_color(dx, dy, dz, sp):
    up = -dy
    t = clamp01(up) ** 0.6
    w = clamp01(-up * 4.0)
    r = 0.0
    g = 0.0
    b = 0.0
    if up >= 0.0:
        r = sp[S_HORIZON] * (1.0 - t) + sp[S_ZENITH] * t
        g = sp[S_HORIZON + 1] * (1.0 - t) + sp[S_ZENITH + 1] * t
        b = sp[S_HORIZON + 2] * (1.0 - t) + sp[S_ZENITH + 2] * t
    else:
        r = sp[S_HORIZON] * (1.0 - w) + sp[S_GROUND] * w
        g = sp[S_HORIZON + 1] * (1.0 - w) + sp[S_GROUND + 1] * w
        b = sp[S_HORIZON + 2] * (1.0 - w) + sp[S_GROUND + 2] * w
    glow = clamp01(dx * sp[S_SUN_DIR] + dy * sp[S_SUN_DIR + 1] + dz * sp[S_SUN_DIR + 2]) ** 64 * 0.6
    return (
        clamp01(r + glow * sp[S_SUN_COLOR]),
        clamp01(g + glow * sp[S_SUN_COLOR + 1]),
        clamp01(b + glow * sp[S_SUN_COLOR + 2]),
    )


# =====================================================================================
# lighting helpers
# =====================================================================================
@njit(**_JIT)
def soft_shadow(ox, oy, oz, lx, ly, lz, seed, e0, hg, hm, trees, tmeta, rocks, rmeta):
    """Penumbra factor in [0, 1] along the sun ray from a surface point (1 = fully lit)."""
    res = 1.0
    t = 0.12
    top = hm[2]
    for _ in range(SHADOW_STEPS):
        px = ox + lx * t
        py = oy + ly * t
        pz = oz + lz * t
        if py < top:
            break
        d, _m, _r, _g = scene_sdf(px, py, pz, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, 1.0 / TERRAIN_LIPSCHITZ)
        res = min(res, 7.0 * d / t)
        if res < 0.01:
            return 0.0
        t += min(max(d, 0.15 + 0.02 * t), 8.0)
        if t > SHADOW_RANGE:
            break
    res = clamp01(res)
    return res * res * (3.0 - 2.0 * res)


@njit(**_JIT)
def ambient_occlusion(px, py, pz, nx, ny, nz, seed, e0, hg, hm, trees, tmeta, rocks, rmeta):
    occ = 0.0
    w = 1.0
    for i in range(3):
        hd = 0.25 + 0.6 * i
        d, _m, _r, gap = scene_sdf(px + nx * hd, py + ny * hd, pz + nz * hd, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, 1.0)
        # The terrain gap is vertical; on the ground it equals hd * n_up, so compare against that.
        occ += max(hd - d, 0.0) * w
        w *= 0.6
    return clamp01(1.0 - 0.55 * occ)


@njit(**_JIT)
def object_normal(px, py, pz, seed, e0, hg, hm, trees, tmeta, rocks, rmeta):
    """Unit normal of the scene at a surface point (tetrahedron finite differences)."""
    e = 0.01
    a, _m, _r, _g = scene_sdf(px + e, py - e, pz - e, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, 1.0)
    b, _m, _r, _g = scene_sdf(px - e, py - e, pz + e, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, 1.0)
    c, _m, _r, _g = scene_sdf(px - e, py + e, pz - e, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, 1.0)
    d, _m, _r, _g = scene_sdf(px + e, py + e, pz + e, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, 1.0)
    nx = a - b - c + d
    ny = -a - b + c + d
    nz = -a + b - c + d
    n = math.sqrt(nx * nx + ny * ny + nz * nz) + 1e-12
    return nx / n, ny / n, nz / n


@njit(**_JIT)
def terrain_normal(x, z, seed, e0):
    """Shading normal of the detailed analytic terrain (finer than the marched lattice)."""
    e = 0.08
    hx = shading_elevation(x + e, z, seed, e0) - shading_elevation(x - e, z, seed, e0)
    hz = shading_elevation(x, z + e, seed, e0) - shading_elevation(x, z - e, seed, e0)
    # Up-normal in (x, up, z) is (-hx, 2e, -hz); world y is down.
    nx = -hx
    ny = -2.0 * e
    nz = -hz
    n = math.sqrt(nx * nx + ny * ny + nz * nz)
    return nx / n, ny / n, nz / n


@njit(**_JIT)
def _mix3(bp, i, j, t):
    return (
        bp[i] + (bp[j] - bp[i]) * t,
        bp[i + 1] + (bp[j + 1] - bp[i + 1]) * t,
        bp[i + 2] + (bp[j + 2] - bp[i + 2]) * t,
    )


@njit(**_JIT)
def _lerp3(a0, a1, a2, b0, b1, b2, t):
    return a0 + (b0 - a0) * t, a1 + (b1 - a1) * t, a2 + (b2 - a2) * t


@njit(**_JIT)
def terrain_albedo(x, y, z, el, n_up, seed, bp):
    """Ground colour (display RGB, [0,1]) from height, slope and noise at world ``(x, z)``."""
    n1 = gnoise(x * 0.045, z * 0.045, seed + 301)
    n2 = gnoise(x * 0.31, z * 0.31, seed + 302)
    n3 = gnoise(x * 1.7, z * 1.7, seed + 303)
    r, g, b = _mix3(bp, B_GRASS_A, B_GRASS_B, clamp01(0.5 + 1.1 * n1 + 0.35 * n2))
    n4 = gnoise(x * 4.1, z * 4.1, seed + 306)
    v = 0.9 + 0.2 * n3 + 0.1 * n2 + 0.1 * n4
    r *= v
    g *= v
    b *= v
    # Flowers: sparse blobs of colour on flat grass.
    fd = bp[B_FLOWER_DENSITY]
    if fd > 0.0:
        fl = gnoise(x * 0.9, z * 0.9, seed + 304) + 0.6 * gnoise(x * 0.21, z * 0.21, seed + 305)
        ft = smoothstep(0.62 - 0.25 * fd, 0.75 - 0.25 * fd, fl) * smoothstep(0.9, 0.97, n_up)
        r, g, b = _lerp3(r, g, b, bp[B_FLOWER], bp[B_FLOWER + 1], bp[B_FLOWER + 2], ft * 0.85)
    slope = 1.0 - n_up
    t_dirt = smoothstep(0.1, 0.22, slope + 0.06 * n2)
    dr, dg, db = bp[B_DIRT], bp[B_DIRT + 1], bp[B_DIRT + 2]
    r, g, b = _lerp3(r, g, b, dr * (0.9 + 0.2 * n3), dg * (0.9 + 0.2 * n3), db * (0.9 + 0.2 * n3), t_dirt)
    # Rock on steep slopes, banded where the biome has strata (desert mesas).
    t_rock = smoothstep(0.26, 0.42, slope + 0.08 * n2)
    band = 1.0 + bp[B_STRATA] * (0.18 * math.sin(el * 1.9 + 3.0 * n1) + 0.08 * math.sin(el * 5.3))
    rv = (0.82 + 0.25 * (n2 + 0.5 * n3)) * band
    r, g, b = _lerp3(r, g, b, bp[B_ROCK] * rv, bp[B_ROCK + 1] * rv, bp[B_ROCK + 2] * rv, t_rock)
    # Sand along the shore.
    wl = bp[B_WATER_LEVEL]
    t_sand = 1.0 - smoothstep(wl + 0.3, wl + 0.3 + bp[B_BEACH_WIDTH], el + 0.7 * n2 + 0.5 * n1)
    sv = 0.95 + 0.1 * n3
    r, g, b = _lerp3(r, g, b, bp[B_SAND] * sv, bp[B_SAND + 1] * sv, bp[B_SAND + 2] * sv, t_sand)
    # Snow above the snow line, sliding off steep slopes.
    t_snow = smoothstep(bp[B_SNOWLINE] - 3.0, bp[B_SNOWLINE] + 3.0, el + 8.0 * n1 + 2.0 * n2) * smoothstep(0.55, 0.32, slope + 0.05 * n3)
    r, g, b = _lerp3(r, g, b, bp[B_SNOW], bp[B_SNOW + 1], bp[B_SNOW + 2], t_snow)
    # Streets in towns: asphalt along the cell borders, a kerb, then plots.
    sc = bp[B_STREET_CELL]
    if sc > 0.0:
        fx = x / sc - math.floor(x / sc)
        fz = z / sc - math.floor(z / sc)
        ex = min(fx, 1.0 - fx) * sc
        ez = min(fz, 1.0 - fz) * sc
        edge = min(ex, ez)
        if edge < 3.2:
            av = 0.9 + 0.12 * n3
            r, g, b = bp[B_STREET] * av, bp[B_STREET + 1] * av, bp[B_STREET + 2] * av
            # Dashed centre line along each street.
            if (ex < 0.12 and (z * 0.33 - math.floor(z * 0.33)) < 0.5) or (ez < 0.12 and (x * 0.33 - math.floor(x * 0.33)) < 0.5):
                r, g, b = 0.85, 0.82, 0.6
        elif edge < 4.4:
            r, g, b = 0.62, 0.6, 0.57
    return r, g, b


@njit(**_JIT)
def object_albedo(mat, px, py, pz, n_x, n_y, n_z, rnd, bp, sp):
    """Display RGB of an object surface."""
    n_up = -n_y
    if mat == MAT_TRUNK:
        v = 0.85 + 0.3 * rnd
        return bp[B_TRUNK] * v, bp[B_TRUNK + 1] * v, bp[B_TRUNK + 2] * v
    if mat == MAT_LEAVES or mat == MAT_CONIFER or mat == MAT_PALM:
        if mat == MAT_CONIFER:
            r, g, b = bp[B_CONIFER], bp[B_CONIFER + 1], bp[B_CONIFER + 2]
            v = 0.85 + 0.3 * rnd
        else:
            r, g, b = _mix3(bp, B_LEAF_A, B_LEAF_B, rnd)
            v = 1.0
        # Darker deep inside the crown, lighter at sunlit tips: cheap leaf texture.
        v *= 0.85 + 0.25 * (0.5 + 0.5 * math.sin(7.0 * px + 5.0 * math.sin(6.0 * pz)) * math.sin(6.5 * py))
        r *= v
        g *= v
        b *= v
        sn = bp[B_SNOW_ON_TREES]
        if sn > 0.0:
            t = smoothstep(0.05, 0.45, n_up) * sn
            r, g, b = _lerp3(r, g, b, bp[B_SNOW], bp[B_SNOW + 1], bp[B_SNOW + 2], t)
        return r, g, b
    if mat == MAT_CACTUS:
        # Vertical ribs.
        rib = 0.85 + 0.15 * math.sin(18.0 * (px + pz))  # ribs: stripes in world space
        return 0.25 * rib, 0.45 * rib, 0.22 * rib
    if mat == MAT_WALL:
        r, g, b = _mix3(bp, B_WALL_A, B_WALL_B, rnd)
        if abs(n_y) < 0.3:
            # Windows on a 3.2 m storey, 2.6 m bay grid; rows start one storey up.
            u = pz if abs(n_x) > abs(n_z) else px
            fy = (-py / 3.2) - math.floor(-py / 3.2)
            fu = u / 2.6 - math.floor(u / 2.6)
            if 0.3 < fy < 0.82 and 0.22 < fu < 0.78:
                lit = hash01(np.int64(math.floor(u / 2.6)), np.int64(math.floor(-py / 3.2)), np.int64(rnd * 1000.0))
                if lit > 0.9:  # a few open curtains / lit rooms
                    return 0.85, 0.78, 0.6
                return 0.18 + 0.25 * sp[S_ZENITH], 0.22 + 0.25 * sp[S_ZENITH + 1], 0.28 + 0.3 * sp[S_ZENITH + 2]
        return r, g, b
    if mat == MAT_ROOF:
        v = 0.85 + 0.3 * rnd
        return bp[B_ROOF] * v, bp[B_ROOF + 1] * v, bp[B_ROOF + 2] * v
    if mat == MAT_ROCK:
        # Veins and lichen-dark patches.
        n = 0.82 + 0.2 * math.sin(3.1 * px + 2.0 * math.sin(2.3 * pz)) * math.sin(2.7 * py) + 0.12 * math.sin(9.0 * py + 3.0 * math.sin(1.7 * px + 1.3 * pz))
        r, g, b = bp[B_ROCK] * n, bp[B_ROCK + 1] * n, bp[B_ROCK + 2] * n
        # Snow, moss or sand settles on the tops of rocks.
        t = smoothstep(0.55, 0.85, n_up)
        if bp[B_SNOW_ON_TREES] > 0.0:
            return _lerp3(r, g, b, bp[B_SNOW], bp[B_SNOW + 1], bp[B_SNOW + 2], t)
        return _lerp3(r, g, b, bp[B_GRASS_A], bp[B_GRASS_A + 1], bp[B_GRASS_A + 2], t * 0.3)
    return 1.0, 0.0, 1.0


@njit(**_JIT)
def sun_diffuse(nx, ny, nz, wrap, sp):
    """Wrapped Lambert factor of the sun in [0, 1]; 0 where the surface faces away from it."""
    ndl = nx * sp[S_SUN_DIR] + ny * sp[S_SUN_DIR + 1] + nz * sp[S_SUN_DIR + 2]
    return clamp01((ndl + wrap) / (1.0 + wrap))


@njit(**_JIT)
def sun_shadow(px, py, pz, nx, ny, nz, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, sp):
    """:func:`soft_shadow` toward the sun from just off the surface point ``p`` with normal ``n``."""
    return soft_shadow(
        px + nx * 0.05, py + ny * 0.05, pz + nz * 0.05, sp[S_SUN_DIR], sp[S_SUN_DIR + 1], sp[S_SUN_DIR + 2],
        seed, e0, hg, hm, trees, tmeta, rocks, rmeta,
    )


@njit(**_JIT)
def lit_color(ar, ag, ab, ny, diff, sh, ao, bp, sp):
    """Display-space albedo -> display-space lit colour: sun (``diff`` x shadow ``sh``), sky
    ambient and ground bounce (both x occlusion ``ao``); ``ny`` is the normal's y (down)."""
    # Square to approximate linear light; sqrt on the way out.
    ar *= ar
    ag *= ag
    ab *= ab
    n_up = -ny
    sky_w = (0.6 + 0.4 * n_up) * bp[B_AMBIENT] * ao
    bounce = (0.5 - 0.5 * n_up) * 0.25 * ao
    ks = bp[B_SUN_STRENGTH] * diff * sh
    zr = sp[S_ZENITH] * 0.6 + sp[S_HORIZON] * 0.4
    zg = sp[S_ZENITH + 1] * 0.6 + sp[S_HORIZON + 1] * 0.4
    zb = sp[S_ZENITH + 2] * 0.6 + sp[S_HORIZON + 2] * 0.4
    gr, gg, gb = bp[B_GRASS_A], bp[B_GRASS_A + 1], bp[B_GRASS_A + 2]
    lr = ar * (bp[B_SUN_COLOR] * ks + zr * zr * sky_w + gr * bounce)
    lg = ag * (bp[B_SUN_COLOR + 1] * ks + zg * zg * sky_w + gg * bounce)
    lb = ab * (bp[B_SUN_COLOR + 2] * ks + zb * zb * sky_w + gb * bounce)
    # Gentle filmic shoulder so bright sand/snow does not clip flat.
    lr = lr / (1.0 + 0.25 * lr)
    lg = lg / (1.0 + 0.25 * lg)
    lb = lb / (1.0 + 0.25 * lb)
    return math.sqrt(lr), math.sqrt(lg), math.sqrt(lb)


@njit(**_JIT)
def fogged(cr, cg, cb, t, dx, dy, dz, max_dist, bp, sp):
    """Aerial perspective: fade toward the sky colour at the horizon in this heading, reaching
    it exactly at ``max_dist`` so distant silhouettes melt into the sky."""
    fog = 1.0 - math.exp(-t * bp[B_FOG_DENSITY])
    fog = fog + (1.0 - fog) * smoothstep(0.6 * max_dist, max_dist, t)
    hdx = dx
    hdy = min(dy, 0.0)
    hdz = dz
    hn = math.sqrt(hdx * hdx + hdy * hdy + hdz * hdz)
    fr, fg, fb = sky_color(hdx / hn, hdy / hn, hdz / hn, sp)
    return cr + (fr - cr) * fog, cg + (fg - cg) * fog, cb + (fb - cb) * fog


@njit(**_JIT)
def march_ray(ox, oy, oz, dx, dy, dz, t_start, max_dist, pix_angle, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, bp, relax):
    """Sphere-trace one camera ray from ``t_start`` (metres; the ray is in free space up to
    there): ``(t, material, object rnd)``, material MAT_SKY (and t = inf) where it escapes.

    ``relax`` > 1 over-relaxes the steps (``relax`` x the free distance) while each new free
    interval still overlaps the last one, and falls back to plain steps for the rest of the ray
    when one does not (Keinert et al. 2014, "Enhanced sphere tracing"): rays closing in on the
    ground at a grazing angle, whose plain steps shrink slowly, take ~40 % fewer. 1 = plain.
    """
    # Water is an analytic plane: clip the march there.
    water_y = EYE_HEIGHT - bp[B_WATER_LEVEL]
    t_end = max_dist
    t_water = 1e30
    if dy > 1e-6 and oy < water_y:
        t_water = (water_y - oy) / dy
        t_end = min(t_end, t_water)
    top = hm[2]
    # Heightfield step: over a step s the ray drops s * dy while the ground rises at most
    # s * TERRAIN_LIPSCHITZ, so s = gap / (L + dy) never crosses the ground (when the slope bound holds).
    k_terrain = 1.0 / (TERRAIN_LIPSCHITZ + max(dy, 0.0))
    t = max(t_start, 0.02)
    t_prev = t
    g_prev = 1e9
    hit = False
    mat = MAT_SKY
    rnd = 0.0
    d = 1e9
    omega = relax
    d_prev = 0.0
    step = 0.0
    if t < t_end:
        for _ in range(MAX_STEPS):
            px = ox + dx * t
            py = oy + dy * t
            pz = oz + dz * t
            if py < top and dy <= 0.0:
                break  # rising above the highest possible terrain: sky
            d, m, r, gap = scene_sdf(px, py, pz, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, k_terrain)
            if omega > 1.0 and abs(d) + d_prev < step:
                # The relaxed step left a stretch neither free interval covers: take the plain
                # step from the last sample instead, and plain steps from here on.
                t -= step - d_prev
                omega = 1.0
                step = d_prev
                continue
            if d < max(0.002, 0.3 * pix_angle * t):
                hit = True
                mat = m
                rnd = r
                if m == MAT_TERRAIN and gap >= 0.0 and g_prev > gap:
                    # Land on the surface, not eps above it: the ground is locally near-planar, so
                    # the secant through the last two gaps finds the crossing (depth accuracy).
                    t += min((t - t_prev) * gap / (g_prev - gap), 4.0 * gap * k_terrain + 0.05)
                elif gap < 0.0 and m == MAT_TERRAIN:
                    # Stepped under a slope steeper than the bound: bisect back to the surface.
                    lo = t_prev
                    hi = t
                    for _b in range(8):
                        mid = 0.5 * (lo + hi)
                        if (EYE_HEIGHT - elevation(ox + dx * mid, oz + dz * mid, seed, e0, hg, hm)) - (oy + dy * mid) > 0.0:
                            lo = mid
                        else:
                            hi = mid
                    t = 0.5 * (lo + hi)
                break
            t_prev = t
            g_prev = gap
            d_prev = d
            step = omega * d
            t += step
            if t >= t_end:
                break
        else:
            # Step budget spent while grazing a surface (rare): take the closest point as the hit
            # rather than punching a sky-coloured hole into the terrain.
            if d < 0.5 + 0.01 * t and t < t_end:
                hit = True
                mat = MAT_TERRAIN
    if not hit and t_water < max_dist and t >= t_water * 0.999:
        hit = True
        mat = MAT_WATER
        t = t_water
    if not hit:
        return np.inf, MAT_SKY, 0.0
    return t, mat, rnd


CONE_TERRAIN_K = 0.5
"""Vertical terrain gap -> a distance bound in every direction (true for slopes up to ~1.7)."""
CONE_OBJECT_K = 0.8
"""Margin on the object distance bounds while a cone of rays shares one march."""


@njit(**_JIT)
def march_cone(ox, oy, oz, cx, cy, cz, alpha, max_dist, seed, e0, hg, hm, trees, tmeta, rocks, rmeta):
    """Free distance (metres) shared by every ray within ``alpha`` radians of the unit axis ``c``.

    Cone tracing: at distance t each ray of the cone passes within ``t * alpha`` of the axis
    point, so a step of ``d - t * alpha`` (``d`` the free radius around that point) keeps
    every ray in empty space. Stops where the cone grazes a surface; ``max_dist`` when every
    ray has risen above the scene's top.
    """
    top = hm[2]
    rising = cy + alpha <= 0.0
    t = 0.02
    for _ in range(MAX_STEPS):
        px = ox + cx * t
        py = oy + cy * t
        pz = oz + cz * t
        if rising and py + t * alpha < top:
            return max_dist
        d, _m, _r, _g = scene_sdf(px, py, pz, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, CONE_TERRAIN_K)
        s = CONE_OBJECT_K * d - t * alpha
        if s < 0.25 * t * alpha + 0.01:
            break
        t += s
        if t >= max_dist:
            return max_dist
    return t


# G-buffer of the lit pixels of a block of rows: what shading needs once the sun shadow and
# ambient occlusion are known.
G_PX, G_PY, G_PZ, G_NX, G_NY, G_NZ, G_AR, G_AG, G_AB, G_DIFF, G_FOG_T, G_DX, G_DY, G_DZ, G_MAT, G_RND = range(16)
G_FIELDS = 16
PIX_SKY, PIX_DONE, PIX_LIT = 0, 1, 2


@njit(**_JIT)
def surface(ox, oy, oz, dx, dy, dz, t, mat, rnd, max_dist, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, bp, sp, shade, g):
    """A camera ray's hit at ``t`` on material ``mat``: water -> its final colour ``(r, g, b, True)``;
    anything else -> ``(0, 0, 0, False)`` with its G-buffer record written to ``g [G_FIELDS]``.

    ``shade`` ``[4]``: when ``shade[3] > 0``, the view-dependent terms (fog, water) are
    evaluated as seen from the point ``shade[:3]`` instead of the ray's origin.
    """
    px = ox + dx * t
    py = oy + dy * t
    pz = oz + dz * t
    if shade[3] > 0.0:
        # What a viewer at shade[:3] sees of this point: its distance and direction from there.
        vx, vy, vz = px - shade[0], py - shade[1], pz - shade[2]
        vt = math.sqrt(vx * vx + vy * vy + vz * vz)
        if vt > 1e-6:
            t, dx, dy, dz = vt, vx / vt, vy / vt, vz / vt
    if mat == MAT_WATER:
        cr, cg, cb = shade_water(px, py, pz, dx, dy, dz, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, bp, sp)
        cr, cg, cb = fogged(cr, cg, cb, t, dx, dy, dz, max_dist, bp, sp)
        return cr, cg, cb, True
    if mat == MAT_TERRAIN:
        nx, ny, nz = terrain_normal(px, pz, seed, e0)
        ar, ag, ab = terrain_albedo(px, py, pz, EYE_HEIGHT - py, -ny, seed, bp)
        wrap = 0.0
    else:
        nx, ny, nz = object_normal(px, py, pz, seed, e0, hg, hm, trees, tmeta, rocks, rmeta)
        ar, ag, ab = object_albedo(mat, px, py, pz, nx, ny, nz, rnd, bp, sp)
        wrap = 0.35 if (mat == MAT_LEAVES or mat == MAT_CONIFER or mat == MAT_PALM) else 0.0
    g[G_PX], g[G_PY], g[G_PZ] = px, py, pz
    g[G_NX], g[G_NY], g[G_NZ] = nx, ny, nz
    g[G_AR], g[G_AG], g[G_AB] = ar, ag, ab
    g[G_DIFF] = sun_diffuse(nx, ny, nz, wrap, sp)
    g[G_FOG_T], g[G_DX], g[G_DY], g[G_DZ] = t, dx, dy, dz
    g[G_MAT] = mat
    g[G_RND] = rnd
    return 0.0, 0.0, 0.0, False


@njit(**_JIT)
def shaded(g, sh, ao, max_dist, bp, sp):
    """Final display RGB of a G-buffer record given its sun shadow ``sh`` and occlusion ``ao``."""
    cr, cg, cb = lit_color(g[G_AR], g[G_AG], g[G_AB], g[G_NY], g[G_DIFF], sh, ao, bp, sp)
    return fogged(cr, cg, cb, g[G_FOG_T], g[G_DX], g[G_DY], g[G_DZ], max_dist, bp, sp)


@njit(**_JIT)
def shade_water(px, py, pz, dx, dy, dz, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, bp, sp):
    ice = bp[B_ICE]
    # Ripples: the normal tilts with the gradient of two octaves of noise (position only).
    # One low octave only: finer ripples alias into sparkle at a pixel per sample.
    amp = 0.035 * (1.0 - ice)
    e = 0.05
    n0 = gnoise(px * 0.45, pz * 0.45, seed + 901)
    nxp = gnoise((px + e) * 0.45, pz * 0.45, seed + 901)
    nzp = gnoise(px * 0.45, (pz + e) * 0.45, seed + 901)
    nx = -(nxp - n0) / e * amp
    nz = -(nzp - n0) / e * amp
    ny = -1.0
    nn = math.sqrt(nx * nx + ny * ny + nz * nz)
    nx /= nn
    ny /= nn
    nz /= nn
    cosv = -(dx * nx + dy * ny + dz * nz)
    rx = dx + 2.0 * cosv * nx
    ry = dy + 2.0 * cosv * ny
    rz = dz + 2.0 * cosv * nz
    ry = min(ry, -0.01)
    rn = math.sqrt(rx * rx + ry * ry + rz * rz)
    rx /= rn
    ry /= rn
    rz /= rn
    skr, skg, skb = sky_color(rx, ry, rz, sp)
    fres = 0.03 + 0.97 * (1.0 - clamp01(cosv)) ** 5
    fres = min(fres * (1.0 - 0.6 * ice), 0.9)
    ground_y = EYE_HEIGHT - elevation(px, pz, seed, e0, hg, hm)
    depth = max(ground_y - py, 0.0)
    t_deep = 1.0 - math.exp(-depth * 0.35)
    wr, wg, wb = _mix3(bp, B_WATER_SHALLOW, B_WATER_DEEP, t_deep)
    sx, sy, sz = sp[S_SUN_DIR], sp[S_SUN_DIR + 1], sp[S_SUN_DIR + 2]
    sh = soft_shadow(px, py - 0.02, pz, sx, sy, sz, seed, e0, hg, hm, trees, tmeta, rocks, rmeta)
    lit = 0.65 + 0.35 * sh
    wr *= lit
    wg *= lit
    wb *= lit
    cr = wr + (skr - wr) * fres
    cg = wg + (skg - wg) * fres
    cb = wb + (skb - wb) * fres
    spec = clamp01(rx * sx + ry * sy + rz * sz) ** 180 * 1.6 * sh * (1.0 - ice)
    cr += spec * bp[B_SUN_COLOR]
    cg += spec * bp[B_SUN_COLOR + 1]
    cb += spec * bp[B_SUN_COLOR + 2]
    # Foam where the water is very shallow.
    foam = (1.0 - smoothstep(0.0, 0.25, depth)) * 0.5 * (1.0 - ice)
    cr += (0.95 - cr) * foam
    cg += (0.97 - cg) * foam
    cb += (0.98 - cb) * foam
    return clamp01(cr), clamp01(cg), clamp01(cb)


# =====================================================================================
# the per-view kernel
# =====================================================================================
LIT_SPREAD = 0.03
"""Largest spread of shadow (and of occlusion) among the exact samples around a pixel for
which the pixel takes their interpolation instead of its own rays."""
LIT_NORMAL_DOT = 0.9
"""Samples interpolated into a pixel face within ~25 degrees of it ..."""
LIT_GAP = 0.05
"""... and lie within this fraction of its distance from it (no interpolation across a depth edge)."""


@njit(**_JIT)
def _ray(ray_matrix, pu, pv):
    dx = ray_matrix[0, 0] * pu + ray_matrix[0, 1] * pv + ray_matrix[0, 2]
    dy = ray_matrix[1, 0] * pu + ray_matrix[1, 1] * pv + ray_matrix[1, 2]
    dz = ray_matrix[2, 0] * pu + ray_matrix[2, 1] * pv + ray_matrix[2, 2]
    n = math.sqrt(dx * dx + dy * dy + dz * dz)
    return dx / n, dy / n, dz / n


@njit(**_JIT)
def _tile_cone(ray_matrix, u0, u1, v0, v1):
    """Axis ``(cx, cy, cz)`` and half-angle (radians) of the cone holding the rays through the
    centres of pixels ``u0..u1-1`` x ``v0..v1-1``."""
    cx, cy, cz = _ray(ray_matrix, 0.5 * (u0 + u1), 0.5 * (v0 + v1))
    alpha = 0.0
    for pu in (u0 + 0.5, u1 - 0.5):
        for pv in (v0 + 0.5, v1 - 0.5):
            dx, dy, dz = _ray(ray_matrix, pu, pv)
            alpha = max(alpha, math.acos(min(cx * dx + cy * dy + cz * dz, 1.0)))
    return cx, cy, cz, alpha * 1.02 + 1e-6


@njit(**_JIT)
def _interpolated_light(gb, state, lit, vv, u, step, rows, W):
    """Sun shadow and occlusion of pixel ``(vv, u)`` of a block, bilinear between the exact
    samples around it (every ``step``-th pixel both ways), or ``(-1, -1)`` where they do not
    agree closely enough: a sample off the block, of another surface (material, object,
    normal, depth) or shadow / occlusion values that differ (an edge to resolve exactly)."""
    g = gb[vv, u]
    a0 = vv - vv % step
    b0 = u - u % step
    fa = (vv - a0) / step
    fb = (u - b0) / step
    sh_lo, sh_hi, ao_lo, ao_hi = 2.0, -1.0, 2.0, -1.0
    sh = 0.0
    ao = 0.0
    need_sun = g[G_DIFF] > 0.0
    reach = LIT_GAP * g[G_FOG_T]
    for i in range(2):
        wa = fa if i else 1.0 - fa
        if wa <= 0.0:
            continue
        a = a0 + i * step
        for j in range(2):
            wb = fb if j else 1.0 - fb
            if wb <= 0.0:
                continue
            b = b0 + j * step
            if a >= rows or b >= W or state[a, b] != PIX_LIT:
                return -1.0, -1.0
            s = gb[a, b]
            if s[G_MAT] != g[G_MAT] or s[G_RND] != g[G_RND]:
                return -1.0, -1.0
            if s[G_NX] * g[G_NX] + s[G_NY] * g[G_NY] + s[G_NZ] * g[G_NZ] < LIT_NORMAL_DOT:
                return -1.0, -1.0
            ex, ey, ez = s[G_PX] - g[G_PX], s[G_PY] - g[G_PY], s[G_PZ] - g[G_PZ]
            if ex * ex + ey * ey + ez * ez > reach * reach:
                return -1.0, -1.0
            ssh = lit[a, b, 0]
            if need_sun and ssh < 0.0:
                return -1.0, -1.0  # the sample faces away from the sun: no shadow known there
            sao = lit[a, b, 1]
            sh_lo, sh_hi = min(sh_lo, ssh), max(sh_hi, ssh)
            ao_lo, ao_hi = min(ao_lo, sao), max(ao_hi, sao)
            sh += wa * wb * ssh
            ao += wa * wb * sao
    if ao_hi - ao_lo > LIT_SPREAD or (need_sun and sh_hi - sh_lo > LIT_SPREAD):
        return -1.0, -1.0
    return sh, ao


@njit(**_JIT)
def _exact_light(g, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, sp):
    """Sun shadow (-1 where the surface faces away: not needed) and occlusion of one G-buffer record."""
    sh = -1.0
    if g[G_DIFF] > 0.0:
        sh = sun_shadow(g[G_PX], g[G_PY], g[G_PZ], g[G_NX], g[G_NY], g[G_NZ], seed, e0, hg, hm, trees, tmeta, rocks, rmeta, sp)
    ao = ambient_occlusion(g[G_PX], g[G_PY], g[G_PZ], g[G_NX], g[G_NY], g[G_NZ], seed, e0, hg, hm, trees, tmeta, rocks, rmeta)
    return sh, ao


@njit(parallel=True, **_JIT)
def render_rows(
    row0, row1, origin, ray_matrix, forward, pix_angle, max_dist, seed, e0, hg, hm,
    trees, tmeta, rocks, rmeta, bp, sp, sky_rgb, out_rgb, out_depth, shade, tile, lit_step, relax,
):
    """Trace rows ``row0..row1`` of one view.

    Args:
        origin: ``[3]`` camera centre (world, metres).
        ray_matrix: ``[3, 3]`` ``R_c2w @ K^-1``: pixel ``(u, v, 1)`` -> world ray direction.
        forward: ``[3]`` camera +z in world, to turn ray distance into depth.
        pix_angle: radians per pixel (sets the hit tolerance).
        e0, hg, hm: spawn lattice height, cached lattice heights ``[ni, nj]``, and ``hm [3]``: the
            cache's first node (i, j) and the scene top (smallest y of any terrain or object within
            reach of this view: rays rising above it have escaped).
        sky_rgb: ``[H, W, 3]`` float32 exact Sky colours, copied where a ray escapes.
        shade: ``[4]`` float64; ``shade[3] > 0`` evaluates fog and water reflections from the
            point ``shade[:3]`` (see :func:`surface`); depth stays the camera's.
        tile: side (pixels) of the square tiles whose rays first march together as one cone
            (:func:`march_cone`) and each start where it stopped; 1 = every ray from the camera.
        lit_step: sun shadow and occlusion are traced at every ``lit_step``-th pixel both ways
            and interpolated in between where those samples agree (else traced there too);
            1 = traced at every pixel.
        relax: over-relaxation of each ray's steps (see :func:`march_ray`); 1 = plain.
        out_rgb: ``[H, W, 3]`` float32 display RGB in [0, 1] (written).
        out_depth: ``[H, W]`` float32 depth along camera +z, ``inf`` for sky (written).
    """
    W = out_rgb.shape[1]
    rows = row1 - row0
    # 1. Cones: the free space each tile's rays share.
    tw = (W + tile - 1) // tile
    th = (rows + tile - 1) // tile
    starts = np.zeros((th, tw))
    if tile > 1:
        for k in prange(th * tw):
            ty = k // tw
            tx = k % tw
            cx, cy, cz, alpha = _tile_cone(ray_matrix, tx * tile, min(W, tx * tile + tile), row0 + ty * tile, min(row1, row0 + ty * tile + tile))
            starts[ty, tx] = march_cone(origin[0], origin[1], origin[2], cx, cy, cz, alpha, max_dist, seed, e0, hg, hm, trees, tmeta, rocks, rmeta)
    # 2. Every ray from its tile's start: depth, sky and water colours, and the G-buffer of the rest.
    gb = np.empty((rows, W, G_FIELDS))
    state = np.zeros((rows, W), np.int8)
    lit = np.empty((rows, W, 2))
    for vv in prange(rows):
        v = row0 + vv
        for u in range(W):
            dx, dy, dz = _ray(ray_matrix, u + 0.5, v + 0.5)
            t, mat, rnd = march_ray(
                origin[0], origin[1], origin[2], dx, dy, dz, starts[vv // tile, u // tile], max_dist, pix_angle,
                seed, e0, hg, hm, trees, tmeta, rocks, rmeta, bp, relax,
            )
            if mat == MAT_SKY:
                out_rgb[v, u, 0] = sky_rgb[v, u, 0]
                out_rgb[v, u, 1] = sky_rgb[v, u, 1]
                out_rgb[v, u, 2] = sky_rgb[v, u, 2]
                out_depth[v, u] = np.inf
                continue
            out_depth[v, u] = t * (dx * forward[0] + dy * forward[1] + dz * forward[2])
            cr, cg, cb, done = surface(
                origin[0], origin[1], origin[2], dx, dy, dz, t, mat, rnd, max_dist, seed, e0, hg, hm, trees, tmeta, rocks, rmeta, bp, sp, shade, gb[vv, u],
            )
            if done:
                out_rgb[v, u, 0] = cr
                out_rgb[v, u, 1] = cg
                out_rgb[v, u, 2] = cb
                state[vv, u] = PIX_DONE
            else:
                state[vv, u] = PIX_LIT
    # 3. Shadow and occlusion traced at the sample pixels ...
    for vv in prange(rows):
        if vv % lit_step != 0:
            continue
        for u in range(0, W, lit_step):
            if state[vv, u] == PIX_LIT:
                sh, ao = _exact_light(gb[vv, u], seed, e0, hg, hm, trees, tmeta, rocks, rmeta, sp)
                lit[vv, u, 0] = sh
                lit[vv, u, 1] = ao
                cr, cg, cb = shaded(gb[vv, u], max(sh, 0.0), ao, max_dist, bp, sp)
                out_rgb[row0 + vv, u, 0] = cr
                out_rgb[row0 + vv, u, 1] = cg
                out_rgb[row0 + vv, u, 2] = cb
    # 4. ... and interpolated between them where they agree, traced where not.
    if lit_step > 1:
        for vv in prange(rows):
            for u in range(W):
                if state[vv, u] != PIX_LIT or (vv % lit_step == 0 and u % lit_step == 0):
                    continue
                sh, ao = _interpolated_light(gb, state, lit, vv, u, lit_step, rows, W)
                if ao < 0.0:
                    sh, ao = _exact_light(gb[vv, u], seed, e0, hg, hm, trees, tmeta, rocks, rmeta, sp)
                cr, cg, cb = shaded(gb[vv, u], max(sh, 0.0), ao, max_dist, bp, sp)
                out_rgb[row0 + vv, u, 0] = cr
                out_rgb[row0 + vv, u, 1] = cg
                out_rgb[row0 + vv, u, 2] = cb
