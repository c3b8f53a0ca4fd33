"""Synthetic "typical worlds" for renderer tests and benchmarks (no weights, no downloads).

A world made by the pipeline is a set of chunks of pixel-aligned Gaussians, each
reconstructed from one generated view's depth map: one Gaussian per pixel at the
back-projected depth, sized to the pixel footprint (``~0.6 * depth / focal``), nearly
opaque. This module builds the same thing from an analytic scene: rolling terrain
with rocks (spheres) and trees (box trunks, sphere crowns), ray-marched from virtual
views placed around the origin. World +y is down: the ground lies near ``y = +1.6``
so a camera at the origin stands at eye height.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from runtime.world.camera import Cameras, Pose
from runtime.world.gaussians import Gaussians
from runtime.world.scene import ChunkSource, Scene

EYE_HEIGHT = 1.6
FOOTPRINT = 0.6
"""Gaussian standard deviation as a fraction of the pixel footprint ``depth / focal``."""

_SPHERE, _BOX = 0, 1
_ROCK, _TRUNK, _CROWN = 0, 1, 2


@nb.njit(cache=True, fastmath=True, nogil=True)
def _ground_y(x, z):
    return EYE_HEIGHT + 0.45 * math.sin(0.21 * x + 0.3) * math.cos(0.17 * z) + 0.12 * math.sin(0.9 * x + 1.3 * z)


@nb.njit(cache=True, fastmath=True, nogil=True)
def _sdf(px, py, pz, shapes):
    """Signed distance (metres, conservative) and shape index (-1 = ground)."""
    best = (_ground_y(px, pz) - py) * 0.7  # 0.7: the height field's slope bound
    which = -1
    for s in range(shapes.shape[0]):
        kind = shapes[s, 0]
        dx, dy, dz = px - shapes[s, 1], py - shapes[s, 2], pz - shapes[s, 3]
        if kind == _SPHERE:
            d = math.sqrt(dx * dx + dy * dy + dz * dz) - shapes[s, 4]
        else:
            qx = abs(dx) - shapes[s, 4]
            qy = abs(dy) - shapes[s, 5]
            qz = abs(dz) - shapes[s, 6]
            outside = math.sqrt(max(qx, 0.0) ** 2 + max(qy, 0.0) ** 2 + max(qz, 0.0) ** 2)
            d = outside + min(max(qx, max(qy, qz)), 0.0)
        if d < best:
            best = d
            which = s
    return best, which


@nb.njit(cache=True, fastmath=True, nogil=True)
def _march(origin, dirs, shapes, max_dist, depth_out, normal_out, which_out):
    """Sphere-trace ``dirs [R,3]`` from ``origin``; distance along the ray (inf = sky)."""
    for r in range(dirs.shape[0]):
        t = 0.05
        hit = False
        which = -1
        for _ in range(160):
            px = origin[0] + t * dirs[r, 0]
            py = origin[1] + t * dirs[r, 1]
            pz = origin[2] + t * dirs[r, 2]
            d, which = _sdf(px, py, pz, shapes)
            if d < 0.002 * t:
                hit = True
                break
            t += d
            if t > max_dist:
                break
        if not hit:
            depth_out[r] = np.inf
            continue
        depth_out[r] = t
        which_out[r] = which
        e = 0.01
        px = origin[0] + t * dirs[r, 0]
        py = origin[1] + t * dirs[r, 1]
        pz = origin[2] + t * dirs[r, 2]
        nx = _sdf(px + e, py, pz, shapes)[0] - _sdf(px - e, py, pz, shapes)[0]
        ny = _sdf(px, py + e, pz, shapes)[0] - _sdf(px, py - e, pz, shapes)[0]
        nz = _sdf(px, py, pz + e, shapes)[0] - _sdf(px, py, pz - e, shapes)[0]
        n = math.sqrt(nx * nx + ny * ny + nz * nz) + 1e-12
        normal_out[r, 0] = nx / n
        normal_out[r, 1] = ny / n
        normal_out[r, 2] = nz / n


def scatter_shapes(seed: int, radius: float, count: int, keep_clear: float = 3.0) -> np.ndarray:
    """``[S, 8]`` float64 shapes (kind, centre xyz, half sizes or radius, material) around the origin."""
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < count * 3:
        r = radius * math.sqrt(rng.uniform(0.0, 1.0))
        phi = rng.uniform(0.0, 2 * math.pi)
        x, z = r * math.sin(phi), r * math.cos(phi)
        if math.hypot(x, z) < keep_clear:
            continue
        gy = _ground_y(x, z)
        if rng.uniform() < 0.5:  # rock, half buried
            rad = rng.uniform(0.4, 1.8)
            rows.append([_SPHERE, x, gy, z, rad, 0, 0, _ROCK])
        else:  # tree: trunk box plus crown sphere (world +y down: "up" is -y)
            hgt = rng.uniform(2.5, 6.0)
            rows.append([_BOX, x, gy - hgt / 2, z, 0.2, hgt / 2, 0.2, _TRUNK])
            rows.append([_SPHERE, x, gy - hgt, z, rng.uniform(1.0, 2.2), 0, 0, _CROWN])
        if len(rows) >= count:
            break
    return np.asarray(rows[:count], np.float64).reshape(-1, 8)


def _shade(points: np.ndarray, normals: np.ndarray, which: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """``[R, 3]`` float32 colours: a textured albedo per material, Lambert-lit."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    tex = 0.5 + 0.25 * np.sin(3.1 * x) * np.sin(2.7 * z) + 0.25 * np.sin(11.0 * x + 7.0 * y + 13.0 * z)
    albedo = np.empty_like(points)
    ground = which < 0
    albedo[ground] = np.stack([0.25 + 0.2 * tex[ground], 0.45 + 0.2 * tex[ground], 0.15 + 0.1 * tex[ground]], -1)
    material = np.where(ground, -1, shapes[np.maximum(which, 0), 7])
    rock, trunk, crown = material == _ROCK, material == _TRUNK, material == _CROWN
    albedo[rock] = (0.45 + 0.25 * tex[rock])[:, None] * np.array([1.0, 0.97, 0.92])
    albedo[crown] = np.stack([0.12 + 0.1 * tex[crown], 0.35 + 0.25 * tex[crown], 0.1 + 0.05 * tex[crown]], -1)
    albedo[trunk] = np.stack([0.35 + 0.1 * tex[trunk], 0.22 + 0.06 * tex[trunk], 0.1 + 0.03 * tex[trunk]], -1)
    sun = np.array([0.3, -0.6, 0.74])
    sun /= np.linalg.norm(sun)
    light = 0.35 + 0.65 * np.clip(normals @ sun, 0.0, 1.0)
    return np.clip(albedo * light[:, None], 0.0, 1.0).astype(np.float32)


def view_gaussians(
    pose: Pose,
    shapes: np.ndarray,
    width: int = 256,
    height: int = 144,
    fov_y: float = math.radians(75.0),
    max_dist: float = 120.0,
    seed: int = 0,
) -> Gaussians:
    """Pixel-aligned Gaussians for one virtual view: one per pixel that hits the scene."""
    cam = pose.camera(width, height, fov_y)
    from runtime.world.sky import pixel_directions

    dirs = pixel_directions(cam)[0].reshape(-1, 3).astype(np.float64)
    n = dirs.shape[0]
    dist = np.empty(n)
    normals = np.zeros((n, 3))
    which = np.full(n, -1, np.int64)
    _march(pose.position.astype(np.float64), dirs, shapes, max_dist, dist, normals, which)
    hit = np.isfinite(dist)
    dirs, dist, normals, which = dirs[hit], dist[hit], normals[hit], which[hit]
    points = pose.position[None].astype(np.float64) + dist[:, None] * dirs
    forward = cam.forwards[0].astype(np.float64)
    z = dist * (dirs @ forward)  # z-depth for the footprint
    focal = float(cam.K[0, 0, 0])
    rng = np.random.default_rng(seed)
    g = points.shape[0]
    sigma = FOOTPRINT * z / focal
    log_scales = np.log(sigma)[:, None] + rng.uniform(-0.2, 0.2, (g, 3))
    quats = rng.normal(size=(g, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    opacity = rng.uniform(0.9, 0.99, g)
    return Gaussians(
        means=points.astype(np.float32),
        quats=quats.astype(np.float32),
        log_scales=log_scales.astype(np.float32),
        opacity_logits=np.log(opacity / (1.0 - opacity)).astype(np.float32),
        colors=_shade(points, normals, which, shapes),
    )


def view_poses(count: int, seed: int = 0, spread: float = 2.0) -> list[Pose]:
    """Virtual generation views near the origin at eye height, facing all round, looking a little down."""
    rng = np.random.default_rng(seed + 1)
    poses = []
    for i in range(count):
        r, phi = spread * math.sqrt(rng.uniform()), rng.uniform(0.0, 2 * math.pi)
        pos = np.array([r * math.sin(phi), 0.0, r * math.cos(phi)], np.float32)
        yaw = 2 * math.pi * i / count + rng.uniform(-0.3, 0.3)
        poses.append(Pose(pos, yaw=yaw, pitch=rng.uniform(-0.45, -0.05)))
    return poses


def typical_world(
    num_views: int = 12,
    width: int = 256,
    height: int = 144,
    seed: int = 0,
    num_shapes: int = 80,
    radius: float = 45.0,
) -> list[Gaussians]:
    """One Gaussians set (a chunk) per virtual view; ``~0.75 * width * height`` Gaussians each."""
    shapes = scatter_shapes(seed, radius, num_shapes)
    return [
        view_gaussians(pose, shapes, width, height, seed=seed + i) for i, pose in enumerate(view_poses(num_views, seed))
    ]


def translated(gaussians: Gaussians, offset: np.ndarray) -> Gaussians:
    """The same Gaussians moved by ``offset [3]`` metres."""
    return Gaussians(
        gaussians.means + np.asarray(offset, np.float32), gaussians.quats, gaussians.log_scales,
        gaussians.opacity_logits, gaussians.colors, gaussians.sh_rest,
    )


def scene_from_chunks(parts: list[Gaussians]) -> Scene:
    """A :class:`Scene` holding each part as its own chunk."""
    scene = Scene()
    for i, part in enumerate(parts):
        scene.append(part, ChunkSource(job_id=i, generator="synthetic"))
    return scene


def viewer_camera(width: int = 640, height: int = 360, yaw: float = 0.3, fov_y: float = math.radians(60.0)) -> Cameras:
    """A player standing at the origin, looking slightly down the terrain."""
    return Pose(np.zeros(3, np.float32), yaw=yaw, pitch=-0.08).camera(width, height, fov_y)


__all__ = [
    "typical_world",
    "view_gaussians",
    "view_poses",
    "scatter_shapes",
    "translated",
    "scene_from_chunks",
    "viewer_camera",
]
