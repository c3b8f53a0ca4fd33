"""Media workers: pictures through a shared-memory ring, video out of another process to a
real aiortc peer that decodes it, and what happens when a worker dies."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from multiprocessing import shared_memory

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from bench.compare import psnr
from runtime.stream.encoder import EncoderSettings
from runtime.stream.media_pool import MediaPool, RemotePlayerVideo
from runtime.stream.picture_ring import PictureRing
from runtime.stream.webrtc import RtcError
from runtime.world.render.video import rgb_to_i420_reference

pytestmark = pytest.mark.timeout(120)
W, H = 320, 180


def test_picture_ring_reuses_a_buffer_only_after_the_reader_is_done():
    writer = PictureRing(16, depth=2)
    reader = PictureRing(16, depth=2, name=writer.name)
    try:
        a, b, c = (np.full(16, v, np.uint8) for v in (1, 2, 3))
        assert writer.write(a) == 1 and writer.write(b) == 2
        assert writer.write(c) is None  # both buffers hold unread pictures
        assert np.array_equal(reader.read(1, 16), a) and writer.consumed == 1
        assert writer.write(c) == 3  # picture 1's buffer again
        assert np.array_equal(reader.read(2, 16), b)
        assert np.array_equal(reader.read(3, 16), c)
        with pytest.raises(ValueError, match="at most 16 bytes"):
            writer.write(np.zeros(17, np.uint8))
        with pytest.raises(ValueError, match="size"):
            reader.read(4, 17)
    finally:
        reader.close()
        writer.close()
    with pytest.raises(FileNotFoundError):  # the writer's close freed the segment
        PictureRing(16, depth=2, name=writer.name)


def test_picture_ring_reserve_hands_out_one_buffer_until_commit():
    writer = PictureRing(8, depth=2)
    reader = PictureRing(8, depth=2, name=writer.name)
    try:
        first = writer.reserve(8)
        assert first is not None and np.shares_memory(first, writer.reserve(8))  # not committed yet: same buffer
        first[:] = 7
        assert writer.commit() == 1
        second = writer.reserve(4)
        assert second.shape == (4,) and not np.shares_memory(first, second)
        second[:] = 9
        assert writer.commit() == 2 and writer.reserve(8) is None  # both held by the reader
        assert np.array_equal(reader.read(1, 8), np.full(8, 7, np.uint8))
        assert np.array_equal(reader.read(2, 4), np.full(4, 9, np.uint8))
        assert writer.memory.nbytes == 64 + 2 * 8  # header and buffers
        with pytest.raises(ValueError, match="nbytes"):
            writer.reserve(9)
    finally:
        reader.close()
        writer.close()


def pictures(n: int) -> np.ndarray:
    """``[n, H*W*3/2]`` I420 pictures with structure an encoder keeps (gradients, a block)."""
    y, x = np.mgrid[0:H, 0:W]
    out = []
    for k in range(n):
        rgb = np.stack([(x * 255 // W + 60 * k) % 256, y * 255 // H, np.full_like(x, 40 + 70 * k)], -1).astype(np.uint8)
        rgb[40:100, 60 + 40 * k : 140 + 40 * k] = 250
        out.append(rgb)
    return rgb_to_i420_reference(np.stack(out))


async def connect(pool: MediaPool, settings: EncoderSettings, encoded: list, closed: list):
    """A receiving aiortc peer connected to a new video from ``pool``; decoded frames queue up."""
    receiver = RTCPeerConnection()
    receiver.addTransceiver("video", direction="recvonly")
    frames: asyncio.Queue = asyncio.Queue()

    @receiver.on("track")
    def on_track(track) -> None:
        async def read() -> None:
            while True:
                try:
                    frames.put_nowait(await track.recv())
                except Exception:
                    return

        asyncio.ensure_future(read())

    video = await pool.create_video(settings, encoded.append, closed.append, "test")
    await receiver.setLocalDescription(await receiver.createOffer())
    answer = await video.answer(receiver.localDescription.sdp)
    await receiver.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    deadline = time.monotonic() + 20
    while not video.ready:
        assert time.monotonic() < deadline, f"video never connected (state {getattr(video, 'state', '?')})"
        await asyncio.sleep(0.05)
    return receiver, video, frames


async def feed(video, staged, ticks: int, first_seq: int) -> None:
    for k in range(ticks):
        now = time.monotonic()
        video.offer(staged, now, first_seq + k, now, 0.001)
        await asyncio.sleep(1 / 30)


def test_media_worker_streams_pictures_to_a_real_peer_and_survives_a_crash():
    async def main():
        pool = MediaPool(processes=1)
        await pool.start()
        settings = EncoderSettings(width=W, height=H, fps=30, bitrate=2_000_000)
        source = pictures(2)
        try:
            encoded, closed = [], []
            receiver, video, frames = await connect(pool, settings, encoded, closed)
            worker_pid = pool.workers[0].process.pid
            assert isinstance(video, RemotePlayerVideo) and worker_pid is not None
            # Workers yield the CPU to the server's render thread and event loop.
            assert os.getpriority(os.PRIO_PROCESS, worker_pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + pool.niceness)
            for k in range(10):  # a new picture every tick, written into the ring as the GPU does
                buffer = video.reserve(source[k % 2].nbytes)
                assert buffer is not None and video.stage(source[0]) is None  # one writer at a time
                buffer[:] = source[k % 2]
                staged = video.commit(buffer)
                assert staged is not None
                await feed(video, staged, 1, k)
            staged = video.stage(source[1])
            await feed(video, staged, 20, 10)  # standing still: the same picture offered again
            await asyncio.sleep(0.5)
            assert len(encoded) >= 15, len(encoded)
            assert encoded[-1].input_seq == 29 and all(e.mtp_s is not None and e.mtp_s >= 0 for e in encoded)
            assert encoded[0].keyframe and all(e.bytes > 0 for e in encoded)
            last = None
            while not frames.empty():
                last = frames.get_nowait()
            assert last is not None
            decoded = last.to_ndarray(format="yuv420p").reshape(-1)
            assert psnr(decoded, source[1]) >= 30.0

            # The worker dies: the video closes, and the next one gets a fresh worker.
            pool.workers[0].process.kill()
            deadline = time.monotonic() + 10
            while not closed:
                assert time.monotonic() < deadline, "the dead worker's video never closed"
                await asyncio.sleep(0.05)
            assert closed == [video] and video.closed and not video.ready
            assert video.stage(source[0]) is None  # nothing writes into a freed ring
            await receiver.close()
            receiver, video, frames = await connect(pool, settings, encoded, closed)
            await feed(video, video.stage(source[0]), 10, 100)
            frame = await asyncio.wait_for(frames.get(), 10)
            assert frame.width == W and frame.height == H

            # Closed while the renderer writes a picture into the ring: the ring outlives
            # the write, and the commit that ends it frees the ring.
            buffer = video.reserve(source[0].nbytes)
            assert buffer is not None
            await video.close()
            buffer[:] = source[0]
            assert video.commit(buffer) is None
            with pytest.raises(FileNotFoundError):
                PictureRing(video.ring.capacity, name=video.ring.name)
            await receiver.close()
        finally:
            await pool.stop()

    asyncio.run(main())


def test_a_video_asked_for_right_after_every_worker_died_gets_a_fresh_one():
    async def main():
        pool = MediaPool(processes=2)
        await pool.start()
        settings = EncoderSettings(width=W, height=H, fps=30)
        try:
            receiver, video, _ = await connect(pool, settings, [], [])
            deadline = time.monotonic() + 30
            while len(pool.workers) < 2:  # the pool keeps a second worker idle and warm
                assert time.monotonic() < deadline, "no second worker started"
                await asyncio.sleep(0.05)
            dead = pool.workers[:]
            for worker in dead:  # a crash, and the player offers again before the loop runs
                worker.process.kill()
                worker.process.join(5)
            again, fresh, frames = await connect(pool, settings, [], [])
            assert fresh.ready and not set(pool.workers) & set(dead)
            await feed(fresh, fresh.stage(pictures(1)[0]), 5, 0)
            await asyncio.wait_for(frames.get(), 10)
            await asyncio.gather(receiver.close(), again.close())
        finally:
            await pool.stop()

    asyncio.run(main())


def test_an_offer_handed_to_a_worker_that_is_dying_goes_to_a_fresh_one():
    """SIGKILL is not instant: a worker killed moments ago can still look alive and be handed
    the next offer. open_video sees it stop before answering and offers to a fresh worker."""

    async def main():
        pool = MediaPool(processes=1)
        await pool.start()
        settings = EncoderSettings(width=W, height=H, fps=30)
        try:
            dying = pool.workers[0]
            dying.process.kill()
            dying.process.join(5)
            dying.process.is_alive = lambda: True  # the moment before the kernel ends it
            receiver = RTCPeerConnection()
            receiver.addTransceiver("video", direction="recvonly")
            await receiver.setLocalDescription(await receiver.createOffer())
            video, answer = await pool.open_video(settings, receiver.localDescription.sdp, lambda e: None, None, "retry")
            assert "m=video" in answer and video._worker is not dying and dying.stopped
            await receiver.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await video.close()
            await receiver.close()
        finally:
            await pool.stop()

    asyncio.run(main())


def test_a_bad_offer_is_a_typed_error_and_the_worker_carries_on():
    async def main():
        pool = MediaPool(processes=1)
        try:
            settings = EncoderSettings(width=W, height=H, fps=30)
            video = await pool.create_video(settings, lambda e: None, None, "bad")
            with pytest.raises(RtcError, match="offer"):
                await video.answer("v=0\r\nnot an offer\r\n")
            assert video.closed
            with pytest.raises(RtcError, match="bad ICE candidate"):
                other = await pool.create_video(settings, lambda e: None, None, "candidate")
                await other.add_candidate("candidate:garbage", "0", 0)
            receiver, good, _ = await connect(pool, settings, [], [])  # same worker, still serving
            assert good.ready
            await receiver.close()
            await good.close()
            await other.close()
        finally:
            await pool.stop()

    asyncio.run(main())


class StandInPin:
    """Page-locking as ``GsplatRenderer.pin_host_memory`` does it, minus CUDA: it blocks (as the
    driver does while it locks pages) until released, and its unpin records whether the ring's
    segment still existed then (unmapping pinned memory would be the bug)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.unpinned: list[bool] = []  # per unpin: the segment still existed
        self.names: dict[int, str] = {}  # segment address -> shared memory name

    def __call__(self, memory: np.ndarray):
        address = memory.ctypes.data
        self.started.set()
        if not self.release.wait(10):
            raise TimeoutError("never released")

        def unpin() -> None:
            try:
                shared_memory.SharedMemory(name=self.names[address]).close()
                self.unpinned.append(True)
            except FileNotFoundError:
                self.unpinned.append(False)

        return unpin


def test_closing_a_video_never_waits_for_its_ring_to_be_page_locked():
    """The loop closes a video while the driver page-locks its ring (a player leaving right
    after offering): close() returns at once, the ring stays mapped until the pages are
    locked, then it is unlocked and freed, once. Page-locking under the ring lock made the
    loop wait for the driver (here: for ever, as the release comes from the loop)."""
    pin = StandInPin()

    async def main():
        pool = MediaPool(processes=1, pin_memory=pin)
        await pool.start()
        settings = EncoderSettings(width=W, height=H, fps=30)
        loop = asyncio.get_running_loop()
        try:
            video = await pool.create_video(settings, lambda e: None, None, "pinned")
            pin.names[video.ring.memory.ctypes.data] = video.ring.name
            receiver = RTCPeerConnection()
            receiver.addTransceiver("video", direction="recvonly")
            await receiver.setLocalDescription(await receiver.createOffer())
            answering = asyncio.ensure_future(video.answer(receiver.localDescription.sdp))
            assert await loop.run_in_executor(None, pin.started.wait, 10)
            started = time.monotonic()
            await video.close()
            assert time.monotonic() - started < 1.0 and video.closed
            assert video.reserve(16) is None and video.stage(pictures(1)[0]) is None
            pin.release.set()
            with pytest.raises(RtcError, match="closed while its picture ring was page-locked"):
                await answering
            deadline = time.monotonic() + 5
            while not pin.unpinned:
                assert time.monotonic() < deadline, "the ring was never unlocked"
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)
            assert pin.unpinned == [True]  # unlocked once, while still mapped
            with pytest.raises(FileNotFoundError):  # then freed
                PictureRing(video.ring.capacity, name=video.ring.name)

            # The usual order: locked before the worker opens it, unlocked and freed on close.
            receiver2, streamed, frames = await connect(pool, settings, [], [])
            pin.names[streamed.ring.memory.ctypes.data] = streamed.ring.name
            buffer = streamed.reserve(pictures(1)[0].nbytes)
            buffer[:] = pictures(1)[0]
            await feed(streamed, streamed.commit(buffer), 3, 0)
            await asyncio.wait_for(frames.get(), 10)
            await streamed.close()
            deadline = time.monotonic() + 5
            while len(pin.unpinned) < 2:
                assert time.monotonic() < deadline, "the streamed ring was never unlocked"
                await asyncio.sleep(0.02)
            assert pin.unpinned == [True, True]
            await asyncio.gather(receiver.close(), receiver2.close())
        finally:
            pin.release.set()
            await pool.stop()

    asyncio.run(main())


def test_a_picture_that_cannot_be_encoded_closes_the_video_and_says_why():
    """aiortc's sender swallows an exception from the track into a log line and stops
    sending: the peer stayed connected and never got another frame. The video closes
    instead, with the reason, so the player is told (video_ended) and can offer again."""

    async def main():
        pool = MediaPool(processes=0)  # the same PlayerVideo a media worker runs, in this process
        settings = EncoderSettings(width=W, height=H, fps=30)
        closed = []
        try:
            receiver, video, frames = await connect(pool, settings, [], closed)
            await feed(video, video.stage(pictures(1)[0]), 2, 0)
            await asyncio.wait_for(frames.get(), 10)
            wrong = av.VideoFrame(W // 2, H // 2, "yuv420p")  # not this stream's size
            video.offer(wrong, time.monotonic(), 5, None, 0.001)
            deadline = time.monotonic() + 10
            while not closed:
                assert time.monotonic() < deadline, "the video never closed"
                await asyncio.sleep(0.02)
            assert closed == [video] and video.closed and not video.ready
            assert video.end_reason.startswith("encoding failed: ValueError: VideoEncoder.encode: need a yuv420p frame of 320x180")
            await receiver.close()
        finally:
            await pool.stop()

    asyncio.run(main())
