"""The frame clock: every frame, every player's input moves them and every due view is
rendered and offered to the player's video.

Once per ``1 / fps`` seconds :meth:`FrameLoop.tick` takes every player's pending input,
then, in the render executor, moves every player and renders all due views as I420
pictures in one ``submit_video`` batch per image size (``runtime.world.render.video``;
stereo eyes are two cameras, stitched side by side), and offers each picture to its
player's :class:`~runtime.stream.video_sink.VideoSink`. A player standing still is offered
its last picture again. Encoded frames come back through :meth:`FrameLoop.on_encoded`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from protocol import messages as m
from runtime.metrics import ServerMetrics
from runtime.player import InputSnapshot, Player
from runtime.stall_watch import watch
from runtime.stream.video_sink import PictureSlot, VideoSink
from runtime.stream.video_track import EncodedFrame
from runtime.world.camera import Cameras
from runtime.world.render.avatars import Avatar, avatar_color, draw_avatars, visible_avatars
from runtime.world.render.i420 import i420_size
from runtime.world.render.video import PendingVideoFrames, stitch_i420

log = logging.getLogger("worldstream.session")

RENDER_FAILURE_LOG_S = 10.0  # a view that keeps failing logs its traceback this often


@dataclass
class RenderedTick:
    """What a tick's job in the render thread hands back to the event loop.

    Attributes:
        staged: player id -> the picture its video's ``offer()`` takes (None: its media
            worker is a whole ring behind); a player missing here got no picture.
        render_s: seconds spent drawing views, or None when every picture was repeated.
        started, done: ``time.monotonic()`` when the job started and finished.
    """

    staged: dict
    render_s: float | None
    started: float
    done: float


@dataclass(frozen=True)
class _ViewPlan:
    """What one player's picture depends on this tick.

    Attributes:
        scene_key: its view of the scene (``Player.view_key``): the scene is rendered again when it changes.
        seen: per eye, the other players in view (their poses and names): drawn on the scene.
        keep_scene: others are in the world: keep a copy of the scene alone, for drawing them again.
    """

    scene_key: tuple
    seen: tuple[tuple[Avatar, ...], ...]
    keep_scene: bool

    @property
    def key(self) -> tuple:
        return (self.scene_key, self.seen)


class FrameLoop:
    """Moves a session's players and streams their views, one frame at a time.

    Args:
        name: the world's name (for logs).
        world: the session's :class:`runtime.world.world.World`.
        players: the session's players by id (the live dict: who is due is read each tick).
        fps: frames per second.
        render_executor: where moving and rendering run (never on the event loop).
        metrics: the server's metrics.
        avatars: draw the other players into each player's picture (``--no-avatars``: False).
    """

    def __init__(
        self, name: str, world, players: dict[str, Player], fps: float, render_executor: Executor, metrics: ServerMetrics, avatars: bool = True
    ) -> None:
        self.name = name
        self.world = world
        self.players = players
        self.fps = fps
        self.render_executor = render_executor
        self.metrics = metrics
        self.avatars = avatars
        self._loop = asyncio.get_running_loop()
        # The stall watch (off unless WORLDSTREAM_STALL_WATCH_MS): each stage of a tick is
        # marked, and each player's encoded frames beat (a media worker that stops is a stall).
        self._watch = watch()
        self._key = f"frame {name}"
        self._beating: set[str] = set()  # players whose encoded frames the watch expects

    async def run(self) -> None:
        """Tick at ``fps`` until cancelled; a failing tick is logged and the clock carries on."""
        period = 1.0 / self.fps
        next_t = time.monotonic()
        try:
            while True:
                next_t += period
                try:
                    await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("world %r: frame failed", self.name)
                    await asyncio.sleep(0.5)
                delay = next_t - time.monotonic()
                if delay < -period:  # fell behind: start a fresh schedule instead of bursting
                    next_t = time.monotonic()
                    delay = 0.0
                self._watch.mark(self._key, "sleep until the next tick")
                await asyncio.sleep(max(delay, 0.0))
        finally:
            self._watch.forget(self._key)
            for pid in self._beating:
                self._watch.forget(f"video {pid}")
                self._watch.forget(f"offer {pid}")

    async def tick(self) -> None:
        """One frame: take input, move and render in the render executor, offer the pictures."""
        players = list(self.players.values())
        self._watch.mark(self._key, "take input")
        if not players:
            return
        taken_at = time.monotonic()
        takes = [(p, *p.take_input()) for p in players]
        # Each player's video as of now: a new offer may replace it while this tick renders.
        videos = {p.id: p.video for p in players if p.video is not None and p.video.ready}
        due = [p for p in players if p.id in videos]
        self._expect_frames(due)
        job = functools.partial(self._move_and_render, takes, players, due, videos)
        self._watch.mark(self._key, "queued for the render thread")
        rendered = await self._loop.run_in_executor(self.render_executor, job)
        resumed = time.monotonic()
        self._watch.mark(self._key, "offer")
        self._observe_render(rendered.render_s, due)
        self._offer(due, videos, rendered, {p.id: snap for p, snap, _ in takes}, taken_at)
        tick = self.metrics.tick_seconds
        tick.labels("queued").observe(rendered.started - taken_at)
        tick.labels("move_render").observe(rendered.done - rendered.started)
        tick.labels("resume").observe(resumed - rendered.done)
        tick.labels("offer").observe(time.monotonic() - resumed)

    # ------------------------------------------------------------------ in the render thread
    def _move_and_render(self, takes: list[tuple[Player, InputSnapshot, float]], players: list[Player], due: list[Player],
                         videos: dict[str, VideoSink]) -> RenderedTick:
        """The render executor's job for one tick: move every player, then draw the due views."""
        started = time.monotonic()
        mark = self._watch.mark
        mark(self._key, "move")
        for player, snap, dt in takes:
            self._move(player, snap, dt)
        # Read before rendering: if a chunk lands meanwhile, the next tick draws again.
        mark(self._key, "plan views")
        version = self.world.scene.version
        avatars = self._avatars(players)
        plans = {p.id: self._plan(p, version, avatars) for p in due}
        staged, overlays, groups = self._views_to_draw(due, videos, plans)
        start = time.perf_counter()
        mark(self._key, "render")
        done = self._render_views(self.world, groups, videos, staged, plans)
        mark(self._key, "draw avatars")
        done += self._overlay_views(overlays, videos, staged, plans)
        for player in done:
            player.last_picture = (videos[player.id], staged[player.id])
            player.last_view_key = plans[player.id].key
        rendered = sum(map(len, groups))
        pictures = self.metrics.pictures
        pictures.labels("repeated").inc(len(due) - len(overlays) - rendered)
        pictures.labels("avatars").inc(len(overlays))
        pictures.labels("rendered").inc(rendered)
        render_s = (time.perf_counter() - start) if groups or overlays else None
        mark(self._key, "rendered, waiting for the event loop")
        return RenderedTick(staged, render_s, started, time.monotonic())

    def _move(self, player: Player, snap: InputSnapshot, dt: float) -> None:
        """Apply one frame's input (``dt`` seconds of it) to ``player``: a VR head pose replaces
        the pose; otherwise the movement is stepped (also when idle: walking settles onto the
        ground). A failure is logged and leaves the player where it was."""
        try:
            if snap.head_pose is not None:
                player.pose = self.world.move_head(player.pose, snap.head_pose)
                player.head_moved(snap.seq)
                player.velocity = np.zeros(3, np.float32)
                player.blocked = False
            elif snap.move is not None:
                old = player.pose.position.copy()
                moved = self.world.advance(player.pose, snap.move, dt)
                player.pose, player.blocked = moved.pose, moved.blocked
                player.velocity = ((player.pose.position - old) / max(dt, 1e-3)).astype(np.float32)
        except Exception:
            log.exception("world %r: moving player %s failed", self.name, player.id)

    @staticmethod
    def _views_to_draw(
        due: list[Player], videos: dict[str, VideoSink], plans: dict[str, "_ViewPlan"]
    ) -> tuple[dict, list[Player], list[list[Player]]]:
        """How each due view gets its picture: ``(staged, overlays, groups)``. A player with
        nothing changed in view (and the same video) gets its last picture again, in
        ``staged`` (player id -> what its video's ``offer()`` takes); one whose scene view is
        unchanged but whose players in view moved is in ``overlays`` (they are drawn on its
        last scene); the rest are in ``groups``, one list per eye size, to render."""
        staged = {}
        overlays: list[Player] = []
        groups: dict[tuple[int, int], list[Player]] = {}
        for player in due:
            plan = plans[player.id]
            last_video, last_staged = player.last_picture
            if plan.key == player.last_view_key and last_video is videos[player.id] and last_staged is not None:
                staged[player.id] = last_staged  # nothing in view changed: the same picture again
            elif player.scene_picture is not None and player.scene_picture[0] == plan.scene_key:
                overlays.append(player)  # only the players in view moved: draw them on the scene again
            else:
                groups.setdefault(player.eye_size, []).append(player)
        return staged, overlays, list(groups.values())

    def _expect_frames(self, due: list[Player]) -> None:
        """The stall watch expects encoded frames from the due players' videos only: one
        that left or whose video restarts is forgotten until its next encoded frame."""
        if not self._watch.enabled:
            return
        ids = {p.id for p in due}
        for pid in self._beating - ids:
            self._watch.forget(f"video {pid}")
            self._watch.forget(f"offer {pid}")
        self._beating &= ids

    # ------------------------------------------------------------------ back on the event loop
    def _observe_render(self, render_s: float | None, due: list[Player]) -> None:
        """Record how long this tick's drawing took (None: nothing was drawn)."""
        if render_s is None:
            return
        self.metrics.render_seconds.observe(render_s)
        for player in due:
            player.render_ms.append(render_s * 1e3)

    def _offer(self, due: list[Player], videos: dict[str, VideoSink], rendered: RenderedTick,
               snaps: dict[str, InputSnapshot], taken_at: float) -> None:
        """Offer each due player's picture to its video, stamped with the input it shows."""
        for player in due:
            if player.id not in rendered.staged:  # its view failed to render (counted): it gets the next one
                continue
            picture = rendered.staged[player.id]
            if picture is None:  # the media worker is a whole ring behind: it gets the next one
                self.metrics.frames_dropped.labels("worker_behind").inc()
                continue
            snap = snaps[player.id]
            videos[player.id].offer(picture, taken_at, snap.seq, snap.received_at, rendered.render_s or 0.0)
            if self._watch.enabled:
                self._watch.beat(f"offer {player.id}")

    def _avatars(self, players: list[Player]) -> dict[str, Avatar]:
        """Every player as the others see them, by player id (none with ``--no-avatars``)."""
        if not self.avatars:
            return {}
        return {
            p.id: Avatar(tuple(float(x) for x in p.pose.position), float(p.pose.yaw), p.name, avatar_color(p.id))
            for p in players
        }

    def _plan(self, player: Player, version: int, avatars: dict[str, Avatar]) -> "_ViewPlan":
        """What ``player``'s picture depends on this tick: its view of the scene, and the
        other players in view of each eye (one moving elsewhere changes nothing here)."""
        others = [a for pid, a in avatars.items() if pid != player.id]
        seen: tuple[tuple[Avatar, ...], ...] = ()
        if others:
            c = player.cameras()
            seen = tuple(tuple(visible_avatars(c.width, c.height, c.w2c[e], c.K[e], others)) for e in range(len(c)))
        return _ViewPlan(player.view_key(version), seen, keep_scene=bool(others))

    def _overlay_views(self, members: list[Player], videos: dict, staged: dict, plans: dict[str, "_ViewPlan"]) -> list[Player]:
        """Pictures for players whose scene is unchanged since their last render: the other
        players in view drawn on a copy of it (no render). Runs in the render thread."""
        done = []
        for p in members:
            eyes = p.scene_picture[1]
            c = p.cameras()
            slot = videos[p.id].slot(i420_size(c.width * len(c), c.height))
            try:
                if len(eyes) == 1 and slot.buffer is not None:  # straight into the video's buffer
                    np.copyto(slot.buffer, eyes[0])
                    pictures = [slot.buffer]
                else:
                    pictures = [e.copy() for e in eyes]
                for eye, picture in enumerate(pictures):
                    draw_avatars(picture, c.width, c.height, c.w2c[eye], c.K[eye], plans[p.id].seen[eye])
                staged[p.id] = slot.fill(pictures[0] if len(pictures) == 1 else stitch_i420(pictures, c.width, c.height))
                done.append(p)
            except Exception:
                slot.give_up()
                self._render_failed(p)
        return done

    def _render_views(self, world, groups: list[list[Player]], videos: dict, staged: dict, plans: dict[str, "_ViewPlan"]) -> list[Player]:
        """Render every group's views (one batch per image size) into ``staged``; returns the
        players that got a picture (a player missing from ``staged`` got none). Runs in the
        render thread.

        A batch that fails is rendered again one view at a time, so a view the renderer
        cannot draw costs that player this tick's picture, never the other players' (nor the
        session's: the frame clock carries on).
        """
        done: list[Player] = []
        retry: list[Player] = []

        def failed(members: list[Player]) -> None:
            if len(members) > 1:
                retry.extend(members)
            else:
                self._render_failed(members[0])

        # Queue every image size's batch first (GPU renderers return at once), then
        # collect: one batch's copy to the host overlaps the next one's rendering.
        batches = []
        for members in groups:
            try:
                batches.append((members, *self._submit(world, members, videos)))
            except Exception:
                failed(members)
        for members, cams, slots, pending in batches:
            try:
                done += self._collect(members, cams, slots, pending, staged, plans)
            except Exception:
                failed(members)
        for player in retry:  # alone, so one bad view fails only itself
            try:
                done += self._collect([player], *self._submit(world, [player], videos), staged, plans)
            except Exception:
                self._render_failed(player)
        return done

    @staticmethod
    def _submit(world, members: list[Player], videos: dict[str, VideoSink]):
        """Queue one batch: ``(cameras per member, picture slots by player id, pending frames)``.

        A slot with a buffer (a media worker's page-locked ring) gets a one-camera view's
        picture written there by the renderer; the others are copied in from the
        renderer's buffer when the slot is filled (stereo: eyes stitched first).
        """
        cams = [p.cameras() for p in members]
        into: list[np.ndarray | None] = []
        slots: dict[str, PictureSlot] = {}
        try:
            for p, c in zip(members, cams):
                slot = slots[p.id] = videos[p.id].slot(i420_size(c.width * len(c), c.height))
                into.extend([slot.buffer] if len(c) == 1 else [None] * len(c))
            return cams, slots, world.submit_video(Cameras.concat(cams), into)
        except Exception:
            for slot in slots.values():
                slot.give_up()
            raise

    @staticmethod
    def _collect(
        members, cams, slots: dict[str, PictureSlot], pending: PendingVideoFrames, staged: dict, plans: dict[str, "_ViewPlan"]
    ) -> list[Player]:
        """Wait for one batch; keep each member's scene alone (when others are in the world),
        draw the other players in view into its picture and fill its slot; on failure give
        the slots up."""
        try:
            frames = pending.wait()
        except Exception:
            for slot in slots.values():
                slot.give_up()
            raise
        i = 0
        for p, c in zip(members, cams):
            plan = plans[p.id]
            eyes = [frames.picture(i + eye) for eye in range(len(c))]
            p.scene_picture = (plan.scene_key, [e.copy() for e in eyes]) if plan.keep_scene else None
            for eye, seen in enumerate(plan.seen):
                if seen:
                    draw_avatars(eyes[eye], c.width, c.height, c.w2c[eye], c.K[eye], seen)
            staged[p.id] = slots[p.id].fill(frames.side_by_side(i, len(c)))
            i += len(c)
        return members

    def _render_failed(self, player: Player) -> None:
        """Count a view that could not be rendered this tick; log it (at most once per player per 10 s)."""
        self.metrics.frames_dropped.labels("render_failed").inc()
        now = time.monotonic()
        if now - player.render_failed_logged_at >= RENDER_FAILURE_LOG_S:
            player.render_failed_logged_at = now
            log.exception("world %r: rendering player %s's view failed; it misses this frame", self.name, player.id)

    def on_encoded(self, player: Player, frame: EncodedFrame) -> None:
        """A frame of ``player``'s video went to aiortc: report it and measure."""
        now = time.monotonic()
        if self._watch.enabled:
            self._watch.beat(f"video {player.id}")
            self._beating.add(player.id)
        player.sent_at.append(now)
        player.encode_ms.append(frame.encode_s * 1e3)
        self.metrics.frames_sent.inc()
        if frame.replaced:
            self.metrics.frames_dropped.labels("replaced").inc(frame.replaced)
        self.metrics.encode_seconds.observe(frame.encode_s)
        mtp_ms = -1.0
        if frame.mtp_s is not None:
            mtp_ms = frame.mtp_s * 1e3
            player.mtp_ms.append(mtp_ms)
            self.metrics.motion_to_photon_seconds.observe(frame.mtp_s)
        player.send(
            m.FrameInfo(
                rtp_timestamp=frame.rtp_timestamp, input_seq=frame.input_seq, server_ms=time.time() * 1e3, mtp_ms=mtp_ms,
                blocked=player.blocked, head_position=player.head_positions.get(frame.input_seq),
            )
        )
