"""Issue 15's defects, each reproduced against the real server: one player's view that the
renderer cannot draw, simultaneous joins beyond ``--max-players``, expensive messages,
frozen clients, foreign origins and reverse proxies."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest

from protocol import messages as m
from runtime.app import StreamServer
from runtime.client import WorldClient
from runtime.config import ServerConfig
from runtime.world.render.cpu import CpuRenderer

pytestmark = pytest.mark.timeout(180)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


class FailsFarEast(CpuRenderer):
    """The CPU renderer, raising for any batch holding a camera east of x = 50 m: a stand-in
    for a renderer bug that only some poses hit (as ``visible_blocks`` once did)."""

    def render(self, snapshot, cameras, sky):
        centres = -np.einsum("nji,nj->ni", cameras.w2c[:, :3, :3], cameras.w2c[:, :3, 3])
        if (centres[:, 0] > 50.0).any():
            raise RuntimeError("this renderer cannot draw east of x = 50 m")
        return super().render(snapshot, cameras, sky)


def in_process_server(tmp_path, renderer=None, **overrides) -> StreamServer:
    config = ServerConfig(port=0, renderer="cpu", worlds=tmp_path / "worlds", width=160, height=96, fps=15, bitrate=500_000)
    for key, value in overrides.items():
        setattr(config, key, value)
    return StreamServer(config, renderer=renderer or CpuRenderer())


async def frames_within(c: WorldClient, seconds: float) -> int:
    before = c.frames_received
    await asyncio.sleep(seconds)
    return c.frames_received - before


def test_a_view_that_fails_to_render_costs_only_that_view(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLDSTREAM_MEDIA_PROCESSES", "0")

    async def scenario():
        server = in_process_server(tmp_path, FailsFarEast())
        url = await server.start()
        try:
            name = unique("fails")
            async with WorldClient(url, new_world=m.NewWorld(name=name), name="west") as west, \
                    WorldClient(url, world=name, name="east") as east:
                await west.next_frame(timeout=60)
                await east.next_frame(timeout=60)
                await east.send_head_pose((100.0, -1.6, 0.0), (1.0, 0.0, 0.0, 0.0))
                await asyncio.sleep(1.0)
                # east's view fails every tick; west's stream, the session and the world carry on
                assert await frames_within(west, 3.0) >= 5
                assert await frames_within(east, 1.0) == 0
                assert await west.ping() > 0
                await east.send_head_pose((0.0, -1.6, 0.0), (1.0, 0.0, 0.0, 0.0))
                await east.next_frame(timeout=20)
                dropped = server.metrics.frames_dropped.labels("render_failed")._value.get()
                assert dropped > 0
        finally:
            await server.stop()

    asyncio.run(scenario())
