"""The writer thread: saves chunks, frames and state as they land, off the render path.

Producers (generation workers delivering ``ChunkAdded``) put work on a bounded
queue and return at once unless the disk has fallen ``queue_size`` chunks behind,
in which case generation waits for it (back-pressure; rendering and the event
loop never call into the writer). The thread takes everything queued, writes each
data file durably, fsyncs the directories, then replaces the manifest once for
the whole batch: a crash at any moment leaves the previous manifest, and every
file it references, intact.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Sequence

from ..keyframes.frames import Frame
from ..scene import Chunk
from ..thread_priority import lower_thread_priority
from .chunk_io import encode_chunk, encode_frame, source_to_dict
from .durable import fsync_dir, sha256_hex, write_durably
from .errors import StoreWriteError
from .manifest import write_manifest

log = logging.getLogger(__name__)

CHUNK_DIR = "chunks"
FRAME_DIR = "frames"
FAR_DIR = "far"
"""Far-field chunks (see runtime.world.keyframes.far_field): chunk files like the scene's."""


def chunk_file(chunk_id: int) -> str:
    return f"{CHUNK_DIR}/{chunk_id:08d}.npz"


def frame_file(frame_id: int) -> str:
    return f"{FRAME_DIR}/{frame_id:08d}.npz"


def far_file(chunk: Chunk) -> str:
    """A far chunk's file: merged chunks (``far_parts``) change under one id, so each version
    gets a name of its own and the manifest switches from the old file to the new atomically."""
    if chunk.far_parts:
        return f"{FAR_DIR}/{chunk.id:08d}-{len(chunk.far_parts)}.npz"
    return f"{FAR_DIR}/{chunk.id:08d}.npz"


class WorldWriter:
    """Owns a world directory's manifest while the world is open for writing.

    Args:
        world_dir: the world's directory (exists, with ``chunks/`` and ``frames/``).
        manifest: the manifest as last written; the writer updates it from here on.
        queue_size: landed chunks that may wait before producers block.
    """

    def __init__(self, world_dir: Path, manifest: dict, queue_size: int = 32) -> None:
        self.world_dir = Path(world_dir)
        self.name = str(manifest.get("name", self.world_dir.name))
        self._manifest = manifest
        manifest.setdefault("far", [])  # worlds saved before the far field have no list
        (self.world_dir / FAR_DIR).mkdir(exist_ok=True)
        self._index = {
            key: {int(rec["id"]): i for i, rec in enumerate(manifest[key])} for key in ("chunks", "frames", "far")
        }
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._error: StoreWriteError | None = None
        self._closed = False
        self._close_lock = threading.Lock()
        self.stats = {
            "chunks_written": 0,
            "frames_written": 0,
            "bytes_written": 0,
            "manifests_written": 0,
            "write_seconds": 0.0,
        }
        self._thread = threading.Thread(target=self._run, name=f"store-{self.name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ producers
    def submit(
        self, chunks: Sequence[Chunk], frames: Sequence[Frame], state: dict | None, far: Sequence[Chunk] = (), far_dropped: Sequence[int] = ()
    ) -> None:
        """Save these chunks, frames and far-field chunks (new or merged), take the far chunks
        ``far_dropped`` out, then write a manifest with ``state`` (any thread; may block when
        far behind). Files a far chunk's new version or a drop leaves unreferenced are deleted
        once the manifest without them is durable."""
        if self._closed:
            log.warning("world %s: %d chunk(s) landed after the store closed; not saved", self.name, len(chunks))
            return
        self._queue.put(("landed", tuple(chunks), tuple(frames), state, tuple(far), tuple(far_dropped)))

    def update_state(self, state: dict | None = None, touch: bool = False) -> None:
        """Write a manifest with a new ``state`` (and/or a new ``last_played`` time when ``touch``)."""
        if not self._closed:
            self._queue.put(("state", state, touch))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is durable; raises :class:`StoreWriteError` if a write failed.

        Returns False if ``timeout`` seconds passed first.
        """
        if not self._closed:
            done = threading.Event()
            self._queue.put(("flush", done))
            if not done.wait(timeout):
                return False
        self._raise_error()
        return True

    def close(self, final_state: dict | None = None, timeout: float | None = None) -> None:
        """Write ``final_state``, drain the queue and stop the thread (idempotent)."""
        with self._close_lock:
            if self._closed:
                return
            self._queue.put(("state", final_state, True))
            self._queue.put(("stop",))
            self._closed = True
        self._thread.join(timeout)
        self._raise_error()

    @property
    def manifest(self) -> dict:
        """The manifest as last queued for writing (read-only use; the writer thread mutates it)."""
        return self._manifest

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        lower_thread_priority()  # compressing and writing chunks must not take the frame clock's CPU
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            waiters: list[threading.Event] = []
            dirty = False
            wrote_files = False
            obsolete: list[str] = []  # files the new manifest no longer names
            for item in batch:
                kind = item[0]
                if kind == "landed":
                    _, chunks, frames, state, far, far_dropped = item
                    wrote_files |= self._write_landed(chunks, frames, far, obsolete)
                    for chunk_id in far_dropped:
                        obsolete += self._remove_record("far", int(chunk_id))
                    if state is not None:
                        self._manifest["state"] = state
                    dirty = True
                elif kind == "state":
                    _, state, touch = item
                    if state is not None:
                        self._manifest["state"] = state
                    if touch:
                        self._manifest["last_played"] = time.time()
                    dirty = True
                elif kind == "flush":
                    waiters.append(item[1])
                elif kind == "stop":
                    stop = True
            if dirty and self._commit(wrote_files):
                self._delete(obsolete)
            for w in waiters:
                w.set()

    def _write_file(self, name: str, data: bytes) -> dict:
        """Write ``data`` durably as ``name`` in the world's folder; its manifest record so far."""
        write_durably(self.world_dir / name, data, sync_dir=False)
        return {"file": name, "bytes": len(data), "sha256": sha256_hex(data)}

    def _write_landed(self, chunks: Sequence[Chunk], frames: Sequence[Frame], far: Sequence[Chunk], obsolete: list[str]) -> bool:
        """Write the data files of one landed job; records join the manifest only if all of them
        made it (the files of the far records they replace go to ``obsolete``)."""
        t0 = time.perf_counter()
        new_chunks, new_frames, new_far = [], [], []
        current = "?"
        try:
            for chunk, name, records in [(c, chunk_file(c.id), new_chunks) for c in chunks] + [(c, far_file(c), new_far) for c in far]:
                current = name
                record = self._write_file(current, encode_chunk(chunk))
                record.update(
                    id=int(chunk.id), gaussians=len(chunk.gaussians), source=source_to_dict(chunk.source)
                )
                if chunk.far_parts:
                    record["parts"] = [[int(by), int(n)] for by, n in chunk.far_parts]
                records.append(record)
            for frame in frames:
                current = frame_file(frame.id)
                record = self._write_file(current, encode_frame(frame))
                record.update(
                    id=int(frame.id),
                    chunk_id=int(frame.chunk_id),
                    caption=frame.caption,
                    width=int(frame.width),
                    height=int(frame.height),
                )
                new_frames.append(record)
        except OSError as e:
            self._fail(f"writing {current} failed: {e}")
            return bool(new_chunks or new_frames or new_far)
        for key, records in (("chunks", new_chunks), ("frames", new_frames), ("far", new_far)):
            for rec in records:
                replaced = self._add_record(key, rec)
                if replaced is not None and replaced["file"] != rec["file"]:
                    obsolete.append(replaced["file"])
        self.stats["chunks_written"] += len(new_chunks)
        self.stats["frames_written"] += len(new_frames)
        self.stats["bytes_written"] += sum(r["bytes"] for r in new_chunks + new_frames + new_far)
        self.stats["write_seconds"] += time.perf_counter() - t0
        return bool(new_chunks or new_frames or new_far)

    def _add_record(self, key: str, rec: dict) -> dict | None:
        """Add ``rec`` to the manifest's ``key`` list; the record it replaced (same id), if any."""
        index = self._index[key]
        if rec["id"] in index:  # the same id written again replaces the old entry
            old = self._manifest[key][index[rec["id"]]]
            self._manifest[key][index[rec["id"]]] = rec
            return old
        index[rec["id"]] = len(self._manifest[key])
        self._manifest[key].append(rec)
        return None

    def _remove_record(self, key: str, record_id: int) -> list[str]:
        """Take record ``record_id`` out of the manifest's ``key`` list; its file (to delete once committed)."""
        if record_id not in self._index[key]:
            return []
        old = self._manifest[key].pop(self._index[key][record_id])
        self._index[key] = {int(rec["id"]): i for i, rec in enumerate(self._manifest[key])}
        return [old["file"]]

    def _delete(self, names: list[str]) -> None:
        """Delete files the durable manifest no longer names (a crash first leaves them for
        the next open's clean-up of unreferenced files)."""
        for name in names:
            try:
                (self.world_dir / name).unlink(missing_ok=True)
            except OSError as e:  # harmless: removed as a leftover on the next open
                log.warning("world %s: could not delete %s: %s", self.name, name, e)

    def _commit(self, wrote_files: bool) -> bool:
        """Write the manifest; whether it is durable now."""
        t0 = time.perf_counter()
        try:
            if wrote_files:  # data files' directory entries must be durable before the manifest names them
                fsync_dir(self.world_dir / CHUNK_DIR)
                fsync_dir(self.world_dir / FRAME_DIR)
                fsync_dir(self.world_dir / FAR_DIR)
            self.stats["bytes_written"] += write_manifest(self.world_dir, self._manifest)
            self.stats["manifests_written"] += 1
        except (OSError, TypeError, ValueError) as e:
            self._fail(f"writing the manifest failed: {e}")
            return False
        finally:
            self.stats["write_seconds"] += time.perf_counter() - t0
        return True

    def _fail(self, problem: str) -> None:
        log.error("world %s: %s", self.name, problem)
        if self._error is None:
            self._error = StoreWriteError(f"world {self.name!r}: {problem}")
