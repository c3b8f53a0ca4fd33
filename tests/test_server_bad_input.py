"""Bad input against the real server: every refusal is a typed error, the connection, the
session and the world carry on; floods are rate limited; version mismatches close with a
reason; vanished clients are cleaned up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
import uuid

import msgpack
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from protocol import messages as m
from runtime.client import WorldClient

pytestmark = pytest.mark.timeout(120)


def run(coro):
    return asyncio.run(coro)


def raw(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def health(url: str) -> dict:
    with urllib.request.urlopen(url + "/healthz", timeout=10) as r:
        return json.loads(r.read())


async def refused(c: WorldClient, data, code: str, field: str | None = "-") -> m.ErrorMessage:
    since = c.event_count
    await c.send_raw(data)
    err = await c.wait_for("error", timeout=10, since=since)
    assert err.code == code, err
    if field != "-":
        assert err.field == field, err
    return err


BAD = [
    (b"\xc1garbage", "bad_message", None),
    ("a text frame", "bad_message", None),
    (raw([1, 2, 3]), "bad_message", None),
    (raw({"type": "fly_to_moon"}), "unknown_type", "type"),
    (raw({"type": "welcome", "player_id": "x"}), "unknown_type", "type"),
    (raw({"type": "input"}), "missing_field", "seq"),
    (raw({"type": "input", "seq": "seven"}), "bad_field", "seq"),
    (raw({"type": "input", "seq": 1, "forward": float("nan")}), "bad_field", "forward"),
    (raw({"type": "input", "seq": 1, "forward": 1e9}), "bad_field", "forward"),
    (raw({"type": "input", "seq": 1, "yaw_delta": 100.0}), "bad_field", "yaw_delta"),
    (raw({"type": "head_pose", "seq": 1, "position": [float("inf"), 0, 0], "orientation": [1, 0, 0, 0]}), "bad_field", "position[0]"),
    (raw({"type": "head_pose", "seq": 1, "position": [1e7, 0, 0], "orientation": [1, 0, 0, 0]}), "bad_field", "position[0]"),
    (raw({"type": "head_pose", "seq": 1, "position": [0, 0, 0], "orientation": [3, 3, 3, 3]}), "bad_field", "orientation"),
    (raw({"type": "ice_candidate", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}), "no_rtc_offer", None),
    (raw({"type": "caption", "text": "x" * 600}), "bad_field", "text"),
    (raw({"type": "caption", "text": "x" * 80_000}), "too_large", None),
    (raw({"type": "rtc_offer", "sdp": "this is not sdp"}), "rtc_failed", "sdp"),
    (raw({"type": "hello", "protocol_version": m.PROTOCOL_VERSION, "world": "x"}), "already_joined", None),
]


def test_bad_messages_get_typed_errors_and_the_connection_carries_on(server):
    async def scenario():
        async with WorldClient(server.url, new_world=m.NewWorld(name=f"bad-{uuid.uuid4().hex[:6]}"), video=False) as c:
            for data, code, field in BAD:
                await refused(c, data, code, field)
                await asyncio.sleep(0.06)  # stay under the 20/s bucket for "other" messages
            assert await c.ping() > 0  # still usable
            seq = await c.send_input(forward=0.5)
            assert seq > 0
            assert health(server.url)["players"] >= 1

    run(scenario())


def test_hello_problems(server, tmp_path):
    import numpy as np

    from runtime.world.formats.media import write_image
    from test_depth import png16

    write_image(tmp_path / "start.png", np.full((16, 16, 3), 90, np.uint8))
    png = (tmp_path / "start.png").read_bytes()

    async def scenario():
        # messages before hello
        async with connect(server.ws_url) as ws:
            await ws.send(raw({"type": "input", "seq": 1}))
            err = msgpack.unpackb(await ws.recv())
            assert err["type"] == "error" and err["code"] == "not_joined"
            await ws.send(raw({"type": "ping", "id": 5}))
            assert msgpack.unpackb(await ws.recv())["type"] == "pong"
        # path tricks, unknown worlds, bad images
        for hello, code, field in [
            ({"world": "../../etc"}, "bad_field", "world"),
            ({"world": "no-such-world-here"}, "world_not_found", "world"),
            ({"new_world": {"start_image": b"GIF89a" + b"\0" * 100}}, "bad_field", "new_world.start_image"),
            ({"new_world": {"start_image": b"\x89PNG\r\n\x1a\n" + b"\0" * 100}}, "bad_field", "new_world.start_image"),
            ({"new_world": {"start_depth": png16(np.ones((16, 16), np.uint16))}}, "bad_field", "new_world.start_depth"),
            ({"new_world": {"start_image": png, "start_depth": b"GIF89a" + b"\0" * 100}}, "bad_field", "new_world.start_depth"),
            ({"new_world": {"start_image": png, "start_depth": png}}, "bad_field", "new_world.start_depth"),  # 8-bit RGB
            ({"new_world": {"start_image": png, "start_fov_y": 3.5}}, "bad_field", "new_world.start_fov_y"),
            ({"new_world": {"caption": "y" * 501}}, "bad_field", "new_world.caption"),
            ({"world": "w", "view": {"fov_y": float("nan")}}, "bad_field", "view.fov_y"),
        ]:
            async with connect(server.ws_url) as ws:
                await ws.send(raw({"type": "hello", "protocol_version": m.PROTOCOL_VERSION, **hello}))
                err = msgpack.unpackb(await ws.recv())
                assert (err["type"], err["code"], err["field"]) == ("error", code, field), err
        # a hello error leaves the connection open for a corrected hello
        async with connect(server.ws_url) as ws:
            await ws.send(raw({"type": "hello", "protocol_version": m.PROTOCOL_VERSION, "world": "missing-one"}))
            assert msgpack.unpackb(await ws.recv())["code"] == "world_not_found"
            name = f"fixed-{uuid.uuid4().hex[:6]}"
            await ws.send(raw({"type": "hello", "protocol_version": m.PROTOCOL_VERSION, "new_world": {"name": name}}))
            assert msgpack.unpackb(await ws.recv())["type"] == "welcome"
        assert not (server.worlds.parent / "etc").exists()

    run(scenario())


def test_version_mismatch_closes_with_a_reason(server):
    async def scenario():
        async with connect(server.ws_url) as ws:
            await ws.send(raw({"type": "hello", "protocol_version": 999, "world": "x", "brand_new_field": 1}))
            err = msgpack.unpackb(await ws.recv())
            assert err["code"] == "version_mismatch" and err["field"] == "protocol_version"
            assert str(m.PROTOCOL_VERSION) in err["message"] and "999" in err["message"]
            with pytest.raises(Exception):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1008 and "999" in ws.close_reason

    run(scenario())


def test_floods_are_rate_limited(server):
    async def scenario():
        async with WorldClient(server.url, new_world=m.NewWorld(name=f"flood-{uuid.uuid4().hex[:6]}"), video=False) as c:
            since = c.event_count
            for i in range(400):
                await c.send(m.Input(seq=i + 1, forward=1.0))
            err = await c.wait_for("error", timeout=10, since=since)
            assert err.code == "rate_limited" and err.ref_type == "input"
            errors = [e for e in list(c.events) if e.TYPE == "error" and e.code == "rate_limited"]
            assert len(errors) <= 3, "rate-limit errors must not flood back"
            await asyncio.sleep(1.0)
            assert await c.ping() > 0

    run(scenario())


def test_oversized_frame_closes_only_that_connection(server):
    async def scenario():
        async with WorldClient(server.url, new_world=m.NewWorld(name=f"big-{uuid.uuid4().hex[:6]}"), video=False) as other:
            # no `async with`: the server closes while the client is still sending, and
            # the client's own closing handshake then has nothing left to close
            ws = await connect(server.ws_url, max_size=None)
            # The server stops reading at the frame's header and drops the connection a moment
            # later: the send of the rest may fail (websockets says so with ConnectionClosed).
            with contextlib.suppress(ConnectionClosed):
                await ws.send(b"\x00" * (m.MAX_HELLO_BYTES + 100_000))
            with pytest.raises(Exception):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1009
            assert await other.ping() > 0

    run(scenario())


def test_vanished_client_is_cleaned_up(server):
    async def scenario():
        name = f"gone-{uuid.uuid4().hex[:6]}"
        async with WorldClient(server.url, new_world=m.NewWorld(name=name), name="stays", video=False) as stays:
            ghost = WorldClient(server.url, world=name, name="ghost")
            await ghost.connect()
            await ghost.next_frame(timeout=60)
            players_before = health(server.url)["players"]
            since = stays.event_count
            # vanish: no WebSocket close, no RTCP bye, nothing
            ghost.ws.transport.abort()
            for task in ghost._tasks:
                task.cancel()
            t0 = time.monotonic()
            left = await stays.wait_for(lambda e: e.TYPE == "player_left" and e.id == ghost.welcome.player_id, timeout=20, since=since)
            assert left.name == "ghost"
            assert time.monotonic() - t0 < 15
            assert health(server.url)["players"] == players_before - 1
            await ghost.pc.close()

    run(scenario())


def test_nothing_above_crashed_inside_the_server(server):
    """All the abuse above was refused at the door: the server logged no exception."""
    text = server.log_text()
    assert "Traceback" not in text, text[-4000:]
    assert health(server.url)["status"] == "ok"


def test_nil_is_the_default_for_optional_fields(server):
    """A third-party encoder that writes nil for every optional field it does not set."""

    async def scenario():
        async with connect(server.ws_url) as ws:
            name = f"nil-{uuid.uuid4().hex[:6]}"
            nil_view = {k: None for k in ("width", "height", "fov_y", "stereo", "ipd")}
            await ws.send(raw({
                "type": "hello", "protocol_version": m.PROTOCOL_VERSION, "player_name": None, "world": None,
                "resume_token": None, "view": nil_view,
                "new_world": {"name": name, "seed": None, "caption": None, "start_image": None},
            }))
            welcome = msgpack.unpackb(await ws.recv())
            assert welcome["type"] == "welcome" and welcome["world"] == name, welcome
            await ws.send(raw({"type": "input", "seq": 1, "t_ms": None, "forward": None, "run": None, "fly": None}))
            await ws.send(raw({"type": "ping", "id": 7, "t_ms": None}))
            while (reply := msgpack.unpackb(await ws.recv()))["type"] != "pong":
                assert reply["type"] != "error", reply
            assert reply["id"] == 7 and reply["t_ms"] == 0.0

    run(scenario())


def test_start_image_refusals_are_words_naming_the_limit(server):
    """Checked from the image's header before decoding: a valid 20000x20000 PNG (50 KB) is
    refused naming the pixel limit; a damaged one as "not a readable PNG", never FFmpeg's words."""
    from images import damaged_png, png_bytes

    async def scenario():
        for image, words in (
            (png_bytes(20000, 20000), ["20000×20000 pixels", "MAX_START_IMAGE_PIXELS"]),
            (damaged_png(), ["not a readable PNG image"]),
            (png_bytes(8, 8), ["8×8 pixels", "MIN_START_IMAGE_SIDE"]),
        ):
            async with connect(server.ws_url, max_size=None) as ws:
                await ws.send(raw({"type": "hello", "protocol_version": m.PROTOCOL_VERSION, "new_world": {"start_image": image}}))
                err = msgpack.unpackb(await ws.recv())
                assert (err["type"], err["code"], err["field"]) == ("error", "bad_field", "new_world.start_image"), err
                for word in words:
                    assert word in err["message"], err
                assert "avcodec" not in err["message"] and "Errno" not in err["message"]
        # the server carried on: a proper image still makes a world
        async with connect(server.ws_url) as ws:
            await ws.send(raw({"type": "hello", "protocol_version": m.PROTOCOL_VERSION, "new_world": {"start_image": png_bytes(64, 48)}}))
            assert msgpack.unpackb(await ws.recv())["type"] == "welcome"

    run(scenario())
