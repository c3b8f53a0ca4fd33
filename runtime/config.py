"""The server's settings, parsed once from the command line (see :mod:`runtime.app`)."""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from runtime.quotas import Limits
from runtime.scale.cluster import RaySettings
from runtime.world.thread_priority import lower_thread_priority

from runtime.stream.encoder import EncoderSettings
from runtime.stream.media_pool import MediaPool, PinMemory


@dataclass
class ServerConfig:
    """Everything ``python server.py --help`` sets.

    Attributes:
        host, port: where to listen (port 0 picks a free one).
        generator: generator name (see ``runtime.world.generators``).
        generator_options: keyword options for new worlds' generator (``--generator-option``).
        depth_model: a Depth Anything-class model folder (or cached id) for start images and
            RGB-only generators (``--depth-model``), or None.
        renderer: ``auto``, ``cpu`` or ``gsplat``.
        worlds: folder holding saved worlds; nothing outside it is written.
        width, height: video size per player in pixels (even).
        fps: video frame rate.
        codec: ``h264`` or ``vp8``.
        bitrate: video bits per second per player (the cap when ``crf`` is set).
        crf: H.264 (libx264) constant quality, 0-51, lower is better; ``None`` encodes at
            ``bitrate`` (``runtime.stream.encoder.EncoderSettings.crf``).
        static_dir: the web client's built files.
        max_players: players accepted at once, all worlds together.
        allowed_origins: web origins (``https://host[:port]``, normalised) besides the
            server's own whose pages may open the WebSocket; ``*`` allows any.
        trusted_proxies: networks whose ``X-Forwarded-For/-Proto/-Host`` headers are believed
            (a reverse proxy terminating TLS); empty: none.
        resume_window_s: how long a disconnected player's pose is kept for a resume token.
        session_linger_s: how long an empty world stays loaded before it is saved and closed.
        hello_timeout_s: a connection that sends no valid hello in time is closed.
        update_hz: how often each world plans generation.
        limits: quotas per client address and server-wide (``runtime.quotas.Limits``).
        ray: generation on a Ray cluster (``--ray``, docs/scale.md); None: in this process.
        jobs_per_world: generation jobs one world runs at once; None: the world's own
            setting in-process (one), the pool's in-flight limit on Ray.
        token: the access token every HTTP request and WebSocket handshake must carry
            (``runtime.stream.auth``); None: the server is open to anyone who reaches it.
        avatars: draw the other players into each player's video (``--no-avatars`` turns it off).
        optimise_chunk_steps: fit every new chunk to its keyframes with this many gsplat
            steps before it lands (``--optimise-chunks``; needs CUDA and gsplat); 0: off.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    generator: str = "procedural"
    generator_options: dict = field(default_factory=dict)
    depth_model: str | None = None
    renderer: str = "auto"
    worlds: Path = Path("worlds")
    width: int = 640
    height: int = 360
    fps: int = 30
    codec: str = "h264"
    bitrate: int = 2_000_000
    crf: int | None = EncoderSettings.crf
    static_dir: Path = Path(__file__).resolve().parents[1] / "clients" / "web" / "dist"
    max_players: int = 64
    allowed_origins: frozenset[str] = frozenset()
    trusted_proxies: tuple = ()  # of ipaddress networks
    resume_window_s: float = 300.0
    session_linger_s: float = 30.0
    hello_timeout_s: float = 10.0
    update_hz: float = 5.0
    limits: Limits = field(default_factory=Limits)
    ray: RaySettings | None = None
    jobs_per_world: int | None = None
    token: str | None = field(default=None, repr=False)  # a secret: kept out of logs
    avatars: bool = True
    optimise_chunk_steps: int = 0

    def encoder_settings(self, width: int, height: int) -> EncoderSettings:
        """A player's video encoding at ``width`` x ``height`` pixels (a stereo view is both eyes)."""
        return EncoderSettings(codec=self.codec, width=width, height=height, fps=self.fps, bitrate=self.bitrate, crf=self.crf)


class Executors:
    """The server's thread pools, one per kind of work, so none can starve another.

    * ``render``: world.move + world.render for frame batches (one thread: renderers use
      every core themselves and batching beats interleaving).
    * ``media``: each player's video after rendering (encode, RTP, SRTP, UDP) in media
      worker processes, up to one per core (``stream/media_pool.py`` says why); it also
      holds the thread pool that encodes when there are no worker processes.
    * ``plan``: world.update (coverage probes), world loading and closing.
    * generation runs in each World's own worker thread (one per world), never here.

    Planning, generation and saving run at a lower CPU priority than rendering, the event
    loop and the encoders (``runtime.world.thread_priority``).
    """

    def __init__(self, media_processes: int | None = None, pin_memory: PinMemory | None = None) -> None:
        self.render = ThreadPoolExecutor(1, thread_name_prefix="render")
        self.media = MediaPool(media_processes, pin_memory=pin_memory)
        # Planning and world loading are background work: they yield the CPU to rendering.
        self.plan = ThreadPoolExecutor(1, thread_name_prefix="plan", initializer=lower_thread_priority)

    async def close(self) -> None:
        await self.media.stop()
        for pool in (self.render, self.plan):
            pool.shutdown(wait=False, cancel_futures=True)


def crf_arg(text: str) -> int | None:
    """``--crf``: an integer in [0, 51], or ``off`` (None: encode at the bitrate)."""
    if text.strip().lower() == "off":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"crf must be an integer in [0, 51] or 'off', got {text!r}") from None
    if not 0 <= value <= 51:
        raise argparse.ArgumentTypeError(f"crf must be in [0, 51] (or 'off'), got {value}")
    return value
