"""The manifest: the one file that says what a saved world is.

``<world>/manifest.json`` lists every chunk, frame, far-field chunk and start-image file with its
size and sha256, the world's config and :meth:`World.state_dict`. It is replaced
atomically (temp file, fsync, rename, fsync directory) and only after the files it
references are durable, so whatever a crash leaves behind, the manifest on disk
describes a complete world. Files it does not reference are leftovers of an
interrupted write and are ignored (and cleaned up when the world is next opened
for writing).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from .durable import write_durably
from .errors import WorldFormatError

FORMAT_VERSION = 1
"""Bumped when a reader of the previous version could misread a newer world."""

MANIFEST_NAME = "manifest.json"

TEST_PAUSE_ENV = "WORLDSTREAM_STORE_TEST_PAUSE_BEFORE_RENAME"
"""Test hook: seconds to sleep between writing the manifest's temp file and renaming it."""


def new_manifest(name: str, config: dict, start_image: dict | None) -> dict:
    now = time.time()
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "created_at": now,
        "updated_at": now,
        "last_played": now,
        "sequence": 0,
        "config": config,
        "state": {},
        "start_image": start_image,
        "chunks": [],
        "frames": [],
        "far": [],
    }


def _json_default(value):
    """numpy scalars and arrays that slip into state dicts become plain JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def encode_manifest(manifest: dict) -> bytes:
    return json.dumps(manifest, default=_json_default, separators=(",", ":")).encode("utf-8")


def write_manifest(world_dir: Path, manifest: dict) -> int:
    """Atomically replace ``world_dir/manifest.json``; returns its size in bytes."""
    manifest["updated_at"] = time.time()
    manifest["sequence"] = int(manifest.get("sequence", 0)) + 1
    data = encode_manifest(manifest)
    path = world_dir / MANIFEST_NAME
    pause = os.environ.get(TEST_PAUSE_ENV)
    if pause:
        _write_with_pause(path, data, float(pause))
    else:
        write_durably(path, data)
    return len(data)


def _write_with_pause(path: Path, data: bytes, seconds: float) -> None:
    """:func:`write_durably` with a sleep between the fsynced temp file and the rename (tests kill us there)."""
    from .durable import fsync_dir, temp_path_for

    tmp = temp_path_for(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    time.sleep(seconds)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_manifest(world_dir: Path, name: str) -> dict:
    """Parse and check ``world_dir/manifest.json``; raises :class:`WorldFormatError` naming the problem."""
    path = world_dir / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise WorldFormatError(f"world {name!r}: {path} is missing (not a worldstream world, or never saved)") from None
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WorldFormatError(f"world {name!r}: {path} is not valid JSON ({e})") from None
    except RecursionError:
        raise WorldFormatError(f"world {name!r}: {path} is JSON nested too deeply to be a manifest") from None
    if not isinstance(manifest, dict):
        raise WorldFormatError(f"world {name!r}: {path} is not a JSON object")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise WorldFormatError(f"world {name!r}: {path} has no valid format_version (got {version!r})")
    if version > FORMAT_VERSION:
        raise WorldFormatError(
            f"world {name!r} was written by format {version}; this worldstream reads up to {FORMAT_VERSION} — upgrade"
        )
    for key, kind in (("chunks", list), ("frames", list), ("config", dict)):
        if not isinstance(manifest.get(key), kind):
            raise WorldFormatError(f"world {name!r}: {path}: field {key!r} must be a JSON {kind.__name__}")
    if not isinstance(manifest.get("far", []), list):
        raise WorldFormatError(f"world {name!r}: {path}: field 'far' must be a JSON list")
    for key in ("chunks", "frames", "far"):
        for i, rec in enumerate(manifest.get(key, [])):
            if not isinstance(rec, dict) or not {"id", "file", "bytes", "sha256"} <= rec.keys():
                raise WorldFormatError(f"world {name!r}: {path}: {key}[{i}] needs id, file, bytes and sha256")
            _check_relative(rec["file"], world_dir, name)
    if manifest.get("start_image") is not None:
        if not isinstance(manifest["start_image"], dict):
            raise WorldFormatError(f"world {name!r}: {path}: field 'start_image' must be a JSON object")
        _check_relative(manifest["start_image"].get("file", ""), world_dir, name)
    return manifest


def _check_relative(file: object, world_dir: Path, name: str) -> None:
    """A manifest may only reference files inside its own world directory."""
    if not isinstance(file, str) or not file or file.startswith("/") or ".." in Path(file).parts:
        raise WorldFormatError(f"world {name!r}: manifest references {file!r}, which is not a file inside the world")

