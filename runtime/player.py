"""A player: one WebSocket connection in one world, with its pose, input and video.

The player object lives on the event loop. Input messages update its *pending input*;
the session's frame clock takes the pending input once per frame
(:meth:`Player.take_input`) and applies it to the pose in the render thread, so input
reaches the picture on the very next frame.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from protocol import messages as m
from runtime.stream.video_sink import VideoSink
from runtime.world.camera import Cameras, Pose, quat_wxyz_to_matrix
from runtime.world.movement.motion import MoveInput

HEAD_POSITIONS_KEPT = 64  # head poses in flight between the frame clock and the encoder, and more


@dataclass(frozen=True)
class InputSnapshot:
    """What one frame applies to a player's pose.

    Attributes:
        move: movement for this frame (axes held, look deltas summed since the last frame),
            or None when a VR head pose replaces the pose instead.
        head_pose: the newest absolute head pose, or None.
        seq: the newest input/head_pose seq included (-1 before any).
        received_at: ``time.monotonic()`` when the *oldest* input not yet shown in a frame
            arrived, or None if nothing new arrived since the last frame. Motion-to-photon
            is measured from here.
    """

    move: MoveInput | None
    head_pose: Pose | None
    seq: int
    received_at: float | None


class Player:
    """One connected player.

    Args:
        player_id: unique id (also used by other players' avatars).
        name: display name.
        view: the client's display parameters from ``hello``.
        video_size: ``(width, height)`` of the video it receives (both eyes when stereo).
        send: queues a protocol message (or its encoded bytes) to this player's WebSocket (never blocks).
    """

    def __init__(
        self,
        player_id: str,
        name: str,
        view: m.View,
        video_size: tuple[int, int],
        pose: Pose,
        send: Callable[[m.Message | bytes], None],
    ) -> None:
        self.id = player_id
        self.name = name
        self.view = view
        self.video_size = video_size
        self.pose = pose
        self.send = send
        self.velocity = np.zeros(3, np.float32)
        self.blocked = False  # the latest move step was blocked (told to the client in frame_info)
        # Where recent head poses put the head, by their seq (collision may have stopped it
        # short): frame_info tells the client, which moves its VR rig to match.
        self.head_positions: collections.OrderedDict[int, tuple[float, float, float]] = collections.OrderedDict()
        # pending input (event loop side)
        self._axes = MoveInput()
        self._yaw_acc = 0.0
        self._pitch_acc = 0.0
        self._head: Pose | None = None
        self._seq = -1
        self._pending_since: float | None = None
        self._last_take = time.monotonic()
        # video (set by the stream layer)
        self.video: VideoSink | None = None
        self.owner = False  # the world's creator (set on joining): may revoke its invite
        # The last picture drawn, as (video, what its slot returned), and the view_key
        # it was drawn for: offered again while neither changes.
        self.last_view_key: tuple | None = None
        self.last_picture: tuple[object, object] = (None, None)
        # The scene alone (no avatars) as last drawn, per eye (I420 copies), and the view_key
        # it was drawn for: when only the avatars in view change, they are drawn on a copy of
        # it instead of rendering the scene again. None while alone in the world.
        self.scene_picture: tuple[tuple, list[np.ndarray]] | None = None
        self.render_failed_logged_at = -1e9  # monotonic s; the frame loop logs a failing view at most every few seconds
        # measurements
        self.mtp_ms: collections.deque[float] = collections.deque(maxlen=600)
        self.encode_ms: collections.deque[float] = collections.deque(maxlen=120)
        self.render_ms: collections.deque[float] = collections.deque(maxlen=120)
        self.sent_at: collections.deque[float] = collections.deque(maxlen=240)

    # ---- input (event loop) ----
    def on_input(self, msg: m.Input) -> None:
        """Record an ``input``: axes replace the held ones, look deltas add up until the next frame."""
        self._axes = MoveInput(
            forward=msg.forward, right=msg.right, up=msg.up, run=msg.run, fly=msg.fly
        )
        self._yaw_acc = _wrap(self._yaw_acc + msg.yaw_delta)
        self._pitch_acc = max(-math.pi, min(math.pi, self._pitch_acc + msg.pitch_delta))
        self._head = None
        self._mark(msg.seq)

    def on_head_pose(self, msg: m.HeadPose) -> None:
        """Record an absolute VR head pose (replaces movement input)."""
        c2w = np.eye(4, dtype=np.float32)
        c2w[:3, :3] = quat_wxyz_to_matrix(np.asarray(msg.orientation, np.float64))
        c2w[:3, 3] = msg.position
        self._head = Pose.from_c2w(c2w)
        self._axes = MoveInput()
        self._mark(msg.seq)

    def _mark(self, seq: int) -> None:
        self._seq = max(self._seq, seq)
        if self._pending_since is None:
            self._pending_since = time.monotonic()

    @property
    def input_seq(self) -> int:
        return self._seq

    def take_input(self) -> tuple[InputSnapshot, float]:
        """The input for the next frame and the seconds since the previous take."""
        now = time.monotonic()
        dt = min(now - self._last_take, 0.25)  # a stalled loop must not teleport players
        self._last_take = now
        a = self._axes
        move = None
        if self._head is None:
            move = MoveInput(a.forward, a.right, a.up, self._yaw_acc, self._pitch_acc, a.run, a.fly)
        snap = InputSnapshot(move, self._head, self._seq, self._pending_since)
        self._yaw_acc = self._pitch_acc = 0.0
        self._head = None
        self._pending_since = None
        return snap, dt

    def head_moved(self, seq: int) -> None:
        """The head pose ``seq`` was applied: remember where the head ended up (render thread)."""
        self.head_positions[seq] = tuple(float(x) for x in self.pose.position)
        while len(self.head_positions) > HEAD_POSITIONS_KEPT:
            self.head_positions.popitem(last=False)

    # ---- cameras ----
    @property
    def eye_size(self) -> tuple[int, int]:
        w, h = self.video_size
        return (w // 2, h) if self.view.stereo else (w, h)

    def view_key(self, scene_version: int) -> tuple:
        """What this player's picture depends on: equal keys give identical pictures
        (renderers are deterministic), so a player standing still need not be redrawn."""
        p = self.pose
        return (p.position.tobytes(), p.yaw, p.pitch, p.roll, self.eye_size, self.view.stereo,
                self.view.fov_y, self.view.ipd, scene_version)

    def cameras(self, pose: Pose | None = None) -> Cameras:
        """This player's cameras for ``pose``: one, or left and right eyes when stereo."""
        pose = pose or self.pose
        w, h = self.eye_size
        if self.view.stereo:
            return pose.stereo_cameras(w, h, self.view.fov_y, self.view.ipd)
        return pose.camera(w, h, self.view.fov_y)

    # ---- reporting ----
    def info(self) -> m.PlayerInfo:
        p = self.pose.position
        return m.PlayerInfo(id=self.id, name=self.name, position=(float(p[0]), float(p[1]), float(p[2])), yaw=float(self.pose.yaw))

    def pose_info(self) -> m.PoseInfo:
        p = self.pose
        return m.PoseInfo(
            position=tuple(float(x) for x in p.position), yaw=float(p.yaw), pitch=float(p.pitch), roll=float(p.roll)
        )

    def sent_fps(self, window_s: float = 2.0) -> float:
        """Frames sent per second over the last ``window_s`` seconds."""
        now = time.monotonic()
        recent = [t for t in self.sent_at if now - t <= window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-3)


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def percentile(values, q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, 0.0 when empty."""
    if not values:
        return 0.0
    return float(np.percentile(np.fromiter(values, float), q))
