"""A media worker process: the players' whole video path after rendering.

Per player it holds a :class:`~runtime.stream.webrtc.PlayerVideo` (peer connection,
track, encoder) and reads that player's pictures from a :class:`PictureRing`. It runs
its own event loop, so encoding, RTP packetisation, SRTP and UDP for its players use
its own core and interpreter lock, not the server's. Why: with every player's video in
the server process, 32 players at 720p30 on a 16-core H100 machine got 12.6 fps, bound
by that one interpreter while the encoder processes and the GPU were mostly idle
(``docs/benchmarks.md``).

Messages in (from ``media_pool``):

* ``["open", id, settings, ring_name, ring_capacity, ring_depth, offer_sdp, label]``
* ``["candidate", id, candidate, sdp_mid, sdp_mline_index]``
* ``["frame", id, seq, captured_at, input_seq, input_received_at, render_s]``: picture
  ``seq`` of the ring (a ``seq`` already read = show the last picture again)
* ``["close", id]``

Messages out:

* ``["answer", id, sdp]`` or ``["failed", id, error]`` (reply to open)
* ``["state", id, connection_state]``
* ``["encoded", id, *EncodedFrame fields in order]`` (``ENCODED_FIELDS``)
* ``["closed", id, reason]``

The worker ends when the server's end of the link closes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np

from .encoder import EncoderSettings, i420_video_frame
from .media_link import MessageLink
from .picture_ring import PictureRing
from .video_track import EncodedFrame
from .webrtc import PlayerVideo, RtcError

log = logging.getLogger("worldstream.media")
ENCODE_THREADS = 4  # per worker: a few players each, one encode at a time per player
ENCODED_FIELDS = tuple(f.name for f in dataclasses.fields(EncodedFrame))  # the "encoded" message's order


class _Video:
    """One player's video in this worker, and where its pictures come from."""

    def __init__(self, video: PlayerVideo, ring: PictureRing, settings: EncoderSettings) -> None:
        self.video = video
        self.ring = ring
        self.width, self.height = settings.width, settings.height
        self.last_seq = 0
        self.last_picture: av.VideoFrame | None = None

    def picture(self, seq: int) -> av.VideoFrame | None:
        """Picture ``seq`` in a frame the encoder takes as it is: the ring's one copy."""
        if seq > self.last_seq:
            self.last_picture = self.ring.read(seq, self.width * self.height * 3 // 2, self._frame)
            self.last_seq = seq
        return self.last_picture if seq == self.last_seq else None

    def _frame(self, picture: np.ndarray) -> av.VideoFrame:
        return i420_video_frame(picture, self.width, self.height)


class MediaWorker:
    """Serves one link's messages until the server goes."""

    def __init__(self, link: MessageLink) -> None:
        self.link = link
        self.videos: dict[int, _Video] = {}
        self.encode = ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="encode")
        self._tasks: set[asyncio.Task] = set()

    async def serve(self) -> None:
        handlers = {"open": self._open, "candidate": self._candidate, "frame": self._frame, "close": self._close}
        while (message := await self.link.receive()) is not None:
            handler = handlers.get(message[0])
            if handler is None:
                log.warning("media worker: unknown message %r", message[0])
                continue
            try:
                handler(*message[1:])
            except Exception:
                log.exception("media worker: %s failed", message[0])
        for video_id in list(self.videos):
            self._close(video_id)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.encode.shutdown(wait=False, cancel_futures=True)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ messages in
    def _open(self, video_id: int, settings: dict, ring_name: str, capacity: int, depth: int, offer_sdp: str, label: str) -> None:
        send = self.link.send
        try:
            settings = EncoderSettings(**settings)
            ring = PictureRing(capacity, depth, name=ring_name)
        except Exception as exc:
            send(["failed", video_id, f"{type(exc).__name__}: {exc}"])
            return

        def encoded(f: EncodedFrame) -> None:
            send(["encoded", video_id, *(getattr(f, name) for name in ENCODED_FIELDS)])

        def closed(video: PlayerVideo) -> None:
            entry = self.videos.pop(video_id, None)
            if entry is not None:
                entry.ring.close()
            send(["closed", video_id, video.end_reason])

        video = PlayerVideo(settings, self.encode, encoded, closed, label, on_state=lambda state: send(["state", video_id, state]))
        self.videos[video_id] = _Video(video, ring, settings)
        self._spawn(self._answer(video_id, video, offer_sdp))

    async def _answer(self, video_id: int, video: PlayerVideo, offer_sdp: str) -> None:
        try:
            sdp = await video.answer(offer_sdp)
        except RtcError as exc:
            self.link.send(["failed", video_id, str(exc)])
            await video.close()
            return
        except Exception as exc:
            log.exception("media worker: answering %s failed", video.label)
            self.link.send(["failed", video_id, f"{type(exc).__name__}: {exc}"])
            await video.close()
            return
        self.link.send(["answer", video_id, sdp])

    def _candidate(self, video_id: int, candidate: str, sdp_mid, sdp_mline_index) -> None:
        entry = self.videos.get(video_id)
        if entry is not None:
            self._spawn(entry.video.add_candidate(candidate, sdp_mid, sdp_mline_index))

    def _frame(self, video_id: int, seq: int, captured_at: float, input_seq: int, input_received_at, render_s: float) -> None:
        entry = self.videos.get(video_id)
        if entry is None:
            return
        picture = entry.picture(seq)
        if picture is not None and entry.video.ready:
            entry.video.offer(picture, captured_at, input_seq, input_received_at, render_s)

    def _close(self, video_id: int) -> None:
        entry = self.videos.get(video_id)
        if entry is not None:
            self._spawn(entry.video.close())  # its on_closed frees the ring and reports "closed"


def main(sock: socket.socket, log_level: int = logging.WARNING, niceness: int = 0) -> None:
    """Entry point of a worker process (``multiprocessing`` spawn target).

    Args:
        niceness: added to the process's nice value (``media_pool.default_media_niceness``).
    """
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)-7s %(name)s[media]: %(message)s")
    if niceness:
        try:
            os.nice(niceness)
        except (AttributeError, OSError) as exc:  # not POSIX, or not allowed
            log.warning("media worker: could not change its nice value by %d: %s", niceness, exc)
    for noisy in ("aioice", "aiortc"):  # as the server does: their INFO is per ICE check
        logging.getLogger(noisy).setLevel(max(logging.WARNING, log_level))
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run

    async def run() -> None:
        link = await MessageLink.open(sock)
        await MediaWorker(link).serve()
        await link.close()

    # Everything imported by now lives as long as the worker: keep it out of the collector's
    # full walks, which stop the worker's encoders while they last (as the server does,
    # runtime/heap.py).
    gc.collect()
    gc.freeze()
    try:
        runner(run())
    except KeyboardInterrupt:  # the server's Ctrl-C reaches its children too
        pass
