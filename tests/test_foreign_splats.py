"""Splat files written by other tools: .spz version 4 (Niantic's current default), SuperSplat's
compressed PLY, PLYs with infinite opacity logits. Each file is written here, by hand, from the
published layout (not by our writers), then read back."""

from __future__ import annotations

import gzip
import logging
import math
import struct

import numpy as np
import pytest
import zstandard

from runtime.world.formats import SplatFormatError, read_splats, write_splats
from runtime.world.gaussians import SH_C0, Gaussians

SPZ_MAGIC = 0x5053474E


def random_gaussians(n: int, sh_coeffs: int | None, seed: int = 0) -> Gaussians:
    rng = np.random.default_rng(seed)
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    return Gaussians(
        rng.uniform(-3, 3, (n, 3)).astype(np.float32),
        quats,
        rng.uniform(-6, -1, (n, 3)).astype(np.float32),
        rng.normal(0, 2, n).astype(np.float32),
        rng.uniform(0.05, 0.95, (n, 3)).astype(np.float32),
        None if sh_coeffs is None else rng.uniform(-0.5, 0.5, (n, sh_coeffs, 3)).astype(np.float32),
    )


# ---------------------------------------------------------------- .spz version 4
def spz_v3_arrays(path) -> tuple[tuple, list[bytes]]:
    """The header fields and attribute arrays of a version 3 file (gzip of header + arrays)."""
    raw = gzip.decompress(path.read_bytes())
    magic, version, n, degree, bits, flags, _ = struct.unpack_from("<IIIBBBB", raw)
    assert (magic, version) == (SPZ_MAGIC, 3)
    sizes = [9 * n, n, 3 * n, 3 * n, 4 * n, 3 * n * {0: 0, 1: 3, 2: 8, 3: 15}[degree]]
    arrays, offset = [], 16
    for size in sizes:
        arrays.append(raw[offset : offset + size])
        offset += size
    return (n, degree, bits, flags), arrays


def spz_v4_bytes(n: int, degree: int, bits: int, arrays: list[bytes], extension: bytes = b"", version: int = 4,
                 declared: list[int] | None = None, streams: list[bytes] | None = None) -> bytes:
    """A version 4 file: 32-byte plaintext header, extension records, table of contents
    (compressed and uncompressed size per stream, u64 each), then one zstd stream per array."""
    arrays = arrays if degree else arrays[:5]  # no sh stream at degree 0
    compressor = zstandard.ZstdCompressor(level=9)
    streams = streams or [compressor.compress(a) for a in arrays]
    toc_offset = 32 + len(extension)
    flags = 0x2 if extension else 0
    header = struct.pack("<IIIBBBBI12x", SPZ_MAGIC, version, n, degree, bits, flags, len(streams), toc_offset)
    declared = declared or [len(a) for a in arrays]
    toc = b"".join(struct.pack("<QQ", len(s), d) for s, d in zip(streams, declared))
    return header + extension + toc + b"".join(streams)


@pytest.mark.parametrize("sh_coeffs", [None, 15])
def test_spz_v4_reads_as_its_v3_twin(tmp_path, sh_coeffs):
    g = random_gaussians(300, sh_coeffs)
    write_splats(tmp_path / "v3.spz", g)
    (n, degree, bits, _), arrays = spz_v3_arrays(tmp_path / "v3.spz")
    record = struct.pack("<II", 0xADBE0002, 12) + struct.pack("<fff", 0.1, 1.2, 2.0)  # a vendor extension: skipped
    (tmp_path / "v4.spz").write_bytes(spz_v4_bytes(n, degree, bits, arrays, extension=record))
    v3, v4 = read_splats(tmp_path / "v3.spz"), read_splats(tmp_path / "v4.spz")
    assert len(v4) == 300 and v4.sh_degree == g.sh_degree
    for name in ("means", "quats", "log_scales", "opacity_logits", "colors"):
        assert np.array_equal(getattr(v4, name), getattr(v3, name)), name
    if sh_coeffs:
        assert np.array_equal(v4.sh_rest, v3.sh_rest)
    assert np.abs(v4.means - g.means).max() <= 1.0 / (1 << bits)  # and both are the original, quantised


def test_spz_v4_that_does_not_match_its_header_is_refused(tmp_path):
    g = random_gaussians(50, None)
    write_splats(tmp_path / "v3.spz", g)
    (n, degree, bits, _), arrays = spz_v3_arrays(tmp_path / "v3.spz")
    cases = {
        "size": (spz_v4_bytes(n, degree, bits, arrays, declared=[9 * n, n, 3 * n, 3 * n, 40 * n]), "stream 4 declares 2,000 bytes; 50 points need 200"),
        "bomb": (
            spz_v4_bytes(n, degree, bits, arrays, streams=[zstandard.ZstdCompressor().compress(bytes(64 << 20))] + [
                zstandard.ZstdCompressor().compress(a) for a in arrays[1:5]
            ]),
            "stream 0 should inflate to 450 bytes, found more than that",
        ),
        "version": (spz_v4_bytes(n, degree, bits, arrays, version=5), "SPZ version 5 is not supported (reads versions 1, 2, 3, 4)"),
        "degree": (spz_v4_bytes(n, 4, bits, arrays), "SPZ SH degree 4 is not supported (reads 0-3)"),
        "truncated": (spz_v4_bytes(n, degree, bits, arrays)[:-20], "truncated: the SPZ streams end past the end of the file"),
        "count": (spz_v4_bytes(50_000_000, degree, bits, arrays), "holds 50,000,000 Gaussians, more than the limit"),
        "ratio": (
            spz_v4_bytes(1_000_000, degree, bits, arrays, declared=[9_000_000, 1_000_000, 3_000_000, 3_000_000, 4_000_000]),
            "more than 64 times the",
        ),
    }
    for name, (data, message) in cases.items():
        (tmp_path / f"{name}.spz").write_bytes(data)
        with pytest.raises(SplatFormatError, match=rf"{name}\.spz: .*{message}".replace("(", r"\(").replace(")", r"\)")):
            read_splats(tmp_path / f"{name}.spz")
    (tmp_path / "neither.spz").write_bytes(b"PK\x03\x04" + bytes(60))
    with pytest.raises(SplatFormatError, match="neither with gzip .SPZ versions 1-3. nor with 'NGSP' .version 4."):
        read_splats(tmp_path / "neither.spz")


def test_spz_export_says_it_clamps_tiny_scales(tmp_path, caplog):
    g = random_gaussians(100, None)
    g.log_scales[:10, 0] = -12.0  # 10 of 300 components thinner than e^-10 m
    with caplog.at_level(logging.WARNING):
        write_splats(tmp_path / "thin.spz", g)
    assert "10 of 300 components (3.3%) are clamped (10 below, 0 above)" in caplog.text
    assert np.allclose(read_splats(tmp_path / "thin.spz").log_scales[:10, 0], -10.0)


# ---------------------------------------------------------------- SuperSplat compressed PLY
CHUNK = 256


def quantise(t: np.ndarray, bits: int) -> np.ndarray:
    return np.clip(np.round(t * ((1 << bits) - 1)), 0, (1 << bits) - 1).astype(np.uint32)


def fraction(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    span = np.where(high > low, high - low, 1.0)
    return (values - low) / span


def compressed_ply_bytes(g: Gaussians, color_bounds: bool = True) -> bytes:
    """SuperSplat's compressed PLY for ``g``, written from the published layout."""
    n = len(g)
    chunks = -(-n // CHUNK)
    of = np.arange(n) // CHUNK
    rgb = 0.5 + SH_C0 * ((g.colors - 0.5) / SH_C0)
    fields = {"": g.means, "scale_": g.log_scales, "color": rgb}
    lows = {k: np.stack([v[of == c].min(axis=0) for c in range(chunks)]) for k, v in fields.items()}
    highs = {k: np.stack([v[of == c].max(axis=0) for c in range(chunks)]) for k, v in fields.items()}

    def pack_11_10_11(key: str) -> np.ndarray:
        t = fraction(fields[key], lows[key][of], highs[key][of])
        return (quantise(t[:, 0], 11) << 21) | (quantise(t[:, 1], 10) << 11) | quantise(t[:, 2], 11)

    largest = np.argmax(np.abs(g.quats), axis=1)
    q = g.quats * np.sign(g.quats[np.arange(n), largest])[:, None]  # q and -q: the same rotation
    rotation = largest.astype(np.uint32) << 30
    for place, shift in enumerate((20, 10, 0)):
        slot = np.where(place < largest, place, place + 1)
        value = q[np.arange(n), slot] / math.sqrt(2.0) + 0.5
        rotation |= quantise(value, 10) << shift
    if color_bounds:
        t = fraction(rgb, lows["color"][of], highs["color"][of])
    else:
        t = np.clip(rgb, 0, 1)
    color = (quantise(t[:, 0], 8) << 24) | (quantise(t[:, 1], 8) << 16) | (quantise(t[:, 2], 8) << 8) | quantise(g.opacities, 8)

    chunk_names = ["min_x", "min_y", "min_z", "max_x", "max_y", "max_z"]
    chunk_names += ["min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z"]
    chunk_cols = [lows[""], highs[""], lows["scale_"], highs["scale_"]]
    if color_bounds:
        chunk_names += ["min_r", "min_g", "min_b", "max_r", "max_g", "max_b"]
        chunk_cols += [lows["color"], highs["color"]]
    lines = ["ply", "format binary_little_endian 1.0", f"element chunk {chunks}"]
    lines += [f"property float {name}" for name in chunk_names]
    lines += [f"element vertex {n}"] + [f"property uint packed_{k}" for k in ("position", "rotation", "scale", "color")]
    body = np.concatenate(chunk_cols, axis=1).astype("<f4").tobytes()
    body += np.stack([pack_11_10_11(""), rotation, pack_11_10_11("scale_"), color], axis=1).astype("<u4").tobytes()
    if g.sh_rest is not None:
        s = g.sh_rest.shape[1]
        lines += [f"element sh {n}"] + [f"property uchar f_rest_{i}" for i in range(3 * s)]
        channel_major = np.transpose(g.sh_rest, (0, 2, 1)).reshape(n, 3 * s)
        body += np.clip(np.floor((channel_major / 8.0 + 0.5) * 256.0), 0, 255).astype(np.uint8).tobytes()
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode() + body


@pytest.mark.parametrize("sh_coeffs, color_bounds", [(None, True), (15, True), (3, False)])
def test_supersplat_compressed_ply_reads_within_quantisation(tmp_path, sh_coeffs, color_bounds):
    g = random_gaussians(600, sh_coeffs, seed=3)  # 3 chunks, the last one partial
    path = tmp_path / "scene.compressed.ply"
    path.write_bytes(compressed_ply_bytes(g, color_bounds))
    back = read_splats(path)
    assert len(back) == 600 and back.sh_degree == g.sh_degree
    extent = g.means.max(axis=0) - g.means.min(axis=0)
    assert (np.abs(back.means - g.means) <= extent / 1023 + 1e-6).all()
    assert np.abs(back.log_scales - g.log_scales).max() <= 5.0 / 1023 + 1e-6
    alignment = np.abs((back.quats * g.quats).sum(axis=1))
    assert alignment.min() > 0.999, alignment.min()
    assert np.abs(back.opacities - g.opacities).max() <= 1.0 / 255 + 1e-6
    assert np.abs(back.colors - g.colors).max() <= 1.0 / 255 + 1e-6
    if sh_coeffs:
        assert np.abs(back.sh_rest - g.sh_rest).max() <= 8.0 / 256 + 1e-6


def test_compressed_ply_that_does_not_fit_its_layout_names_the_format(tmp_path):
    data = compressed_ply_bytes(random_gaussians(600, None)).replace(b"element chunk 3", b"element chunk 2")
    (tmp_path / "odd.ply").write_bytes(data)
    with pytest.raises(SplatFormatError, match=r"looks like a SuperSplat compressed PLY .* 600 vertices need 3 chunks of 256, the file has 2"):
        read_splats(tmp_path / "odd.ply")


# ---------------------------------------------------------------- infinite opacity logits
def test_infinite_opacity_logits_are_opacity_one_and_zero(tmp_path):
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    rows = np.zeros((3, len(names)), "<f4")
    rows[:, 10] = 1.0
    rows[:, 6] = [np.inf, -np.inf, 0.0]  # as Niantic's spz_to_ply writes fully opaque and transparent Gaussians
    header = "\n".join(["ply", "format binary_little_endian 1.0", "element vertex 3", *(f"property float {n}" for n in names), "end_header"])
    (tmp_path / "inf.ply").write_bytes((header + "\n").encode() + rows.tobytes())
    g = read_splats(tmp_path / "inf.ply")
    assert np.all(np.isfinite(g.opacity_logits))
    assert np.allclose(g.opacities, [1.0, 0.0, 0.5])
    rows[0, 6] = np.nan
    (tmp_path / "nan.ply").write_bytes((header + "\n").encode() + rows.tobytes())
    with pytest.raises(SplatFormatError, match="property 'opacity' has 1 non-finite value"):
        read_splats(tmp_path / "nan.ply")
