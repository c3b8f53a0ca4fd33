"""A player's WebRTC video track: newest rendered frame in, encoded packet out.

The session's frame clock renders every player's view and :meth:`PlayerVideoTrack.offer`s
the picture to the track's one-frame slot, replacing any picture not yet encoded: delay
can never build up. aiortc's sender calls :meth:`recv` in a loop; ``recv`` waits for the
next picture, encodes it in the encode executor and returns an :class:`av.Packet`, which
aiortc packetizes without re-encoding. Pictures are dropped *before* encoding, never
after, so the decoder's reference chain is never broken.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import sys
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable

import aiortc.rtcrtpsender
import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from .encoder import VIDEO_CLOCK_HZ, EncoderSettings, VideoEncoder

log = logging.getLogger("worldstream.webrtc")

# aiortc adds a random offset to every RTP timestamp it sends and keeps it to itself.
# Clients match frames to `frame_info.rtp_timestamp`, so the offset must be known: make
# aiortc's timestamp origin zero (only there: the same function also draws SSRCs) and
# randomise the start of our own presentation timestamps instead.
_aiortc_random32 = aiortc.rtcrtpsender.random32


def _random32_with_zero_rtp_origin() -> int:
    if sys._getframe(1).f_code.co_name == "_run_rtp":
        return 0
    return _aiortc_random32()


aiortc.rtcrtpsender.random32 = _random32_with_zero_rtp_origin


@dataclass(frozen=True)
class RenderedFrame:
    """One picture for one player, straight from the renderer.

    Attributes:
        image: one I420 picture ``[H*W*3/2]`` uint8 (``pixel_format="yuv420p"``, what
            ``render_video`` gives; stereo eyes already side by side), the same already in
            an ``av.VideoFrame`` (``encoder.i420_video_frame``), or ``[H, W, 3]`` uint8 RGB
            (``"rgb24"``).
        captured_at: ``time.monotonic()`` when the pose was taken (sets the timestamp).
        input_seq: newest input seq the pose reflects (-1 before any).
        input_received_at: monotonic arrival of the oldest input first shown in this
            picture, or None (nothing new).
        render_s: seconds the render batch took.
        pixel_format: ``"yuv420p"`` or ``"rgb24"``.
    """

    image: np.ndarray | av.VideoFrame
    captured_at: float
    input_seq: int
    input_received_at: float | None
    render_s: float
    pixel_format: str = "yuv420p"


@dataclass(frozen=True)
class EncodedFrame:
    """What :class:`PlayerVideoTrack` reports for every packet it hands to aiortc."""

    rtp_timestamp: int
    input_seq: int
    mtp_s: float | None
    encode_s: float
    render_s: float
    bytes: int
    keyframe: bool
    replaced: int = 0
    """Pictures replaced in the slot, never encoded, since the previous encoded frame."""


class PlayerVideoTrack(MediaStreamTrack):
    """Video of one player's view.

    Args:
        settings: encoder settings (codec, size, rate, bitrate).
        encode_executor: where encoding runs (never the event loop).
        on_encoded: called on the event loop for every frame returned to aiortc.
        on_failed: called on the event loop once if encoding raises; the track then ends.
            Why: aiortc's sender swallows an exception from ``recv`` into a log line and
            stops sending, leaving a connected peer that never gets another frame.
    """

    kind = "video"

    def __init__(
        self,
        settings: EncoderSettings,
        encode_executor: Executor,
        on_encoded: Callable[[EncodedFrame], None] | None = None,
        on_failed: Callable[[BaseException], None] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        # Made on the first encode, in the executor: opening an encoder takes milliseconds,
        # and a player joining must not stall everyone else's frames on the event loop.
        self._encoder: VideoEncoder | None = None
        self._executor = encode_executor
        self._on_encoded = on_encoded
        self._on_failed = on_failed
        self._slot: RenderedFrame | None = None
        self._ready = asyncio.Event()
        self._t0 = time.monotonic()
        self._pts0 = random.getrandbits(31)
        self._last_pts = -1
        self._sender = None
        self.dropped = 0
        self._dropped_reported = 0

    def attach_sender(self, sender) -> None:
        """Give the track its RTCRtpSender, so receiver keyframe requests (PLI/FIR) reach the encoder."""
        self._sender = sender

    @property
    def wants_frames(self) -> bool:
        return self.readyState == "live"

    def offer(self, frame: RenderedFrame) -> bool:
        """Put the newest picture in the slot; returns True if it replaced one never encoded."""
        replaced = self._slot is not None
        if replaced:
            self.dropped += 1
            # The replaced picture's input is shown by this newer one; keep the older arrival time.
            if self._slot.input_received_at is not None and frame.input_received_at is None:
                frame = dataclasses.replace(frame, input_received_at=self._slot.input_received_at)
            elif self._slot.input_received_at is not None:
                frame = dataclasses.replace(frame, input_received_at=min(self._slot.input_received_at, frame.input_received_at))
        self._slot = frame
        self._ready.set()
        return replaced

    def _keyframe_requested(self) -> bool:
        # aiortc records PLI/FIR in a private flag meant for its own encoder; we encode
        # ourselves, so we read and clear it (aiortc 1.16 name).
        attr = "_RTCRtpSender__force_keyframe"
        if self._sender is not None and getattr(self._sender, attr, False):
            setattr(self._sender, attr, False)
            return True
        return False

    async def recv(self) -> av.Packet:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            await self._ready.wait()
            self._ready.clear()
            frame, self._slot = self._slot, None
            if frame is None:
                continue
            pts = self._pts0 + int((frame.captured_at - self._t0) * VIDEO_CLOCK_HZ)
            pts = max(pts, self._last_pts + 1)
            self._last_pts = pts
            keyframe = self._keyframe_requested()
            loop = asyncio.get_running_loop()
            try:
                packets = await loop.run_in_executor(self._executor, self._encode, frame.image, pts, keyframe, frame.pixel_format)
            except RuntimeError as exc:
                if "shutdown" not in str(exc):  # not the executor going away with the server
                    self._fail(exc)
                raise MediaStreamError
            except Exception as exc:
                self._fail(exc)
                raise MediaStreamError
            if not packets:
                continue
            packet = packets[0] if len(packets) == 1 else _join(packets)
            done = time.monotonic()
            mtp = done - frame.input_received_at if frame.input_received_at is not None else None
            if self._on_encoded is not None:
                self._dropped_reported, replaced = self.dropped, self.dropped - self._dropped_reported
                self._on_encoded(
                    EncodedFrame(
                        rtp_timestamp=pts % 2**32,
                        input_seq=frame.input_seq,
                        mtp_s=mtp,
                        encode_s=self._encoder.last_encode_s,
                        render_s=frame.render_s,
                        bytes=packet.size,
                        keyframe=bool(packet.is_keyframe),
                        replaced=replaced,
                    )
                )
            return packet

    def _fail(self, exc: BaseException) -> None:
        log.error("video encoding failed (%s x %s): %s: %s", self.settings.width, self.settings.height, type(exc).__name__, exc)
        self.stop()
        if self._on_failed is not None:
            self._on_failed(exc)

    def _encode(self, image, pts: int, keyframe: bool, pixel_format: str) -> list[av.Packet]:
        """Runs in the encode executor (one call at a time per track: ``recv`` awaits it)."""
        if self._encoder is None:
            self._encoder = VideoEncoder(self.settings)
        return self._encoder.encode(image, pts, keyframe, pixel_format)

    def stop(self) -> None:
        super().stop()
        self._ready.set()  # wake recv so it raises MediaStreamError


def _join(packets: list[av.Packet]) -> av.Packet:
    out = av.Packet(b"".join(bytes(p) for p in packets))
    out.pts = packets[0].pts
    out.dts = packets[0].dts
    out.time_base = packets[0].time_base
    return out
