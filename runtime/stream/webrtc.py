"""One WebRTC peer connection per player, sending that player's video track.

:class:`PlayerVideo` lives where its packets are made: in a media worker process
(``media_worker``; the server holds a ``media_pool.RemotePlayerVideo`` with the same
interface) or, with no worker processes, in the server itself. The session sees only
that interface: ``ready``, ``reserve``/``commit`` (a buffer the renderer writes the next
picture into, where the video has one) or ``stage(picture)`` (a copy), both from the
render thread, ``offer(...)``, ``answer``, ``add_candidate``, ``close``.

The client offers (one receive-only video transceiver), the server answers with all of
its ICE candidates inside (aiortc gathers before answering; it does not trickle). No
STUN/TURN servers are configured: aiortc's default would contact a public STUN server,
and worldstream talks to nothing it was not asked to.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import Callable

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from . import ice  # noqa: F401  (loopback ICE candidates where there is no other network)
from .encoder import EncoderSettings, i420_video_frame
from .video_track import EncodedFrame, PlayerVideoTrack, RenderedFrame

log = logging.getLogger("worldstream.webrtc")

_MIME = {"h264": "video/H264", "vp8": "video/VP8"}
_NAMES = {"h264": "H.264", "vp8": "VP8"}


class RtcError(Exception):
    """The offer could not be answered (reported to the client as ``rtc_failed``)."""


def offered_video_codecs(sdp: str) -> list[str] | None:
    """The codec names (upper case, as in ``a=rtpmap``) the offer's first video section
    accepts, in its order of preference; None when it has no video section."""
    names: list[str] | None = None
    in_video = False
    for line in sdp.splitlines():
        if line.startswith("m="):
            if names is not None:
                break  # only the first video section counts
            in_video = line.startswith("m=video")
            if in_video:
                names = []
        elif in_video and line.startswith("a=rtpmap:") and " " in line:
            name = line.split(" ", 1)[1].split("/", 1)[0].upper()
            if name not in names:
                names.append(name)
    return names


def choose_codec(offer_sdp: str, preferred: str) -> str:
    """The codec to stream for this offer: ``preferred`` (the server's ``--codec``) when the
    offer accepts it, else the other codec the server can send (H.264, VP8) that it accepts.

    Raises:
        RtcError: the offer's video accepts neither, naming what it does accept. An offer
            with no video section is left to :meth:`PlayerVideo.answer` to refuse.
    """
    offered = offered_video_codecs(offer_sdp)
    if offered is None:
        return preferred
    for codec in (preferred, *(c for c in _MIME if c != preferred)):
        if _MIME[codec].split("/")[1] in offered:
            return codec
    accepted = ", ".join(n for n in offered if n not in ("RTX", "RED", "ULPFEC", "FLEXFEC-03")) or "no video codec"
    servable = " or ".join(_NAMES.values())
    raise RtcError(f"the offer's video accepts {accepted}; this server streams {servable}: offer one of them")


def parse_candidate(candidate: str):
    """An ``a=candidate`` line (with or without the ``candidate:`` prefix) as aiortc's
    ``RTCIceCandidate``; raises :class:`RtcError` naming what is wrong."""
    text = candidate.split(":", 1)[1] if candidate.startswith("candidate:") else candidate
    try:
        return candidate_from_sdp(text)
    except Exception as exc:
        raise RtcError(f"bad ICE candidate: {exc}") from None


class PlayerVideo:
    """A player's peer connection and video track.

    Args:
        settings: encoder settings for the track.
        encode_executor: where frames are encoded.
        on_encoded: called on the loop for every frame handed to aiortc.
        on_closed: called once when the connection fails or closes.
        on_state: called on every peer connection state change (``"connected"``, ...).
    """

    def __init__(
        self,
        settings: EncoderSettings,
        encode_executor: Executor,
        on_encoded: Callable[[EncodedFrame], None],
        on_closed: Callable[["PlayerVideo"], None] | None = None,
        label: str = "",
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.label = label
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = PlayerVideoTrack(settings, encode_executor, on_encoded, self._encoding_failed)
        self._on_closed = on_closed
        self._closed = False
        self.end_reason = ""  # why it closed, for people ("" while open)

        @self.pc.on("connectionstatechange")
        async def _state() -> None:
            state = self.pc.connectionState
            log.debug("%s: peer connection %s", self.label, state)
            if on_state is not None:
                on_state(state)
            if state in ("failed", "closed"):
                await self.close(f"the peer connection {state}")

    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's offer and return the answer SDP (raises :class:`RtcError`)."""
        # The sending transceiver exists before the offer is applied: aiortc matches the
        # offer's video section to it, and codec preferences only count at that moment.
        transceiver = self.pc.addTransceiver(self.track, direction="sendonly")
        wanted = _MIME[self.settings.codec]
        prefs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in (wanted, "video/rtx")]
        transceiver.setCodecPreferences(prefs)
        self.track.attach_sender(transceiver.sender)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:  # aiortc raises ValueError and others for bad SDP
            raise RtcError(f"could not parse the offer: {exc}") from None
        if transceiver.mid is None:
            raise RtcError("the offer has no video media section; add a recvonly video transceiver")
        try:
            answer = await self.pc.createAnswer()
            await self.pc.setLocalDescription(answer)
        except Exception as exc:
            raise RtcError(f"could not answer the offer with {self.settings.codec}: {exc}") from None
        if f"{wanted.split('/')[1]}/90000" not in self.pc.localDescription.sdp:
            raise RtcError(f"the offer does not accept {self.settings.codec}, the codec this server streams")
        return self.pc.localDescription.sdp

    async def add_candidate(self, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None) -> None:
        """Add a trickled remote ICE candidate (empty = end of candidates, ignored)."""
        if not candidate:
            return
        parsed = parse_candidate(candidate)
        parsed.sdpMid = sdp_mid
        parsed.sdpMLineIndex = sdp_mline_index
        await self.pc.addIceCandidate(parsed)

    @property
    def ready(self) -> bool:
        """Connected and still wanting pictures."""
        return not self._closed and self.track.wants_frames and self.pc.connectionState == "connected"

    def slot(self, nbytes: int) -> "EncoderFrameSlot":
        """No buffer of its own for the renderer to write into: pictures come through :meth:`stage`."""
        return EncoderFrameSlot(self)

    def stage(self, picture: np.ndarray) -> av.VideoFrame:
        """Keep an I420 picture for :meth:`offer` (any thread): a copy, since the renderer's
        buffers are reused, made straight into the encoder's frame. Returns what ``offer``
        takes (offer it again to repeat it)."""
        return i420_video_frame(picture, self.settings.width, self.settings.height)

    def offer(self, staged: av.VideoFrame, captured_at: float, input_seq: int, input_received_at: float | None, render_s: float) -> None:
        """Give the track a staged I420 picture (newest wins; see ``video_track``)."""
        self.track.offer(RenderedFrame(staged, captured_at, input_seq, input_received_at, render_s, "yuv420p"))

    def _encoding_failed(self, exc: BaseException) -> None:
        # Closing says so to the owner (and the player: video_ended), instead of a peer that
        # stays connected and never gets another frame.
        asyncio.ensure_future(self.close(f"encoding failed: {type(exc).__name__}: {exc}"))

    async def close(self, reason: str = "closed by the server") -> None:
        if self._closed:
            return
        self._closed = True
        self.end_reason = reason
        self.track.stop()
        try:
            await asyncio.wait_for(self.pc.close(), timeout=5.0)
        except Exception:  # closing must never raise into the caller
            log.debug("%s: error while closing the peer connection", self.label, exc_info=True)
        if self._on_closed is not None:
            self._on_closed(self)

    @property
    def closed(self) -> bool:
        return self._closed


class EncoderFrameSlot:
    """A :class:`PlayerVideo`'s picture slot (see :mod:`.video_sink`): no buffer; the picture
    is copied straight into the encoder's frame."""

    buffer = None

    def __init__(self, video: PlayerVideo) -> None:
        self._video = video

    def fill(self, picture: np.ndarray) -> av.VideoFrame:
        return self._video.stage(picture)

    def give_up(self) -> None:
        pass
