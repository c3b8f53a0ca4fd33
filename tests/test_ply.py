"""Splat files: PLY round trips exactly, hand-made INRIA PLYs import and render, bad files get clear errors."""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest

from runtime.world.camera import Pose, quat_wxyz_to_matrix
from runtime.world.gaussians import SH_C0, Gaussians
from runtime.world.formats import SplatFormatError, read_splats, write_splats
from runtime.world.formats.ply import read_ply, write_ply
from runtime.world.formats.splat import read_splat, write_splat
from runtime.world.formats.spz import read_spz, write_spz
from runtime.world.store import WorldLibrary

ARRAYS = ("means", "quats", "log_scales", "opacity_logits", "colors")


def cpu_renderer():
    try:
        from runtime.world.render import create_renderer
    except ImportError:
        from runtime.world.render.cpu import CpuRenderer

        return CpuRenderer()
    return create_renderer("cpu")


def random_gaussians(n: int, sh_coeffs: int | None = None, seed: int = 0) -> Gaussians:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    sh = None if sh_coeffs is None else rng.normal(0.0, 0.2, (n, sh_coeffs, 3))
    return Gaussians(
        rng.normal(0.0, 10.0, (n, 3)),
        q,
        rng.normal(-3.0, 1.0, (n, 3)),
        rng.normal(0.0, 2.0, n),
        rng.random((n, 3)),
        sh,
    )


# ---------------------------------------------------------------- PLY round trips
@pytest.mark.parametrize("sh_coeffs", [None, 3, 15])
def test_ply_round_trip_is_bit_exact(tmp_path, sh_coeffs):
    g = random_gaussians(3000, sh_coeffs)
    lossless = tmp_path / "lossless.ply"
    write_ply(lossless, g, lossless=True)
    back = read_ply(lossless)
    for name in ARRAYS:
        assert np.array_equal(getattr(back, name), getattr(g, name)), name
    assert (back.sh_rest is None) == (sh_coeffs is None)
    if sh_coeffs:
        assert np.array_equal(back.sh_rest, g.sh_rest)

    # The standard layout alone: everything stored before activation is exact; colours,
    # rebuilt from f_dc, are exact from 0.25 up and within one f_dc float32 step below.
    standard = tmp_path / "standard.ply"
    size = write_ply(standard, g)
    assert size == standard.stat().st_size == len(standard.read_bytes())
    back = read_ply(standard)
    for name in ("means", "quats", "log_scales", "opacity_logits"):
        assert np.array_equal(getattr(back, name), getattr(g, name)), name
    bright = g.colors >= 0.25
    assert np.array_equal(back.colors[bright], g.colors[bright])
    assert np.abs(back.colors - g.colors).max() <= 4e-8


def test_ply_file_layout_is_inria(tmp_path):
    g = random_gaussians(5, 15)
    path = tmp_path / "scene.ply"
    write_ply(path, g)
    data = path.read_bytes()
    header, body = data.split(b"end_header\n", 1)
    lines = header.decode().splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    props = [l.split()[-1] for l in lines if l.startswith("property")]
    assert all(l.startswith("property float ") for l in lines if l.startswith("property"))
    assert props[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert props[9:54] == [f"f_rest_{i}" for i in range(45)]
    assert props[54:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    rows = np.frombuffer(body, "<f4").reshape(5, 62)
    assert np.allclose(0.5 + SH_C0 * rows[:, 6:9], g.colors, atol=1e-6)
    # channel-major f_rest: coefficient k of channel c at 9 + c * 15 + k
    assert np.array_equal(rows[:, 9 + 1 * 15 + 4], g.sh_rest[:, 4, 1])
    assert np.array_equal(rows[:, 54], g.opacity_logits)
    assert np.array_equal(rows[:, 58:62], g.quats)


def inria_ply_bytes(columns: dict[str, np.ndarray], fmt: str = "binary_little_endian") -> bytes:
    """A PLY written by hand (not by our writer): header text + packed float32 rows."""
    names = list(columns)
    n = len(next(iter(columns.values())))
    header = ["ply", f"format {fmt} 1.0", "comment made by hand in a test", f"element vertex {n}"]
    header += [f"property float {name}" for name in names] + ["end_header"]
    head = ("\n".join(header) + "\n").encode()
    if fmt == "ascii":
        rows = np.stack([columns[k] for k in names], axis=1)
        return head + "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in rows).encode()
    dtype = "<f4" if fmt == "binary_little_endian" else ">f4"
    return head + np.stack([columns[k] for k in names], axis=1).astype(dtype).tobytes()


def wall_columns(n_side: int = 40, degree: int = 3, color=(0.8, 0.2, 0.1)) -> dict[str, np.ndarray]:
    """A 4 m x 4 m wall of Gaussians 3 m in front of the origin, in INRIA PLY columns."""
    u, v = np.meshgrid(np.linspace(-2, 2, n_side), np.linspace(-2, 2, n_side))
    n = u.size
    rng = np.random.default_rng(1)
    cols = {"x": u.ravel(), "y": v.ravel(), "z": np.full(n, 3.0), "nx": np.zeros(n), "ny": np.zeros(n), "nz": np.zeros(n)}
    for c in range(3):
        cols[f"f_dc_{c}"] = np.full(n, (color[c] - 0.5) / SH_C0)
    rest = {0: 0, 1: 3, 2: 8, 3: 15}[degree]
    for i in range(3 * rest):
        cols[f"f_rest_{i}"] = rng.normal(0.0, 0.01, n)
    cols["opacity"] = np.full(n, 4.0)
    for i in range(3):
        cols[f"scale_{i}"] = np.full(n, math.log(0.06))
    quat = np.array([2.0, 0.0, 0.0, 0.0])  # not normalised, as trained scenes often are
    for i in range(4):
        cols[f"rot_{i}"] = np.full(n, quat[i])
    return cols


def test_hand_written_degree3_ply_imports_and_renders(tmp_path):
    cols = wall_columns(degree=3)
    path = tmp_path / "hand.ply"
    path.write_bytes(inria_ply_bytes(cols))
    g = read_ply(path)
    assert len(g) == 1600 and g.sh_degree == 3
    assert np.allclose(g.quats, [1.0, 0.0, 0.0, 0.0])
    assert np.allclose(g.colors, (0.8, 0.2, 0.1), atol=1e-6)
    assert np.array_equal(g.sh_rest[:, 7, 2], cols["f_rest_37"].astype(np.float32))  # channel 2, coefficient 7
    assert np.allclose(g.opacities, 1 / (1 + math.exp(-4.0)))

    library = WorldLibrary(tmp_path / "worlds")
    world = library.import_gaussians("wall", g, renderer=cpu_renderer())
    try:
        out = world.render(Pose().camera(64, 36, math.radians(60.0)))
    finally:
        world.close()
    centre = out.rgb[0, 12:24, 24:40].reshape(-1, 3).astype(float).mean(axis=0)
    assert out.alpha[0, 12:24, 24:40].min() > 0.9
    assert abs(out.depth[0, 18, 32] - 3.0) < 0.2
    assert centre[0] > 150 and centre[1] < 90 and centre[2] < 70, centre


def test_lyra_degree0_and_other_encodings_read(tmp_path):
    cols = wall_columns(n_side=8, degree=0)
    lyra = cols  # Lyra's reconstructed_scene.ply: 17 floats, normals included
    assert len(lyra) == 17
    expected = None
    for fmt in ("binary_little_endian", "binary_big_endian", "ascii"):
        path = tmp_path / f"reconstructed_scene_{fmt}.ply"
        path.write_bytes(inria_ply_bytes(lyra, fmt))
        g = read_ply(path)
        assert len(g) == 64 and g.sh_rest is None
        if expected is None:
            expected = g
        for name in ARRAYS:
            assert np.allclose(getattr(g, name), getattr(expected, name), atol=1e-6), (fmt, name)


# ---------------------------------------------------------------- malformed PLYs
def test_malformed_ply_errors_name_file_and_problem(tmp_path):
    good = inria_ply_bytes(wall_columns(n_side=6, degree=1))

    truncated = tmp_path / "truncated.ply"
    truncated.write_bytes(good[:-50])
    with pytest.raises(SplatFormatError, match=r"truncated\.ply: truncated"):
        read_ply(truncated)

    cut_header = tmp_path / "cut_header.ply"
    cut_header.write_bytes(good[:60])
    with pytest.raises(SplatFormatError, match=r"cut_header\.ply: .*end_header"):
        read_ply(cut_header)

    cols = wall_columns(n_side=6, degree=0)
    del cols["opacity"]
    no_opacity = tmp_path / "no_opacity.ply"
    no_opacity.write_bytes(inria_ply_bytes(cols))
    with pytest.raises(SplatFormatError, match=r"no_opacity\.ply: missing property 'opacity'"):
        read_ply(no_opacity)

    not_ply = tmp_path / "photo.ply"
    not_ply.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(SplatFormatError, match=r"photo\.ply: not a PLY file"):
        read_ply(not_ply)

    cols = wall_columns(n_side=6, degree=1)
    del cols["f_rest_8"]
    odd_sh = tmp_path / "odd_sh.ply"
    odd_sh.write_bytes(inria_ply_bytes(cols))
    with pytest.raises(SplatFormatError, match=r"odd_sh\.ply: 8 f_rest_\* properties is not an SH degree 0-3 layout"):
        read_ply(odd_sh)

    cols = wall_columns(n_side=6, degree=0)
    cols["scale_1"][5] = np.nan
    nan = tmp_path / "nan.ply"
    nan.write_bytes(inria_ply_bytes(cols))
    with pytest.raises(SplatFormatError, match=r"nan\.ply: property 'scale_1' has 1 non-finite value\(s\) \(first at vertex 5\)"):
        read_ply(nan)

    points = tmp_path / "points.ply"
    points.write_bytes(inria_ply_bytes({k: np.zeros(4) for k in ("x", "y", "z", "red", "green", "blue")}))
    with pytest.raises(SplatFormatError, match=r"points\.ply: missing properties .*point cloud"):
        read_ply(points)

    with pytest.raises(SplatFormatError, match=r"missing\.ply: no such file"):
        read_ply(tmp_path / "missing.ply")
    with pytest.raises(SplatFormatError, match=r"scene\.obj: unknown splat format '\.obj'"):
        read_splats(tmp_path / "scene.obj")


# ---------------------------------------------------------------- .splat and .spz
def rotation_error(a: Gaussians, b: Gaussians) -> float:
    return float(np.abs(quat_wxyz_to_matrix(a.quats) - quat_wxyz_to_matrix(b.quats)).max())


def test_splat_round_trip_within_quantisation(tmp_path):
    g = random_gaussians(2000)
    path = tmp_path / "scene.splat"
    assert write_splat(path, g) == 32 * len(g) == path.stat().st_size
    back = read_splat(path)
    assert np.array_equal(back.means, g.means)
    assert np.allclose(back.log_scales, g.log_scales, atol=1e-5)
    assert np.abs(back.colors - g.colors).max() <= 0.5 / 255 + 1e-6
    inside = (g.opacities > 1 / 255) & (g.opacities < 254 / 255)
    assert np.abs(back.opacities - g.opacities)[inside].max() <= 0.5 / 255 + 1e-6
    assert rotation_error(back, g) < 0.03
    assert back.sh_rest is None

    (tmp_path / "bad.splat").write_bytes(path.read_bytes()[:-5])
    with pytest.raises(SplatFormatError, match=r"bad\.splat: size .* not a multiple of the 32-byte"):
        read_splat(tmp_path / "bad.splat")


def test_spz_round_trip_within_quantisation(tmp_path):
    g = random_gaussians(2000, sh_coeffs=15)
    path = tmp_path / "scene.spz"
    write_spz(path, g)
    raw = gzip.decompress(path.read_bytes())
    magic, version, count, degree, bits, flags, _ = struct.unpack_from("<IIIBBBB", raw)
    assert (magic, version, count, degree, flags) == (0x5053474E, 3, 2000, 3, 0)
    # SPZ stores right-up-back axes: y and z are flipped relative to ours.
    first = np.frombuffer(raw[16:25], np.uint8).astype(np.int32)
    fixed = first[0::3] | (first[1::3] << 8) | (first[2::3] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    assert np.allclose(fixed / (1 << bits), g.means[0] * [1, -1, -1], atol=2.0 ** -bits)

    back = read_spz(path)
    assert np.abs(back.means - g.means).max() <= 2.0 ** -bits
    assert np.abs(back.log_scales - np.clip(g.log_scales, -10, 5.9)).max() <= 1 / 32 + 1e-6
    assert np.abs(back.colors - g.colors).max() < 0.01
    inside = (g.opacities > 1 / 255) & (g.opacities < 254 / 255)
    assert np.abs(back.opacities - g.opacities)[inside].max() <= 0.5 / 255 + 1e-6
    assert rotation_error(back, g) < 0.01
    assert np.abs(back.sh_rest[:, :3] - g.sh_rest[:, :3]).max() <= 4.5 / 128
    assert np.abs(back.sh_rest[:, 3:] - g.sh_rest[:, 3:]).max() <= 8.5 / 128

    (tmp_path / "bad.spz").write_bytes(gzip.compress(b"NOPE" + bytes(40)))
    with pytest.raises(SplatFormatError, match=r"bad\.spz: bad SPZ magic"):
        read_spz(tmp_path / "bad.spz")
    (tmp_path / "short.spz").write_bytes(gzip.compress(raw[:1000]))
    with pytest.raises(SplatFormatError, match=r"short\.spz: truncated"):
        read_spz(tmp_path / "short.spz")


def test_suffix_dispatch(tmp_path):
    g = random_gaussians(100)
    for suffix in (".ply", ".splat", ".spz"):
        path = tmp_path / f"scene{suffix.upper()}"
        write_splats(path, g)
        assert len(read_splats(path)) == 100


@pytest.mark.parametrize("suffix", [".ply", ".splat", ".spz"])
def test_writing_into_a_missing_folder_names_the_folder(tmp_path, suffix):
    from runtime.world.formats import write_splats

    four = random_gaussians(4)
    with pytest.raises(FileNotFoundError) as raised:
        write_splats(tmp_path / "nowhere" / f"out{suffix}", four)
    assert raised.value.filename == str(tmp_path / "nowhere") and ".tmp" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []
