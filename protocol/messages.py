"""Every worldstream wire message, defined once.

Each message is a dataclass with a ``TYPE`` (its ``type`` string on the wire) and a
``SENDER`` (``"client"``, ``"server"`` or ``"both"``). Field annotations give the wire
types; :func:`spec` metadata gives the limits. :mod:`protocol.codec` validates against
exactly these definitions, :mod:`protocol.typescript` turns them into TypeScript, and
``protocol/PROTOCOL.md`` describes them in prose.

Supported field types: ``int``, ``float``, ``bool``, ``str``, ``bytes``, ``X | None``,
``list[X]``, fixed-length ``tuple[X, ...]`` (vectors), ``Literal[...]`` and nested
structs (dataclasses registered with :func:`struct`).

Conventions: OpenCV cameras (+x right, +y down, +z forward), the world frame is the
first camera's frame (world +y points **down**, up is ``(0, -1, 0)``), poses are given
as eye position + yaw/pitch/roll or as a quaternion (w, x, y, z) rotating camera axes
into world axes. Units: metres, radians, milliseconds (``*_ms``), pixels.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from .errors import ProtocolError

PROTOCOL_VERSION = 1
"""Bumped on every incompatible change; checked in ``hello``."""

# ---- size limits (bytes) ----
MAX_MESSAGE_BYTES = 64 * 1024
"""Largest encoded message of any type except ``hello``."""
MAX_HELLO_BYTES = 8 * 1024 * 1024
"""Largest encoded ``hello`` (it may carry a start image)."""
MAX_START_IMAGE_BYTES = 6 * 1024 * 1024
"""Largest PNG/JPEG start image in a ``new_world`` request."""
MAX_START_IMAGE_PIXELS = 4096 * 4096
"""Most pixels (width × height, read from the image's header before decoding) in a start image."""
MIN_START_IMAGE_SIDE = 16
"""Least width and height of a start image, in pixels."""

# ---- cost limits for what a client sends (checked before unpacking) ----
MAX_CLIENT_VALUES = 512
"""Most msgpack values (map keys and values, array items, containers) in one client message;
the largest message a client sends today holds about 40."""
MAX_CLIENT_DEPTH = 8
"""Deepest nesting of maps/arrays in one client message (today's messages nest 2 deep)."""

# ---- text limits ----
MAX_CAPTION_CHARS = 500
MAX_SDP_CHARS = 60_000
MAX_CANDIDATE_CHARS = 1_024
MAX_ERROR_CHARS = 1_000
MAX_PLAYER_NAME_CHARS = 32
PLAYER_NAME_PATTERN = r"^[A-Za-z0-9 _.\-]{1,32}$"
WORLD_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_URL_CHARS = 2048
RESUME_TOKEN_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"
ACCESS_KEY_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"
"""Invites and owner keys: random URL-safe text (32 characters from the server)."""
PLAYER_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

# ---- numeric limits ----
MAX_SEQ = 2**53 - 1
"""Sequence numbers and ids stay exact in JavaScript numbers."""
MAX_COORD = 1e5
"""Largest absolute world coordinate in metres."""
MAX_LOOK_DELTA = math.pi
"""Largest absolute yaw/pitch change in one ``input`` (radians)."""
MAX_SEED = 2**32 - 1
MIN_VIEW_SIZE = 16
MAX_VIEW_SIZE = 4096
MIN_FOV_Y = 0.1
MAX_FOV_Y = 3.0
MAX_IPD = 0.2
MAX_EXPLORED_CELLS = 65_536
MAX_PLAYERS_LISTED = 256
MAX_LOCAL_SPLATS = 16_000_000
"""Most Gaussians a client may ask to hold locally (``splats.max_splats``)."""
MAX_LOCAL_FAR_SPLATS = 2_000_000
"""Most far-field Gaussians a client may ask to hold locally (``splats.max_far_splats``)."""
MAX_SPLAT_PIECE_BYTES = 56 * 1024
"""Largest ``.spz`` payload of one ``splat_piece`` (the message stays under MAX_MESSAGE_BYTES)."""
MAX_SPLATS_IN_FLIGHT = 4
"""``splat_piece`` messages sent and not yet acknowledged, per player: the feed's flow control."""

# ---- rate limits (per connection, token buckets: sustained rate per second, burst) ----
INPUT_RATE_HZ = 120
"""``input`` and ``head_pose`` together; sustained rate the server accepts."""
INPUT_BURST = 60
OTHER_RATE_HZ = 20
"""Every other message type together."""
OTHER_BURST = 40
CAPTION_RATE_HZ = 1
CAPTION_BURST = 3
SPLAT_RATE_HZ = 100
"""``splat_piece`` messages the server sends a player per second at most, so ``splat_ack`` (one per
piece) has a bucket of its own at this rate."""

EXPLORED_STATES = {"unknown": 0, "generated": 1, "visited": 2}
"""Cell states in ``explored`` messages."""

ERROR_CODES = {
    "bad_message": "not a msgpack map with a string 'type' (or not a binary WebSocket frame)",
    "unknown_type": "the 'type' names no message this side accepts",
    "missing_field": "a required field is absent",
    "bad_field": "a field has the wrong type, is out of range or malformed",
    "too_large": "the message exceeds its size limit",
    "rate_limited": "too many messages; the excess was dropped (ref_type: the type of the dropped message that triggered the report)",
    "not_joined": "the message needs a completed hello first",
    "no_rtc_offer": "an ice_candidate came before any rtc_offer on this connection (or after its video ended)",
    "already_joined": "a second hello on one connection",
    "version_mismatch": "protocol_version differs from the server's; the connection closes",
    "world_not_found": "no world of that name",
    "world_exists": "a new world was requested under a name already taken",
    "bad_resume_token": "the resume token is unknown or expired: sent right after the welcome, which has resumed false (the player starts at the spawn pose)",
    "rtc_failed": "the WebRTC offer could not be answered",
    "server_busy": "the server cannot take more players",
    "invite_required": "the world is private: the hello needs its current invite (a revoked link no longer works)",
    "not_allowed": "only a world's creator may do that (revoke_invite, on a private world)",
    "limit_reached": "a server quota was reached ('limit' names it; docs/server.md lists them); what it refused did not happen",
    "internal": "the server failed to handle the message (it carries on)",
}
"""Every ``error.code`` with its meaning."""

_FieldMeta = dict[str, Any]


def spec(
    default: Any = dataclasses.MISSING,
    *,
    min: float | None = None,
    max: float | None = None,
    max_len: int | None = None,
    pattern: str | None = None,
    unit: str = "",
    doc: str = "",
    factory: Any = dataclasses.MISSING,
) -> Any:
    """A field with wire limits.

    ``min``/``max`` bound numbers (each element of a vector or list); ``max_len`` bounds
    strings (characters), bytes (bytes) and lists (items); ``pattern`` is a regular
    expression a string must match in full; ``unit`` and ``doc`` feed the spec and
    generated TypeScript comments.
    """
    meta: _FieldMeta = {"min": min, "max": max, "max_len": max_len, "pattern": pattern, "unit": unit, "doc": doc}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


MESSAGES: dict[str, type] = {}
"""``type`` string -> message class, in definition order."""
STRUCTS: list[type] = []
"""Nested structs used by messages, in definition order."""


def message(type_: str, sender: Literal["client", "server", "both"]):
    """Register a dataclass as the message ``type_`` sent by ``sender``."""

    def register(cls):
        cls = dataclass(kw_only=True)(cls)
        cls.TYPE = type_
        cls.SENDER = sender
        if type_ in MESSAGES:
            raise ValueError(f"message type {type_!r} defined twice")
        MESSAGES[type_] = cls
        return cls

    return register


def struct(cls):
    """Register a dataclass used as a nested object inside messages."""
    cls = dataclass(kw_only=True)(cls)
    STRUCTS.append(cls)
    return cls


Vec3 = tuple[float, float, float]
Quat = tuple[float, float, float, float]


class Message:
    """Base of every message. ``TYPE`` is the wire ``type``; ``SENDER`` who may send it."""

    TYPE: ClassVar[str]
    SENDER: ClassVar[str]

    def check(self) -> None:
        """Cross-field checks beyond per-field limits; raises ``ProtocolError``."""


# =====================================================================================
# Nested structs
# =====================================================================================


@struct
class View:
    """How the client displays the stream. The server renders at its own configured
    resolution unless the client asks for less; the size actually used is in ``welcome``."""

    width: int = spec(1280, min=MIN_VIEW_SIZE, max=MAX_VIEW_SIZE, unit="px", doc="display width (with stereo: both eyes side by side)")
    height: int = spec(720, min=MIN_VIEW_SIZE, max=MAX_VIEW_SIZE, unit="px", doc="display height")
    fov_y: float = spec(math.radians(60.0), min=MIN_FOV_Y, max=MAX_FOV_Y, unit="rad", doc="vertical field of view")
    stereo: bool = spec(False, doc="render left and right eyes side by side (VR)")
    ipd: float = spec(0.063, min=0.0, max=MAX_IPD, unit="m", doc="distance between the eyes (stereo only)")


@struct
class NewWorld:
    """A request to create a world."""

    name: str | None = spec(None, pattern=WORLD_NAME_PATTERN, doc="world name; the server picks one when absent")
    seed: int | None = spec(None, min=0, max=MAX_SEED, doc="generator seed; random when absent")
    caption: str = spec("", max_len=MAX_CAPTION_CHARS, doc="text describing the world")
    start_image: bytes | None = spec(
        None,
        max_len=MAX_START_IMAGE_BYTES,
        unit="bytes",
        doc="PNG or JPEG image the world starts from (its first frame); at most MAX_START_IMAGE_PIXELS pixels, at least "
        "MIN_START_IMAGE_SIDE on each side",
    )
    start_fov_y: float | None = spec(
        None, min=MIN_FOV_Y, max=MAX_FOV_Y, unit="rad", doc="vertical field of view of start_image; absent: from its EXIF focal length, else this hello's view.fov_y"
    )
    start_depth: bytes | None = spec(
        None, max_len=MAX_START_IMAGE_BYTES, unit="bytes",
        doc="depth of start_image: 16-bit greyscale PNG in millimetres, 0 = sky, at most MAX_START_IMAGE_PIXELS pixels "
        "(the whole hello stays within MAX_HELLO_BYTES); absent: the server's depth model estimates it",
    )
    visibility: Literal["public", "private"] = spec(
        "public",
        doc="public: listed in /worlds, anyone may join; private: unlisted, joined only with its invite (welcome.invite)",
    )


@struct
class PoseInfo:
    """A player's pose: eye position and head angles (see ``runtime.world.camera.Pose``)."""

    position: Vec3 = spec(min=-MAX_COORD, max=MAX_COORD, unit="m", doc="eye position in world coordinates")
    yaw: float = spec(0.0, unit="rad", doc="about world up; 0 faces +z, positive turns right (toward +x)")
    pitch: float = spec(0.0, unit="rad", doc="positive looks up")
    roll: float = spec(0.0, unit="rad", doc="head roll (VR)")


@struct
class ServerInfo:
    """What the server streams and runs."""

    version: str = spec(doc="worldstream version")
    fps: int = spec(unit="1/s", doc="video frame rate")
    width: int = spec(unit="px", doc="video width (both eyes when stereo)")
    height: int = spec(unit="px", doc="video height")
    codec: Literal["h264", "vp8"] = spec(doc="the server's video codec; a player whose offer does not accept it gets the other one (the rtc_answer says which)")
    bitrate: int = spec(unit="bit/s", doc="most video bits per second (H.264 at constant quality sends less where the picture allows)")
    generator: str = spec(doc="generator name")
    renderer: str = spec(doc="renderer name")
    explored_cell_size: float = spec(unit="m", doc="edge of one explored-map cell")


@struct
class SkyInfo:
    """The world's sky (``runtime.world.sky.Sky``): a client that renders locally draws the
    same background as the server's frames. Colours are RGB in [0, 1]."""

    zenith: Vec3 = spec(min=0.0, max=1.0, doc="colour straight up")
    horizon: Vec3 = spec(min=0.0, max=1.0, doc="colour at the horizon")
    ground: Vec3 = spec(min=0.0, max=1.0, doc="colour below the horizon")
    sun_direction: Vec3 = spec(min=-1.0, max=1.0, doc="towards the sun, world coordinates (normalised by the reader)")
    sun_color: Vec3 = spec(min=0.0, max=1.0, doc="glow added around the sun")


@struct
class PlayerInfo:
    """A player as others see it (avatars, minimap)."""

    id: str = spec(pattern=PLAYER_ID_PATTERN)
    name: str = spec(max_len=MAX_PLAYER_NAME_CHARS)
    position: Vec3 = spec(min=-MAX_COORD, max=MAX_COORD, unit="m")
    yaw: float = spec(0.0, unit="rad")


# =====================================================================================
# Client -> server
# =====================================================================================


@message("hello", "client")
class Hello(Message):
    """First message on a connection: join a world (``world``) or create one (``new_world``)."""

    protocol_version: int = spec(min=0, max=MAX_SEQ, doc="must equal PROTOCOL_VERSION")
    player_name: str = spec("player", pattern=PLAYER_NAME_PATTERN, max_len=MAX_PLAYER_NAME_CHARS)
    world: str | None = spec(None, pattern=WORLD_NAME_PATTERN, doc="name of a world to join")
    new_world: NewWorld | None = spec(None, doc="create a world instead of joining one")
    resume_token: str | None = spec(None, pattern=RESUME_TOKEN_PATTERN, doc="from an earlier welcome: get your pose back")
    view: View = spec(factory=View, doc="how the client displays the stream")
    invite: str | None = spec(None, pattern=ACCESS_KEY_PATTERN, doc="joining a private world: its invite, from the share link")
    owner_key: str | None = spec(
        None, pattern=ACCESS_KEY_PATTERN, doc="from the welcome that created the world: proves you made it (join without invite, revoke it)"
    )

    def check(self) -> None:
        if (self.world is None) == (self.new_world is None):
            raise ProtocolError("bad_field", "give exactly one of 'world' (join) and 'new_world' (create)", "world")
        image = self.new_world.start_image if self.new_world else None
        if image is not None and not (image.startswith(b"\x89PNG\r\n\x1a\n") or image.startswith(b"\xff\xd8\xff")):
            raise ProtocolError("bad_field", "start_image must be PNG or JPEG bytes", "new_world.start_image")
        depth = self.new_world.start_depth if self.new_world else None
        if depth is not None and image is None:
            raise ProtocolError("bad_field", "start_depth needs a start_image", "new_world.start_depth")
        if depth is not None and not depth.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ProtocolError("bad_field", "start_depth must be a 16-bit greyscale PNG (millimetres)", "new_world.start_depth")


@message("input", "client")
class Input(Message):
    """Movement and look input; the latest one wins. Send up to INPUT_RATE_HZ while keys are held
    or the mouse moves, and once with zero axes when they are released."""

    seq: int = spec(min=0, max=MAX_SEQ, doc="increasing per connection; echoed in frame_info.input_seq")
    t_ms: float = spec(0.0, min=-1e15, max=1e15, unit="ms", doc="client clock when sampled")
    forward: float = spec(0.0, min=-1.0, max=1.0, doc="held: +1 walks forward along the view's yaw")
    right: float = spec(0.0, min=-1.0, max=1.0, doc="held: +1 strafes right")
    up: float = spec(0.0, min=-1.0, max=1.0, doc="held: +1 rises (fly mode only)")
    yaw_delta: float = spec(0.0, min=-MAX_LOOK_DELTA, max=MAX_LOOK_DELTA, unit="rad", doc="turn right by this much, applied once")
    pitch_delta: float = spec(0.0, min=-MAX_LOOK_DELTA, max=MAX_LOOK_DELTA, unit="rad", doc="look up by this much, applied once")
    run: bool = spec(False, doc="run (4 m/s) instead of walking (1.5 m/s)")
    fly: bool = spec(
        False,
        doc="fly mode: 6 m/s along the view, no gravity. When it ends, a player comes down onto the known "
        "ground under them or within 3 m around them; over space with no known ground that near, it keeps "
        "its height until it walks onto some",
    )


@message("head_pose", "client")
class HeadPose(Message):
    """Absolute VR head pose; replaces the player's pose, with collision: walls stop the head
    (it slides along them, as in fly mode) and there is no gravity."""

    seq: int = spec(min=0, max=MAX_SEQ, doc="as for input (the two share one sequence)")
    t_ms: float = spec(0.0, min=-1e15, max=1e15, unit="ms", doc="client clock")
    position: Vec3 = spec(min=-MAX_COORD, max=MAX_COORD, unit="m", doc="head (between the eyes), world coordinates")
    orientation: Quat = spec(doc="unit quaternion (w, x, y, z), camera-to-world, OpenCV axes; its norm must lie in [0.9, 1.1]")

    def check(self) -> None:
        norm = math.sqrt(sum(c * c for c in self.orientation))
        if not 0.9 <= norm <= 1.1:
            raise ProtocolError("bad_field", f"orientation must be a unit quaternion, norm is {norm:.3g}", "orientation")


@message("rtc_offer", "client")
class RtcOffer(Message):
    """A WebRTC SDP offer receiving one video track; the server answers with ``rtc_answer``."""

    sdp: str = spec(max_len=MAX_SDP_CHARS)


@message("ice_candidate", "both")
class IceCandidate(Message):
    """A trickled ICE candidate (``candidate`` empty = end of candidates). The server puts all
    of its candidates in its answer and sends none."""

    candidate: str = spec(max_len=MAX_CANDIDATE_CHARS, doc="the `candidate:…` attribute without `a=`; empty = end of candidates")
    sdp_mid: str | None = spec(None, max_len=64)
    sdp_mline_index: int | None = spec(None, min=0, max=64)


@message("caption", "client")
class Caption(Message):
    """Text describing what to generate next in this world."""

    text: str = spec(max_len=MAX_CAPTION_CHARS, doc="what to generate next in this world, for every player in it")


@message("revoke_invite", "client")
class RevokeInvite(Message):
    """The creator of a private world makes its invite (and every link carrying it) useless;
    the server answers ``invite`` with the new one. Players already in the world stay."""


@message("ping", "client")
class Ping(Message):
    """Round-trip probe; answered by ``pong`` with the same id."""

    id: int = spec(min=0, max=MAX_SEQ, doc="echoed in the pong")
    t_ms: float = spec(0.0, min=-1e15, max=1e15, unit="ms", doc="client clock, echoed back")


@message("splats", "client")
class Splats(Message):
    """Ask for the world's Gaussians to render locally (or stop): the server sends
    ``splat_piece`` messages, nearest and in-view chunks first, new chunks as they land, never
    holding more than ``max_splats`` at the client (it sends ``splat_forget`` to make room)."""

    enabled: bool = spec(doc="true: send the splats near me; false: stop (what was sent is forgotten)")
    max_splats: int = spec(2_000_000, min=0, max=MAX_LOCAL_SPLATS, doc="the client's memory budget, in Gaussians")
    max_far_splats: int = spec(
        0, min=0, max=MAX_LOCAL_FAR_SPLATS,
        doc="budget for the far field (splat_piece with layer 'far', drawn behind the scene), in Gaussians; "
        "0: none (clients that cannot draw it leave it out)",
    )


@message("splat_ack", "client")
class SplatAck(Message):
    """A ``splat_piece`` arrived: the server sends at most MAX_SPLATS_IN_FLIGHT unacknowledged."""

    id: int = spec(min=0, max=MAX_SEQ, doc="the piece's id")


# =====================================================================================
# Server -> client
# =====================================================================================


@message("welcome", "server")
class Welcome(Message):
    """The answer to ``hello``: who you are and what you see."""

    player_id: str = spec(pattern=PLAYER_ID_PATTERN)
    resume_token: str = spec(pattern=RESUME_TOKEN_PATTERN, doc="send in a later hello to get this pose back")
    world: str = spec(pattern=WORLD_NAME_PATTERN)
    seed: int = spec(min=0, max=MAX_SEED)
    caption: str = spec("", max_len=MAX_CAPTION_CHARS)
    pose: PoseInfo = spec(doc="spawn pose, or the resumed one")
    resumed: bool = spec(False)
    server: ServerInfo = spec()
    notice: str = spec("", max_len=MAX_ERROR_CHARS, doc="something to tell the player about this world, for people (empty: nothing)")
    visibility: Literal["public", "private"] = spec("public", doc="public worlds are listed in /worlds; private ones need an invite")
    invite: str | None = spec(
        None,
        pattern=ACCESS_KEY_PATTERN,
        doc="private worlds, for share links (?world=NAME&invite=INVITE): the current invite to the creator, to others the one they joined with",
    )
    owner_key: str | None = spec(
        None, pattern=ACCESS_KEY_PATTERN, doc="to the world's creator only: keep it, and send it as hello.owner_key to be recognised again"
    )
    sky: SkyInfo | None = spec(None, doc="the world's sky, for clients that render the splats themselves (null: the default sky)")


@message("redirect", "server")
class Redirect(Message):
    """The answer to ``hello`` when another server process has the world open (servers run
    with ``--ray`` share worlds: docs/scale.md). Connect to ``url`` and send the same hello
    there; this server closes the connection after this message."""

    url: str = spec(max_len=MAX_URL_CHARS, doc="that server's base URL (http(s)://host:port); its WebSocket is url + /ws")
    world: str = spec(pattern=WORLD_NAME_PATTERN, doc="the world the hello asked for")


@message("invite", "server")
class Invite(Message):
    """A private world's new invite after ``revoke_invite``, to its creator's connections only."""

    invite: str = spec(pattern=ACCESS_KEY_PATTERN, doc="the new invite; links with the old one no longer admit anyone")


@message("rtc_answer", "server")
class RtcAnswer(Message):
    """The answer to ``rtc_offer``, with all of the server's ICE candidates inside. Its video
    codec is the server's (``welcome.server.codec``) when the offer accepts it, else the other
    one the server can send that the offer accepts; an offer accepting neither H.264 nor VP8
    gets ``rtc_failed`` naming the codecs it offered."""

    sdp: str = spec(max_len=MAX_SDP_CHARS)


@message("video_ended", "server")
class VideoEnded(Message):
    """This player's video stopped without a new ``rtc_offer`` replacing it: the peer connection
    failed or was closed (by the network, or by the client closing its own), or the process
    streaming it stopped. The WebSocket and the player carry on: send a new ``rtc_offer`` to
    get video again."""

    reason: str = spec(max_len=MAX_ERROR_CHARS, doc="why, for people")


@message("caption_changed", "server")
class CaptionChanged(Message):
    """A player set the world's caption (``caption``): sent to every player in the world, the
    one who set it included. Generation uses it from now on; ``welcome.caption`` is the one
    in use when a player joins."""

    text: str = spec(max_len=MAX_CAPTION_CHARS, doc="the caption now in use")
    player_id: str = spec(pattern=PLAYER_ID_PATTERN, doc="who set it")
    player_name: str = spec("", max_len=MAX_PLAYER_NAME_CHARS)


@message("pong", "server")
class Pong(Message):
    """The answer to ``ping``."""

    id: int = spec(min=0, max=MAX_SEQ)
    t_ms: float = spec(0.0, unit="ms", doc="the ping's t_ms")
    server_ms: float = spec(0.0, unit="ms", doc="server wall clock (Unix epoch)")


@message("generation_requested", "server")
class GenerationRequested(Message):
    """A region of the world was scheduled for generation."""

    job_id: int = spec(min=0, max=MAX_SEQ)
    center: Vec3 = spec(unit="m")
    radius: float = spec(min=0.0, unit="m")
    requested_by: list[str] = spec(factory=list, max_len=MAX_PLAYERS_LISTED, doc="player ids")


@message("generation_progress", "server")
class GenerationProgress(Message):
    """How far a generation job has come."""

    job_id: int = spec(min=0, max=MAX_SEQ)
    fraction: float = spec(min=0.0, max=1.0)
    message: str = spec("", max_len=MAX_ERROR_CHARS)


@message("generation_done", "server")
class GenerationDone(Message):
    """A generated region landed in the scene; it is visible from the next frame on."""

    job_id: int = spec(min=0, max=MAX_SEQ)
    center: Vec3 = spec(unit="m")
    radius: float = spec(min=0.0, unit="m")
    gaussians: int = spec(0, min=0, doc="Gaussians added")


@message("generation_failed", "server")
class GenerationFailed(Message):
    """A generation job ended without adding anything."""

    job_id: int = spec(min=0, max=MAX_SEQ)
    error: str = spec("", max_len=MAX_ERROR_CHARS)
    cancelled: bool = spec(False, doc="the job was dropped because no player needs it any more: not an error")


@message("player_joined", "server")
class PlayerJoined(Message):
    """Another player joined this world."""

    player: PlayerInfo = spec()


@message("player_left", "server")
class PlayerLeft(Message):
    """Another player left this world."""

    id: str = spec(pattern=PLAYER_ID_PATTERN)
    name: str = spec("", max_len=MAX_PLAYER_NAME_CHARS)


@message("players", "server")
class Players(Message):
    """Everyone in the world, including you, about 10 times a second."""

    players: list[PlayerInfo] = spec(factory=list, max_len=MAX_PLAYERS_LISTED)


@message("explored", "server")
class Explored(Message):
    """Explored-map cells over the ground plane (x, z). Cell (i, j) spans
    x in [i, i+1) * cell_size and z in [j, j+1) * cell_size. Sent in full after welcome,
    then as changes."""

    cell_size: float = spec(min=0.0, unit="m")
    cells: list[tuple[int, int, int]] = spec(
        factory=list, max_len=MAX_EXPLORED_CELLS, doc="[i, j, state]; state 0 unknown, 1 generated, 2 visited (EXPLORED_STATES)"
    )


@message("stats", "server")
class Stats(Message):
    """Server-side measurements for this player's stream, about once a second."""

    fps: float = spec(0.0, unit="1/s", doc="frames sent per second")
    frame_ms: float = spec(0.0, unit="ms", doc="mean render time per frame")
    encode_ms: float = spec(0.0, unit="ms", doc="mean encode time per frame")
    queue_depth: int = spec(0, doc="generation jobs queued or running in this world")
    mtp_p50_ms: float = spec(0.0, unit="ms", doc="server motion-to-photon median: input received -> encoded frame")
    mtp_p95_ms: float = spec(0.0, unit="ms")
    players: int = spec(0, doc="players in this world")


@message("frame_info", "server")
class FrameInfo(Message):
    """Sent for every video frame, just before its packets. Match ``rtp_timestamp`` with
    ``requestVideoFrameCallback`` metadata to find which input a displayed frame shows.
    It is the timestamp in the RTP packets as sent; a receiver that rebases timestamps
    (aiortc's tracks count ``pts`` from 0) must add its first packet's timestamp back."""

    rtp_timestamp: int = spec(min=0, max=2**32 - 1, doc="the frame's RTP timestamp as in its packets (90 kHz clock)")
    input_seq: int = spec(
        -1, min=-1, max=MAX_SEQ,
        doc="latest input/head_pose seq applied, -1 before any. When it is a head_pose's, the frame is rendered with "
        "exactly that orientation (collision may stop the position, never the rotation): clients reproject by it",
    )
    server_ms: float = spec(0.0, unit="ms", doc="server wall clock (Unix epoch) when encoded")
    mtp_ms: float = spec(-1.0, unit="ms", doc="input received -> frame encoded for input_seq, -1 if not new")
    blocked: bool = spec(False, doc="the player's latest move was blocked by the scene (walked into a wall): the client shows a small cue")
    head_position: Vec3 | None = spec(
        None, min=-MAX_COORD, max=MAX_COORD, unit="m",
        doc="when input_seq is a head_pose's: where the head is in that frame (world). It differs from the pose "
        "sent when collision stopped the head; a VR client moves its rig by the difference (the server decides)",
    )


@message("splat_piece", "server")
class SplatPiece(Message):
    """Part of one chunk's Gaussians for local rendering (after ``splats``). A chunk
    comes in ``parts`` pieces; each is a complete ``.spz`` (version 3: gzip, 24-bit fixed-point
    positions, 8-bit colour, opacity, log scale, smallest-three rotations; right-up-back axes
    as the format has them, so y and z are flipped from the world's). Answer each with ``splat_ack``.

    ``layer`` says what the chunk is: ``scene`` (drawn as usual) or ``far``, a far-field chunk
    (sent only when ``splats.max_far_splats`` > 0): coarse splats of what keyframes saw beyond
    ~40 m, drawn *behind* the scene in place of the bare sky (never in front of a scene splat),
    on the server's far grid (every ``max(1, round(max(W, H) / 160) // 2)``-th pixel, interpolated
    bilinearly; the server shows it only where the scene is nearly see-through, docs/world.md).
    A far chunk on the wire is one landing's far splats and never
    changes (the server merges landings of one far cell into one chunk, but sends each as its
    own, under the landing's id); ``splat_forget`` drops it when the world drops its far cell
    or the far budget needs room."""

    id: int = spec(min=0, max=MAX_SEQ, doc="acknowledge with splat_ack")
    chunk_id: int = spec(min=0, max=MAX_SEQ, doc="the chunk it belongs to (splat_forget names it)")
    part: int = spec(min=0, doc="0-based")
    parts: int = spec(min=1)
    center: Vec3 = spec(unit="m", doc="the chunk's bounding-box centre, world coordinates")
    radius: float = spec(min=0.0, unit="m", doc="half the chunk's bounding-box diagonal")
    count: int = spec(min=0, doc="Gaussians in this piece")
    spz: bytes = spec(max_len=MAX_SPLAT_PIECE_BYTES, unit="bytes", doc="the piece as .spz bytes")
    layer: Literal["scene", "far"] = spec("scene", doc="scene chunk, or far-field chunk drawn behind the scene")


@message("splat_forget", "server")
class SplatForget(Message):
    """Drop these chunks (of either layer: ids are unique across both): the budget needs room for
    nearer ones, or their contents changed (the server may send them again later)."""

    chunk_ids: list[int] = spec(factory=list, max_len=4096)


@message("error", "server")
class ErrorMessage(Message):
    """Something the client sent was refused. The connection stays open unless said otherwise."""

    code: str = spec(doc="one of ERROR_CODES")
    message: str = spec("", max_len=MAX_ERROR_CHARS)
    field: str | None = spec(None, max_len=128, doc="the offending field, dotted (e.g. 'view.fov_y')")
    ref_type: str | None = spec(None, max_len=64, doc="type of the message that caused it (for rate_limited: of the dropped one that triggered the report), if known")
    limit: str | None = spec(None, max_len=64, doc="with code limit_reached: the limit, named as its server flag (e.g. 'max_new_worlds_per_client')")


CLIENT_MESSAGES = tuple(t for t, c in MESSAGES.items() if c.SENDER in ("client", "both"))
SERVER_MESSAGES = tuple(t for t, c in MESSAGES.items() if c.SENDER in ("server", "both"))
