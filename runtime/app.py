"""The worldstream server: HTTP + WebSocket on one port, WebRTC video per player.

``python server.py --help`` (or ``worldstream serve``) lists the flags. The server runs on
uvloop where available; rendering, encoding, planning and generation each run in their
own thread pool (see :class:`runtime.config.Executors`), never on the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import Callable

from websockets.asyncio.server import serve

from protocol import PROTOCOL_VERSION, messages as m
from runtime.config import Executors, ServerConfig, crf_arg
from runtime.heap import settle_heap
from runtime.native_heap import keep_large_buffers
from runtime.lobby import Lobby
from runtime.metrics import ServerMetrics
from runtime.quotas import Limits, LimitReached, Quotas, client_key
from runtime.scale.cluster import RaySettings
from runtime.scale.leases import Leases
from runtime.sessions import SessionRegistry
from runtime.stall_watch import watch
from runtime.stream.auth import token_arg
from runtime.stream.encoder import default_bitrate
from runtime.stream.forwarded import RequestSource, proxy_networks, request_source
from runtime.stream.large_reads import MIB, LargeReads
from runtime.stream.http import make_process_request
from runtime.stream.origin import allowed_origin_arg, origin_refusal
from runtime.stream.rate_limit import BucketsByKey, TokenBucket
from runtime.stream.slow_refusal import SlowRefusals
from runtime.stream.websocket import (
    LARGE_BURST, LARGE_RATE_HZ, MAX_FRAME_BYTES, OVERSIZE_FORGIVE_S, OVERSIZE_STRIKES, Connection, SizeGuardedConnection,
    refuse_connection,
)
from runtime.warmup import warm_up
from runtime.world.generators import available_generators
from runtime.world.keyframes.optimise import MAX_STEPS
from runtime.world.render import auto_renderer, create_renderer, require_cuda_and_gsplat
from runtime.world.thread_priority import quiet_idle_parallel_workers

log = logging.getLogger("worldstream")

WS_PING_INTERVAL_S = 2.0
WS_PING_TIMEOUT_S = 3.0
WS_CLOSE_TIMEOUT_S = 1.0
"""A client that stops answering is dropped within 6 s: a ping at most 2 s after its last
sign of life, 3 s for the pong, then 1 s for the closing handshake it will not finish
(websockets' default of 10 s there held a frozen client's player for 15 s)."""


class StartupError(Exception):
    """The server cannot start for a reason the user can fix (a busy port, no GPU for the
    renderer asked for, an unwritable worlds folder): one line, exit code 2, no traceback."""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("worldstream")
    except Exception:
        return "0.1.0"


class StreamServer:
    """The running server: config, thread pools, metrics, sessions and the listening socket."""

    def __init__(self, config: ServerConfig, renderer=None) -> None:
        self.config = config
        self.version = _version()
        self.metrics = ServerMetrics()
        self.renderer = renderer if renderer is not None else create_renderer(config.renderer)
        # A GPU renderer page-locks the media workers' picture rings and copies into them.
        self.executors = Executors(pin_memory=getattr(self.renderer, "pin_host_memory", None))
        self.renderer_name = str(getattr(self.renderer, "name", type(self.renderer).__name__))
        self.quotas = Quotas(config.limits, refused=lambda limit: self.metrics.limit_refusals.labels(limit).inc())
        self.registry = SessionRegistry(config, self.executors, self.metrics, self.renderer, self.quotas)
        self.refusals = SlowRefusals()  # quota and capacity refusals are answered after a pause
        self.lobby = Lobby(config, self.registry, self.quotas, self.executors, self.version, self.renderer_name, self.refusals)
        self._refusal_log = TokenBucket(0.2, 5)
        # Messages over 64 KiB (hellos with a start image) per client address, not per connection.
        self.large_messages = BucketsByKey(LARGE_RATE_HZ, LARGE_BURST)
        self.oversize_strikes = BucketsByKey(1.0 / OVERSIZE_FORGIVE_S, OVERSIZE_STRIKES)
        # ... and all addresses together (a botnet's each spending its own budget at once).
        self.large_reads = LargeReads(config.limits.max_large_read_mib_per_s * MIB, config.limits.max_large_reads, MAX_FRAME_BYTES)
        self.started_at = time.time()
        self._server = None
        self._unwatch: Callable[[], None] = lambda: None
        self.url: str | None = None

    def health(self) -> dict:
        return {
            "status": "ok",
            "version": self.version,
            "protocol_version": PROTOCOL_VERSION,
            "generator": self.config.generator,
            "renderer": self.renderer_name,
            "sessions": len(self.registry.sessions),
            "players": self.registry.player_count,
            "connections": self.quotas.connections,  # WebSocket connections open (--max-connections counts them)
            "worlds": sorted(name for name in list(self.registry.sessions) if self.registry.listed(name)),
            "resolution": f"{self.config.width}x{self.config.height}",
            "fps": self.config.fps,
            "codec": self.config.codec,
            "uptime_s": round(time.time() - self.started_at, 1),
            "threads": threading.active_count(),  # worlds own generation threads: unloaded worlds give theirs back
        }

    def world_listing(self, limit: int = 50) -> list[dict]:
        """Public worlds for ``/worlds``: worlds with players first, then the most recently played
        (private worlds are never listed: they are found only through their invite links)."""
        listed = self.registry.listed
        online = {name: len(session.players) for name, session in list(self.registry.sessions.items()) if listed(name)}
        rows: dict[str, dict] = {}
        for info in self.registry.source.library.list():
            if info.error or not listed(info.name):
                continue
            rows[info.name] = {
                "name": info.name,
                "caption": info.caption,
                "chunks": info.chunks,
                "gaussians": info.gaussians,
                "last_played": info.last_played,
            }
        for name in online:  # a world created a moment ago may not have a manifest yet
            rows.setdefault(name, {"name": name, "caption": "", "chunks": 0, "gaussians": 0, "last_played": time.time()})
        for row in rows.values():
            row["players"] = online.get(row["name"], 0)
        ordered = sorted(rows.values(), key=lambda r: (r["players"] > 0, r["last_played"]), reverse=True)
        return ordered[:limit]

    def _metrics_text(self) -> bytes:
        total_fps = 0.0
        depth = 0
        for session in list(self.registry.sessions.values()):
            depth += session.queue_depth
            total_fps += sum(p.sent_fps() for p in list(session.players.values()))
        self.metrics.sent_fps.set(total_fps)
        self.metrics.generation_queue_depth.set(depth)
        generation = self.registry.source.generation
        for name, stats in (generation.stats() if generation is not None else {}).items():
            self.metrics.ray_actors.labels(name).set(stats.pop("actors"))
            self.metrics.ray_jobs_in_flight.labels(name).set(stats.pop("in_flight"))
            for outcome, count in stats.items():
                self.metrics.ray_jobs.labels(name, outcome).set(count)
        return self.metrics.exposition()

    def _refuse_websocket(self, connection, request) -> tuple[int, str] | None:
        """Why a WebSocket handshake must be refused, as (HTTP status, reason), or None: a
        page of a foreign origin (403), or an address with too many oversized frames (429)."""
        source = self._source(connection, request)
        strikes = self.oversize_strikes.find(source.address)
        wait = strikes.seconds_to_token() if strikes is not None else 0.0
        if wait > 0:
            refusal = ("oversize", 429, f"too many frames over the size limit from your address; try again in {wait:.0f} s")
        else:
            reason = origin_refusal(request.headers.get("Origin"), source, self.config.allowed_origins)
            refusal = ("origin", 403, reason) if reason is not None else None
        if refusal is None:
            return None
        kind, status, reason = refusal
        self.metrics.connections_refused.labels(kind).inc()
        if self._refusal_log.allow():  # a client retrying in a loop must not flood the log
            log.warning("%s: WebSocket refused: %s", source.address, reason)
        return status, reason

    def _flooding(self, connection, request) -> str | None:
        """The connection quota this handshake's client keeps running into, or None."""
        refusal = self.quotas.flooding(self._client(connection, request))
        return None if refusal is None else refusal.limit

    def _came_over_https(self, connection, request) -> bool:
        return self._source(connection, request).scheme == "https"

    def _source(self, connection, request) -> RequestSource:
        """Who opened ``connection`` (``request``: its handshake), worked out once: every
        handshake hook and the connection's handler ask (parsing addresses each time cost
        the event loop 10-20 us a handshake)."""
        source = getattr(connection, "source", None)
        if source is None:
            source = connection.source = request_source(connection.remote_address[0], request.headers, self.config.trusted_proxies)
        return source

    def _client(self, connection, request) -> str:
        """What per-client quotas count ``connection`` by (its address's quota key), worked out once."""
        key = getattr(connection, "client_key", None)
        if key is None:
            key = connection.client_key = client_key(self._source(connection, request).address)
        return key

    async def _handler(self, ws) -> None:
        cfg = self.config
        connection = Connection(
            ws, self.lobby.link, cfg.hello_timeout_s, self.metrics, self.large_messages, cfg.trusted_proxies, cfg.limits.idle_timeout,
            oversize_strikes=self.oversize_strikes, large_reads=self.large_reads, source=self._source(ws, ws.request),
        )
        client = self._client(ws, ws.request)  # what per-client quotas count by
        try:
            self.quotas.open_connection(client)
        except LimitReached as exc:
            await refuse_connection(ws, exc.limit, exc.message, self.metrics, self.refusals)
            return
        try:
            await connection.run()
        finally:
            self.quotas.close_connection(client)

    async def start(self) -> str:
        """Listen; returns the base URL (``http://host:port``)."""
        cfg = self.config
        # Model generators were loaded by check_models (with --ray, by the actors); a throwaway
        # job of theirs would take minutes, so the warm-up runs the kernels every world shares
        # with the procedural one.
        warm_generator = "procedural"
        log.info("warming up the %s renderer and the %s generator (a fresh install compiles its kernels once)", self.renderer_name, warm_generator)
        loop = asyncio.get_running_loop()
        seconds = await loop.run_in_executor(None, warm_up, self.renderer, warm_generator)
        log.info("warm-up done in %.1f s", seconds)
        if cfg.ray is not None:
            log.info("ray: connecting to %s and starting the %s actors", cfg.ray.address, cfg.generator)
            try:
                await loop.run_in_executor(None, self.registry.source.start_generation)
            except Exception as e:  # a cluster we cannot reach, or actors that cannot load the model
                raise StartupError(f"--ray {cfg.ray.address}: {type(e).__name__}: {e}") from None
        await self.executors.media.start()
        self.registry.start()
        self._unwatch = watch().watch_loop(loop)  # a diagnostic, off unless WORLDSTREAM_STALL_WATCH_MS is set
        try:
            self._server = await self._listen()
        except OSError as e:
            raise StartupError(_listen_problem(cfg.host, cfg.port, e)) from None
        sock = next(iter(self._server.sockets))
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        if cfg.ray is not None:  # world leases, now that players can be told where this server is
            url = cfg.ray.advertise_url or self.url
            self.registry.leases = await asyncio.get_running_loop().run_in_executor(
                None, lambda: Leases(url, cfg.ray.lease_ttl_s, cfg.ray.namespace)
            )
            log.info("ray: world leases shared with the cluster's servers (this one is %s, leases last %g s)", url, cfg.ray.lease_ttl_s)
        log.info(
            "listening on %s (WebSocket %s/ws) — generator %s, renderer %s, %dx%d@%d %s %s%.1f Mbit/s",
            self.url, self.url.replace("http", "ws", 1), cfg.generator, self.renderer_name,
            cfg.width, cfg.height, cfg.fps, cfg.codec, _rate_words(cfg), cfg.bitrate / 1e6,
        )
        return self.url

    async def _listen(self):
        cfg = self.config
        return await serve(
            self._handler,
            cfg.host,
            cfg.port,
            process_request=make_process_request(
                cfg.static_dir, self.health, self._metrics_text, self.world_listing, self._refuse_websocket,
                token=cfg.token, secure=self._came_over_https, flooding=self._flooding, refusals=self.refusals,
                unauthorized=self.metrics.connections_refused.labels("token").inc,
            ),
            max_size=MAX_FRAME_BYTES,  # bigger frames close the connection (1009)
            create_connection=SizeGuardedConnection,  # large messages rationed from their header; a 1009 stops reading
            max_queue=4,  # frames buffered per connection before reading pauses: 4 x 8 MiB at most
            ping_interval=WS_PING_INTERVAL_S,
            ping_timeout=WS_PING_TIMEOUT_S,
            close_timeout=WS_CLOSE_TIMEOUT_S,
            compression=None,  # msgpack is compact already; deflate would cost CPU per frame_info
        )

    async def stop(self) -> None:
        """Close every connection (1001), every peer connection and every world (saved)."""
        log.info("shutting down")
        self._unwatch()
        if self._server is not None:
            self._server.close(close_connections=True)
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
            except asyncio.TimeoutError:
                log.warning("some connections did not close in time")
        await self.registry.close()
        await asyncio.get_running_loop().run_in_executor(None, self.registry.source.stop_generation)
        await self.executors.close()
        log.info("stopped")


async def run(
    config: ServerConfig, ready: Callable[[str], None] | None = None, stop: asyncio.Event | None = None, renderer=None,
    freeze_heap: bool = False,
) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop`` is set), then shut down cleanly.

    ``freeze_heap``: once listening, freeze the start-up heap (:func:`runtime.heap.settle_heap`),
    for a process that runs one server (the command line); a test process that starts many
    would keep each one's objects for good.

    Raises:
        StartupError: the port cannot be listened on.
    """
    server = StreamServer(config, renderer)
    stop = stop or asyncio.Event()
    try:
        url = await server.start()
        # Our handlers first: a SIGINT sent as soon as "listening" is logged (a supervisor, a
        # test) must take the usual way out, not arrive while the heap is being settled.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                pass
        if freeze_heap:
            settle_heap()
        if ready is not None:
            ready(url)
        await stop.wait()
    finally:
        await server.stop()


def _listen_problem(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use (--port); stop what holds it, or pick another port (--port 0 picks a free one)"
    if error.errno == errno.EACCES:
        return f"no permission to listen on port {port} on {host} (--port); ports below 1024 need privileges"
    return f"cannot listen on {host}:{port} (--host/--port): {error.strerror or error}"


def check_port(host: str, port: int) -> None:
    """Raise :class:`StartupError` at once when ``host:port`` cannot be bound, before the
    warm-up (which can take a minute on a fresh install) would hide the problem.

    The probe binds like the server does (``SO_REUSEADDR``) and closes again; the real bind
    is checked too, since something may take the port in between.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise StartupError(f"cannot listen on {host!r} (--host): {e.strerror}") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as e:
                raise StartupError(_listen_problem(host, port, e)) from None


def check_models(config: ServerConfig) -> None:
    """Load the depth model and the generator's weights now (once per process, shared by every
    world): missing ones are a :class:`StartupError` naming the option and what to download."""
    from runtime.world.depth import DepthModelMissing, load_depth_estimator
    from runtime.world.generators import GeneratorUnavailable, create_generator

    if config.depth_model:
        try:
            load_depth_estimator(config.depth_model)
        except DepthModelMissing as e:
            raise StartupError(str(e)) from None
    if config.generator != "procedural":
        try:
            generator = create_generator(config.generator, **config.generator_options)
        except GeneratorUnavailable as e:
            raise StartupError(str(e)) from None
        except TypeError as e:  # an option the generator does not take
            raise StartupError(f"--generator-option: {e}") from None
        if getattr(generator, "makes_depth", True) is False and not config.depth_model:
            raise StartupError(
                f"generator {config.generator!r} makes RGB only: give --depth-model DIR "
                "(or --generator-option depth_model=DIR); see docs/generators.md"
            )


def check_ray_installed() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise StartupError("--ray needs the ray package: pip install 'worldstream[ray]'") from None


def check_worlds_folder(path: Path) -> None:
    """Raise :class:`StartupError` unless ``path`` is (or can be made) a folder we can write in."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as e:
        raise StartupError(f"--worlds {path}: cannot save worlds there ({e.strerror or e})") from None


def _rate_words(cfg: ServerConfig) -> str:
    """'crf 18 up to ' where streams encode at constant quality (libx264), else ''."""
    return f"crf {cfg.crf} up to " if cfg.encoder_settings(cfg.width, cfg.height).constant_quality() else ""


# ---------------------------------------------------------------------- command line
def _resolution(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must look like 640x360, got {text!r}") from None
    if not (16 <= w <= 4096 and 16 <= h <= 4096) or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"resolution must be even numbers in [16, 4096], got {w}x{h}")
    return w, h


def _bitrate(text: str) -> int:
    t = text.strip().lower()
    scale = 1
    for suffix, mult in (("m", 1_000_000), ("k", 1_000)):
        if t.endswith(suffix):
            t, scale = t[:-1], mult
    try:
        value = int(float(t) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bitrate must look like 4000000, 4M or 800k, got {text!r}") from None
    if not 50_000 <= value <= 100_000_000:
        raise argparse.ArgumentTypeError(f"bitrate must be in [50k, 100M], got {text!r}")
    return value


def _generator_option(text: str) -> tuple[str, str]:
    from runtime.world.generators import parse_option

    try:
        return parse_option(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _resource_amount(name: str, zero_ok: bool) -> Callable[[str], float]:
    """An argparse type: an amount of a Ray resource (CPUs, GPUs), fractions allowed, at most 1024."""
    limit = "in [0, 1024]" if zero_ok else "in (0, 1024]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number {limit}, got {text!r}") from None
        if not (0 <= value <= 1024) or (value == 0 and not zero_ok):
            raise argparse.ArgumentTypeError(f"{name} must be {limit}, got {text!r}")
        return value

    return parse


def _whole_number(name: str, low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (no upper bound when ``high`` is None)."""
    limit = f"in [{low}, {high}]" if high is not None else f"at least {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number {limit}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{name} must be {limit}, got {value}")
        return value

    return parse


def build_parser(prog: str = "python server.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Serve generated 3D worlds: HTTP + WebSocket (/ws) on one port, WebRTC video per player.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--generator", default="procedural", help="generator name (default procedural)")
    p.add_argument(
        "--generator-option", type=_generator_option, action="append", default=[], metavar="KEY=VALUE",
        help="generator option, repeatable, e.g. model=/models/Wan2.1-VACE-1.3B-diffusers (docs/generators.md)",
    )
    p.add_argument(
        "--depth-model", default=None, metavar="PATH",
        help="Depth Anything-class model folder (transformers format): depth for start images and RGB-only generators",
    )
    p.add_argument("--renderer", choices=["auto", "cpu", "gsplat"], default="auto", help="renderer (default auto: gsplat on CUDA, else cpu)")
    p.add_argument("--worlds", type=Path, default=Path("worlds"), help="folder for saved worlds (default ./worlds)")
    p.add_argument("--resolution", type=_resolution, default=None, help="video WxH per player (default 640x360 on CPU, 1280x720 on GPU)")
    p.add_argument("--fps", type=_whole_number("fps", 1, 240), default=None, help="video frame rate (default 30 on CPU, 60 on GPU)")
    p.add_argument("--codec", choices=["h264", "vp8"], default="h264", help="video codec (default h264)")
    p.add_argument("--bitrate", type=_bitrate, default=None, help="video bitrate per player, e.g. 4M (default scales with pixels and fps: 1.5M at 640x360@30, 6M at 1280x720@30, 8.5M at 1280x720@60)")
    p.add_argument("--crf", type=crf_arg, default=ServerConfig.crf, help=f"H.264 constant quality, 0-51, lower is better, capped at --bitrate; 'off' encodes at --bitrate (default {ServerConfig.crf})")
    p.add_argument("--max-players", type=_whole_number("max-players", 1), default=64, help="players accepted at once (default 64)")
    p.add_argument("--world-linger", type=_seconds("world-linger"), default=ServerConfig.session_linger_s, metavar="S",
                   help=f"seconds an empty world stays loaded before it is saved and closed (default {ServerConfig.session_linger_s:g})")
    for f in fields(Limits):  # quotas: one flag per Limits field, named as it
        flag = f.name.replace("_", "-")
        seconds = isinstance(f.default, float)
        p.add_argument("--" + flag, type=_seconds(flag) if seconds else _whole_number(flag, 1), default=f.default,
                       metavar="S" if seconds else "N", help=f"{f.metadata['help']} (default {f.default:g})")
    p.add_argument("--allow-origin", dest="allow_origins", type=allowed_origin_arg, action="append", default=[], metavar="ORIGIN",
                   help="let pages from ORIGIN (e.g. https://play.example.com, or * for any) open the WebSocket besides the server's own; repeatable (default: same origin only)")
    p.add_argument("--trust-proxy", type=proxy_networks, default=(), metavar="ADDRS",
                   help="believe X-Forwarded-For/-Proto/-Host from these proxy addresses or networks, comma-separated (e.g. 127.0.0.1 for nginx on this host; default: none)")
    p.add_argument("--token", type=token_arg, default=os.environ.get("WORLDSTREAM_TOKEN") or None, metavar="TOKEN",
                   help="require this access token on every HTTP request and WebSocket (as ?token=, a cookie, or "
                   "'Authorization: Bearer'); default $WORLDSTREAM_TOKEN, else none: open to anyone who reaches the server")
    p.add_argument("--no-avatars", dest="avatars", action="store_false", help="do not draw other players into the video")
    p.add_argument("--optimise-chunks", type=_whole_number("optimise-chunks", 0, MAX_STEPS), default=0, metavar="STEPS",
                   help="fit every new chunk to its keyframes with STEPS gsplat optimisation steps (about 100) before it is "
                   "shown; needs CUDA and gsplat (default 0: off)")
    p.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                   help="run generation on a Ray cluster's actors (docs/scale.md): auto joins this machine's cluster (or starts one), ADDRESS is HOST:6379 or ray://HOST:10001 (default: off, generation in this process)")
    p.add_argument("--ray-actors", type=_whole_number("ray-actors", 1), default=None, metavar="N",
                   help="generator actors (default: as many as the cluster's CPUs, or GPUs with --ray-gpus-per-actor, hold, followed as nodes join and leave)")
    p.add_argument("--ray-cpus-per-actor", type=_resource_amount("ray-cpus-per-actor", zero_ok=False), default=1.0, metavar="N", help="CPUs each actor holds (default 1)")
    p.add_argument("--ray-gpus-per-actor", type=_resource_amount("ray-gpus-per-actor", zero_ok=True), default=0.0, metavar="N",
                   help="GPUs each actor holds, e.g. 1 for a diffusion model (default 0: CPU actors)")
    p.add_argument("--advertise-url", default=None, metavar="URL",
                   help="with --ray: this server's base URL as players reach it (e.g. https://stream-2.example.com), sent to players redirected here from another server (default: the address it listens on)")
    p.add_argument("--lease-ttl", type=_seconds("lease-ttl"), default=10.0, metavar="S",
                   help="with --ray: seconds a world stays owned by a server that stopped renewing its lease (it died) before another server may load it (default 10)")
    p.add_argument("--jobs-per-world", type=_whole_number("jobs-per-world", 1), default=None, metavar="N",
                   help="generation jobs one world runs at once (default 1; with --ray, one per actor)")
    p.add_argument("--static", type=Path, default=None, help="web client files (default clients/web/dist)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log level (default info)")
    return p


def config_from_args(args: argparse.Namespace, gpu: bool) -> ServerConfig:
    """A :class:`ServerConfig` from parsed flags; ``gpu`` picks the defaults left open."""
    width, height = args.resolution or ((1280, 720) if gpu else (640, 360))
    fps = args.fps if args.fps is not None else (60 if gpu else 30)
    bitrate = args.bitrate or default_bitrate(width, height, fps)
    config = ServerConfig(
        host=args.host, port=args.port, generator=args.generator, renderer=args.renderer, worlds=args.worlds,
        width=width, height=height, fps=fps, codec=args.codec, bitrate=bitrate, crf=args.crf,
        max_players=args.max_players, allowed_origins=frozenset(args.allow_origins), trusted_proxies=args.trust_proxy,
        generator_options=dict(args.generator_option), depth_model=args.depth_model,
        session_linger_s=args.world_linger, limits=limits_from_args(args), token=args.token,
        avatars=args.avatars, jobs_per_world=args.jobs_per_world, optimise_chunk_steps=args.optimise_chunks,
        ray=None if args.ray is None else RaySettings(
            args.ray, args.ray_actors, args.ray_cpus_per_actor, args.ray_gpus_per_actor,
            advertise_url=args.advertise_url, lease_ttl_s=max(1.0, args.lease_ttl),
        ),
    )
    if args.static is not None:
        config.static_dir = args.static
    return config


def _seconds(name: str) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, at least 0."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number of seconds, got {text!r}") from None
        if not 0 <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number of seconds >= 0, got {text!r}")
        return value

    return parse


def limits_from_args(args: argparse.Namespace) -> Limits:
    return Limits(**{f.name: getattr(args, f.name) for f in fields(Limits)})


def _gpu_renderer(kind: str) -> bool:
    # "auto" asks torch about CUDA only where gsplat is installed (auto_renderer): a CPU-only
    # server starts without importing it, and CUDA without gsplat renders on the CPU anyway.
    return kind == "gsplat" or (kind == "auto" and auto_renderer() == "gsplat")


def main(argv: list[str] | None = None, prog: str = "python server.py") -> int:
    """Run the server from command-line flags; user errors print one line and return 2."""
    quiet_idle_parallel_workers()  # before any kernel runs (the warm-up's first)
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aioice", "aiortc", "websockets", "numba"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    config = config_from_args(args, _gpu_renderer(args.renderer))
    try:
        if config.generator not in available_generators():
            raise StartupError(f"unknown generator {config.generator!r} (--generator); available: {', '.join(available_generators())}")
        check_port(config.host, config.port)
        check_worlds_folder(config.worlds)
        if config.ray is None:  # with --ray the actors load the models (and say what is missing)
            check_models(config)
        else:
            check_ray_installed()
        try:
            renderer = create_renderer(config.renderer)
        except RuntimeError as e:  # gsplat without CUDA or without the package
            raise StartupError(f"--renderer {config.renderer}: {e}") from None
        if config.optimise_chunk_steps:
            try:
                require_cuda_and_gsplat("chunk optimisation")
            except RuntimeError as e:
                raise StartupError(f"--optimise-chunks {config.optimise_chunk_steps}: {e}") from None
        return _serve(config, renderer)
    except StartupError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


def _serve(config: ServerConfig, renderer) -> int:
    # The event loop (signalling, WebRTC packets) shares this interpreter with the render
    # and planning threads. With the default 5 ms switch interval every network callback
    # can wait 5 ms for the interpreter lock while a busy thread runs Python; 1 ms bounds
    # that wait at the cost of a few more lock hand-overs.
    sys.setswitchinterval(0.001)
    keep_large_buffers()  # an 8 MiB hello read on the loop reuses memory instead of faulting in new pages
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # Windows
        runner = asyncio.run
    try:
        runner(run(config, renderer=renderer, freeze_heap=True))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
