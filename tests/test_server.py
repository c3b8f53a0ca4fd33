"""The streaming server end to end: a real server process, real WebRTC over loopback,
real H.264 decoding in the Python client, the real World with the procedural generator
and the CPU renderer at 320x180."""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.request
import uuid

import numpy as np
import pytest

from bench.compare import psnr
from protocol import messages as m
from runtime.app import build_parser, config_from_args
from runtime.client import WorldClient

pytestmark = pytest.mark.timeout(180)


def run(coro):
    return asyncio.run(coro)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def wait_idle(c: WorldClient, timeout: float = 60.0) -> None:
    """Until the world has generated something and has no job queued or running."""
    deadline = time.monotonic() + timeout
    await c.wait_for("generation_done", timeout, since=0)
    while time.monotonic() < deadline:
        stats = await c.wait_for("stats", timeout=5)
        if stats.queue_depth == 0:
            return
    raise TimeoutError("the world kept generating")


async def settled_frame(c: WorldClient, seq: int | None = None, settle_s: float = 0.8):
    """A frame after the picture stopped changing long enough for the encoder to refine it."""
    if seq is not None:
        await c.frame_after_input(seq)
    await asyncio.sleep(settle_s)
    return await c.next_frame()


def get(url: str) -> tuple[int, bytes, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read(), r.headers.get("Content-Type", "")


# ---------------------------------------------------------------------------------------


def test_http_routes(server):
    status, body, ctype = get(server.url + "/healthz")
    health = json.loads(body)
    assert status == 200 and ctype == "application/json"
    assert health["generator"] == "procedural" and health["renderer"] == "cpu" and health["protocol_version"] == m.PROTOCOL_VERSION
    status, body, _ = get(server.url + "/metrics")
    assert status == 200 and b"worldstream_motion_to_photon_seconds" in body
    status, body, ctype = get(server.url + "/")
    assert status == 200 and "text/html" in ctype
    for evil in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fpyproject.toml"):
        try:
            status, body, _ = get(server.url + evil)
        except urllib.error.HTTPError as e:
            status, body = e.code, b""
        assert status == 404 or b"root:" not in body


def test_world_listing_names_joinable_worlds(server):
    async def scenario():
        name = unique("listed")
        async with WorldClient(server.url, new_world=m.NewWorld(name=name, caption="a snowy pass"), video=False):
            status, body, ctype = get(server.url + "/worlds")
            assert status == 200 and ctype == "application/json"
            rows = {row["name"]: row for row in json.loads(body)["worlds"]}
            assert rows[name]["players"] == 1

    run(scenario())


def test_stream_move_turn_and_generate(server):
    """Frames flow; forward changes the picture; turning away and back shows the same view;
    walking into new space generates it while frames keep coming."""

    async def scenario():
        async with WorldClient(server.url, new_world=m.NewWorld(name=unique("stream"), seed=3), name="walker") as c:
            assert c.welcome.server.width == 320 and c.welcome.server.height == 180
            first = await c.next_frame(timeout=30)
            assert first.rgb.shape == (180, 320, 3)
            await wait_idle(c)

            # ---- turn away and back: the same view (after encoding) ----
            seq = await c.send_input()
            before = await settled_frame(c, seq)
            seq = await c.send_input(yaw_delta=math.pi / 2)
            away = await settled_frame(c, seq, settle_s=0.3)
            seq = await c.send_input(yaw_delta=-math.pi / 2)
            back = await settled_frame(c, seq)
            assert psnr(before.rgb, back.rgb) >= 35.0, psnr(before.rgb, back.rgb)
            assert psnr(before.rgb, away.rgb) < 30.0, "turning should change the picture"

            # ---- fps over a few seconds, while walking forward into new space ----
            n0, t0 = c.frames_received, time.monotonic()
            events0 = c.event_count
            gaps, last = [], time.monotonic()
            end = time.monotonic() + 8.0
            while time.monotonic() < end:
                await c.send_input(forward=1.0, run=True)
                frame = await c.next_frame(timeout=5)
                gaps.append(frame.received_at - last)
                last = frame.received_at
            await c.send_input()
            fps = (c.frames_received - n0) / (time.monotonic() - t0)
            walked = await settled_frame(c, await c.send_input())
            assert fps >= 5.0, fps
            assert max(gaps) < 1.0, f"largest gap between frames {max(gaps):.2f} s"
            requested = [e for e in list(c.events)[events0 - c.event_count :] if e.TYPE == "generation_requested"]
            assert requested, "walking forward should request generation ahead"
            done = await c.wait_for("generation_done", timeout=60, since=events0)
            assert done.gaussians > 0
            assert psnr(back.rgb, walked.rgb) < 30.0, "walking forward should change the picture"

            stats = await c.wait_for("stats", timeout=5)
            assert stats.fps > 0 and stats.mtp_p50_ms > 0 and stats.mtp_p95_ms >= stats.mtp_p50_ms
            infos = c.of_type("frame_info")
            assert any(i.mtp_ms > 0 for i in infos)
            explored = [e for e in c.events if e.TYPE == "explored"]
            assert explored and any(cell[2] >= 1 for e in explored for cell in e.cells)

    run(scenario())


def test_two_players_share_one_world(server):
    async def scenario():
        name = unique("shared")
        async with WorldClient(server.url, new_world=m.NewWorld(name=name), name="Ada", video=False) as a:
            async with WorldClient(server.url, world=name, name="Bob", video=False) as b:
                joined = await a.wait_for("player_joined", timeout=10, since=0)
                assert joined.player.id == b.welcome.player_id and joined.player.name == "Bob"
                players = await b.wait_for(lambda e: e.TYPE == "players" and len(e.players) == 2, timeout=10)
                assert {p.id for p in players.players} == {a.welcome.player_id, b.welcome.player_id}
                assert b.welcome.seed == a.welcome.seed
                await wait_idle(a)
                await asyncio.sleep(1.0)
                before_leaving = a.event_count  # player_left may arrive before we start waiting
            left = await a.wait_for("player_left", timeout=10, since=before_leaving)
            assert left.id == b.welcome.player_id
            requested = a.of_type("generation_requested")
            assert requested
            # Both stood at the same spawn looking the same way: every region was planned once.
            centers = np.array([r.center for r in requested])
            dists = np.linalg.norm(centers[:, None] - centers[None], axis=-1) + np.eye(len(centers)) * 1e9
            assert dists.min() > 0.5, "a region was scheduled twice"
            seen_by_b = {e.job_id for e in b.events if e.TYPE == "generation_done"}
            seen_by_a = {e.job_id for e in a.events if e.TYPE == "generation_done"}
            assert seen_by_b <= seen_by_a and seen_by_b

    run(scenario())


def test_resume_token_restores_pose(server):
    async def scenario():
        name = unique("resume")
        async with WorldClient(server.url, new_world=m.NewWorld(name=name), video=False) as c:
            await c.send(m.HeadPose(seq=1, position=(1.5, -1.0, 2.5), orientation=(1.0, 0.0, 0.0, 0.0)))
            await c.wait_for(lambda e: e.TYPE == "players" and abs(e.players[0].position[0] - 1.5) < 1e-3, timeout=10)
            token, player_id = c.welcome.resume_token, c.welcome.player_id
        async with WorldClient(server.url, world=name, video=False, resume_token=token) as c:
            assert c.welcome.resumed and c.welcome.player_id == player_id
            assert np.allclose(c.welcome.pose.position, (1.5, -1.0, 2.5), atol=1e-3)
        async with WorldClient(server.url, world=name, video=False, resume_token=token) as c:  # used up
            assert not c.welcome.resumed
            err = await c.wait_for("error", since=0)
            assert err.code == "bad_resume_token"

    run(scenario())


def test_stereo_head_pose_stream(server):
    async def scenario():
        view = m.View(width=320, height=180, stereo=True, fov_y=1.2)
        async with WorldClient(server.url, new_world=m.NewWorld(name=unique("vr")), view=view) as c:
            assert c.welcome.server.width == 316 or c.welcome.server.width % 4 == 0
            seq = await c.send_head_pose((0.0, -0.2, 0.0), (1.0, 0.0, 0.0, 0.0))
            frame = await c.frame_after_input(seq)
            assert frame.rgb.shape == (c.welcome.server.height, c.welcome.server.width, 3)

    run(scenario())


def test_rate_control_flags(capsys):
    def config(*flags):
        return config_from_args(build_parser().parse_args(["--renderer", "cpu", *flags]), gpu=False)

    assert (config().crf, config("--crf", "off").crf, config("--crf", "23", "--bitrate", "3M").crf) == (18, None, 23)
    assert config("--crf", "23", "--bitrate", "3M").bitrate == 3_000_000  # the cap
    with pytest.raises(SystemExit) as bad:
        build_parser().parse_args(["--crf", "60"])
    assert bad.value.code == 2 and "crf must be in [0, 51] (or 'off'), got 60" in capsys.readouterr().err


def test_vp8_stream(start_server):
    server = start_server(codec="vp8", fps=15, bitrate="1M")

    async def scenario():
        async with WorldClient(server.url, new_world=m.NewWorld(name=unique("vp8"))) as c:
            assert c.welcome.server.codec == "vp8"
            seq = await c.send_input(yaw_delta=0.3)
            frame = await c.frame_after_input(seq, timeout=30)
            assert frame.rgb.shape == (180, 320, 3)
            n0 = c.frames_received
            await asyncio.sleep(2.0)
            assert c.frames_received - n0 >= 5

    run(scenario())
    assert "Traceback" not in server.log_text()


def test_a_dead_media_worker_ends_the_video_and_a_new_offer_brings_it_back(start_server):
    server = start_server()

    async def scenario():
        async with WorldClient(server.url, new_world=m.NewWorld(name=unique("crash"))) as c:
            await c.next_frame()
            since = c.event_count
            workers = server.kill_media_workers()
            assert workers, "the server runs no media worker"
            ended = await c.wait_for("video_ended", timeout=10, since=since)
            assert "media worker stopped" in ended.reason
            # The client offers again on its own (as the web client does); video comes back
            # from a fresh worker, and the player and the world carried on meanwhile.
            await c.wait_for("rtc_answer", timeout=30, since=since)
            received = c.frames_received
            frame = await c.next_frame(timeout=30, after=received)
            assert frame.rgb.shape == (c.welcome.server.height, c.welcome.server.width, 3)
            assert not set(server.media_worker_pids()) & set(workers)
            seq = await c.send_input(forward=1.0)
            await c.frame_after_input(seq)

    run(scenario())


def test_codec_is_negotiated_from_the_offer(server):
    """A VP8-only offer to an H.264 server streams VP8; an offer with neither codec is
    refused in words naming what it offered (not aiortc's internal error)."""

    async def scenario():
        async with WorldClient(server.url, new_world=m.NewWorld(name=unique("vp8only")), codecs=("vp8",)) as c:
            assert c.welcome.server.codec == "h264"
            answer = c.of_type("rtc_answer")[-1]
            assert "VP8/90000" in answer.sdp and "H264/90000" not in answer.sdp
            frame = await c.next_frame(timeout=30)
            assert frame.rgb.shape == (c.welcome.server.height, c.welcome.server.width, 3)
            offer = c.pc.localDescription.sdp.replace("VP8/90000", "AV1/90000")
            since = c.event_count
            await c.send(m.RtcOffer(sdp=offer))
            err = await c.wait_for("error", timeout=10, since=since)
            assert (err.code, err.field, err.ref_type) == ("rtc_failed", "sdp", "rtc_offer")
            assert "accepts AV1" in err.message and "H.264 or VP8" in err.message

    run(scenario())


def test_video_ended_when_the_client_closes_its_peer_connection(server):
    """video_ended covers every end not replaced by a new offer, the client's own close included."""

    async def scenario():
        async with WorldClient(server.url, new_world=m.NewWorld(name=unique("close-own"))) as c:
            await c.next_frame(timeout=30)
            since = c.event_count
            await c.pc.close()
            ended = await c.wait_for("video_ended", timeout=20, since=since)
            assert ended.reason

    run(scenario())


def test_caption_change_reaches_every_player(server):
    async def scenario():
        name = unique("caption")
        async with WorldClient(server.url, new_world=m.NewWorld(name=name, caption="hills"), video=False, name="Setter") as a:
            async with WorldClient(server.url, world=name, video=False, name="Other") as b:
                since_a, since_b = a.event_count, b.event_count
                await a.send(m.Caption(text="a frozen lake"))
                for c, since in ((a, since_a), (b, since_b)):
                    changed = await c.wait_for("caption_changed", timeout=10, since=since)
                    assert (changed.text, changed.player_id, changed.player_name) == ("a frozen lake", a.welcome.player_id, "Setter")
            async with WorldClient(server.url, world=name, video=False) as late:
                assert late.welcome.caption == "a frozen lake"

    run(scenario())


def test_standing_player_comes_down_after_fly_mode(server):
    """The spawn point has no ground samples right under it (the first keyframe's ground
    starts ahead): a player who flies up there and ends fly mode without moving comes down."""

    async def scenario():
        async with WorldClient(server.url, new_world=m.NewWorld(name=unique("land")), video=False) as c:
            await wait_idle(c)

            async def height() -> float:
                since = c.event_count
                players = await c.wait_for("players", timeout=5, since=since)
                return next(p for p in players.players if p.id == c.welcome.player_id).position[1]

            start = await height()
            for _ in range(10):
                await c.send_input(up=1.0, fly=True)
                await asyncio.sleep(0.05)
            await c.send_input(fly=True)
            await asyncio.sleep(0.3)
            flown = await height()
            assert flown < start - 1.0, (start, flown)  # up is -y
            await c.send_input(fly=False)  # fly mode ends; no key held
            await asyncio.sleep(1.5)
            assert abs(await height() - start) < 0.2

    run(scenario())


def test_frame_info_tells_the_client_when_its_move_is_blocked(server):
    """A player flying down into the ground is stopped by it: the frames' frame_info say
    ``blocked`` while the key is held against the ground, and stop saying it once released."""

    async def scenario():
        async with WorldClient(server.url, new_world=m.NewWorld(name=unique("blocked"))) as c:
            await wait_idle(c)
            await c.send_input(forward=1.0)  # walk onto ground the first keyframes show well
            await asyncio.sleep(1.5)
            await c.send_input()
            assert not any(f.blocked for f in c.of_type("frame_info"))  # open ground: never blocked
            await c.send_input(up=-1.0, fly=True)  # down, into the ground
            await c.wait_for(lambda e: isinstance(e, m.FrameInfo) and e.blocked, timeout=10)
            seq = await c.send_input(fly=True)  # let go
            await c.wait_for(lambda e: isinstance(e, m.FrameInfo) and e.input_seq >= seq and not e.blocked, timeout=10)

    run(scenario())
