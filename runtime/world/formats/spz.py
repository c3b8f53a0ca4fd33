"""Niantic's ``.spz`` compressed splat format (read by Spark and Niantic's tools). Best-effort.

Written from the public description of the format (nianticlabs/spz): a gzip stream of
a 16-byte little-endian header followed by attribute arrays, attribute-major::

    header:    magic u32 = 0x5053474e ("NGSP"), version u32, num_points u32,
               sh_degree u8, fractional_bits u8, flags u8, reserved u8
    positions  N x 3 x 24-bit signed fixed point (fractional_bits fractional bits)
    alphas     N x u8            sigmoid(opacity) * 255
    colors     N x 3 x u8        f_dc * (0.15 * 255) + 127.5
    scales     N x 3 x u8        (log scale + 10) * 16
    rotations  v3: N x u32, "smallest three" (2-bit index of the largest |component|,
               then the other three as sign bit + 9-bit magnitude / sqrt(1/2));
               v2: N x 3 x u8, x y z as (q * 127.5 + 127.5), w >= 0 derived
    sh         N x C x 3 x u8    (coefficient-major, RGB inner), (x * 128 + 128)

SPZ stores right-up-back (OpenGL) axes; worldstream is right-down-forward (OpenCV),
so y and z of positions and quaternion vectors flip, and each SH coefficient flips
with its basis function's parity in y and z. We write version 3 and read versions
1-4 (version 4's container is in ``spz_v4.py``); extension records are skipped. Not
verified against Niantic's reference implementation here (no copy of it is installed):
treat as best-effort; PLY is the reference export.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..gaussians import SH_C0, Gaussians
from .errors import SplatFormatError
from .limits import check_gaussian_count
from .ply import colors_from_dc
from .spz_layout import SH_COEFFS, SPZ_MAGIC, SUPPORTED_VERSIONS, attribute_sizes, check_plausible_size, plausible_bytes
from .spz_v4 import is_v4, unpack_v4

SPZ_WRITE_VERSION = 3
COLOR_SCALE = 0.15
LOG_SCALE_MIN = -10.0
LOG_SCALE_MAX = 255 / 16 - 10.0
"""The log-scale range 8-bit SPZ scales ((log scale + 10) * 16) can hold."""
HEADER = struct.Struct("<IIIBBBB")

# Parity of the real SH basis functions (3DGS order) under (x, y, z) -> (x, -y, -z).
_SH_FLIP = np.array(
    [-1, -1, 1]  # degree 1: y, z, x
    + [-1, 1, 1, -1, 1]  # degree 2: xy, yz, 3z^2-1, xz, x^2-y^2
    + [-1, 1, -1, -1, 1, -1, 1],  # degree 3
    np.float32,
)
log = logging.getLogger(__name__)

_AXIS_FLIP = np.array([1.0, -1.0, -1.0], np.float32)  # OpenCV (RDF) <-> SPZ (RUB)
_SQRT_HALF = np.float32(np.sqrt(0.5))


def _fractional_bits(means: np.ndarray) -> int:
    """Most fractional bits (<= 12, ~0.25 mm) that keep every coordinate inside 24 bits."""
    extent = float(np.abs(means).max()) if means.size else 0.0
    bits = 12
    while bits > 0 and extent * (1 << bits) >= (1 << 23) - 1:
        bits -= 1
    if extent * (1 << bits) >= (1 << 23) - 1:
        raise ValueError(f"spz: coordinates up to {extent:.0f} m do not fit 24-bit fixed point")
    return bits


def _pack_rotations_smallest_three(quats_wxyz: np.ndarray) -> np.ndarray:
    q = quats_wxyz[:, [1, 2, 3, 0]].astype(np.float32)  # xyzw, as SPZ orders them
    q[:, :3] *= _AXIS_FLIP
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    largest = np.argmax(np.abs(q), axis=1)
    # q and -q are the same rotation: make the largest component positive (not stored).
    q *= np.where(q[np.arange(len(q)), largest] < 0, -1.0, 1.0)[:, None].astype(np.float32)
    comp = largest.astype(np.uint32)
    for i in range(4):
        keep = largest != i
        mag = np.floor(511.0 * np.abs(q[:, i]) / _SQRT_HALF + 0.5).astype(np.uint32)
        bits = ((q[:, i] < 0).astype(np.uint32) << 9) | np.minimum(mag, 511)
        comp = np.where(keep, (comp << 10) | bits, comp)
    return comp.astype("<u4")


def _unpack_rotations_smallest_three(comp: np.ndarray) -> np.ndarray:
    comp = comp.astype(np.uint32)
    largest = (comp >> 30).astype(np.int64)
    q = np.zeros((len(comp), 4), np.float32)
    for i in range(3, -1, -1):
        here = largest != i
        mag = (comp & 511).astype(np.float32)
        sign = np.where((comp >> 9) & 1, -1.0, 1.0).astype(np.float32)
        q[:, i] = np.where(here, sign * _SQRT_HALF * mag / 511.0, 0.0)
        comp = np.where(here, comp >> 10, comp)
    rest = np.clip(1.0 - (q**2).sum(axis=1), 0.0, None)
    q[np.arange(len(q)), largest] = np.sqrt(rest)
    return q


def _quantize_sh(values: np.ndarray, bits: int) -> np.ndarray:
    q = np.round(values * 128.0) + 128.0
    bucket = 1 << (8 - bits)
    q = np.floor((q + bucket // 2) / bucket) * bucket
    return np.clip(q, 0, 255).astype(np.uint8)


def encode_spz(gaussians: Gaussians) -> bytes:
    """The gzip-compressed ``.spz`` (version 3) bytes for ``gaussians``.

    SPZ stores log scales in 8 bits over [-10, 5.94]; components outside are clamped
    (a warning says how many), so Gaussians thinner than e^-10 m = 45 µm come back
    thicker. PLY keeps them exactly.
    """
    n = len(gaussians)
    _warn_clamped_scales(gaussians.log_scales)
    degree = gaussians.sh_degree
    bits = _fractional_bits(gaussians.means)
    fixed = np.round(gaussians.means * _AXIS_FLIP * (1 << bits)).astype("<i4")
    positions = fixed.view(np.uint8).reshape(n, 3, 4)[:, :, :3]
    alphas = np.clip(np.round(gaussians.opacities * 255.0), 0, 255).astype(np.uint8)
    f_dc = (gaussians.colors - 0.5) / SH_C0  # quantised to 8 bits next: no need for ply's exact inverse
    colors = np.clip(np.round(f_dc * (COLOR_SCALE * 255.0) + 127.5), 0, 255).astype(np.uint8)
    scales = np.clip(np.round((gaussians.log_scales - LOG_SCALE_MIN) * 16.0), 0, 255).astype(np.uint8)
    rotations = _pack_rotations_smallest_three(gaussians.quats)
    parts = [
        HEADER.pack(SPZ_MAGIC, SPZ_WRITE_VERSION, n, degree, bits, 0, 0),
        positions.tobytes(),
        alphas.tobytes(),
        colors.tobytes(),
        scales.tobytes(),
        rotations.tobytes(),
    ]
    if degree > 0:
        s = SH_COEFFS[degree]
        sh = gaussians.sh_rest * _SH_FLIP[:s, None]  # [G, S, 3]: coefficient-major, RGB inner
        packed = np.empty((n, s, 3), np.uint8)
        packed[:, :3] = _quantize_sh(sh[:, :3], 5)
        packed[:, 3:] = _quantize_sh(sh[:, 3:], 4)
        parts.append(packed.tobytes())
    return gzip.compress(b"".join(parts), compresslevel=6)


_INFLATE_STEP = 16 << 20


def _inflate_exactly(data: bytes, size: int, path: str | Path) -> np.ndarray:
    """The first ``size`` bytes of the gzip stream ``data``, as uint8; never inflates more.

    A gzip bomb costs at most ``size`` bytes (plus one 16 MiB step), not what it expands to.
    Concatenated gzip members are read as one stream, as ``gzip`` does.
    """
    out = np.empty(size, np.uint8)
    filled = 0
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = data
    try:
        while filled < size:
            piece = inflater.decompress(pending, min(size - filled, _INFLATE_STEP))
            out[filled : filled + len(piece)] = np.frombuffer(piece, np.uint8)
            filled += len(piece)
            pending = inflater.unconsumed_tail
            if inflater.eof:
                if not inflater.unused_data.startswith(b"\x1f\x8b"):
                    break  # trailing bytes that are not another gzip member: ignored, as readers do
                inflater, pending = zlib.decompressobj(16 + zlib.MAX_WBITS), inflater.unused_data
            elif not piece and not pending:
                break
    except zlib.error as e:
        raise SplatFormatError(path, f"not a gzip stream, or corrupt ({e})") from None
    if filled < size:
        return out[:filled]
    return out


def _warn_clamped_scales(log_scales: np.ndarray) -> None:
    low = int((log_scales < LOG_SCALE_MIN - 0.5 / 16).sum())
    high = int((log_scales > LOG_SCALE_MAX + 0.5 / 16).sum())
    if low or high:
        log.warning(
            ".spz stores log scales in [%.2f, %.2f]: %d of %d components (%.1f%%) are clamped (%d below, %d above); "
            "export .ply to keep them exactly",
            LOG_SCALE_MIN, LOG_SCALE_MAX, low + high, log_scales.size, 100.0 * (low + high) / max(log_scales.size, 1), low, high,
        )


def decode_spz(data: bytes, path: str | Path = "<bytes>", max_gaussians: int | None = None) -> Gaussians:
    """Decode ``.spz`` bytes (versions 1-4) into Gaussians in OpenCV axes.

    Memory is bounded before inflating: the header's point count must be within
    ``max_gaussians`` (default :data:`~.limits.MAX_GAUSSIANS`) and its arrays at most
    :data:`~.spz_layout.MAX_RATIO` times the file's size, and only the bytes that count
    needs are ever inflated. Extension records
    (vendor metadata such as camera limits) are skipped.
    """
    if is_v4(data):
        count, degree, bits, arrays = unpack_v4(data, path, max_gaussians)
        return _decode_arrays(4, count, degree, bits, arrays)
    if not data.startswith(b"\x1f\x8b"):
        raise SplatFormatError(
            path, "not an .spz file: it starts neither with gzip (SPZ versions 1-3) nor with 'NGSP' (version 4)"
        )
    head = _inflate_exactly(data, HEADER.size, path).tobytes()
    if len(head) < HEADER.size:
        raise SplatFormatError(path, "truncated: shorter than the 16-byte SPZ header")
    magic, version, n, degree, bits, _flags, _ = HEADER.unpack(head)
    if magic != SPZ_MAGIC:
        raise SplatFormatError(path, f"bad SPZ magic 0x{magic:08x} (expected 0x{SPZ_MAGIC:08x})")
    if version not in (1, 2, 3):
        supported = ", ".join(map(str, SUPPORTED_VERSIONS))
        raise SplatFormatError(path, f"gzip-compressed SPZ version {version} is not supported (reads versions {supported})")
    if degree not in SH_COEFFS:
        raise SplatFormatError(path, f"SPZ SH degree {degree} is not supported (reads 0-3)")
    sizes = attribute_sizes(version, n, degree)
    check_gaussian_count(path, n, max_gaussians)
    # Inflate what the header asks for, but never more than the file could plausibly hold:
    # a stream that ends first is truncated, one that does not is refused as implausible.
    budget = min(HEADER.size + sum(sizes), HEADER.size + plausible_bytes(len(data)))
    raw = _inflate_exactly(data, budget, path)  # extension records after the arrays: never inflated
    if len(raw) < budget:
        raise SplatFormatError(path, f"truncated: {n} points need {sum(sizes)} bytes of data, found {len(raw) - HEADER.size}")
    check_plausible_size(path, n, sum(sizes), len(data))
    offsets = np.cumsum([HEADER.size] + sizes)
    return _decode_arrays(version, n, degree, bits, [raw[int(off) : int(off) + size] for size, off in zip(sizes, offsets)])


def _decode_arrays(version: int, n: int, degree: int, bits: int, chunk: list[np.ndarray]) -> Gaussians:
    """Gaussians (OpenCV axes) from the uint8 attribute arrays of an SPZ ``version`` file."""
    s = SH_COEFFS[degree]
    if version == 1:
        means = chunk[0].view("<f2").reshape(n, 3).astype(np.float32)
    else:
        b = chunk[0].reshape(n, 3, 3).astype(np.int32)
        fixed = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
        fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
        means = fixed.astype(np.float32) / np.float32(1 << bits)
    means *= _AXIS_FLIP
    alpha = np.clip(chunk[1].astype(np.float32) / 255.0, 0.5 / 255.0, 254.5 / 255.0)
    f_dc = (chunk[2].reshape(n, 3).astype(np.float32) / 255.0 - 0.5) / COLOR_SCALE
    log_scales = chunk[3].reshape(n, 3).astype(np.float32) / 16.0 + np.float32(LOG_SCALE_MIN)
    if version >= 3:
        xyzw = _unpack_rotations_smallest_three(chunk[4].view("<u4"))
    else:
        xyz = chunk[4].reshape(n, 3).astype(np.float32) / 127.5 - 1.0
        w = np.sqrt(np.clip(1.0 - (xyz**2).sum(axis=1), 0.0, None))
        xyzw = np.concatenate([xyz, w[:, None]], axis=1)
    xyzw[:, :3] *= _AXIS_FLIP
    quats = xyzw[:, [3, 0, 1, 2]]
    quats /= np.maximum(np.linalg.norm(quats, axis=1, keepdims=True), 1e-12)
    sh_rest = None
    if s:
        sh_rest = chunk[5].reshape(n, s, 3).astype(np.float32)
        sh_rest -= 128.0  # in place: degree 3 is the largest array here
        sh_rest *= _SH_FLIP[:s, None] / np.float32(128.0)
    return Gaussians(means, quats, log_scales, np.log(alpha / (1.0 - alpha)), colors_from_dc(f_dc), sh_rest)


def write_spz(path: str | Path, gaussians: Gaussians) -> int:
    """Write ``gaussians`` as ``.spz`` (written beside and renamed); returns bytes written."""
    path = Path(path)
    data = encode_spz(gaussians)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(data)


def read_spz(path: str | Path, max_gaussians: int | None = None) -> Gaussians:
    """Read an ``.spz`` file (see :func:`decode_spz` for what is read and refused)."""
    path = Path(path)
    if not path.is_file():
        raise SplatFormatError(path, "no such file")
    return decode_spz(path.read_bytes(), path, max_gaussians)
