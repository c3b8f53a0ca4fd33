"""A directory of saved worlds: create, open, list, import and export them.

Layout (one directory per world under the library root)::

    <root>/<name>/manifest.json        what the world is (see manifest.py)
    <root>/<name>/start.png            the start image, if any: the PNG/JPEG bytes it came as
                                       (start.jpg; worlds saved before kept start.npz)
    <root>/<name>/chunks/00000012.npz  one file per scene chunk
    <root>/<name>/frames/00000040.npz  one file per memory frame (RGB + depth + pose)
    <root>/<name>/far/00000011.npz     one file per far-field chunk (worlds saved before it have none;
                                       a merged one is 00000011-<landings>.npz, a new file per version)
    <root>/<name>/.lock                held (flock) while a process has the world open to write

Worlds handed out by :meth:`WorldLibrary.create` and :meth:`WorldLibrary.open` are
:class:`StoredWorld` objects: ordinary :class:`World` objects that save every
chunk as it lands and flush in :meth:`StoredWorld.close`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..gaussians import Gaussians
from ..keyframes.frames import Frame
from ..scene import Chunk, ChunkSource
from ..world import ChunkAdded, World, WorldConfig, WorldEvent, retired_mask
from .chunk_io import decode_chunk, decode_frame, decode_image
from .durable import TMP_MARK, fsync_dir, sha256_hex, write_durably
from .errors import WorldBusy, WorldExists, WorldFormatError, WorldNotFound, WorldStoreError
from .manifest import FORMAT_VERSION, MANIFEST_NAME, new_manifest, read_manifest, write_manifest
from . import start_image as start_image_file
from .names import check_world_name, is_world_name
from .writer import CHUNK_DIR, FAR_DIR, FRAME_DIR, WorldWriter

log = logging.getLogger(__name__)

LEGACY_START_IMAGE_FILE = "start.npz"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class WorldInfo:
    """A saved world at a glance (from its manifest; no data file is read).

    ``size_bytes`` counts the manifest and the files it references. ``error`` is set
    (and the counts are 0) when the manifest cannot be read.
    """

    name: str
    path: Path
    size_bytes: int
    chunks: int
    gaussians: int
    frames: int
    created_at: float
    last_played: float
    format_version: int
    generator: str = ""
    seed: int = 0
    caption: str = ""
    error: str | None = None
    far_gaussians: int = 0
    """Far-field Gaussians (drawn behind the scene; not counted in ``gaussians``)."""


class StoredWorld(World):
    """A :class:`World` that saves itself: each landed chunk is written as it lands.

    Built by :class:`WorldLibrary`; use it exactly like a World. :meth:`close`
    stops generation, then waits until everything is on disk. :meth:`flush` waits
    without closing.
    """

    store: WorldWriter | None = None
    world_dir: Path | None = None
    read_only: bool = False
    _lock_fd: int | None = None
    _unsubscribe_store = None

    def _attach_store(self, writer: WorldWriter, lock_fd: int) -> None:
        self.store = writer
        self._lock_fd = lock_fd
        self._unsubscribe_store = self.subscribe(self._save_event)

    def _save_event(self, event: WorldEvent) -> None:
        # Called on the generation worker right after the chunk landed, so state_dict()
        # describes the world with this chunk in it.
        if isinstance(event, ChunkAdded) and self.store is not None:
            self.store.submit(event.chunks, event.frames, self.state_dict(), event.far, event.far_dropped)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything landed so far is durable (False on timeout); raises StoreWriteError on failure."""
        if self.store is None:
            return True
        self.store.update_state(self.state_dict())
        return self.store.flush(timeout)

    def close(self) -> None:
        super().close()
        store, self.store = self.store, None
        try:
            if store is not None:
                if self._unsubscribe_store is not None:
                    self._unsubscribe_store()
                store.close(final_state=self.state_dict())
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None


class WorldLibrary:
    """Saved worlds under ``root`` (created if missing). Never touches files outside ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()

    # ------------------------------------------------------------------ names and paths
    def path(self, name: str) -> Path:
        """The directory of world ``name`` (which may not exist yet)."""
        path = self.root / check_world_name(name)
        # Belt and braces: the name rule already forbids separators and '..'.
        if path.parent != self.root:
            raise WorldStoreError(f"world {name!r} would live outside {self.root}")
        return path

    def exists(self, name: str) -> bool:
        return (self.path(name) / MANIFEST_NAME).is_file()

    def _require(self, name: str) -> Path:
        path = self.path(name)
        if not (path / MANIFEST_NAME).is_file():
            known = ", ".join(i.name for i in self.list()) or "none"
            raise WorldNotFound(f"no world named {name!r} in {self.root} (worlds: {known})")
        return path

    # ------------------------------------------------------------------ create / open
    def create(
        self, config: WorldConfig, start_image: np.ndarray | None = None, *, start_image_bytes: bytes | None = None, **world_kwargs
    ) -> StoredWorld:
        """Make a new, empty world named ``config.name`` and return it open for writing.

        ``start_image`` is ``[H, W, 3]`` uint8 pixels; ``start_image_bytes`` the PNG/JPEG they
        were decoded from, saved exactly as given (alone, they are decoded here). Pixels
        without bytes are saved as PNG. ``world_kwargs`` (generator, renderer, executor,
        depth_estimator) go to :class:`World`. Raises :class:`WorldExists` if the name is
        taken, :class:`.start_image.StartImageError` (a ValueError) for unusable bytes.
        """
        name = check_world_name(config.name)
        path = self.path(name)
        if (path / MANIFEST_NAME).exists():
            raise WorldExists(f"a world named {name!r} already exists in {self.root}")
        if start_image_bytes is not None:
            fmt = start_image_file.image_format(start_image_bytes)
            if fmt is None:
                raise start_image_file.StartImageError("start_image must be PNG or JPEG bytes")
            if start_image is None:
                start_image = start_image_file.decode(start_image_bytes)  # before anything is written
        if start_image is not None:
            start_image = np.asarray(start_image)
            if start_image.ndim != 3 or start_image.shape[2] != 3 or start_image.dtype != np.uint8:
                raise ValueError(f"start_image must be [H, W, 3] uint8, got {start_image.shape} {start_image.dtype}")
            if start_image_bytes is None:
                start_image_bytes, fmt = start_image_file.encode_png(start_image), "png"
        for sub in ("", CHUNK_DIR, FRAME_DIR, FAR_DIR):
            (path / sub).mkdir(parents=True, exist_ok=True)
        fsync_dir(self.root)
        lock_fd = self._lock(path, name)
        try:
            if (path / MANIFEST_NAME).exists():  # created by someone else since we looked
                raise WorldExists(f"a world named {name!r} already exists in {self.root}")
            # A directory without a manifest is an interrupted create: start it afresh.
            self._remove_leftovers(path, {"chunks": [], "frames": [], "far": []})
            start_record = None
            if start_image_bytes is not None:
                file_name = start_image_file.FILE_NAMES[fmt]
                write_durably(path / file_name, start_image_bytes)
                start_record = {"file": file_name, "bytes": len(start_image_bytes), "sha256": sha256_hex(start_image_bytes)}
            manifest = new_manifest(name, config.to_dict(), start_record)
            world = StoredWorld(config, start_image=start_image, **world_kwargs)
            try:
                manifest["state"] = world.state_dict()
                write_manifest(path, manifest)
            except BaseException:
                world.close()
                raise
        except BaseException:
            os.close(lock_fd)
            raise
        self._finish_open(world, path, manifest, lock_fd)
        return world

    def open(self, name: str, *, read_only: bool = False, verify: bool = True, **world_kwargs) -> StoredWorld:
        """Bring world ``name`` back exactly as last saved.

        Every referenced file's size (and with ``verify`` its sha256) is checked;
        a bad one raises :class:`WorldFormatError` naming it. Files the manifest does
        not reference are leftovers of an interrupted save: ignored, and deleted
        unless ``read_only``. A ``read_only`` world saves nothing and takes no lock
        (for rendering or exporting while a server has it open).
        """
        path = self._require(name)
        lock_fd = None if read_only else self._lock(path, name)
        try:
            manifest = read_manifest(path, name)
            if not read_only:
                self._remove_leftovers(path, manifest)
            try:
                config = WorldConfig.from_dict({**manifest["config"], "name": name})
            except (ValueError, TypeError) as e:
                raise WorldFormatError(f"world {name!r}: the manifest's config is invalid ({e})") from None
            start_image = self._load_start_image(path, name, manifest.get("start_image"), verify)
            chunks = [self._load_chunk(path, name, rec, verify) for rec in manifest["chunks"]]
            frames = [self._load_frame(path, name, rec, verify) for rec in manifest["frames"]]
            far = [self._load_chunk(path, name, rec, verify) for rec in manifest.get("far", [])]
            world = StoredWorld(config, start_image=start_image, **world_kwargs)
            try:
                world.restore(chunks, frames, manifest.get("state") or {}, far)
            except BaseException as e:
                world.close()
                if isinstance(e, (ValueError, KeyError, TypeError)):
                    raise WorldFormatError(f"world {name!r}: saved state cannot be restored ({type(e).__name__}: {e})") from None
                raise
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        if read_only:
            world.world_dir, world.read_only = path, True
        else:
            self._finish_open(world, path, manifest, lock_fd)
            world.store.update_state(touch=True)
        return world

    def _finish_open(self, world: StoredWorld, path: Path, manifest: dict, lock_fd: int) -> None:
        world.world_dir = path
        world._attach_store(WorldWriter(path, manifest), lock_fd)

    @staticmethod
    def _lock(path: Path, name: str) -> int:
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WorldBusy(f"world {name!r} is open for writing elsewhere (close it there, or open it read-only)") from None
        return fd

    @staticmethod
    def _remove_leftovers(path: Path, manifest: dict) -> list[Path]:
        """Delete data files the manifest does not reference, and temp files (interrupted writes)."""
        referenced = {rec["file"] for key in ("chunks", "frames", "far") for rec in manifest.get(key, [])}
        if manifest.get("start_image"):
            referenced.add(manifest["start_image"]["file"])
        removed = []
        candidates = [p for sub in (CHUNK_DIR, FRAME_DIR, FAR_DIR) if (path / sub).is_dir() for p in (path / sub).iterdir()]
        candidates += [p for p in path.iterdir() if TMP_MARK in p.name]
        for p in candidates:
            rel = p.relative_to(path).as_posix()
            if p.is_file() and (rel not in referenced or TMP_MARK in p.name):
                p.unlink(missing_ok=True)
                removed.append(p)
        if removed:
            log.info("world %s: removed %d unreferenced file(s) left by an interrupted save", path.name, len(removed))
        return removed

    def delete(self, name: str) -> None:
        """Remove world ``name`` and its files. Raises :class:`WorldBusy` if it is open for writing.

        The manifest goes first, so an interrupted delete leaves no half-world that opens.
        """
        path = self._require(name)
        lock_fd = self._lock(path, name)
        try:
            (path / MANIFEST_NAME).unlink()
            fsync_dir(path)
            shutil.rmtree(path)
            fsync_dir(self.root)
        finally:
            os.close(lock_fd)

    # ------------------------------------------------------------------ reading files
    @staticmethod
    def _read_file(path: Path, name: str, rec: dict, verify: bool) -> bytes:
        file = path / rec["file"]
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise WorldFormatError(f"world {name!r}: {file} is missing (the manifest references it)") from None
        if len(data) != int(rec["bytes"]):
            raise WorldFormatError(f"world {name!r}: {file} is corrupt: {len(data)} bytes, the manifest says {rec['bytes']}")
        if verify and sha256_hex(data) != rec["sha256"]:
            raise WorldFormatError(f"world {name!r}: {file} is corrupt: sha256 does not match the manifest")
        return data

    def _load_start_image(self, path: Path, name: str, rec: dict | None, verify: bool) -> np.ndarray | None:
        if not rec:
            return None
        data = self._read_file(path, name, rec, verify)
        if rec["file"] == LEGACY_START_IMAGE_FILE:
            return decode_image(data, f"{path / rec['file']}")
        try:
            return start_image_file.decode(data, max_pixels=start_image_file.MAX_IMAGE_PIXELS, min_side=1)
        except start_image_file.StartImageError as e:
            raise WorldFormatError(f"world {name!r}: {path / rec['file']}: {e}") from None

    def _load_chunk(self, path: Path, name: str, rec: dict, verify: bool) -> Chunk:
        return decode_chunk(self._read_file(path, name, rec, verify), rec, f"world {name!r}: {path / rec['file']}")

    def _load_frame(self, path: Path, name: str, rec: dict, verify: bool) -> Frame:
        return decode_frame(self._read_file(path, name, rec, verify), rec, f"world {name!r}: {path / rec['file']}")

    def load_chunks(self, name: str, verify: bool = True) -> list[Chunk]:
        """The chunks of ``name`` as its scene holds them, without building a World (for export).

        Chunk files keep the Gaussians as generated; those that refinement retired since
        (``state.retired`` in the manifest) are left out here as they are on loading, so an
        export holds what a player sees and as many Gaussians as :meth:`info` counts."""
        path = self._require(name)
        manifest = read_manifest(path, name)
        retired = {int(cid): retired_mask(packed) for cid, packed in (manifest.get("state") or {}).get("retired", {}).items()}
        chunks = []
        for rec in manifest["chunks"]:
            chunk = self._load_chunk(path, name, rec, verify)
            mask = retired.get(chunk.id)
            if mask is not None and len(mask) == len(chunk.gaussians) and mask.any():
                if mask.all():
                    continue
                chunk = Chunk.build(chunk.id, chunk.gaussians.subset(np.flatnonzero(~mask)), chunk.source)
            chunks.append(chunk)
        return chunks

    def load_far(self, name: str, verify: bool = True) -> list[Chunk]:
        """The far-field chunks of ``name`` (see :mod:`..keyframes.far_field`; none for worlds
        saved before it), without building a World."""
        path = self._require(name)
        manifest = read_manifest(path, name)
        return [self._load_chunk(path, name, rec, verify) for rec in manifest.get("far", [])]

    def load_gaussians(self, name: str, verify: bool = True, far: bool = False) -> Gaussians:
        """Every saved Gaussian of ``name`` in one set (SH kept only if all chunks share a
        degree); with ``far``, the far field's after the scene's."""
        chunks = self.load_chunks(name, verify) + (self.load_far(name, verify) if far else [])
        return Gaussians.concat([c.gaussians for c in chunks])

    # ------------------------------------------------------------------ import
    def import_gaussians(
        self,
        name: str,
        gaussians: Gaussians,
        *,
        caption: str = "",
        seed: int = 0,
        source_name: str = "import",
        config: WorldConfig | None = None,
        **world_kwargs,
    ) -> StoredWorld:
        """Create world ``name`` seeded with ``gaussians`` (e.g. a PLY); generation extends it past its borders."""
        config = config or WorldConfig(name=name, seed=seed, caption=caption)
        if config.name != name:
            raise ValueError(f"config.name {config.name!r} differs from name {name!r}")
        world = self.create(config, **world_kwargs)
        try:
            world.import_gaussians(gaussians, ChunkSource(-1, source_name, config.seed, config.caption))
        except BaseException:
            world.close()
            raise
        return world

    # ------------------------------------------------------------------ listing
    def list(self) -> list[WorldInfo]:
        """Every world under the root, sorted by name (unreadable ones carry ``error``)."""
        if not self.root.is_dir():
            return []
        return [
            self._info(p)
            for p in sorted(self.root.iterdir())
            if p.is_dir() and is_world_name(p.name) and (p / MANIFEST_NAME).is_file()
        ]

    def info(self, name: str) -> WorldInfo:
        return self._info(self._require(name))

    @staticmethod
    def _info(path: Path) -> WorldInfo:
        name = path.name
        try:
            m = read_manifest(path, name)
        except WorldFormatError as e:
            return WorldInfo(name, path, 0, 0, 0, 0, 0.0, 0.0, 0, error=str(e))
        try:
            size = (path / MANIFEST_NAME).stat().st_size + sum(int(r["bytes"]) for k in ("chunks", "frames", "far") for r in m.get(k, []))
            if m.get("start_image"):
                size += int(m["start_image"].get("bytes", 0))
            cfg = m["config"]
            # Chunk files hold what was generated; refinement may have retired some of it since.
            retired = [retired_mask(packed) for packed in (m.get("state") or {}).get("retired", {}).values()]
            return WorldInfo(
                name=name,
                path=path,
                size_bytes=size,
                chunks=len(m["chunks"]) - sum(bool(r.all()) for r in retired),
                gaussians=sum(int(r.get("gaussians", 0)) for r in m["chunks"]) - sum(int(r.sum()) for r in retired),
                frames=len(m["frames"]),
                created_at=_timestamp(m.get("created_at", 0.0)),
                last_played=_timestamp(m.get("last_played", 0.0)),
                format_version=int(m["format_version"]),
                generator=str(cfg.get("generator", "")),
                seed=int(cfg.get("seed", 0)),
                caption=str(cfg.get("caption", "")),
                far_gaussians=sum(int(r.get("gaussians", 0)) for r in m.get("far", [])),
            )
        except (ValueError, TypeError, OverflowError, IndexError, KeyError, AttributeError) as e:  # a hand-edited or hostile manifest
            return WorldInfo(name, path, 0, 0, 0, 0, 0.0, 0.0, 0, error=f"world {name!r}: manifest field of the wrong type ({e})")


def _timestamp(value) -> float:
    """Seconds since the epoch from a manifest; 0 (unknown) unless a plausible time (years 1970-9999)."""
    seconds = float(value)
    return seconds if 0.0 <= seconds < 253402300800.0 else 0.0


__all__ = ["FORMAT_VERSION", "StoredWorld", "WorldInfo", "WorldLibrary"]
