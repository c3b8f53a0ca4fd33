"""An encode pool for benchmarks: video encoders in worker processes, with no network.

``bench/gpu_stream.py`` uses it to measure how many streams the machine's cores encode
(``capacity``) apart from RTP and the network. The server's own path is
``runtime/stream/media_pool.py``: there the worker holds the whole peer connection.

Why processes: PyAV's encode holds the interpreter lock for most of its time. Measured
on a 16-core H100 host (``bench/gpu_stream.py``, ``threads_scaling``): 16 threads
encoding 16 independent 720p streams make 3.0x the frames of one thread, not ~16x.

Shape of it:

* :class:`EncodePool` is a thread pool that also creates encoders
  (``create_encoder(settings)``); each ``PlayerVideoTrack`` given it as its executor
  calls its encoder's blocking ``encode`` in one of the pool's threads.
* With worker processes (the default), ``create_encoder`` returns a
  :class:`ProcessEncoder`: the stream's ``VideoEncoder`` lives in one worker (streams
  are dealt out to the least-loaded worker); the frame goes through one shared-memory
  slot per player, a request ``(slot, pts, keyframe)`` through the worker's pipe, and
  the encoded packets come back as bytes. The thread waits for the reply without the
  interpreter lock. A slot is written only while no encode of that player is in flight
  (each track encodes one frame at a time; newest frame wins in the track's slot, before
  encoding), so the shared memory needs no further locking.
* ``processes=0`` keeps encoders in this process (``VideoEncoder``).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing import shared_memory

import av
import numpy as np

from runtime.stream.encoder import TIME_BASE, EncoderSettings, VideoEncoder
from runtime.stream.media_pool import usable_cores

log = logging.getLogger("worldstream.encoder")
REPLY_TIMEOUT_S = 30.0


def default_encode_workers(cores: int | None = None) -> int:
    """Threads of the encode pool: they mostly wait on replies, so enough for every
    stream to have a frame in flight."""
    return max(32, 2 * (cores or usable_cores()))


# ------------------------------------------------------------------ worker process side
def _worker_main(conn) -> None:
    """One worker process: serve open / encode / close requests until the pipe closes."""
    slots: dict[int, tuple[VideoEncoder, shared_memory.SharedMemory]] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        request_id, op, slot, args = msg
        try:
            if op == "open":
                settings, shm_name = args
                # Attaching registers the name with the resource tracker again; that
                # tracker is the server's own (spawned workers share it) and keeps one
                # entry, which the server's unlink removes.
                shm = shared_memory.SharedMemory(name=shm_name)
                encoder = VideoEncoder(settings)
                slots[slot] = (encoder, shm)
                reply = encoder.codec_name
            elif op == "encode":
                pts, keyframe, pixel_format, shape = args
                encoder, shm = slots[slot]
                image = np.ndarray(shape, np.uint8, buffer=shm.buf)
                packets = encoder.encode(image, pts, keyframe, pixel_format)
                del image  # no view of the segment may outlive the call (close needs none)
                reply = ([(bytes(p), bool(p.is_keyframe)) for p in packets], encoder.last_encode_s)
            elif op == "close":
                encoder, shm = slots.pop(slot)
                encoder.close()
                shm.close()
                reply = None
            else:
                raise ValueError(f"unknown request {op!r}")
            conn.send((request_id, True, reply))
        except Exception as exc:  # report to the caller; the worker carries on
            conn.send((request_id, False, f"{type(exc).__name__}: {exc}"))


# ------------------------------------------------------------------ server process side
class _Worker:
    """A worker process and its pipe; requests from many threads, replies matched by id."""

    def __init__(self, context, index: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child,), daemon=True, name=f"encoder-{index}")
        self.process.start()
        child.close()
        self.slots = 0
        self._send_lock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._ids = itertools.count()
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"encoder-{index}-replies")
        self._reader.start()

    def call(self, op: str, slot: int, args) -> Future:
        future: Future = Future()
        with self._send_lock:
            request_id = next(self._ids)
            self._pending[request_id] = future
            try:
                self.conn.send((request_id, op, slot, args))
            except (OSError, ValueError) as exc:
                self._pending.pop(request_id, None)
                future.set_exception(RuntimeError(f"encoder worker gone: {exc}"))
        return future

    def _read(self) -> None:
        while True:
            try:
                request_id, ok, payload = self.conn.recv()
            except (EOFError, OSError):
                break
            future = self._pending.pop(request_id, None)
            if future is None:
                continue
            if ok:
                future.set_result(payload)
            else:
                future.set_exception(RuntimeError(payload))
        for future in list(self._pending.values()):  # the worker died or was stopped
            if not future.done():
                future.set_exception(RuntimeError("encoder worker stopped"))
        self._pending.clear()

    def stop(self) -> None:
        try:
            with self._send_lock:
                self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=2.0)
        if self.process.is_alive():
            self.process.terminate()
        self.conn.close()


class ProcessEncoder:
    """A ``VideoEncoder`` living in a worker process; same ``encode`` / ``close`` interface.

    Attributes:
        codec_name: the FFmpeg encoder the worker opened.
        last_encode_s: seconds the last ``encode`` took here (copy in, worker, packets out).
        last_worker_encode_s: of which the worker's own encode.
    """

    def __init__(self, worker: _Worker, slot: int, settings: EncoderSettings) -> None:
        self.settings = settings
        self._worker = worker
        self._slot = slot
        # Room for RGB too (3 B/pixel); I420 needs 1.5.
        self._shm = shared_memory.SharedMemory(create=True, size=settings.width * settings.height * 3)
        self._lock = threading.Lock()
        self._busy = False
        self._closed = False
        self.last_encode_s = 0.0
        self.last_worker_encode_s = 0.0
        try:
            self.codec_name = worker.call("open", slot, (settings, self._shm.name)).result(REPLY_TIMEOUT_S)
        except Exception:
            self._free_shared_memory()
            raise

    def encode(self, image: np.ndarray, pts: int, keyframe: bool = False, pixel_format: str = "rgb24") -> list[av.Packet]:
        """As :meth:`VideoEncoder.encode` (same arguments, same packets)."""
        start = time.perf_counter()
        image = np.ascontiguousarray(image)
        if image.dtype != np.uint8 or image.nbytes > self._shm.size:
            raise ValueError(f"ProcessEncoder.encode: image {image.dtype} {image.shape} does not fit the slot")
        with self._lock:
            if self._closed:
                raise RuntimeError("ProcessEncoder is closed")
            self._busy = True
        try:
            np.ndarray(image.shape, np.uint8, buffer=self._shm.buf)[...] = image
            packets, self.last_worker_encode_s = self._worker.call(
                "encode", self._slot, (pts, keyframe, pixel_format, image.shape)
            ).result(REPLY_TIMEOUT_S)
        finally:
            with self._lock:
                self._busy = False
                release = self._closed
            if release:  # close() came while encoding: finish it now
                self._release()
        out = []
        for data, is_key in packets:
            packet = av.Packet(data)
            packet.pts = packet.dts = pts
            packet.time_base = TIME_BASE
            packet.is_keyframe = is_key
            out.append(packet)
        self.last_encode_s = time.perf_counter() - start
        return out

    def close(self) -> None:
        """Free the worker's encoder and the slot (deferred until a running encode ends)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            busy = self._busy
        if not busy:
            self._release()

    def _release(self) -> None:
        self._worker.slots -= 1
        self._worker.call("close", self._slot, None)  # fire and forget: the worker closes its side
        self._free_shared_memory()

    def _free_shared_memory(self) -> None:
        try:
            self._shm.close()
            self._shm.unlink()
        except (BufferError, FileNotFoundError):
            pass


class EncodePool(ThreadPoolExecutor):
    """A thread pool that also creates encoders (in worker processes).

    Args:
        threads: threads that run (or wait for) encodes.
        processes: encoder worker processes (0: encoders in this process). Started on
            the first ``create_encoder``.
    """

    def __init__(self, threads: int | None = None, processes: int | None = None) -> None:
        super().__init__(threads or default_encode_workers(), thread_name_prefix="encode")
        self.processes = usable_cores() if processes is None else processes
        self._workers: list[_Worker] = []
        self._workers_lock = threading.Lock()
        self._slot_ids = itertools.count()

    def create_encoder(self, settings: EncoderSettings):
        """A ``VideoEncoder`` (no processes) or a :class:`ProcessEncoder` on the least-loaded worker."""
        if self.processes == 0:
            return VideoEncoder(settings)
        with self._workers_lock:
            if not self._workers:
                context = mp.get_context("spawn")  # never fork a process holding CUDA / threads
                self._workers = [_Worker(context, i) for i in range(self.processes)]
                log.info("encoder pool: %d worker processes", self.processes)
            worker = min(self._workers, key=lambda w: w.slots)
            worker.slots += 1
        try:
            return ProcessEncoder(worker, next(self._slot_ids), settings)
        except Exception:
            worker.slots -= 1
            raise

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        with self._workers_lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()
