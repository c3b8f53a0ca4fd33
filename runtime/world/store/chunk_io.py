"""Chunk, frame and start-image files: uncompressed ``.npz`` (numpy's zip of ``.npy`` arrays).

Uncompressed because it is fast both ways (no codec on the writer thread, a
memcpy to load) and any numpy can read it; exact, because every array is stored
at its own dtype (depth float32, RGB uint8): a reopened world renders and
generates the same pixels. Metadata that is not an array (ids, sources, captions)
lives in the manifest record beside each file's size and sha256.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from ..gaussians import Gaussians
from ..keyframes.frames import Frame
from ..scene import Chunk, ChunkSource
from .errors import WorldFormatError

CHUNK_ARRAYS = ("means", "quats", "log_scales", "opacity_logits", "colors")


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _load_npz(data: bytes, where: str, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise WorldFormatError(f"{where}: not a readable .npz file ({e})") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise WorldFormatError(f"{where}: missing array(s) {', '.join(missing)}")
    return arrays


# ---------------------------------------------------------------- chunks
def encode_chunk(chunk: Chunk) -> bytes:
    g = chunk.gaussians
    arrays = {name: getattr(g, name) for name in CHUNK_ARRAYS}
    if g.sh_rest is not None:
        arrays["sh_rest"] = g.sh_rest
    arrays["bounds_min"] = chunk.bounds_min
    arrays["bounds_max"] = chunk.bounds_max
    return _npz_bytes(arrays)


def source_to_dict(source: ChunkSource) -> dict:
    d = {
        "job_id": int(source.job_id),
        "generator": source.generator,
        "seed": int(source.seed),
        "caption": source.caption,
        "created_at": float(source.created_at),
    }
    if source.origin is not None:
        d["origin"] = [float(x) for x in source.origin]
    return d


def source_from_dict(d: dict) -> ChunkSource:
    return ChunkSource(
        int(d.get("job_id", -1)),
        str(d.get("generator", "unknown")),
        int(d.get("seed", 0)),
        str(d.get("caption", "")),
        float(d.get("created_at", 0.0)),
        _origin(d.get("origin")),
    )


def _origin(value) -> tuple[float, float, float] | None:
    """A saved ``origin`` (three finite numbers), or None when absent or malformed (it only
    decides which far chunks merge)."""
    try:
        origin = tuple(float(x) for x in value)
    except (TypeError, ValueError):
        return None
    return origin if len(origin) == 3 and all(np.isfinite(origin)) else None


def decode_chunk(data: bytes, record: dict, where: str) -> Chunk:
    """The chunk stored in ``data``; ``record`` is its manifest entry (id, source)."""
    a = _load_npz(data, where, CHUNK_ARRAYS + ("bounds_min", "bounds_max"))
    try:
        gaussians = Gaussians(*(a[name] for name in CHUNK_ARRAYS), a.get("sh_rest"))
    except ValueError as e:
        raise WorldFormatError(f"{where}: {e}") from None
    if len(gaussians) != int(record.get("gaussians", len(gaussians))):
        raise WorldFormatError(f"{where}: holds {len(gaussians)} Gaussians, the manifest says {record['gaussians']}")
    return Chunk(
        int(record["id"]),
        gaussians,
        a["bounds_min"].astype(np.float32),
        a["bounds_max"].astype(np.float32),
        source_from_dict(record.get("source", {})),
        _far_parts(record.get("parts", []), len(gaussians), where),
    )


def _far_parts(value, count: int, where: str) -> tuple[tuple[int, int], ...]:
    """A merged far chunk's landings, ``[[landing id, Gaussians then], ...]`` (increasing, ending at ``count``)."""
    try:
        parts = tuple((int(by), int(n)) for by, n in value)
    except (TypeError, ValueError):
        raise WorldFormatError(f"{where}: field 'parts' must be a list of [landing id, count] pairs") from None
    ends = [n for _, n in parts]
    if parts and (ends != sorted(ends) or ends[0] <= 0 or ends[-1] != count):
        raise WorldFormatError(f"{where}: field 'parts' must grow to the chunk's {count} Gaussians, got {ends}")
    return parts


# ---------------------------------------------------------------- frames
def encode_frame(frame: Frame) -> bytes:
    return _npz_bytes(
        {
            "rgb": np.asarray(frame.rgb, np.uint8),
            "depth": np.asarray(frame.depth, np.float32),
            "w2c": np.asarray(frame.w2c, np.float32),
            "K": np.asarray(frame.K, np.float32),
        }
    )


def decode_frame(data: bytes, record: dict, where: str) -> Frame:
    a = _load_npz(data, where, ("rgb", "depth", "w2c", "K"))
    rgb, depth = a["rgb"], a["depth"]
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or depth.shape != rgb.shape[:2]:
        raise WorldFormatError(f"{where}: rgb {rgb.shape} {rgb.dtype} and depth {depth.shape} do not form a frame")
    return Frame(
        int(record["id"]),
        rgb,
        depth.astype(np.float32, copy=False),
        a["w2c"].astype(np.float32),
        a["K"].astype(np.float32),
        int(record.get("chunk_id", -1)),
        str(record.get("caption", "")),
    )


# ---------------------------------------------------------------- start image
def encode_image(rgb: np.ndarray) -> bytes:
    return _npz_bytes({"rgb": np.asarray(rgb, np.uint8)})


def decode_image(data: bytes, where: str) -> np.ndarray:
    return _load_npz(data, where, ("rgb",))["rgb"]
