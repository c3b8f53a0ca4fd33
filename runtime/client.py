"""A Python worldstream client: the protocol over WebSocket plus the WebRTC video, decoded.

For tests, load tests, bots and flythrough recordings::

    async with WorldClient("http://127.0.0.1:8080", new_world=NewWorld(name="demo"), name="bot") as c:
        await c.send_input(forward=1)
        frame = await c.next_frame()      # VideoFrameRGB: rgb [H, W, 3] uint8, rtp_timestamp, ...
        print(c.welcome.pose, c.events[-1])

Every server message is appended to :attr:`WorldClient.events` (bounded) and can be awaited
with :meth:`WorldClient.wait_for`. Frames are kept newest-only: :meth:`next_frame` returns
the next frame decoded after the call (or after ``after``), never a backlog.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.client import connect

from protocol import PROTOCOL_VERSION, ProtocolError, decode, encode, messages as m
from protocol.messages import NewWorld, View
from runtime.stream import ice  # noqa: F401  (loopback ICE candidates where there is no other network)

log = logging.getLogger("worldstream.client")


STAGES = ("server not listening", "no welcome", "no answer", "ICE not connected", "no RTP", "no frame decoded")
"""Where joining and streaming can have nothing, in order (:class:`StreamStalled`)."""


class StreamStalled(TimeoutError):
    """Joining or the video had nothing at one stage within its time.

    Attributes:
        stage: the first stage that had nothing (one of :data:`STAGES`).
        detail: what the client saw there (states, counts, the address).
    """

    def __init__(self, stage: str, detail: str) -> None:
        super().__init__(f"{stage}: {detail}")
        self.stage = stage
        self.detail = detail


class ServerError(Exception):
    """The server answered with ``error`` where a reply was expected."""

    def __init__(self, error: m.ErrorMessage) -> None:
        super().__init__(f"{error.code}: {error.message}" + (f" (field {error.field})" if error.field else ""))
        self.error = error


@dataclass(frozen=True)
class VideoFrameRGB:
    """One decoded video frame.

    Attributes:
        rgb: ``[H, W, 3]`` uint8.
        rtp_timestamp: the frame's RTP timestamp (90 kHz); matches ``frame_info.rtp_timestamp``.
        received_at: ``time.monotonic()`` when the decoded frame reached the client.
        index: 0-based count of frames decoded on this connection.
    """

    rgb: np.ndarray
    rtp_timestamp: int
    received_at: float
    index: int


MAX_REDIRECTS = 3
"""Redirects one connect follows (two servers pointing at each other must not loop)."""


def ws_url(url: str) -> str:
    """``http://host:port`` (or ``ws://host:port[/ws]``) -> the WebSocket URL ``ws://host:port/ws``."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path.endswith("/ws") else parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class WorldClient:
    """One player: joins a world, receives its video, sends input.

    Args:
        url: server base URL (``http://127.0.0.1:8080``) or WebSocket URL.
        world: name of a world to join, or
        new_world: a world to create (``NewWorld(name=..., seed=..., caption=...)``).
        name: player name.
        view: display parameters (size, fov, stereo).
        video: negotiate WebRTC video (False for protocol-only clients).
        resume_token: from an earlier ``welcome``.
        invite: a private world's invite (from its share link).
        owner_key: from the ``welcome`` that created the world: proves you made it.
        token: the server's access token (``--token``), sent as ``Authorization: Bearer``.
        headers: more WebSocket handshake headers (e.g. ``X-Forwarded-For`` behind a test proxy).
        codecs: video codecs the offer accepts, e.g. ``("vp8",)``; None offers all aiortc has.
        protocol_version: override to test version checks.
        max_events: events kept in :attr:`events`.
    """

    def __init__(
        self,
        url: str,
        *,
        world: str | None = None,
        new_world: NewWorld | None = None,
        name: str = "bot",
        view: View | None = None,
        video: bool = True,
        resume_token: str | None = None,
        invite: str | None = None,
        owner_key: str | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        codecs: tuple[str, ...] | None = None,
        protocol_version: int = PROTOCOL_VERSION,
        max_events: int = 10_000,
    ) -> None:
        self.url = ws_url(url)
        self.hello = m.Hello(
            protocol_version=protocol_version, player_name=name, world=world, new_world=new_world,
            resume_token=resume_token, view=view or View(), invite=invite, owner_key=owner_key,
        )
        self.headers = dict(headers or {})
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.video = video
        self.codecs = codecs
        self.ws = None
        self.pc: RTCPeerConnection | None = None
        self.welcome: m.Welcome | None = None
        self.events: collections.deque[m.Message] = collections.deque(maxlen=max_events)
        self.event_times: collections.deque[float] = collections.deque(maxlen=max_events)  # monotonic arrival
        self.input_sent_at: dict[int, float] = {}  # seq -> monotonic send time (recent)
        self.input_to_frame_ms: collections.deque[float] = collections.deque(maxlen=10_000)
        """Client-side latency: input sent -> first decoded frame reflecting it (per input shown)."""
        self._shown_seq = 0
        self.frame_infos: dict[int, m.FrameInfo] = {}  # rtp_timestamp -> info (recent)
        # (monotonic arrival, the server's wall-clock ms when it sent the frame) per frame_info:
        # a gap in the server's sending tells a server stall from one on the way or in decoding.
        self.info_times: collections.deque[tuple[float, float]] = collections.deque(maxlen=100_000)
        # rtp_timestamp -> when a frame arrived before its frame_info (the video and the
        # WebSocket race): its latency is measured once the info comes.
        self._frames_awaiting_info: dict[int, float] = {}
        self.frames_received = 0
        self.frame_times: collections.deque[float] = collections.deque(maxlen=100_000)
        self.latest_frame: VideoFrameRGB | None = None
        self._frame_cond = asyncio.Condition()
        self._event_cond = asyncio.Condition()
        self._tasks: list[asyncio.Task] = []
        self._seq = 0
        self._ping_id = 0
        self.video_answers = 0  # rtc_answers applied (a video restarts after video_ended)
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.redirects: list[str] = []  # servers' URLs this client was redirected to, in order

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> "WorldClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def connect(self, timeout: float = 60.0) -> m.Welcome:
        """Connect, say hello, wait for welcome (raises :class:`ServerError`), start the video.

        A ``redirect`` (the world is open on another server) is followed: the same hello goes
        to the server it names, at most ``MAX_REDIRECTS`` times; :attr:`redirects` lists them.
        Raises :class:`StreamStalled` naming the stage that had nothing within ``timeout``
        (each stage gets the whole ``timeout``): the server not listening, no welcome, no answer.
        """
        for _ in range(MAX_REDIRECTS + 1):
            try:
                self.ws = await connect(self.url, max_size=None, compression=None, open_timeout=timeout, additional_headers=self.headers)
            except (OSError, asyncio.TimeoutError) as exc:
                raise StreamStalled("server not listening", f"{self.url}: {type(exc).__name__}: {exc}") from None
            self._tasks.append(asyncio.create_task(self._reader(), name="client-reader"))
            since = self.event_count
            await self.send(self.hello)
            try:
                reply = await self.wait_for(lambda e: isinstance(e, (m.Welcome, m.ErrorMessage, m.Redirect)), timeout=timeout, since=since)
            except TimeoutError:
                raise StreamStalled("no welcome", f"the server took the connection but sent no welcome within {timeout:g} s") from None
            if not isinstance(reply, m.Redirect):
                break
            await self.close()  # this server closes the connection too
            self.closed, self.close_code, self.close_reason = asyncio.Event(), None, ""
            self.redirects.append(reply.url)
            self.url = ws_url(reply.url)
        else:
            raise StreamStalled("no welcome", f"redirected more than {MAX_REDIRECTS} times: {' -> '.join(self.redirects)}")
        if isinstance(reply, m.ErrorMessage):
            raise ServerError(reply)
        self.welcome = reply
        if self.video:
            await self._start_video(timeout)
        return reply

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.pc is not None:
            await self.pc.close()
        if self.ws is not None:
            await self.ws.close()

    # ------------------------------------------------------------------ protocol
    async def send(self, msg: m.Message) -> None:
        await self.ws.send(encode(msg))

    async def send_raw(self, data: bytes | str) -> None:
        """Send arbitrary bytes (tests of bad input)."""
        await self.ws.send(data)

    async def send_input(self, forward=0.0, right=0.0, up=0.0, yaw_delta=0.0, pitch_delta=0.0, run=False, fly=False) -> int:
        """Send one ``input``; returns its seq."""
        self._seq += 1
        self._note_sent(self._seq)
        await self.send(m.Input(seq=self._seq, t_ms=time.monotonic() * 1e3, forward=forward, right=right, up=up,
                                yaw_delta=yaw_delta, pitch_delta=pitch_delta, run=run, fly=fly))
        return self._seq

    async def send_head_pose(self, position, orientation_wxyz) -> int:
        self._seq += 1
        self._note_sent(self._seq)
        await self.send(m.HeadPose(seq=self._seq, t_ms=time.monotonic() * 1e3, position=tuple(map(float, position)),
                                   orientation=tuple(map(float, orientation_wxyz))))
        return self._seq

    def _note_sent(self, seq: int) -> None:
        self.input_sent_at[seq] = time.monotonic()
        if len(self.input_sent_at) > 4000:
            for key in list(self.input_sent_at)[:2000]:
                del self.input_sent_at[key]

    async def ping(self, timeout: float = 10.0) -> float:
        """Round trip time in milliseconds."""
        self._ping_id += 1
        pid = self._ping_id
        start = time.perf_counter()
        await self.send(m.Ping(id=pid, t_ms=0.0))
        await self.wait_for(lambda e: isinstance(e, m.Pong) and e.id == pid, timeout)
        return (time.perf_counter() - start) * 1e3

    async def _reader(self) -> None:
        try:
            async for data in self.ws:
                try:
                    msg = decode(data, sender="server")
                except ProtocolError as exc:
                    log.warning("bad message from the server: %s", exc)
                    continue
                if isinstance(msg, m.VideoEnded) and self.video:  # as the web client does: offer again
                    self._tasks.append(asyncio.create_task(self.restart_video(), name="client-video-restart"))
                if isinstance(msg, m.FrameInfo):
                    self.frame_infos[msg.rtp_timestamp] = msg
                    self.info_times.append((time.monotonic(), msg.server_ms))
                    if len(self.frame_infos) > 2000:
                        for key in list(self.frame_infos)[:1000]:
                            del self.frame_infos[key]
                    shown_at = self._frames_awaiting_info.pop(msg.rtp_timestamp, None)
                    if shown_at is not None:
                        self._measure_latency(msg.rtp_timestamp, shown_at)
                async with self._event_cond:
                    self.events.append(msg)
                    self.event_times.append(time.monotonic())
                    self._event_count += 1
                    self._event_cond.notify_all()
        except Exception as exc:  # connection closed
            log.debug("reader stopped: %r", exc)
        finally:
            self.close_code = getattr(self.ws, "close_code", None)
            self.close_reason = getattr(self.ws, "close_reason", "") or ""
            self.closed.set()
            async with self._event_cond:
                self._event_cond.notify_all()

    _event_count = 0

    @property
    def event_count(self) -> int:
        """Messages received so far (a position for :meth:`wait_for`'s ``since``)."""
        return self._event_count

    async def wait_for(self, predicate: Callable[[m.Message], bool] | str, timeout: float = 10.0, since: int | None = None) -> m.Message:
        """The first message matching ``predicate`` (or of that type) received after position ``since``
        (default: now). Raises ``TimeoutError``, or ``ConnectionError`` if the server closed."""
        if isinstance(predicate, str):
            type_ = predicate
            predicate = lambda e: e.TYPE == type_  # noqa: E731
        start = self._event_count if since is None else since
        deadline = time.monotonic() + timeout
        async with self._event_cond:
            while True:
                skip = self._event_count - len(self.events)  # messages that fell off the deque
                for msg in list(self.events)[max(0, start - skip):]:
                    if predicate(msg):
                        return msg
                start = self._event_count
                if self.closed.is_set():
                    raise ConnectionError(f"the server closed the connection ({self.close_code} {self.close_reason})")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no matching message in time")
                try:
                    await asyncio.wait_for(self._event_cond.wait(), remaining)
                except asyncio.TimeoutError:
                    pass

    def of_type(self, type_: str) -> list[m.Message]:
        return [e for e in self.events if e.TYPE == type_]

    # ------------------------------------------------------------------ video
    async def restart_video(self, timeout: float = 60.0) -> None:
        """A new peer connection and offer (the server replaces the old video); done on its
        own when the server says ``video_ended``."""
        old, self.pc = self.pc, None
        if self._video_task is not None:
            self._video_task.cancel()
        if old is not None:
            await old.close()
        await self._start_video(timeout)

    _video_task: asyncio.Task | None = None

    async def _start_video(self, timeout: float) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        if self.codecs is not None:
            wanted = {f"video/{c}".lower() for c in self.codecs} | {"video/rtx"}
            transceiver.setCodecPreferences(
                [c for c in RTCRtpReceiver.getCapabilities("video").codecs if c.mimeType.lower() in wanted]
            )
        track_ready = asyncio.get_running_loop().create_future()

        @self.pc.on("track")
        def _on_track(track) -> None:
            if track.kind == "video" and not track_ready.done():
                track_ready.set_result(track)

        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)  # aiortc gathers candidates here
        since = self.event_count
        await self.send(m.RtcOffer(sdp=self.pc.localDescription.sdp))
        try:
            reply = await self.wait_for(lambda e: isinstance(e, (m.RtcAnswer, m.ErrorMessage)), timeout, since=since)
        except TimeoutError:
            raise StreamStalled("no answer", f"no rtc_answer within {timeout:g} s of the rtc_offer") from None
        if isinstance(reply, m.ErrorMessage):
            raise ServerError(reply)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=reply.sdp, type="answer"))
        self.video_answers += 1
        try:
            track = await asyncio.wait_for(track_ready, timeout)
        except asyncio.TimeoutError:
            raise StreamStalled("no answer", f"the answer set up no video track within {timeout:g} s") from None
        receiver = next(t.receiver for t in self.pc.getTransceivers() if t.kind == "video")
        self._video_task = asyncio.create_task(self._read_video(track, receiver), name="client-video")
        self._tasks.append(self._video_task)

    @staticmethod
    def _rtp_origin(receiver) -> int:
        # frame_info.rtp_timestamp is the timestamp in the RTP packets, but aiortc rebases
        # received timestamps so a track's pts start at 0, keeping the origin in a private
        # mapper: add it back so frames match frame_info (aiortc 1.16). See PROTOCOL.md §4.
        mapper = getattr(receiver, "_RTCRtpReceiver__timestamp_mapper", None)
        return int(getattr(mapper, "_origin", None) or 0)

    async def _read_video(self, track, receiver) -> None:
        try:
            while True:
                frame = await track.recv()
                rgb = frame.to_ndarray(format="rgb24")
                now = time.monotonic()
                rtp = (int(frame.pts or 0) + self._rtp_origin(receiver)) % 2**32
                vf = VideoFrameRGB(rgb, rtp, now, self.frames_received)
                self._measure_latency(rtp, now)
                async with self._frame_cond:
                    self.latest_frame = vf
                    self.frames_received += 1
                    self.frame_times.append(now)
                    self._frame_cond.notify_all()
        except MediaStreamError:
            pass

    def _measure_latency(self, rtp: int, now: float) -> None:
        info = self.frame_infos.get(rtp)
        if info is None:
            self._frames_awaiting_info[rtp] = now
            if len(self._frames_awaiting_info) > 256:  # infos that never came (bounded)
                del self._frames_awaiting_info[next(iter(self._frames_awaiting_info))]
            return
        if info.input_seq <= self._shown_seq:
            return
        first_new = self._shown_seq + 1  # the oldest input this frame is the first to show
        sent = self.input_sent_at.get(first_new)
        if sent is not None:
            self.input_to_frame_ms.append((now - sent) * 1e3)
        self._shown_seq = info.input_seq

    async def next_frame(self, timeout: float = 20.0, after: int | None = None) -> VideoFrameRGB:
        """The first frame decoded after this call (or with ``index >= after``); raises
        :class:`StreamStalled` (:meth:`video_stage` says which stage had nothing) when none
        comes within ``timeout``."""
        target = self.frames_received if after is None else after
        try:
            async with self._frame_cond:
                await asyncio.wait_for(self._frame_cond.wait_for(lambda: self.frames_received > target), timeout)
                return self.latest_frame
        except asyncio.TimeoutError:
            stage, detail = await self.video_stage()
            raise StreamStalled(stage, f"no frame within {timeout:g} s; {detail}") from None

    async def video_stage(self) -> tuple[str, str]:
        """``(stage, detail)``: how far the video got, as one of :data:`STAGES` — the first
        with nothing (``no frame decoded`` when frames stopped coming after some came) —
        and the states and counts that say so."""
        pc = self.pc
        if pc is None or pc.remoteDescription is None:
            return "no answer", f"no answer applied yet ({self.video_answers} answers so far)"
        stats = list((await pc.getStats()).values())
        rtp = sum(s.packetsReceived for s in stats if s.type == "inbound-rtp")
        received = sum(s.packetsReceived for s in stats if s.type == "transport")  # DTLS, RTP and RTCP
        dtls = next((s.dtlsState for s in stats if s.type == "transport"), "new")
        detail = (
            f"ICE {pc.iceConnectionState}, DTLS {dtls}, peer connection {pc.connectionState}; "
            f"{received} packets and {rtp} RTP packets received, {self.frames_received} frames decoded; "
            f"answers {self.video_answers}, video_ended {len(self.of_type('video_ended'))}"
        )
        if pc.iceConnectionState not in ("connected", "completed") or dtls != "connected":
            return "ICE not connected", detail
        if rtp == 0 and self.frames_received == 0:
            return "no RTP", detail
        return "no frame decoded", detail

    async def frame_after_input(self, seq: int, timeout: float = 20.0) -> VideoFrameRGB:
        """The first decoded frame whose ``frame_info`` says it reflects input ``seq`` or later."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.next_frame(timeout=max(0.1, deadline - time.monotonic()))
            info = self.frame_infos.get(frame.rtp_timestamp)
            if info is not None and info.input_seq >= seq:
                return frame
            if time.monotonic() > deadline:
                raise TimeoutError(f"no frame reflecting input {seq} within {timeout} s")

    def received_fps(self, window_s: float = 2.0) -> float:
        now = time.monotonic()
        recent = [t for t in self.frame_times if now - t <= window_s]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 and recent[-1] > recent[0] else 0.0
