"""One WebSocket connection = one player: hello, then input, WebRTC signalling and events.

What a client sends costs a bounded amount of work: frames are read at most
``FRAME_RATE_HZ`` a second (beyond that the server stops reading and TCP pushes back),
each message's size and value count are checked before it is unpacked (``protocol.decode``
with ``sender="client"``), only a not yet joined connection may send a message larger than
``MAX_MESSAGE_BYTES`` (a ``hello`` with a start image, a few per connection), and every
message type has a token bucket. Anything refused is answered with an ``error`` naming the
code and field, and the connection carries on. Outgoing messages go through a bounded queue
drained by one sender task, so a slow client can never block a session's loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from protocol import PROTOCOL_VERSION, ProtocolError, VersionMismatch, decode, encode, messages as m
from runtime.player import Player
from runtime.quotas import LimitReached, client_key
from runtime.sessions import JoinError
from runtime.stream.media_pool import MediaUnavailable
from runtime.stream.forwarded import request_source
from runtime.stream.rate_limit import TokenBucket
from runtime.stream.webrtc import RtcError, choose_codec

if TYPE_CHECKING:
    from runtime.app import StreamServer

log = logging.getLogger("worldstream.ws")

OUTBOX_SIZE = 512
"""Messages waiting for a slow client; beyond this new ones are dropped (all are periodic or best-effort
except errors, which are small and rare)."""

CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
CLOSE_IDLE = 1000  # a normal close: clients should not reconnect by themselves


async def refuse_connection(ws: ServerConnection, exc: LimitReached, metrics) -> None:
    """Tell a connection over a connection quota why (a typed error), then close it (1013)."""
    metrics.protocol_errors.labels("limit_reached").inc()
    error = m.ErrorMessage(code="limit_reached", message=exc.message[: m.MAX_ERROR_CHARS], limit=exc.limit)
    with contextlib.suppress(ConnectionClosed):
        await ws.send(encode(error))
        await ws.close(CLOSE_TRY_AGAIN, exc.limit)

FRAME_RATE_HZ = m.INPUT_RATE_HZ + m.OTHER_RATE_HZ + m.CAPTION_RATE_HZ
"""Frames read per connection per second at most (every type's rate together): a client
sending faster is not read, so its flood waits in its own TCP buffers, not in the server."""
FRAME_BURST = m.INPUT_BURST + m.OTHER_BURST + m.CAPTION_BURST
LARGE_RATE_HZ = 0.2
"""Messages over ``MAX_MESSAGE_BYTES`` (hellos with a start image) per client address (see
``StreamServer.large_messages``): a burst of ``LARGE_BURST``, then one per 5 s. A large
frame sent without a token left closes the connection (1009) before its payload is read;
one already read is dropped undecoded."""
LARGE_BURST = 2
OVERSIZE_STRIKES = 4
OVERSIZE_FORGIVE_S = 10.0
"""A client address whose connections were closed for oversized frames (1009) more than
``OVERSIZE_STRIKES`` times has further handshakes refused (HTTP 429) until one strike is
forgiven, every ``OVERSIZE_FORGIVE_S``: reconnecting to send 8 MiB again and again costs the
server a handshake and the start of each frame; this makes it cost a short HTTP reply."""
MAX_FRAME_BYTES = m.MAX_HELLO_BYTES + 4096
"""Largest WebSocket message read at all (beyond it: close 1009); ``decode`` refuses more
than ``MAX_HELLO_BYTES`` with ``too_large``."""


class Connection:
    """The state of one WebSocket connection (see the module docstring)."""

    def __init__(self, ws: ServerConnection, server: "StreamServer") -> None:
        self.ws = ws
        self.server = server
        peer = ws.remote_address[:2] if ws.remote_address else ("?", 0)
        source = request_source(peer[0], ws.request.headers, server.config.trusted_proxies)
        self.client_address = source.address
        """The client's IP address (from a trusted proxy's ``X-Forwarded-For`` when there is one)."""
        self.client = client_key(self.client_address)  # what per-client quotas count by
        self.peer = source.address if source.forwarded else "%s:%s" % peer  # for logs
        self.last_active = time.monotonic()  # last input, head pose or caption (idle timeout)
        self.player: Player | None = None
        self.session = None
        self.token: str | None = None
        self.seated = False  # holds one of server.seats (from a hello's start until leaving)
        self._closing: asyncio.Task | None = None  # closing after another connection took the player
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(OUTBOX_SIZE)
        self._dropped = 0
        self._buckets = {
            "input": TokenBucket(m.INPUT_RATE_HZ, m.INPUT_BURST),
            "caption": TokenBucket(m.CAPTION_RATE_HZ, m.CAPTION_BURST),
            "other": TokenBucket(m.OTHER_RATE_HZ, m.OTHER_BURST),
            "large": server.large_messages.get(self.client_address),  # per address: reconnecting does not refill it
        }
        self._frames = TokenBucket(FRAME_RATE_HZ, FRAME_BURST)

    # ------------------------------------------------------------------ sending
    def send(self, msg: m.Message | bytes) -> None:
        """Queue ``msg`` (a message, or one already encoded: broadcasts encode once) for the
        client; drops it if the client is far behind."""
        try:
            self._outbox.put_nowait(msg if isinstance(msg, bytes) else encode(msg))
        except asyncio.QueueFull:
            self._dropped += 1
            if self._dropped in (1, 100, 10_000):
                log.warning("%s: client is not reading; %d messages dropped", self.peer, self._dropped)

    def error(self, code: str, message: str, field: str | None = None, ref_type: str | None = None, limit: str | None = None) -> None:
        self.server.metrics.protocol_errors.labels(code).inc()
        log.debug("%s: error %s: %s (field %s)", self.peer, code, message, field)
        self.send(m.ErrorMessage(code=code, message=message[: m.MAX_ERROR_CHARS], field=field, ref_type=ref_type, limit=limit))

    def limit_error(self, exc: LimitReached, ref_type: str | None = None) -> None:
        self.error("limit_reached", exc.message, None, ref_type, exc.limit)

    async def _sender(self) -> None:
        while True:
            data = await self._outbox.get()
            try:
                await self.ws.send(data)
            finally:
                self._outbox.task_done()

    async def _flush_and_close(self, code: int, reason: str) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._outbox.join(), 2.0)
        await self.ws.close(code, reason[:120])

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        sender = asyncio.create_task(self._sender(), name=f"send:{self.peer}")
        deadline = time.monotonic() + self.server.config.hello_timeout_s
        idle_s = self.server.config.limits.idle_timeout
        try:
            while True:
                if self.player is None:
                    timeout = deadline - time.monotonic()
                    if timeout <= 0:
                        self.error("not_joined", f"no valid hello within {self.server.config.hello_timeout_s:g} s")
                        await self._flush_and_close(CLOSE_POLICY, "no hello in time")
                        return
                elif idle_s > 0:
                    timeout = self.last_active + idle_s - time.monotonic()
                    if timeout <= 0:
                        await self._close_idle(idle_s)
                        return
                else:
                    timeout = None
                while not self._frames.allow():  # over the frame rate: stop reading for a while
                    await asyncio.sleep(self._frames.seconds_to_token())
                self._limit_frame_size()
                try:
                    data = await asyncio.wait_for(self.ws.recv(), timeout)
                except asyncio.TimeoutError:
                    continue
                if not await self._handle(data):
                    return
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            await self._leave()
            close = self.ws.protocol.close_sent
            if close is not None and close.code == 1009:  # a frame over its limit: one strike
                self.server.oversize_strikes.get(self.client_address).allow()

    async def _handle(self, data: bytes | str) -> bool:
        """Handle one incoming frame; False ends the connection."""
        if len(data) > m.MAX_MESSAGE_BYTES and not self._allow("large", None):
            return True  # dropped undecoded
        try:
            msg = decode(data, sender="client")  # bounded: see the module docstring
        except ProtocolError as exc:
            if not self._allow("other", exc.ref_type):
                return True
            if isinstance(exc, VersionMismatch) and self.player is None:
                return await self._refuse_version(exc.version)
            self.error(exc.code, exc.message, exc.field, exc.ref_type)
            return True
        bucket = "input" if msg.TYPE in ("input", "head_pose") else "caption" if msg.TYPE == "caption" else "other"
        if not self._allow(bucket, msg.TYPE):
            return True
        if bucket != "other":
            self.last_active = time.monotonic()
        try:
            return await self._dispatch(msg)
        except Exception:
            log.exception("%s: handling %s failed", self.peer, msg.TYPE)
            self.error("internal", f"the server failed to handle {msg.TYPE!r}; it carries on", None, msg.TYPE)
            return True

    def _limit_frame_size(self) -> None:
        """Admit frames over ``MAX_MESSAGE_BYTES`` only while the large-message bucket has a
        token. Reading one costs the loop tens of ms (copies of up to 8 MiB); a frame over
        the limit is refused from its header, before its payload is read (close 1009)."""
        large_ok = self._buckets["large"].seconds_to_token() == 0.0
        self.ws.protocol.max_message_size = MAX_FRAME_BYTES if large_ok else m.MAX_MESSAGE_BYTES

    def _allow(self, bucket_name: str, ref_type: str | None) -> bool:
        """Take a token from the bucket; when empty, drop the message (``ref_type``, if
        known) and say so at most once a second."""
        bucket = self._buckets[bucket_name]
        if bucket.allow():
            return True
        if bucket.should_complain():
            if bucket_name == "large":
                text = f"more than {LARGE_BURST} messages over {m.MAX_MESSAGE_BYTES} bytes in {1 / LARGE_RATE_HZ:g} s; the excess is dropped"
            else:
                rate = {"input": m.INPUT_RATE_HZ, "caption": m.CAPTION_RATE_HZ, "other": m.OTHER_RATE_HZ}[bucket_name]
                text = f"more than {rate} {bucket_name} messages per second; the excess is dropped"
            self.error("rate_limited", text, None, ref_type)
        return False

    async def _dispatch(self, msg: m.Message) -> bool:
        if isinstance(msg, m.Ping):
            self.send(m.Pong(id=msg.id, t_ms=msg.t_ms, server_ms=time.time() * 1e3))
            return True
        if isinstance(msg, m.Hello):
            if self.player is not None:
                self.error("already_joined", "this connection already joined a world; open a new connection", None, "hello")
                return True
            return await self._hello(msg)
        if self.player is None:
            self.error("not_joined", f"send hello before {msg.TYPE!r}", None, msg.TYPE)
            return True
        player = self.player
        if isinstance(msg, m.Input):
            player.on_input(msg)
        elif isinstance(msg, m.HeadPose):
            player.on_head_pose(msg)
        elif isinstance(msg, m.RtcOffer):
            await self._offer(msg)
        elif isinstance(msg, m.IceCandidate):
            if player.video is None:
                self.error("no_rtc_offer", "send rtc_offer before ice_candidate (no video is being set up)", None, msg.TYPE)
            else:
                try:
                    await player.video.add_candidate(msg.candidate, msg.sdp_mid, msg.sdp_mline_index)
                except RtcError as exc:
                    self.error("bad_field", str(exc), "candidate", msg.TYPE)
        elif isinstance(msg, m.Caption):
            try:
                self.server.quotas.caption(self.client, self.session.name)
            except LimitReached as exc:
                self.limit_error(exc, msg.TYPE)
            else:
                self.session.set_caption(msg.text, player)
        return True

    # ------------------------------------------------------------------ hello
    async def _refuse_version(self, version: int) -> bool:
        text = f"protocol version {version} is not supported; this server speaks version {PROTOCOL_VERSION}"
        self.error("version_mismatch", text, "protocol_version", "hello")
        log.info("%s: refused: %s", self.peer, text)
        await self._flush_and_close(CLOSE_POLICY, f"protocol version {version} unsupported, server speaks {PROTOCOL_VERSION}")
        return False

    async def _hello(self, hello: m.Hello) -> bool:
        server = self.server
        stale = server.live_tokens.get(hello.resume_token) if hello.resume_token else None
        if stale is not None and stale.session is not None and stale.session.name == hello.world:
            await stale.displace()  # its owner is back on this connection: the old one goes now
        # The seat is taken before anything is awaited: joins at the same moment cannot overshoot.
        if not self.seated and not server.seats.take():
            self.error("server_busy", f"the server is full ({server.config.max_players} players)", None, "hello")
            await self._flush_and_close(CLOSE_TRY_AGAIN, "server full")
            return False
        self.seated = True
        try:
            session = await server.registry.session_for(hello, self.client)
        except LimitReached as exc:
            self._give_seat_back()
            self.limit_error(exc, "hello")
            return True
        except JoinError as exc:
            self._give_seat_back()  # the connection stays open for a corrected hello
            self.error(exc.code, exc.message, exc.field, "hello")
            return True
        record = server.registry.resume(hello.resume_token, session.name)
        player_id = record.player_id if record and record.player_id not in session.players else secrets.token_urlsafe(6)
        pose = record.pose if record else session.world.spawn_pose()
        self.token = server.registry.new_token()
        server.live_tokens[self.token] = self
        self.player = Player(player_id, hello.player_name, hello.view, server.video_size(hello.view), pose, self.send)
        self.session = session
        w, h = self.player.video_size
        cfg = server.config
        self.send(
            m.Welcome(
                player_id=player_id,
                resume_token=self.token,
                world=session.name,
                seed=int(session.world.config.seed) % (m.MAX_SEED + 1),
                caption=str(getattr(session.world, "caption", session.world.config.caption))[: m.MAX_CAPTION_CHARS],
                pose=self.player.pose_info(),
                resumed=record is not None,
                server=m.ServerInfo(
                    version=server.version, fps=cfg.fps, width=w, height=h, codec=cfg.codec, bitrate=cfg.bitrate,
                    generator=cfg.generator, renderer=server.renderer_name,
                    explored_cell_size=float(session.world.explored.cell_size),
                ),
                notice=getattr(session.world, "start_notice", "")[: m.MAX_ERROR_CHARS],
            )
        )
        if hello.resume_token is not None and record is None:  # after welcome: it is not fatal
            self.error("bad_resume_token", "the resume token is unknown or expired; starting at the spawn point", "resume_token", "hello")
        session.add(self.player)
        log.info("%s: joined world %r as player %s%s", self.peer, session.name, player_id, " (resumed)" if record else "")
        return True

    # ------------------------------------------------------------------ WebRTC
    async def _offer(self, msg: m.RtcOffer) -> None:
        player, server = self.player, self.server
        if player.video is not None:  # a new offer replaces the old connection
            old, player.video = player.video, None
            await old.close()
        settings = server.config.encoder_settings(*player.video_size)
        try:  # the server's codec if the offer takes it, else one it takes (refused in words)
            settings = dataclasses.replace(settings, codec=choose_codec(msg.sdp, settings.codec))
        except RtcError as exc:
            self.error("rtc_failed", str(exc), "sdp", "rtc_offer")
            return
        session = self.session

        def closed(video) -> None:
            # Still the player's video: it ended on its own, not by a new offer or leaving.
            if player.video is video:
                player.video = None
                self.send(m.VideoEnded(reason=(video.end_reason or "the video closed")[: m.MAX_ERROR_CHARS]))

        try:
            video, sdp = await server.executors.media.open_video(
                settings, msg.sdp, lambda f: session.on_encoded(player, f), closed, label=f"player {player.id}"
            )
        except RtcError as exc:  # the offer's fault, or the server's (MediaUnavailable)
            self.error("rtc_failed", str(exc), None if isinstance(exc, MediaUnavailable) else "sdp", "rtc_offer")
            return
        if self.player is not player:  # left (or was displaced) while the offer was answered
            await video.close()
            return
        player.video = video
        self.send(m.RtcAnswer(sdp=sdp))
        log.info("player %s: WebRTC answered (%s %dx%d@%d, %.1f Mbit/s)", player.id, settings.codec, settings.width,
                 settings.height, settings.fps, settings.bitrate / 1e6)

    # ------------------------------------------------------------------ leaving
    async def _close_idle(self, idle_s: float) -> None:
        """Disconnect a player that stopped playing: its slot and its world's thread go to others."""
        self.server.metrics.limit_refusals.labels("idle_timeout").inc()
        log.info("%s: player %s idle for %g s: disconnected", self.peer, self.player.id, idle_s)
        self.limit_error(LimitReached("idle_timeout", f"no input for {idle_s:g} s; disconnected (join again to play on)"))
        await self._flush_and_close(CLOSE_IDLE, f"idle for {idle_s:g} s")

    async def _leave(self) -> None:
        self._give_seat_back()
        player, session = self.player, self.session
        if player is None:
            return
        self.player = None
        if self.token:
            self.server.live_tokens.pop(self.token, None)
            self.server.registry.remember(self.token, session.name, player.id, player.pose)
        await session.remove(player)

    def _give_seat_back(self) -> None:
        if self.seated:
            self.seated = False
            self.server.seats.give_back()

    async def displace(self) -> None:
        """Another connection resumes this player (its owner came back, e.g. after this
        connection froze): leave now, so the token's pose is there to resume, and close."""
        log.info("%s: player %s resumed on another connection; closing this one", self.peer, self.player.id if self.player else "-")
        await self._leave()
        self._closing = asyncio.create_task(self.ws.close(CLOSE_POLICY, "resumed on another connection"))

