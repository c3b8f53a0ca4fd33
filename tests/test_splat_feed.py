"""Hybrid rendering's server side: the world's Gaussians to a player that renders locally.

Pieces are real ``.spz`` that decode back to the chunk; a chunk that refinement changes is
forgotten and sent again (a real Scene and Player, the feed's own loop); then end to end with
the real server (procedural world, real WebSocket, the Python client acknowledging each
piece): after ``splats`` every chunk arrives whole, nearest first; with a small budget the
client never holds more than it, and walking away makes the server forget far chunks for
near ones.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import numpy as np
import pytest

from protocol import messages as m
from protocol.codec import encode
from runtime.client import WorldClient
from runtime.player import Player
from runtime.splat_feed import SplatFeed, encode_pieces, gaussians_per_piece
from runtime.world.camera import Pose
from runtime.world.scene import ChunkSource, Scene
from runtime.world.formats.spz import decode_spz
from runtime.world.gaussians import Gaussians
from tests.test_server import unique, wait_idle

pytestmark = pytest.mark.timeout(240)


def random_gaussians(n: int, seed: int = 0) -> Gaussians:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4)).astype(np.float32)
    return Gaussians(
        means=rng.uniform(-20, 20, (n, 3)).astype(np.float32),
        quats=q / np.linalg.norm(q, axis=1, keepdims=True),
        log_scales=rng.uniform(-4, 0, (n, 3)).astype(np.float32),
        opacity_logits=rng.normal(size=n).astype(np.float32),
        colors=rng.uniform(0, 1, (n, 3)).astype(np.float32),
    )


def test_pieces_fit_a_message_and_decode_back():
    g = random_gaussians(3 * gaussians_per_piece(random_gaussians(1)) + 17)
    pieces = encode_pieces(g)
    assert len(pieces) == 4 and sum(c for c, _ in pieces) == len(g)
    for count, data in pieces:
        assert len(data) <= m.MAX_SPLAT_PIECE_BYTES
        msg = m.SplatPiece(id=0, chunk_id=0, part=0, parts=4, center=(0, 0, 0), radius=1.0, count=count, spz=data)
        assert len(encode(msg)) <= m.MAX_MESSAGE_BYTES
    back = Gaussians.concat([decode_spz(d) for _, d in pieces])
    assert np.abs(back.means - g.means).max() < 1e-3  # 24-bit fixed point
    assert np.abs(back.colors - g.colors).max() < 0.02


def test_refined_chunks_are_forgotten_and_sent_again():
    async def scenario():
        scene = Scene()
        scene.append(random_gaussians(500), ChunkSource(job_id=0))
        sent: list[m.Message] = []
        player = Player("p", "p", m.View(), (320, 180), Pose(), sent.append)
        feed = SplatFeed(SimpleNamespace(scene=scene), {"p": player})
        feed.subscribe(player, m.Splats(enabled=True, max_splats=10_000))
        task = asyncio.create_task(feed.run())

        async def settle() -> None:  # acknowledge everything until nothing more comes
            for _ in range(100):
                await asyncio.sleep(0.05)
                for msg in sent:
                    if msg.TYPE == "splat_piece":
                        feed.ack(player, msg.id)
            await asyncio.sleep(0.1)

        try:
            await settle()
            assert sum(x.count for x in sent if x.TYPE == "splat_piece") == 500
            sent.clear()
            retire = np.zeros(500, bool)
            retire[:200] = True  # a closer keyframe remade 200 of chunk 0's Gaussians
            scene.append(random_gaussians(100, seed=1), ChunkSource(job_id=1), retire={0: retire})
            await settle()
            assert sent[0] == m.SplatForget(chunk_ids=[0])
            counts = {}
            for msg in sent[1:]:
                counts[msg.chunk_id] = counts.get(msg.chunk_id, 0) + msg.count
            assert counts == {0: 300, 1: 100}
        finally:
            task.cancel()
            feed.close()

    asyncio.run(scenario())


def test_far_field_chunks_go_only_to_a_player_that_budgets_them():
    """Far-field chunks come as pieces of layer 'far' against their own budget (never taking the
    scene's room), only when ``max_far_splats`` > 0; a merge sends only the landing it added."""

    async def scenario():
        scene = Scene()
        scene.append(random_gaussians(300), ChunkSource(job_id=0))
        far, _ = scene.land_far(random_gaussians(200, seed=2), ChunkSource(job_id=0, origin=(0.0, 0.0, 0.0)), cell_m=64.0)
        players, sent = {}, {}
        for name in ("old", "new"):
            sent[name] = []
            players[name] = Player(name, name, m.View(), (320, 180), Pose(), sent[name].append)
        feed = SplatFeed(SimpleNamespace(scene=scene), players)
        feed.subscribe(players["old"], m.Splats(enabled=True, max_splats=300))  # a client before the far field
        feed.subscribe(players["new"], m.Splats(enabled=True, max_splats=300, max_far_splats=200))
        task = asyncio.create_task(feed.run())

        async def settle() -> None:
            for _ in range(60):
                await asyncio.sleep(0.05)
                for name, messages in sent.items():
                    for msg in messages:
                        if msg.TYPE == "splat_piece":
                            feed.ack(players[name], msg.id)
            await asyncio.sleep(0.1)

        def counts(name: str) -> dict:
            out: dict = {}
            for msg in sent[name]:
                if msg.TYPE == "splat_piece":
                    out[(msg.layer, msg.chunk_id)] = out.get((msg.layer, msg.chunk_id), 0) + msg.count
            return out

        try:
            await settle()
            assert counts("old") == {("scene", 0): 300}
            assert counts("new") == {("scene", 0): 300, ("far", far.id): 200}  # both budgets full, nothing evicted
            assert not any(msg.TYPE == "splat_forget" for msg in sent["new"])
            # A later job in the same far cell merges into the far chunk (same id): the page keeps
            # what it holds and gets only the landing's 50 Gaussians, under the landing's id,
            # once they fit its far budget.
            sent["new"].clear()
            merged, _ = scene.land_far(random_gaussians(50, seed=3), ChunkSource(job_id=1, origin=(5.0, 0.0, 5.0)), cell_m=64.0)
            assert merged.id == far.id and len(merged.gaussians) == 250
            landing = merged.far_parts[-1][0]
            await settle()
            assert sent["new"] == []  # 200 + 50 > its budget of 200, and nothing held is farther
            feed.subscribe(players["new"], m.Splats(enabled=True, max_splats=300, max_far_splats=250))
            await settle()
            assert counts("new") == {("far", landing): 50} and not any(msg.TYPE == "splat_forget" for msg in sent["new"])
            pieces = [msg for msg in sent["new"] if msg.TYPE == "splat_piece"]
            np.testing.assert_allclose(decode_spz(pieces[0].spz).means, merged.gaussians.means[200:], atol=1e-3)
        finally:
            task.cancel()
            feed.close()

    asyncio.run(scenario())


class Receiver:
    """Acknowledges every splat_piece as it arrives and keeps what the client holds."""

    def __init__(self, client: WorldClient) -> None:
        self.client = client
        self.held: dict[int, int] = {}  # chunk id -> Gaussians received
        self.order: list[m.SplatPiece] = []
        self.forgotten: list[int] = []
        self.most_held = 0
        self.pieces: dict[int, tuple[int, int]] = {}  # chunk id -> (pieces received, parts) of its latest sending
        self.last_piece_at = time.monotonic()
        self._seen = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            events = list(self.client.events)[self._seen :]
            self._seen += len(events)
            for e in events:
                if e.TYPE == "splat_piece":
                    assert decode_spz(e.spz).means.shape == (e.count, 3)
                    self.held[e.chunk_id] = self.held.get(e.chunk_id, 0) + e.count
                    got = 0 if e.part == 0 else self.pieces.get(e.chunk_id, (0, 0))[0]
                    self.pieces[e.chunk_id] = (got + 1, e.parts)
                    self.last_piece_at = time.monotonic()
                    self.order.append(e)
                    await self.client.send(m.SplatAck(id=e.id))
                elif e.TYPE == "splat_forget":
                    for chunk_id in e.chunk_ids:
                        self.held.pop(chunk_id, None)
                        self.pieces.pop(chunk_id, None)
                        self.forgotten.append(chunk_id)
            self.most_held = max(self.most_held, sum(self.held.values()))

    async def until(self, predicate, timeout: float = 60.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"held {sum(self.held.values())} Gaussians in {len(self.held)} chunks")
            await asyncio.sleep(0.05)


def test_splats_arrive_nearest_first_within_the_budget(server):
    async def scenario():
        name = unique("splats")
        async with WorldClient(server.url, new_world=m.NewWorld(name=name, seed=9), name="local", video=False) as c:
            await wait_idle(c)
            total = sum(e.gaussians for e in c.of_type("generation_done"))
            assert total > 0
            receiver = Receiver(c)
            task = asyncio.create_task(receiver.run())
            try:
                await c.send(m.Splats(enabled=True, max_splats=m.MAX_LOCAL_SPLATS))
                # The whole world arrives, every chunk whole (nothing more is generated while
                # nobody moves; refinement may have taken some Gaussians out again).
                await receiver.until(lambda: receiver.held and time.monotonic() - receiver.last_piece_at > 2.0)
                assert all(got == parts for got, parts in receiver.pieces.values())
                assert set(receiver.pieces) == set(receiver.held)
                assert 0 < sum(receiver.held.values()) <= total
                spawn = np.asarray(c.welcome.pose.position)
                first = receiver.order[0]
                dists = [max(np.linalg.norm(np.asarray(p.center) - spawn) - p.radius, 0) for p in receiver.order]
                assert dists[0] <= np.median(dists), "the nearest chunks come first"
                assert first.part == 0
            finally:
                task.cancel()

        # A second player with a budget of a third of the world: never more, and far chunks
        # make way for near ones after walking.
        async with WorldClient(server.url, world=name, name="small", video=False) as c:
            receiver = Receiver(c)
            task = asyncio.create_task(receiver.run())
            try:
                budget = total // 3
                await c.send(m.Splats(enabled=True, max_splats=budget))
                await receiver.until(lambda: len(receiver.order) > 0)
                await asyncio.sleep(2.0)
                assert 0 < receiver.most_held <= budget
                farthest = max(receiver.order, key=lambda p: np.linalg.norm(p.center))
                away = -2.0 * np.asarray(farthest.center)  # the other side of the world from it
                await c.send_head_pose((float(away[0]), 0.0, float(away[2])), (1.0, 0.0, 0.0, 0.0))
                await receiver.until(lambda: receiver.forgotten, timeout=30)
                await asyncio.sleep(1.0)
                assert receiver.most_held <= budget
            finally:
                task.cancel()

    try:
        asyncio.run(scenario())
    except Exception:
        print(server.log_text()[-4000:])
        raise
