"""The media pool: every player's video path (encode, RTP, SRTP, UDP) in worker processes.

The server renders; a media worker (``media_worker``) does everything after that for a
few players each, with its own interpreter and event loop. The server keeps, per player,
a :class:`RemotePlayerVideo`: a :class:`.video_sink.VideoSink` like ``webrtc.PlayerVideo``
(the frame loop cannot tell them apart), backed by a picture ring in shared memory and
messages over a socket (``media_link``).

Per picture the server sends one small message, and the picture reaches the ring one of
two ways: with a GPU renderer the ring is page-locked (``pin_memory``) and the GPU copies
the picture straight into the slot's ring buffer (``reserve`` before rendering, ``commit``
after), costing no CPU; otherwise the render thread copies it there from the renderer's
buffer.
Per encoded frame the server receives one small message (for ``frame_info`` and the
metrics). Everything per packet stays in the worker.

Workers are started as needed: one at start-up, then one more whenever every running
worker has a player, up to ``processes`` (default: one per core,
``WORLDSTREAM_MEDIA_PROCESSES`` to override), at a lower CPU priority than the server
(``WORLDSTREAM_MEDIA_NICE``, default 10). Players go to an idle worker if there is one,
else to the least loaded. ``processes=0`` keeps every ``PlayerVideo`` in the server
process (one interpreter for all players: fine for a few).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing as mp
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from . import media_worker
from .encoder import EncoderSettings
from .media_link import MessageLink
from .picture_ring import PictureRing
from .video_track import EncodedFrame
from .webrtc import PlayerVideo, RtcError, parse_candidate

log = logging.getLogger("worldstream.media")
ANSWER_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 3.0


PinMemory = Callable[[np.ndarray], Callable[[], None]]
"""Page-locks host memory for the GPU's copies; returns the function that unlocks it
(``GsplatRenderer.pin_host_memory``)."""


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 2


def default_media_processes() -> int:
    """``WORLDSTREAM_MEDIA_PROCESSES`` if set (0 = none), else one per core."""
    value = os.environ.get("WORLDSTREAM_MEDIA_PROCESSES")
    return max(0, int(value)) if value else usable_cores()


DEFAULT_MEDIA_NICENESS = 10


def default_media_niceness() -> int:
    """``WORLDSTREAM_MEDIA_NICE`` if set, else :data:`DEFAULT_MEDIA_NICENESS`.

    Media workers run at a lower CPU priority than the server: every player's frames wait
    on the server's render thread and event loop, while an encoder serves one player.
    All encoders get a picture at the same moment each tick, so without this, dozens of
    encoder threads woke up at once and took the cores from the render thread and event
    loop, which then ran late for everyone (``docs/benchmarks.md``).
    """
    value = os.environ.get("WORLDSTREAM_MEDIA_NICE")
    return int(value) if value else DEFAULT_MEDIA_NICENESS


class MediaUnavailable(RtcError):
    """The server could not run a video (not the offer's fault): no media worker started."""


class MediaWorkerLost(MediaUnavailable):
    """The media worker holding a video stopped before the video was answered."""


class RemotePlayerVideo:
    """A player's video living in a media worker (a :class:`.video_sink.VideoSink`, like ``PlayerVideo``).

    Attributes:
        state: the worker's last reported peer connection state.
        ring: where this player's pictures go.
        end_reason: why the video closed, for people ("" while open).
    """

    def __init__(
        self,
        worker: "MediaWorkerProcess",
        video_id: int,
        settings: EncoderSettings,
        on_encoded: Callable[[EncodedFrame], None],
        on_closed: Callable[["RemotePlayerVideo"], None] | None,
        label: str,
        pin_memory: PinMemory | None = None,
    ) -> None:
        self.settings = settings
        self.label = label
        self.state = "new"
        self.end_reason = ""
        self.ring = PictureRing(settings.width * settings.height * 3 // 2)
        self._worker = worker
        self._id = video_id
        self._on_encoded = on_encoded
        self._on_closed = on_closed
        self._pin_memory = pin_memory
        self._unpin: Callable[[], None] | None = None
        self._answer: asyncio.Future | None = None
        # reserve/commit/stage (render thread) vs close (loop) vs page-locking (executor). Held
        # only for bookkeeping and the render thread's copy, never across a driver call: the
        # loop takes it when the video closes.
        self._ring_lock = threading.Lock()
        self._reserved: np.ndarray | None = None  # a ring buffer being written
        self._pinning = False  # the driver is page-locking the ring (outside the lock)
        self._freed = False
        self._closed = False

    async def answer(self, offer_sdp: str) -> str:
        """Have the worker answer the client's offer (raises :class:`RtcError`)."""
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        ring = self.ring
        if self._pin_memory is not None:  # page-locked: the GPU copies pictures straight in
            await loop.run_in_executor(None, self._pin)
            if self._closed:
                raise RtcError(f"the video closed while its picture ring was page-locked ({self.end_reason})")
        self._worker.link.send(
            ["open", self._id, dataclasses.asdict(self.settings), ring.name, ring.capacity, ring.depth, offer_sdp, self.label]
        )
        try:
            ok, payload = await asyncio.wait_for(self._answer, ANSWER_TIMEOUT_S)
        except asyncio.TimeoutError:
            ok, payload = False, f"the media worker did not answer within {ANSWER_TIMEOUT_S:.0f} s"
        if not ok:
            await self.close()  # closed on return, not when the worker's "closed" arrives
            raise (MediaWorkerLost if self._worker.stopped else RtcError)(payload)
        return payload

    async def add_candidate(self, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None) -> None:
        """Check a trickled ICE candidate here (errors reach the client at once), then forward it."""
        if not candidate:
            return
        parse_candidate(candidate)
        self._worker.link.send(["candidate", self._id, candidate, sdp_mid, sdp_mline_index])

    @property
    def ready(self) -> bool:
        return not self._closed and self.state == "connected"

    def slot(self, nbytes: int) -> "RingSlot":
        """This frame's picture slot: a buffer of the ring, reserved (see :mod:`.video_sink`)."""
        return RingSlot(self, nbytes)

    def reserve(self, nbytes: int) -> np.ndarray | None:
        """The ring buffer the next picture may be written into directly (render thread),
        or None when the worker is a whole ring behind or the video is closed. Call
        :meth:`commit` once the picture is there (or was not written)."""
        with self._ring_lock:
            if self._closed or self._reserved is not None:
                return None
            self._reserved = self.ring.reserve(nbytes)
            return self._reserved

    def commit(self, buffer: np.ndarray | None, written: bool = True) -> int | None:
        """The reserved ``buffer`` holds the picture (or, ``written=False``, was given up):
        what :meth:`offer` takes, or None."""
        if buffer is None:
            return None
        with self._ring_lock:
            self._reserved = None
            free = self._ring_to_free()  # closed while the picture was being written: free it now
            seq = self.ring.commit() if written and not self._closed else None
        if free:
            self._free_ring()
        return seq

    def stage(self, picture: np.ndarray) -> int | None:
        """Copy a picture into the ring (any one thread); its sequence number, or None
        when the worker is a whole ring behind (the picture is dropped)."""
        with self._ring_lock:
            return None if self._closed or self._reserved is not None else self.ring.write(picture)

    def offer(self, staged: int | None, captured_at: float, input_seq: int, input_received_at: float | None, render_s: float) -> None:
        """Announce a staged picture (again, to repeat it) to the worker."""
        if staged is not None and not self._closed:
            self._worker.link.send(["frame", self._id, staged, captured_at, input_seq, input_received_at, render_s])

    async def close(self) -> None:
        if self._closed:
            return
        self._worker.link.send(["close", self._id])
        self._finish("closed by the server")

    @property
    def closed(self) -> bool:
        return self._closed

    def _pin(self) -> None:
        """Page-lock the ring (blocks: call it off the loop), unless the video closed already.

        The ring lock is not held while the driver works (closing takes it on the loop); a
        video closed meanwhile keeps its ring until the pages are locked, then frees it here,
        so pinned memory is never unmapped."""
        with self._ring_lock:
            if self._closed or self._unpin is not None:
                return
            self._pinning = True
        unpin = None
        try:
            unpin = self._pin_memory(self.ring.memory)
        finally:
            with self._ring_lock:
                self._pinning = False
                self._unpin = unpin
                free = self._ring_to_free()
            if free:
                self._free_ring()

    def _ring_to_free(self) -> bool:
        """Under the ring lock: True exactly once, when the ring is to be freed now (closed,
        and neither a picture write nor page-locking is under way)."""
        if not self._closed or self._reserved is not None or self._pinning or self._freed:
            return False
        self._freed = True
        return True

    def _free_ring(self) -> None:
        """Unlock (if pinned), then free the ring; after :meth:`_ring_to_free` said so, without the lock."""
        unpin, self._unpin = self._unpin, None
        if unpin is not None:
            unpin()
        self.ring.close()

    # ------------------------------------------------------------------ from the worker
    def on_message(self, kind: str, args: list) -> None:
        if kind == "encoded":
            if not self._closed:
                self._on_encoded(EncodedFrame(*args))  # fields in order: media_worker.ENCODED_FIELDS
        elif kind == "state":
            self.state = args[0]
            if self.state in ("failed", "closed"):
                self._finish(f"the peer connection {self.state}")
        elif kind in ("answer", "failed"):
            if self._answer is not None and not self._answer.done():
                self._answer.set_result((kind == "answer", args[0]))
        elif kind == "closed":
            self._finish(args[0] if args else "closed by its media worker")

    def _finish(self, reason: str) -> None:
        """Closed, from either side: free the ring and tell the owner once."""
        if self._closed:
            return
        self._closed = True
        self.end_reason = reason
        self.state = "closed"
        with self._ring_lock:
            free = self._ring_to_free()  # else commit() or _pin() frees it once done
        if free:
            try:
                asyncio.get_running_loop().run_in_executor(None, self._free_ring)  # unpinning blocks
            except RuntimeError:  # no loop running (shutdown)
                self._free_ring()
        self._worker.videos.pop(self._id, None)
        if self._answer is not None and not self._answer.done():
            self._answer.set_result((False, "the media worker closed the connection"))
        if self._on_closed is not None:
            self._on_closed(self)


class RingSlot:
    """A :class:`RemotePlayerVideo`'s picture slot: a ring buffer reserved for one picture of
    ``nbytes`` (None when the worker is a whole ring behind or the video closed)."""

    def __init__(self, video: RemotePlayerVideo, nbytes: int) -> None:
        self._video = video
        self.buffer = video.reserve(nbytes)

    def fill(self, picture: np.ndarray) -> int | None:
        if self.buffer is None:
            return None
        if picture is not self.buffer:  # the renderer drew elsewhere (a stereo pair, say): copy it in
            np.copyto(self.buffer, picture)
        return self._video.commit(self.buffer)

    def give_up(self) -> None:
        self._video.commit(self.buffer, written=False)


class MediaWorkerProcess:
    """One media worker process and the server's end of its link."""

    def __init__(self, index: int, process, link: MessageLink, on_exit: Callable[["MediaWorkerProcess"], None]) -> None:
        self.index = index
        self.process = process
        self.link = link
        self.videos: dict[int, RemotePlayerVideo] = {}
        self.stopped = False  # its link ended: the process is gone or going
        self._on_exit = on_exit
        self._reader = asyncio.create_task(self._read(), name=f"media-{index}")

    @classmethod
    async def start(cls, index: int, on_exit: Callable[["MediaWorkerProcess"], None], niceness: int = 0) -> "MediaWorkerProcess":
        ours, theirs = socket.socketpair()
        context = mp.get_context("spawn")  # never fork a process holding CUDA or threads
        process = context.Process(
            target=media_worker.main,
            args=(theirs, logging.getLogger().getEffectiveLevel(), niceness),
            name=f"media-{index}",
            daemon=True,
        )
        # Spawning writes the child's start-up data through a pipe: off the loop.
        await asyncio.get_running_loop().run_in_executor(None, process.start)
        theirs.close()
        return cls(index, process, await MessageLink.open(ours), on_exit)

    async def _read(self) -> None:
        while (message := await self.link.receive()) is not None:
            video = self.videos.get(message[1])
            if video is not None:
                try:
                    video.on_message(message[0], message[2:])
                except Exception:
                    log.exception("media worker %d: handling %r failed", self.index, message[0])
        self.stopped = True
        if self.videos:
            log.error("media worker %d stopped (exit code %s): closing its %d videos", self.index, self.process.exitcode, len(self.videos))
        self._on_exit(self)
        for video in list(self.videos.values()):
            video.on_message("closed", [f"its media worker stopped (exit code {self.process.exitcode})"])

    async def stop(self) -> None:
        await self.link.close()  # the worker closes its videos and exits
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.process.join, STOP_TIMEOUT_S)
        if self.process.is_alive():
            self.process.terminate()
        self._reader.cancel()


class MediaPool:
    """Makes players' videos: in media workers (``processes`` > 0) or in this process.

    Args:
        processes: most media worker processes (default :func:`default_media_processes`).
        encode_threads: threads encoding in this process when ``processes`` is 0.
        niceness: added to each worker's nice value (default :func:`default_media_niceness`).
        pin_memory: page-locks each picture ring, so the renderer can copy pictures from
            the GPU straight into it (``reserve``/``commit``); None: rings stay pageable.
    """

    def __init__(
        self,
        processes: int | None = None,
        encode_threads: int | None = None,
        niceness: int | None = None,
        pin_memory: PinMemory | None = None,
    ) -> None:
        self.processes = default_media_processes() if processes is None else processes
        self.niceness = default_media_niceness() if niceness is None else niceness
        self.pin_memory = pin_memory
        self.encode = ThreadPoolExecutor(encode_threads or max(2, usable_cores()), thread_name_prefix="encode")
        self.workers: list[MediaWorkerProcess] = []
        self._starting: asyncio.Task | None = None
        self._ids = 0
        self._next_index = 0

    async def start(self) -> None:
        """Start the first worker (so the first player does not wait for it)."""
        if self.processes > 0 and not self.workers:
            await self._start_worker()

    async def create_video(
        self,
        settings: EncoderSettings,
        on_encoded: Callable[[EncodedFrame], None],
        on_closed: Callable | None = None,
        label: str = "",
    ) -> PlayerVideo | RemotePlayerVideo:
        """A new player video; call ``answer(offer)`` on it next."""
        if self.processes == 0:
            return PlayerVideo(settings, self.encode, on_encoded, on_closed, label=label)
        # A worker that died moments ago may not be noticed yet (its link's end is read on
        # this loop): a player re-offering after the crash must not be handed to it.
        self.workers = [w for w in self.workers if w.process.is_alive()]
        if not self.workers:
            try:
                await self._start_worker()
            except Exception as exc:
                raise MediaUnavailable(f"no media worker could start: {exc}") from None
        idle = [w for w in self.workers if not w.videos]
        worker = idle[0] if idle else min(self.workers, key=lambda w: len(w.videos))
        self._ids += 1
        video = RemotePlayerVideo(worker, self._ids, settings, on_encoded, on_closed, label, self.pin_memory)
        worker.videos[self._ids] = video
        if len(idle) <= 1 and len(self.workers) < self.processes:
            self._start_worker()  # keep one worker idle and warm for the next player
        return video

    async def open_video(
        self,
        settings: EncoderSettings,
        offer_sdp: str,
        on_encoded: Callable[[EncodedFrame], None],
        on_closed: Callable | None = None,
        label: str = "",
    ) -> tuple[PlayerVideo | RemotePlayerVideo, str]:
        """A new player video that answered ``offer_sdp``: ``(video, answer_sdp)``; raises
        :class:`RtcError` (the video is closed then).

        A worker killed moments before can still look alive (SIGKILL is not instant) and be
        handed the video; when it turns out gone before answering, the offer goes to a fresh
        worker, once."""
        for retries_left in (1, 0):
            video = await self.create_video(settings, on_encoded, on_closed, label)
            try:
                return video, await video.answer(offer_sdp)
            except MediaWorkerLost:  # answer() closed it
                if not retries_left:
                    raise
                log.warning("%s: its media worker stopped before answering; offering to another", label)
            except RtcError:
                await video.close()
                raise

    def _start_worker(self) -> asyncio.Task:
        """Start one more worker (one start at a time); await the task to wait for it."""
        if self._starting is None:
            self._starting = asyncio.create_task(self._start_one())
            self._starting.add_done_callback(lambda t: t.cancelled() or t.exception())  # logged in _start_one
        return self._starting

    async def _start_one(self) -> None:
        try:
            worker = await MediaWorkerProcess.start(self._next_index, self._worker_exited, self.niceness)
            self._next_index += 1
        except Exception:
            log.exception("could not start a media worker")
            raise
        finally:
            self._starting = None
        self.workers.append(worker)
        log.info("media worker %d started (%d of at most %d)", worker.index, len(self.workers), self.processes)

    def _worker_exited(self, worker: MediaWorkerProcess) -> None:
        if worker in self.workers:  # it died: its players re-offer and land on the others
            self.workers.remove(worker)

    async def stop(self) -> None:
        """Close every video and stop the workers."""
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        workers, self.workers = self.workers, []
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        self.encode.shutdown(wait=False, cancel_futures=True)
