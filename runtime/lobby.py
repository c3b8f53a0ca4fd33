"""Where a connection becomes a player, and where a player's messages go.

``runtime.stream.websocket.Connection`` reads, checks and decodes what a client sends and
hands it to the connection's :class:`PlayerLink`, made by the server's :class:`Lobby`:

* ``hello`` takes a seat (``--max-players``), finds or creates the world's session
  (``runtime.sessions``), resumes or spawns the player, and the session welcomes it;
* ``input``, ``head_pose`` and ``caption`` go to the player and its session, ``splats`` and
  ``splat_ack`` to its session's splat feed;
* ``rtc_offer`` / ``ice_candidate`` open the player's video in the media pool;
* when the connection ends, the player leaves and its pose is kept for its resume token.

A message's path reads top-down: stream -> lobby -> session -> world.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets

from protocol import messages as m
from runtime.config import Executors, ServerConfig
from runtime.player import Player
from runtime.quotas import LimitReached, Quotas, client_key
from runtime.seats import Seats
from runtime.session import Session
from runtime.sessions import JoinError, SessionRegistry, WorldElsewhere
from runtime.stream.media_pool import MediaUnavailable
from runtime.stream.slow_refusal import SlowRefusals
from runtime.stream.video_sink import VideoSink
from runtime.stream.webrtc import RtcError, choose_codec
from runtime.stream.websocket import CLOSE_POLICY, CLOSE_REDIRECT, CLOSE_TRY_AGAIN, ClientChannel

log = logging.getLogger("worldstream.ws")


class Lobby:
    """The server's side of joining: seats, sessions by world, and the resume tokens of
    connected players (a returning owner takes its player over from a frozen connection).

    Args:
        config: the server's settings (``max_players``, video size and encoding).
        registry: live sessions and resume tokens of players who left.
        quotas: per-client and server-wide allowances (worlds, captions).
        executors: the media pool opens players' videos.
        version, renderer_name: what ``welcome`` says of this server.
        refusals: pauses a hello's refusal for a quota or a full server (``runtime.stream.slow_refusal``).
    """

    def __init__(
        self, config: ServerConfig, registry: SessionRegistry, quotas: Quotas, executors: Executors, version: str, renderer_name: str,
        refusals: SlowRefusals | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.quotas = quotas
        self.executors = executors
        self.version = version
        self.renderer_name = renderer_name
        self.refusals = refusals or SlowRefusals()
        self.seats = Seats(config.max_players)
        self.live_tokens: dict[str, PlayerLink] = {}  # resume token -> the link holding its player

    def video_size(self, view: m.View) -> tuple[int, int]:
        """The video size for a client's view: the server's, or less if the view is smaller."""
        w, h = self.config.width, self.config.height
        if view.width < w and view.height < h:
            w, h = view.width, view.height
        return max(16, w - w % (4 if view.stereo else 2)), max(16, h - h % 2)

    def link(self, channel: ClientChannel) -> PlayerLink:
        """A new connection's link (``Connection``'s ``open_link``)."""
        return PlayerLink(self, channel)


class PlayerLink:
    """One connection's player, from ``hello`` until the connection ends (see the module doc)."""

    def __init__(self, lobby: Lobby, channel: ClientChannel) -> None:
        self.lobby = lobby
        self.channel = channel
        self.client = client_key(channel.client_address)  # what per-client quotas count by
        self.player: Player | None = None
        self.session: Session | None = None
        self.token: str | None = None
        self.seated = False  # holds one of the lobby's seats (from a hello's start until leaving)
        self._closing: asyncio.Task | None = None  # closing after another connection took the player

    @property
    def joined(self) -> bool:
        return self.player is not None

    # ------------------------------------------------------------------ hello
    async def hello(self, hello: m.Hello) -> bool:
        lobby, channel = self.lobby, self.channel
        stale = lobby.live_tokens.get(hello.resume_token) if hello.resume_token else None
        if stale is not None and stale.session is not None and stale.session.name == hello.world:
            await stale.displace()  # its owner is back on this connection: the old one goes now
        # The seat is taken before anything is awaited: joins at the same moment cannot overshoot.
        if not self.seated and not lobby.seats.take():
            await lobby.refusals.wait()
            channel.error("server_busy", f"the server is full ({lobby.config.max_players} players)", None, "hello")
            await channel.close(CLOSE_TRY_AGAIN, "server full")
            return False
        self.seated = True
        try:
            admission = await lobby.registry.session_for(hello, self.client)
        except LimitReached as exc:
            self._give_seat_back()
            await lobby.refusals.wait()  # a client creating worlds in a loop is slowed, not served faster
            self._limit_error(exc, "hello")
            return True
        except JoinError as exc:
            self._give_seat_back()  # the connection stays open for a corrected hello
            channel.error(exc.code, exc.message, exc.field, "hello")
            return True
        except WorldElsewhere as exc:  # another server has it open: the client goes there
            self._give_seat_back()
            log.info("%s: world %r is open on %s: redirected", channel.peer, exc.world, exc.url)
            channel.send(m.Redirect(url=exc.url, world=exc.world))
            await channel.close(CLOSE_REDIRECT, "redirect")
            return False
        session = admission.session
        record = lobby.registry.resume(hello.resume_token, session.name)
        player_id = record.player_id if record and record.player_id not in session.players else secrets.token_urlsafe(6)
        pose = record.pose if record else session.world.spawn_pose()
        self.token = lobby.registry.new_token()
        lobby.live_tokens[self.token] = self
        self.player = Player(player_id, hello.player_name, hello.view, lobby.video_size(hello.view), pose, channel.send)
        self.player.owner = admission.owner
        self.session = session
        session.welcome(
            self.player, self.token, record is not None, lobby.version, lobby.renderer_name,
            admission.access.visibility, admission.invite, admission.owner_key,
        )
        if hello.resume_token is not None and record is None:  # after welcome: it is not fatal
            channel.error("bad_resume_token", "the resume token is unknown or expired; starting at the spawn point", "resume_token", "hello")
        session.add(self.player)
        log.info("%s: joined world %r as player %s%s", channel.peer, session.name, player_id, " (resumed)" if record else "")
        return True

    # ------------------------------------------------------------------ a joined player's messages
    async def handle(self, msg: m.Message) -> None:
        player = self.player
        if isinstance(msg, m.Input):
            player.on_input(msg)
        elif isinstance(msg, m.HeadPose):
            player.on_head_pose(msg)
        elif isinstance(msg, m.SplatAck):
            self.session.splats.ack(player, msg.id)
        elif isinstance(msg, m.Splats):
            self.session.splats.subscribe(player, msg)
        elif isinstance(msg, m.RtcOffer):
            await self._offer(msg)
        elif isinstance(msg, m.IceCandidate):
            if player.video is None:
                self.channel.error("no_rtc_offer", "send rtc_offer before ice_candidate (no video is being set up)", None, msg.TYPE)
            else:
                try:
                    await player.video.add_candidate(msg.candidate, msg.sdp_mid, msg.sdp_mline_index)
                except RtcError as exc:
                    self.channel.error("bad_field", str(exc), "candidate", msg.TYPE)
        elif isinstance(msg, m.RevokeInvite):
            await self._revoke_invite()
        elif isinstance(msg, m.Caption):
            try:
                self.lobby.quotas.caption(self.client, self.session.name)
            except LimitReached as exc:
                self._limit_error(exc, msg.TYPE)
            else:
                self.session.set_caption(msg.text, player)

    def _limit_error(self, exc: LimitReached, ref_type: str | None = None) -> None:
        self.channel.error("limit_reached", exc.message, None, ref_type, exc.limit)

    async def _revoke_invite(self) -> None:
        """The creator draws a new invite; its connections in the world hear it."""
        registry, session, channel = self.lobby.registry, self.session, self.channel
        if not self.player.owner:
            channel.error("not_allowed", "only the world's creator may revoke its invite", None, "revoke_invite")
            return
        if not registry.access.is_private(session.name):
            channel.error("not_allowed", "this world is public: it has no invite to revoke", None, "revoke_invite")
            return
        try:
            invite = await registry.revoke_invite(session.name)
        except OSError:
            channel.error("internal", "the new invite could not be saved; the old link still works", None, "revoke_invite")
            return
        for player in list(session.players.values()):
            if player.owner:
                player.send(m.Invite(invite=invite))

    async def _offer(self, msg: m.RtcOffer) -> None:
        player, lobby, channel = self.player, self.lobby, self.channel
        if player.video is not None:  # a new offer replaces the old connection
            old, player.video = player.video, None
            await old.close()
        settings = lobby.config.encoder_settings(*player.video_size)
        try:  # the server's codec if the offer takes it, else one it takes (refused in words)
            settings = dataclasses.replace(settings, codec=choose_codec(msg.sdp, settings.codec))
        except RtcError as exc:
            channel.error("rtc_failed", str(exc), "sdp", "rtc_offer")
            return
        frames = self.session.frames

        def closed(video: VideoSink) -> None:
            # Still the player's video: it ended on its own, not by a new offer or leaving.
            if player.video is video:
                player.video = None
                channel.send(m.VideoEnded(reason=(video.end_reason or "the video closed")[: m.MAX_ERROR_CHARS]))

        try:
            video, sdp = await lobby.executors.media.open_video(
                settings, msg.sdp, lambda f: frames.on_encoded(player, f), closed, label=f"player {player.id}"
            )
        except RtcError as exc:  # the offer's fault, or the server's (MediaUnavailable)
            channel.error("rtc_failed", str(exc), None if isinstance(exc, MediaUnavailable) else "sdp", "rtc_offer")
            return
        if self.player is not player:  # left (or was displaced) while the offer was answered
            await video.close()
            return
        player.video = video
        channel.send(m.RtcAnswer(sdp=sdp))
        log.info("player %s: WebRTC answered (%s %dx%d@%d, %.1f Mbit/s)", player.id, settings.codec, settings.width,
                 settings.height, settings.fps, settings.bitrate / 1e6)

    # ------------------------------------------------------------------ leaving
    async def closed(self) -> None:
        self._give_seat_back()
        player, session = self.player, self.session
        if player is None:
            return
        self.player = None
        if self.token:
            self.lobby.live_tokens.pop(self.token, None)
            self.lobby.registry.remember(self.token, session.name, player.id, player.pose)
        await session.remove(player)

    def _give_seat_back(self) -> None:
        if self.seated:
            self.seated = False
            self.lobby.seats.give_back()

    async def displace(self) -> None:
        """Another connection resumes this player (its owner came back, e.g. after this
        connection froze): leave now, so the token's pose is there to resume, and close."""
        log.info("%s: player %s resumed on another connection; closing this one", self.channel.peer, self.player.id if self.player else "-")
        await self.closed()
        self._closing = asyncio.create_task(self.channel.close(CLOSE_POLICY, "resumed on another connection", flush=False))
