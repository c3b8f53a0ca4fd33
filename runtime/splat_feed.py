"""The world's Gaussians for players who render locally (``splats``): hybrid rendering.

A player that sends ``splats`` (enabled, with a budget in Gaussians) gets the scene's
chunks as ``splat_piece`` messages: each piece a complete ``.spz`` of at most
``MAX_SPLAT_PIECE_BYTES`` (so every message stays under the protocol's size limit), the
nearest chunk first, a chunk in view counting as half as far. New chunks join the choice
as they land. When the next chunk would not fit the budget and a held one is much farther
(1.5x), the farther one is dropped (``splat_forget``) to make room; otherwise the feed waits
for the player to move. Refinement may take Gaussians out of a chunk (same id, new contents)
or empty it: a held chunk that changed is forgotten and sent again, one that left is forgotten.

Flow control: at most ``MAX_SPLATS_IN_FLIGHT`` pieces unacknowledged per player (each
``splat_ack`` frees one; an ack that never comes frees its slot after ``ACK_TIMEOUT_S``,
since the WebSocket delivered it anyway), and at most ``SPLAT_RATE_HZ`` pieces a second. So
a slow client costs the server nothing but waiting, and the connection's bounded outbox
never fills with splats. Chunks are encoded once, in the feed's own thread, and kept
(``CACHE_BYTES``) for every player.

The far field (``SceneSnapshot.far``: coarse splats of distant surfaces, drawn behind the
scene) goes only to a player that gives it a budget (``splats.max_far_splats`` > 0): its
chunks are pieces with ``layer="far"``, chosen, budgeted and forgotten exactly like scene
chunks but against their own budget, so the far field never takes room from the scene. Far
chunks merge as the world grows (a later landing in the same far cell appends to the cell's
chunk: ``Chunk.far_parts``), so the feed sends them per landing (:meth:`SplatFeed._far_units`):
each landing's Gaussians are a far chunk on the wire under that landing's id (the first under
the chunk's own), which never changes. A merge sends only what it added and the page never
loses the part of the horizon it holds; a far chunk the world drops is forgotten whole.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from protocol import messages as m
from runtime.player import Player
from runtime.world.formats.spz import encode_spz
from runtime.world.formats.spz_layout import SH_COEFFS
from runtime.world.gaussians import Gaussians
from runtime.world.scene import Chunk, frustum_cull_boxes

log = logging.getLogger("worldstream.splats")

TICK_S = 0.02
ACK_TIMEOUT_S = 5.0
CACHE_BYTES = 256 << 20
IN_VIEW_FACTOR = 0.5  # a chunk in view counts as this much as far
EVICT_MARGIN = 1.5  # a held chunk is dropped for a new one only if this much farther
SPZ_OVERHEAD_BYTES = 256  # header and gzip framing, on top of the raw attribute bytes


def gaussians_per_piece(gaussians: Gaussians) -> int:
    """How many Gaussians fit one piece: raw ``.spz`` attribute bytes (gzip never grows them
    by more than its framing) within ``MAX_SPLAT_PIECE_BYTES``."""
    per = 9 + 1 + 3 + 3 + 4  # position, alpha, colour, scale, rotation
    if gaussians.sh_degree:
        per += SH_COEFFS[gaussians.sh_degree] * 3
    return max(1, (m.MAX_SPLAT_PIECE_BYTES - SPZ_OVERHEAD_BYTES) // per)


def encode_pieces(gaussians: Gaussians) -> list[tuple[int, bytes]]:
    """``gaussians`` as ``.spz`` pieces: ``(count, bytes)`` each, in order."""
    n, step = len(gaussians), gaussians_per_piece(gaussians)
    return [(min(step, n - i), encode_spz(gaussians.subset(np.arange(i, min(i + step, n))))) for i in range(0, n, step)]


LAYERS = ("scene", "far")


@dataclass
class _Subscription:
    budget: int
    far_budget: int = 0
    held: dict[int, Gaussians] = field(default_factory=dict)  # scene chunk id -> its contents sent (or being sent)
    far_held: dict[int, Gaussians] = field(default_factory=dict)  # the same for far-field chunks
    queue: collections.deque = field(default_factory=collections.deque)  # SplatPiece messages still to send
    in_flight: dict[int, float] = field(default_factory=dict)  # piece id -> monotonic send time
    sent_at: collections.deque = field(default_factory=lambda: collections.deque(maxlen=m.SPLAT_RATE_HZ))
    busy: bool = False  # a chunk is being encoded for it

    def layer(self, name: str) -> tuple[dict[int, Gaussians], int]:
        """(held chunks, budget) of one layer."""
        return (self.held, self.budget) if name == "scene" else (self.far_held, self.far_budget)


def _sphere(chunk: Chunk) -> tuple[np.ndarray, float]:
    lo, hi = chunk.bounds_min.astype(np.float64), chunk.bounds_max.astype(np.float64)
    return (lo + hi) / 2, float(np.linalg.norm(hi - lo) / 2)


class SplatFeed:
    """Sends one session's scene to the players that asked for it (see the module doc).

    Args:
        world: the session's world (its ``scene`` is read).
        players: the session's players by id (the live dict).
    """

    def __init__(self, world, players: dict[str, Player]) -> None:
        self.world = world
        self.players = players
        self._subs: dict[str, _Subscription] = {}
        self._next_id = 0
        # chunk id -> (the contents encoded, their pieces): refinement changes a chunk's contents
        self._cache: collections.OrderedDict[int, tuple[Gaussians, list[tuple[int, bytes]]]] = collections.OrderedDict()
        self._cache_bytes = 0
        self._units: dict[int, Chunk] = {}  # far-field landings as sent (see _far_units)
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="splats")
        self._loop = asyncio.get_running_loop()
        self.pieces_sent = 0

    # ------------------------------------------------------------------ player messages
    def subscribe(self, player: Player, msg: m.Splats) -> None:
        """``splats``: start (or change the budget), or stop and forget everything sent."""
        if not msg.enabled:
            self._subs.pop(player.id, None)
            return
        sub = self._subs.setdefault(player.id, _Subscription(msg.max_splats))
        sub.budget = msg.max_splats
        sub.far_budget = msg.max_far_splats

    def ack(self, player: Player, piece_id: int) -> None:
        sub = self._subs.get(player.id)
        if sub is not None:
            sub.in_flight.pop(piece_id, None)

    def remove(self, player: Player) -> None:
        self._subs.pop(player.id, None)

    def close(self) -> None:
        self._encoder.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for player_id, sub in list(self._subs.items()):
                player = self.players.get(player_id)
                if player is None:
                    self._subs.pop(player_id, None)
                    continue
                try:
                    await self._feed(player, sub)
                except Exception:
                    log.exception("splats for player %s failed; stopping them", player_id)
                    self._subs.pop(player_id, None)

    async def _feed(self, player: Player, sub: _Subscription) -> None:
        now = time.monotonic()
        for piece_id, at in list(sub.in_flight.items()):
            if now - at > ACK_TIMEOUT_S:
                del sub.in_flight[piece_id]
        while len(sub.in_flight) < m.MAX_SPLATS_IN_FLIGHT and not self._rate_spent(sub, now):
            if not sub.queue:
                if sub.busy or not await self._queue_next_chunk(player, sub):
                    return
                if self._subs.get(player.id) is not sub:  # stopped while encoding
                    return
                continue
            piece = sub.queue.popleft()
            sub.in_flight[piece.id] = now
            sub.sent_at.append(now)
            player.send(piece)
            self.pieces_sent += 1

    @staticmethod
    def _rate_spent(sub: _Subscription, now: float) -> bool:
        return len(sub.sent_at) == sub.sent_at.maxlen and now - sub.sent_at[0] < 1.0

    async def _queue_next_chunk(self, player: Player, sub: _Subscription) -> bool:
        """Choose the next chunk of either layer for ``player`` (making room in its layer if a
        held one is much farther), encode it (cached) and queue its pieces; False when there
        is nothing to send now."""
        snapshot = self.world.scene.snapshot()
        layers = {"scene": [c for c in snapshot.chunks if len(c.gaussians)]}
        layers["far"] = [c for c in self._far_units(snapshot.far) if len(c.gaussians)] if sub.far_budget > 0 else []
        stale = []
        for name, chunks in layers.items():
            held, _ = sub.layer(name)
            current = {c.id: c.gaussians for c in chunks}
            for cid in [cid for cid, g in held.items() if current.get(cid) is not g]:  # refined, merged or gone
                del held[cid]
                stale.append(cid)
        if stale:
            player.send(m.SplatForget(chunk_ids=stale))
        best: tuple[float, str, Chunk, dict[int, float]] | None = None
        for name, chunks in layers.items():
            held, budget = sub.layer(name)
            if not chunks:
                continue
            scores = dict(zip((c.id for c in chunks), self._scores(player, chunks)))
            wanted = [(scores[c.id], c.id, c) for c in chunks if c.id not in held and len(c.gaussians) <= budget]
            if wanted:
                score, _, chunk = min(wanted, key=lambda w: w[:2])
                if best is None or score < best[0]:
                    best = (score, name, chunk, scores)
        if best is None:
            return False
        score, layer, chunk, scores = best
        held, budget = sub.layer(layer)
        forget = []
        held_total = sum(len(g) for g in held.values())
        while held_total + len(chunk.gaussians) > budget:
            worst = max(held, key=lambda cid: scores.get(cid, np.inf))
            # Not strictly farther by the margin: wait. (Equal scores, e.g. two chunks whose
            # bounds hold the player, would otherwise evict each other in turn forever.)
            if scores.get(worst, np.inf) <= EVICT_MARGIN * score:
                if forget:
                    player.send(m.SplatForget(chunk_ids=forget))
                return False  # full of nearer chunks: wait for the player to move
            held_total -= len(held.pop(worst))
            forget.append(worst)
        if forget:
            player.send(m.SplatForget(chunk_ids=forget))
        held[chunk.id] = chunk.gaussians
        sub.busy = True
        try:
            pieces = await self._pieces(chunk)
        finally:
            sub.busy = False
        center, radius = _sphere(chunk)
        for part, (count, data) in enumerate(pieces):
            sub.queue.append(
                m.SplatPiece(
                    id=self._next_id, chunk_id=chunk.id, part=part, parts=len(pieces),
                    center=(float(center[0]), float(center[1]), float(center[2])), radius=radius, count=count, spz=data,
                    layer=layer,
                )
            )
            self._next_id += 1
        return True

    def _far_units(self, far: tuple[Chunk, ...]) -> list[Chunk]:
        """The far field as the feed sends it: one chunk per landing merged into each far chunk
        (id: the chunk's own for its first landing, the landing's for later ones), each built
        once and kept while its far chunk lives, so it stays the same object (held copies are
        compared by identity) however often its cell merges again."""
        units, alive = [], set()
        for c in far:
            start = 0
            for k, (landing, end) in enumerate(c.far_parts or ((c.id, len(c.gaussians)),)):
                unit_id = c.id if k == 0 else landing
                unit = self._units.get(unit_id)
                if unit is None or len(unit.gaussians) != end - start:
                    whole = start == 0 and end == len(c.gaussians)
                    unit = c if whole else Chunk.build(unit_id, c.gaussians.subset(np.arange(start, end)), c.source)
                    self._units[unit_id] = unit
                units.append(unit)
                alive.add(unit_id)
                start = end
        for unit_id in set(self._units) - alive:  # dropped far chunks
            del self._units[unit_id]
        return units

    def _scores(self, player: Player, chunks: list[Chunk]) -> list[float]:
        """Per chunk: distance from the player's eye to its bounding sphere (metres, 0 inside),
        times IN_VIEW_FACTOR where it is in the player's view."""
        lo = np.stack([c.bounds_min for c in chunks])
        hi = np.stack([c.bounds_max for c in chunks])
        centers, radii = (lo + hi) / 2, np.linalg.norm(hi - lo, axis=1) / 2
        dist = np.maximum(np.linalg.norm(centers - player.pose.position[None], axis=1) - radii, 0.0)
        in_view = frustum_cull_boxes(lo, hi, player.cameras()[:1])[0]
        return list(np.where(in_view, dist * IN_VIEW_FACTOR, dist).astype(float))

    async def _pieces(self, chunk: Chunk) -> list[tuple[int, bytes]]:
        cached = self._cache.get(chunk.id)
        if cached is not None and cached[0] is chunk.gaussians:
            self._cache.move_to_end(chunk.id)
            return cached[1]
        pieces = await self._loop.run_in_executor(self._encoder, encode_pieces, chunk.gaussians)
        old = self._cache.pop(chunk.id, None)
        if old is not None:
            self._cache_bytes -= sum(len(d) for _, d in old[1])
        self._cache[chunk.id] = (chunk.gaussians, pieces)
        self._cache_bytes += sum(len(d) for _, d in pieces)
        while self._cache_bytes > CACHE_BYTES and len(self._cache) > 1:
            _, (_, evicted) = self._cache.popitem(last=False)
            self._cache_bytes -= sum(len(d) for _, d in evicted)
        return pieces
