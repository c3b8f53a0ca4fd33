"""The registry of live sessions, world creation/opening, and resume tokens.

Worlds are found by name. A name is checked against the protocol's pattern
(``[a-z0-9][a-z0-9_-]{0,63}``) before it gets near the file system, and worlds live only
under ``--worlds``. When ``runtime.world.store.WorldLibrary`` is available, worlds are
created and opened through it (they save themselves as chunks land); without it they
live in memory for the server's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import os
import re
import secrets
import time
from dataclasses import dataclass

import av
import numpy as np

from protocol import messages as m
from runtime.access import AccessBook, WorldAccess
from runtime.config import Executors, ServerConfig
from runtime.metrics import ServerMetrics
from runtime.quotas import Quotas
from runtime.scale.cluster import RayGeneration
from runtime.scale.leases import Leases
from runtime.session import Session
from runtime.world.camera import Pose
from runtime.world.formats.media import image_header_size
from runtime.world.world import World, WorldConfig

from runtime.world.depth import DepthMapError, decode_depth_png, load_depth_estimator
from runtime.world.formats.exif import fov_y_from_exif
from runtime.world.generators import create_generator
from runtime.world.keyframes.optimise import ChunkOptimiser
from runtime.world.keyframes.start_frame import seed_world
from runtime.world.store import WorldLibrary, errors

log = logging.getLogger("worldstream.sessions")

MAX_RESUME_RECORDS = 10_000
"""Resume tokens kept at most (the oldest go first): players who left within the resume window."""
_NAME = re.compile(m.WORLD_NAME_PATTERN)


class WorldElsewhere(Exception):
    """The world a hello asks for is open on another server (``url``): redirect the player."""

    def __init__(self, world: str, url: str) -> None:
        super().__init__(f"world {world!r} is open on {url}")
        self.world, self.url = world, url


class JoinError(Exception):
    """A hello that cannot be served; ``code``/``field`` become the protocol error."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


@dataclass
class Admission:
    """A hello let into a world.

    Attributes:
        session: the world's session.
        owner: the player is the world's creator (it created it now, or sent its owner key).
        owner_key: the key that proves it, for the welcome (None when not the owner).
        access: the world's access record (visibility, current invite).
        invite: the invite the welcome tells: a private world's current one to its creator,
            to anyone else only the one it came with (so a guest never learns an invite
            drawn after the one it knew: revoking shuts out whoever leaked the old link).
    """

    session: Session
    owner: bool
    owner_key: str | None
    access: WorldAccess
    invite: str | None = None


@dataclass
class ResumeRecord:
    world: str
    player_id: str
    pose: Pose
    expires_at: float  # time.monotonic()


def _image_refused(problem: str) -> JoinError:
    return JoinError("bad_field", problem, "new_world.start_image")


def decode_start_image(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> ``[H, W, 3]`` uint8.

    The size is read from the image's header and checked against the protocol's limits
    (``MAX_START_IMAGE_PIXELS``, ``MIN_START_IMAGE_SIDE``) before anything is decoded, so
    a small file that unpacks to gigabytes costs nothing. Refusals are :class:`JoinError`
    in words a person can act on (not the decoder's).
    """
    kind = "PNG" if data.startswith(b"\x89PNG") else "JPEG"
    size = image_header_size(data)
    if size is None:
        raise _image_refused(f"it is not a readable {kind} image: its header is damaged or missing")
    w, h = size
    if w * h > m.MAX_START_IMAGE_PIXELS:
        limit = m.MAX_START_IMAGE_PIXELS
        raise _image_refused(
            f"it is {w}×{h} pixels ({w * h / 1e6:.1f} megapixels); the most is {limit / 1e6:.1f} megapixels "
            f"(MAX_START_IMAGE_PIXELS, e.g. {math.isqrt(limit)}×{math.isqrt(limit)}): scale it down"
        )
    if w < m.MIN_START_IMAGE_SIDE or h < m.MIN_START_IMAGE_SIDE:
        side = m.MIN_START_IMAGE_SIDE
        raise _image_refused(f"it is {w}×{h} pixels; the least is {side}×{side} (MIN_START_IMAGE_SIDE)")
    try:
        with av.open(io.BytesIO(data), format="png_pipe" if kind == "PNG" else "jpeg_pipe") as container:
            rgb = next(container.decode(video=0)).to_ndarray(format="rgb24")
    except Exception:  # FFmpeg's words ("avcodec_send_packet() ...") mean nothing to a player
        log.info("start image refused: %s of %d bytes did not decode", kind, len(data), exc_info=True)
        raise _image_refused(f"it is not a readable {kind} image: its picture data is damaged or cut short") from None
    if rgb.shape[:2] != (h, w):
        raise _image_refused(f"it is not a readable {kind} image: its header says {w}×{h}, its picture is {rgb.shape[1]}×{rgb.shape[0]}")
    return np.ascontiguousarray(rgb)


def generator_options(name: str, config: ServerConfig | None = None, remote: bool = False) -> dict:
    """Options for a world's generator: ``--generator-option`` s when it is the server's
    generator. The procedural generator leaves one core to the render and encode threads,
    so generating never starves the streams of CPU; on a Ray actor (``remote``) it uses the
    CPUs the actor holds."""
    options = dict(config.generator_options) if config is not None and name == config.generator else {}
    if name == "procedural":
        if remote and config is not None and config.ray is not None:
            options.setdefault("threads", max(1, round(config.ray.cpus_per_actor)))
        options.setdefault("threads", max(1, (os.cpu_count() or 2) - 1))
    return options


def decode_start_depth(data: bytes) -> np.ndarray:
    """A start image's depth (16-bit PNG, millimetres) -> ``[H, W]`` float32 metres."""
    try:
        return decode_depth_png(data, "start_depth")
    except DepthMapError as exc:
        raise JoinError("bad_field", str(exc), "new_world.start_depth") from None


def start_fov_y(req: m.NewWorld, image: np.ndarray, view_fov_y: float) -> float:
    """The start image's vertical field of view (radians): as sent, else from its EXIF focal
    length, else the creating player's view (so their first picture is the image as sent)."""
    if req.start_fov_y is not None:
        return req.start_fov_y
    return fov_y_from_exif(req.start_image, image.shape[1], image.shape[0]) or view_fov_y


@dataclass(frozen=True)
class StartImage:
    """A new world's start image as a hello sent it: ``rgb [H,W,3]`` uint8, optional depth
    ``[h,w]`` metres, the vertical field of view (radians) it was taken with, and the PNG/JPEG
    bytes ``rgb`` was decoded from (saved as they came: never as pixels)."""

    rgb: np.ndarray
    depth: np.ndarray | None
    fov_y: float
    encoded: bytes | None = None


class WorldSource:
    """Creates and opens :class:`World` s (saved under ``--worlds``) with the server's renderer."""

    def __init__(self, config: ServerConfig, renderer, executors: Executors) -> None:
        self.config = config
        self.renderer = renderer
        self.executors = executors
        config.worlds.mkdir(parents=True, exist_ok=True)
        self.library = WorldLibrary(config.worlds)
        log.info("worlds: saved under %s", config.worlds.resolve())
        # --optimise-chunks: one optimiser (one CUDA stream) shared by every world's generation worker.
        self.optimiser = ChunkOptimiser.for_cuda(config.optimise_chunk_steps) if config.optimise_chunk_steps else None
        # With --ray, generators run on the cluster's actors; connected by start_generation().
        self.generation = RayGeneration(config.ray) if config.ray is not None else None

    def start_generation(self) -> None:
        """Connect to Ray and start the server generator's actors (blocks: off the event loop)."""
        if self.generation is not None:
            name = self.config.generator
            self.generation.start(name, generator_options(name, self.config, remote=True))
            # As check_models does in-process: an RGB-only generator needs a depth model here.
            if self.generation.pool(name, {}).generator_attribute("makes_depth", True) is False and not self.config.depth_model:
                raise RuntimeError(f"generator {name!r} makes RGB only: give --depth-model DIR (docs/generators.md)")

    def stop_generation(self) -> None:
        if self.generation is not None:
            self.generation.close()

    def _world_kwargs(self, generator_name: str) -> dict:
        # No executor: each world owns a one-thread generation worker, so a world with a
        # backlog never holds up another world's first chunks. Models (generator, depth)
        # are loaded once per process and shared by every world.
        estimator = load_depth_estimator(self.config.depth_model) if self.config.depth_model else None
        if self.generation is not None:
            generator = self.generation.generator(generator_name, generator_options(generator_name, self.config, remote=True))
            jobs = self.config.jobs_per_world or generator.pool.max_in_flight
        else:
            generator = create_generator(generator_name, **generator_options(generator_name, self.config))
            jobs = self.config.jobs_per_world
        return {
            "renderer": self.renderer, "generator": generator, "depth_estimator": estimator, "max_concurrent_jobs": jobs,
            "chunk_optimiser": self.optimiser,
        }

    def exists(self, name: str) -> bool:
        return bool(self.library.exists(name))

    def create(self, config: WorldConfig, start: StartImage | None) -> World:
        """A new world; its start image becomes keyframe 0 at the spawn camera, seen at the
        server's video size (without a depth source the world gets a ``start_notice``)."""
        with _store_errors("new_world.name"):
            world = self.library.create(
                config,
                start_image=None if start is None else start.rgb,
                start_image_bytes=None if start is None else start.encoded,
                **self._world_kwargs(config.generator),
            )
        if start is not None:
            world.start_notice = seed_world(world, start.rgb, self.config.width, self.config.height, fov_y=start.fov_y, depth=start.depth) or ""
        return world

    def open(self, name: str) -> World:
        with _store_errors("world"):
            # A saved world keeps the generator it was made with (its config names it).
            generator_name = self.library.info(name).generator or self.config.generator
            return self.library.open(name, **self._world_kwargs(generator_name))


@contextlib.contextmanager
def _store_errors(field: str):
    """World-store exceptions as :class:`JoinError` s (the store's own messages name paths: keep them out)."""
    try:
        yield
    except errors.WorldNotFound:
        raise JoinError("world_not_found", "no world of that name; create it with new_world", field) from None
    except errors.WorldExists:
        raise JoinError("world_exists", "a world of that name exists; join it with 'world'", field) from None
    except errors.InvalidWorldName:
        raise JoinError("bad_field", "bad world name", field) from None
    except errors.WorldBusy:
        raise JoinError("server_busy", "that world is open in another server process", field) from None
    except errors.WorldStoreError as exc:
        log.error("world store: %s", exc)
        raise JoinError("internal", f"the world could not be loaded or saved ({type(exc).__name__})", field) from None


class SessionRegistry:
    """Live sessions by world name, plus resume tokens of players who left."""

    def __init__(self, config: ServerConfig, executors: Executors, metrics: ServerMetrics, renderer, quotas: Quotas | None = None) -> None:
        self.config = config
        self.quotas = quotas or Quotas(config.limits)
        self.executors = executors
        self.metrics = metrics
        self.renderer = renderer
        self.source = WorldSource(config, renderer, executors)
        self.access = AccessBook(self.source.library)
        self.sessions: dict[str, Session] = {}
        self._resume: dict[str, ResumeRecord] = {}
        self._lock = asyncio.Lock()  # one world load/create at a time: no double opens
        self._reaper: asyncio.Task | None = None
        # With --ray: world leases shared with the cluster's other servers (set by the server
        # once it knows its URL; runtime/scale/leases.py). None: this server owns every world.
        self.leases: Leases | None = None
        self._renewed_at = 0.0

    async def _take_lease(self, name: str, created: bool) -> None:
        """Take ``name`` 's lease before opening or creating it; raises :class:`WorldElsewhere`
        (or ``world_exists`` for a new world) when another server holds it."""
        if self.leases is None:
            if self.config.ray is not None:  # listening, but not yet in the registry (needs its URL)
                raise JoinError("server_busy", "the server is still joining its cluster; try again in a moment", "world")
            return
        url = await asyncio.to_thread(self.leases.acquire, name)
        if url is not None:
            if created:
                raise JoinError("world_exists", f"a world named {name!r} exists; join it with 'world'", "new_world.name")
            raise WorldElsewhere(name, url)

    async def _give_lease_back(self, name: str) -> None:
        if self.leases is not None:
            try:
                await asyncio.to_thread(self.leases.release, name)
            except Exception as exc:  # the cluster is unreachable: the lease expires by itself
                log.warning("world %r: lease not released (%s); it expires in %g s", name, type(exc).__name__, self.leases.ttl_s)

    async def _renew_leases(self) -> None:
        """Every ttl/3 seconds: renew the leases of the worlds open here."""
        now = time.monotonic()
        if self.leases is None or now - self._renewed_at < self.leases.ttl_s / 3:
            return
        self._renewed_at = now
        try:
            lost = await asyncio.to_thread(self.leases.renew, list(self.sessions))
        except Exception as exc:
            log.warning("world leases not renewed (%s: %s)", type(exc).__name__, exc)
            return
        for name in lost:  # the store's lock keeps the other server from opening it meanwhile
            log.error("world %r: its lease lapsed and another server holds it now", name)

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap(), name="session-reaper")

    @property
    def player_count(self) -> int:
        return sum(len(s.players) for s in self.sessions.values())

    async def session_for(self, hello: m.Hello, client: str = "unknown") -> Admission:
        """Let a hello into the world it joins or creates.

        Raises :class:`JoinError` (``invite_required`` for a private world it may not
        enter), or :class:`runtime.quotas.LimitReached` when ``client`` (a quota key) or the
        server may not create or load one more world.
        """
        loop = asyncio.get_running_loop()
        if hello.new_world is not None:  # refused before waiting for the lock or touching the disk (checked again under it)
            self.quotas.open_world(len(self.sessions))
            self.quotas.may_create_world(client)
        elif hello.world in self.sessions:  # loaded: no waiting behind another world's load or creation
            admission = await self._join_loaded(hello)
            if admission is not None:
                return admission
        async with self._lock:
            if hello.world is not None:
                name = hello.world
                if not _NAME.fullmatch(name):  # the codec checked already; never trust one check with paths
                    raise JoinError("bad_field", "bad world name", "world")
                session = self.sessions.get(name)
                if session is None and not self.source.exists(name):
                    raise JoinError("world_not_found", f"no world named {name!r}; create it with new_world", "world")
                access, owner, key = await self._admitted(hello, name)
                if session is not None:
                    return Admission(session, owner, key, access, access.shown_invite(hello.invite, owner))
                self.quotas.open_world(len(self.sessions))
                await self._take_lease(name, created=False)
                try:
                    world = await loop.run_in_executor(self.executors.plan, self.source.open, name)
                except BaseException:
                    await self._give_lease_back(name)
                    raise
                log.info("world %r opened", name)
            else:
                req = hello.new_world
                name = req.name or f"world-{secrets.token_hex(3)}"
                if name in self.sessions or self.source.exists(name):
                    raise JoinError("world_exists", f"a world named {name!r} exists; join it with 'world'", "new_world.name")
                self.quotas.open_world(len(self.sessions))
                self.quotas.may_create_world(client)
                start = None
                if req.start_image is not None:
                    image = await loop.run_in_executor(self.executors.plan, decode_start_image, req.start_image)
                    depth = None
                    if req.start_depth is not None:
                        depth = await loop.run_in_executor(self.executors.plan, decode_start_depth, req.start_depth)
                    start = StartImage(image, depth, start_fov_y(req, image, hello.view.fov_y), req.start_image)
                seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
                wconfig = WorldConfig(
                    name=name, seed=seed, caption=req.caption, generator=self.config.generator,
                    generator_options=dict(self.config.generator_options),
                )
                await self._take_lease(name, created=True)
                try:
                    world = await loop.run_in_executor(self.executors.plan, self.source.create, wconfig, start)
                except BaseException:
                    await self._give_lease_back(name)
                    raise
                self.quotas.created_world(client)
                access, key = WorldAccess.create(req.visibility)
                owner = True
                try:
                    await asyncio.to_thread(self.access.put, name, access)
                except OSError as exc:  # the world must not stay open to all when its record failed
                    await loop.run_in_executor(self.executors.plan, world.close)
                    log.error("world %r: its access record could not be saved: %s", name, exc)
                    raise JoinError("internal", "the world could not be saved", "new_world") from None
                log.info("world %r created (%s, seed %d, generator %s, caption %r)", name, req.visibility, seed, self.config.generator, req.caption[:60])
            session = Session(name, world, self.config, self.executors, self.metrics)
            session.start()
            self.sessions[name] = session
            self.metrics.sessions.set(len(self.sessions))
            return Admission(session, owner, key, access, access.shown_invite(hello.invite, owner))

    async def _admitted(self, hello: m.Hello, name: str) -> tuple[WorldAccess, bool, str | None]:
        """May ``hello`` enter world ``name``? ``(its access record, is it the owner, the
        owner key to tell it)``; raises :class:`JoinError` ``invite_required`` if not."""
        access = await asyncio.to_thread(self.access.get, name)  # read once, then cached
        owner = access.is_owner(hello.owner_key)
        if not (access.admits(hello.invite, hello.owner_key) or self._may_resume(hello.resume_token, name)):
            text = "this world is private: join it with its invite link" if hello.invite is None else (
                "this world is private and that invite does not open it (its creator may have revoked the link)"
            )
            raise JoinError("invite_required", text, "invite")
        return access, owner, hello.owner_key if owner else None

    async def _join_loaded(self, hello: m.Hello) -> Admission | None:
        """Let a hello into a world that is loaded, without the registry's lock (which a
        world being loaded or created holds, maybe for seconds); None when the world was
        unloaded meanwhile (the caller then loads it again under the lock)."""
        access, owner, key = await self._admitted(hello, hello.world)
        # No await from here to the player's joining (the lobby adds it at once): the reaper
        # unloads a world only while it has no players, under the lock, without awaiting.
        session = self.sessions.get(hello.world)
        if session is None:
            return None
        return Admission(session, owner, key, access, access.shown_invite(hello.invite, owner))

    def _may_resume(self, token: str | None, world: str) -> bool:
        """Does ``token`` resume a player who was in ``world`` (one let in before)?"""
        record = self._resume.get(token) if token else None
        return record is not None and record.world == world and record.expires_at >= time.monotonic()

    async def revoke_invite(self, name: str) -> str:
        """Draw a new invite for private world ``name`` and save it; returns it."""
        access = await asyncio.to_thread(self.access.get, name)
        old = access.invite
        invite = access.revoke()
        try:
            await asyncio.to_thread(self.access.put, name, access)
        except OSError:
            access.invite = old  # not saved: the old link keeps working, as the creator will be told
            raise
        log.info("world %r: invite revoked", name)
        return invite

    def listed(self, name: str) -> bool:
        """Is ``name`` shown in public listings (``/worlds``, ``/healthz``)?"""
        return not self.access.is_private(name)

    # ---- resume tokens ----
    def new_token(self) -> str:
        return secrets.token_urlsafe(18)  # 24 characters of [A-Za-z0-9_-]

    def resume(self, token: str | None, world: str) -> ResumeRecord | None:
        """The pose saved under ``token`` for ``world`` (consumed), or None."""
        if token is None:
            return None
        record = self._resume.get(token)
        if record is None or record.expires_at < time.monotonic() or record.world != world:
            return None
        del self._resume[token]
        return record

    def remember(self, token: str, world: str, player_id: str, pose: Pose) -> None:
        while len(self._resume) >= MAX_RESUME_RECORDS:  # dicts keep insertion order: oldest first
            del self._resume[next(iter(self._resume))]
        self._resume[token] = ResumeRecord(world, player_id, pose.copy(), time.monotonic() + self.config.resume_window_s)

    # ---- upkeep ----
    async def _reap(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            ticks += 1
            if ticks % 60 == 0:
                self.quotas.prune()
            await self._renew_leases()
            now = time.monotonic()
            for token, record in list(self._resume.items()):
                if record.expires_at < now:
                    del self._resume[token]
            for name, session in list(self.sessions.items()):
                if not session.players and session.empty_since is not None and now - session.empty_since > self.config.session_linger_s:
                    async with self._lock:
                        if session.players:
                            continue
                        del self.sessions[name]
                        self.metrics.sessions.set(len(self.sessions))
                        self.quotas.forget_world(name)
                    await session.close()
                    await self._give_lease_back(name)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        sessions, self.sessions = list(self.sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        for session in sessions:  # saved and closed: another server may load them now
            await self._give_lease_back(session.name)
        self.metrics.sessions.set(0)
