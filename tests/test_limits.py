"""Quotas against the real server: every limit refuses with a typed error naming it, counts
in /metrics, and leaves the connection, the other players and the world working."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import random
import time
import urllib.request
import uuid
from pathlib import Path

import msgpack
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from protocol import messages as m
from runtime.client import ServerError, WorldClient
from runtime.stream.http import FLOOD_RETRY_AFTER_S
from runtime.stream.slow_refusal import REFUSAL_DELAY_S, SlowRefusals
from runtime.world.thread_priority import BACKGROUND_NICE
from runtime.world.formats.media import encode_png
from conftest import thread_stats, until

pytestmark = pytest.mark.timeout(180)


def run(coro):
    return asyncio.run(coro)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def health(url: str) -> dict:
    return json.loads(get(url + "/healthz"))


def refusals(url: str, limit: str) -> float:
    """``worldstream_limit_refusals_total{limit=...}`` from /metrics (0 when never counted)."""
    for line in get(url + "/metrics").decode().splitlines():
        if line.startswith(f'worldstream_limit_refusals_total{{limit="{limit}"}}'):
            return float(line.split()[-1])
    return 0.0


def hello(**fields) -> bytes:
    return msgpack.packb({"type": "hello", "protocol_version": m.PROTOCOL_VERSION, **fields}, use_bin_type=True)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def limit_error(exc_info) -> m.ErrorMessage:
    err = exc_info.value.error
    assert err.code == "limit_reached", err
    return err


def test_connections_per_client_address(start_server):
    server = start_server(extra_args=("--max-connections-per-client", "2"))

    async def scenario():
        first = await connect(server.ws_url)
        second = await connect(server.ws_url)
        third = await connect(server.ws_url)
        err = msgpack.unpackb(await asyncio.wait_for(third.recv(), 10))
        assert (err["type"], err["code"], err["limit"]) == ("error", "limit_reached", "max_connections_per_client"), err
        with pytest.raises(Exception):
            await asyncio.wait_for(third.recv(), 10)
        assert third.close_code == 1013 and third.close_reason == "max_connections_per_client"
        # trying again at once is a flood: refused at the door, before any WebSocket exists
        with pytest.raises(InvalidStatus) as door:
            await connect(server.ws_url)
        assert door.value.response.status_code == 429 and b"max_connections_per_client" in door.value.response.body
        # the two below the limit still work, and a slot freed is a slot to use
        await first.send(msgpack.packb({"type": "ping", "id": 1}))
        assert msgpack.unpackb(await asyncio.wait_for(first.recv(), 10))["type"] == "pong"
        await second.close()
        await until(lambda: health(server.url)["connections"] == 1, 30, "the server to count the closed connection out")
        async with WorldClient(server.url, new_world=m.NewWorld(name=unique("conn")), video=False) as c:
            assert await c.ping() > 0
        await first.close()

    run(scenario())
    assert refusals(server.url, "max_connections_per_client") == 2


def test_world_creation_per_client_address(start_server):
    server = start_server(extra_args=("--max-new-worlds-per-client", "2"))

    async def scenario():
        names = [unique("made"), unique("made")]
        for name in names:
            async with WorldClient(server.url, new_world=m.NewWorld(name=name), video=False) as c:
                assert c.welcome.world == name
        with pytest.raises(ServerError) as refused:
            await WorldClient(server.url, new_world=m.NewWorld(name=unique("third")), video=False).connect()
        err = limit_error(refused)
        assert err.limit == "max_new_worlds_per_client" and err.ref_type == "hello" and "2 worlds per hour" in err.message
        # joining what exists is not creating
        async with WorldClient(server.url, world=names[0], video=False) as c:
            assert c.welcome.world == names[0]

    run(scenario())
    assert refusals(server.url, "max_new_worlds_per_client") == 1
    assert len([p for p in server.worlds.iterdir() if p.is_dir()]) == 2


def test_open_worlds_are_capped_and_idle_worlds_unload_with_their_threads(start_server):
    server = start_server(extra_args=("--max-open-worlds", "2", "--world-linger", "0.5"))

    async def scenario():
        baseline = health(server.url)["threads"]
        a = WorldClient(server.url, new_world=m.NewWorld(name=unique("open-a")), video=False)
        b = WorldClient(server.url, new_world=m.NewWorld(name=unique("open-b")), video=False)
        await a.connect()
        await b.connect()
        for c in (a, b):  # each world generates in a thread of its own
            await c.wait_for("generation_requested", timeout=90, since=0)
        loaded = health(server.url)["threads"]
        assert loaded >= baseline + 2
        with pytest.raises(ServerError) as refused:
            await WorldClient(server.url, new_world=m.NewWorld(name=unique("open-c")), video=False).connect()
        assert limit_error(refused).limit == "max_open_worlds"
        await a.close()
        await b.close()
        await until(lambda: health(server.url)["sessions"] == 0, 60, "both worlds to unload")
        await until(lambda: health(server.url)["threads"] <= loaded - 2, 60, "the worlds' threads to stop")
        async with WorldClient(server.url, new_world=m.NewWorld(name=unique("open-c")), video=False) as c:
            assert await c.ping() > 0

    run(scenario())
    assert refusals(server.url, "max_open_worlds") == 1


def test_captions_are_limited_per_client_address_across_connections(start_server):
    server = start_server(extra_args=("--max-captions-per-client", "3"))

    async def scenario():
        name = unique("captions")
        async with WorldClient(server.url, new_world=m.NewWorld(name=name), video=False) as one, \
                WorldClient(server.url, world=name, video=False) as two:
            for c, text in ((one, "a"), (two, "b"), (one, "c")):
                # One at a time: two connections' messages sent at the same moment reach the
                # world in no set order.
                since = one.event_count
                await c.send(m.Caption(text=text))
                assert (await one.wait_for("caption_changed", timeout=10, since=since)).text == text
            since = two.event_count
            await two.send(m.Caption(text="refused"))
            err = await two.wait_for("error", timeout=10, since=since)
            assert (err.code, err.limit, err.ref_type) == ("limit_reached", "max_captions_per_client", "caption")
            async with WorldClient(server.url, world=name, video=False) as three:
                assert three.welcome.caption == "c"  # the refused caption never reached the world
            assert await one.ping() > 0 and await two.ping() > 0

    run(scenario())
    assert refusals(server.url, "max_captions_per_client") == 1


def test_server_wide_limits_hold_across_client_addresses(start_server):
    """The server-wide quotas (worlds created, caption changes per world, connections) refuse
    a second client address that is well within its own per-address allowance: typed errors
    naming the flag, counted, and the first client plays on. Two addresses through a trusted
    proxy's X-Forwarded-For (every test client is 127.0.0.1)."""
    server = start_server(extra_args=(
        "--trust-proxy", "127.0.0.1", "--max-new-worlds", "1", "--max-captions-per-world", "2", "--max-connections", "3",
    ))
    x, y = {"X-Forwarded-For": "198.51.100.10"}, {"X-Forwarded-For": "198.51.100.20"}

    async def scenario():
        name = unique("shared")
        async with WorldClient(server.url, new_world=m.NewWorld(name=name), video=False, headers=x) as a:
            creator = WorldClient(server.url, new_world=m.NewWorld(name=unique("second")), video=False, headers=y)
            with pytest.raises(ServerError) as refused:
                await creator.connect()
            err = limit_error(refused)
            assert err.limit == "max_new_worlds" and err.ref_type == "hello", err
            await creator.close()
            async with WorldClient(server.url, world=name, video=False, headers=y) as b:
                await a.send(m.Caption(text="one"))
                await b.send(m.Caption(text="two"))
                since = a.event_count
                await a.send(m.Caption(text="three"))
                err = await a.wait_for("error", timeout=30, since=since)
                assert (err.code, err.limit, err.ref_type) == ("limit_reached", "max_captions_per_world", "caption")
                # a and b hold two connections of three: one more opens, the next is refused
                third = await connect(server.ws_url, additional_headers=x)
                fourth = await connect(server.ws_url, additional_headers=y)
                err = msgpack.unpackb(await asyncio.wait_for(fourth.recv(), 30))
                assert (err["code"], err["limit"]) == ("limit_reached", "max_connections"), err
                await fourth.wait_closed()
                assert fourth.close_code == 1013 and fourth.close_reason == "max_connections"
                await third.close()
                # b heard both captions and not the refused one (any change is sent to b
                # before a hears of its refusal, so before b's pong below)
                assert await a.ping() > 0 and await b.ping() > 0
                assert [e.text for e in b.of_type("caption_changed")] == ["one", "two"]

    run(scenario())
    for limit in ("max_new_worlds", "max_captions_per_world", "max_connections"):
        assert refusals(server.url, limit) == 1, limit


IDLE_TIMEOUT_S = 3.0
PLAY_EVERY_S = 0.2
"""The active player moves every 0.2 s: it stays unless the machine stalls it for 2.8 s."""


def test_idle_players_are_disconnected_but_active_ones_stay(start_server):
    server = start_server(extra_args=("--idle-timeout", f"{IDLE_TIMEOUT_S:g}"))

    async def scenario():
        name = unique("idle")
        async with WorldClient(server.url, new_world=m.NewWorld(name=name), name="active", video=False) as active:
            t0 = time.monotonic()  # before the server starts the idle one's clock
            idle = WorldClient(server.url, world=name, name="idle", video=False)
            await idle.connect()
            try:
                # Both play on until the idle one is closed (however late a loaded machine gets to it):
                # the active one moves, the idle one only pings and sends keepalive inputs.
                sent_at = []
                while idle.ws.close_code is None and time.monotonic() - t0 < 60:
                    await active.send_input(yaw_delta=0.01)
                    sent_at.append(time.monotonic())
                    with contextlib.suppress(ConnectionClosed):
                        await idle.send(m.Ping(id=1))  # pings are not playing,
                        await idle.send_input()  # nor is the web client's keepalive (nothing held)
                    await asyncio.sleep(PLAY_EVERY_S)
                closed_after = time.monotonic() - t0
                worst_gap = max(np.diff(sent_at), default=0.0)
                err = await idle.wait_for("error", timeout=30, since=0)
                assert (err.code, err.limit) == ("limit_reached", "idle_timeout")
                await until(lambda: idle.ws.close_code is not None, 30, "the idle connection to close")
                assert idle.ws.close_code == 1000
                assert closed_after >= IDLE_TIMEOUT_S, closed_after  # not before its time
                # the active player's moves kept it: still joined, and alone in the world
                assert active.ws.close_code is None, (active.ws.close_code, active.ws.close_reason, f"worst gap between its moves {worst_gap:.2f} s")
                assert not [e for e in active.of_type("error") if e.code == "limit_reached"]
                assert await active.ping(timeout=30) > 0
                await until(lambda: health(server.url)["players"] == 1, 30, "the idle player to be removed")
            finally:
                await idle.close()

    run(scenario())
    assert refusals(server.url, "idle_timeout") == 1


def _outstanding_jobs(events, player_id: str | None = None) -> int:
    """Most generation jobs open at once (that ``player_id`` asked for), from one client's event stream."""
    open_jobs: set[int] = set()
    most = 0
    for e in events:
        if e.TYPE == "generation_requested":
            if player_id is None or player_id in e.requested_by:
                open_jobs.add(e.job_id)
        elif e.TYPE in ("generation_done", "generation_failed"):
            open_jobs.discard(e.job_id)
        most = max(most, len(open_jobs))
    return most


def test_teleporting_cannot_queue_unbounded_generation(start_server):
    server = start_server(extra_args=("--max-jobs-per-player", "2", "--max-jobs-per-world", "5"))

    async def scenario():
        name = unique("teleport")
        rng = random.Random(5)
        async with WorldClient(server.url, new_world=m.NewWorld(name=name), name="jumper", video=False) as jumper, \
                WorldClient(server.url, world=name, name="walker", video=False) as walker:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 6.0:  # a new far place every 50 ms, as in the attack
                x, z = rng.uniform(-5000, 5000), rng.uniform(-5000, 5000)
                yaw = rng.uniform(-math.pi, math.pi)
                await jumper.send_head_pose((x, -1.6, z), (math.cos(yaw / 2), 0.0, math.sin(yaw / 2), 0.0))
                await walker.send_input(forward=1.0, yaw_delta=0.05)
                await asyncio.sleep(0.05)
            err = await jumper.wait_for(lambda e: e.TYPE == "error" and e.code == "limit_reached", timeout=60, since=0)
            assert err.limit == "max_jobs_per_player"
            events = list(walker.events)  # every job is announced to everyone
            assert _outstanding_jobs(events) <= 5
            assert _outstanding_jobs(events, jumper.welcome.player_id) <= 2
            assert await walker.ping() > 0

    run(scenario())
    assert refusals(server.url, "max_jobs_per_player") >= 1


def _png(width: int, height: int) -> bytes:
    """A smooth gradient as PNG: a few KB for millions of pixels."""
    y, x = np.mgrid[0:height, 0:width]
    return encode_png(np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 90)], axis=-1).astype(np.uint8))


def test_start_image_is_stored_as_sent(start_server):
    server = start_server(extra_args=("--world-linger", "0.5"))
    image = _png(2048, 2048)
    assert len(image) < 200_000  # 12 MB of pixels

    async def scenario():
        name = unique("image")
        async with WorldClient(server.url, new_world=m.NewWorld(name=name, start_image=image), video=False) as c:
            assert c.welcome.world == name
        folder = server.worlds / name
        stored = folder / "start.png"
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == hashlib.sha256(image).hexdigest()
        assert not (folder / "start.npz").exists()
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["start_image"]["file"] == "start.png" and manifest["start_image"]["bytes"] == len(image)
        # it loads again from the stored bytes
        await until(lambda: health(server.url)["sessions"] == 0, 60, "the world to unload")
        async with WorldClient(server.url, world=name, video=False) as c:
            assert c.welcome.world == name

    run(scenario())
    assert "Traceback" not in server.log_text()


def test_a_client_refused_in_a_loop_hears_each_refusal_after_a_pause(start_server):
    """A client creating worlds past its quota in a loop hears each refusal, typed as before,
    only after a pause (runtime.stream.slow_refusal): its retry loop costs the server one
    refusal a second per connection instead of hundreds. Another address joins meanwhile."""
    server = start_server(extra_args=("--max-new-worlds-per-client", "1", "--trust-proxy", "127.0.0.1"))
    looping = {"X-Forwarded-For": "198.51.100.7"}

    async def refused() -> float:
        t0 = time.monotonic()
        with pytest.raises(ServerError) as exc:
            await WorldClient(server.url, new_world=m.NewWorld(name=unique("more")), video=False, headers=looping).connect()
        assert limit_error(exc).limit == "max_new_worlds_per_client"
        return time.monotonic() - t0

    async def scenario():
        async with WorldClient(server.url, new_world=m.NewWorld(name=unique("kept")), video=False, headers=looping) as c:
            kept = c.welcome.world
        waits = asyncio.gather(*(refused() for _ in range(3)))
        async with WorldClient(server.url, world=kept, video=False) as c:  # from 127.0.0.1: another client
            assert await c.ping() > 0
        for _ in range(2):  # and again, as a loop would
            assert await refused() >= REFUSAL_DELAY_S * 0.95
        assert min(await waits) >= REFUSAL_DELAY_S * 0.95

    run(scenario())
    assert refusals(server.url, "max_new_worlds_per_client") == 5


def test_waiting_refusals_are_bounded():
    """Refusals wait at most ``max_held`` at a time: beyond, they are answered at once (no
    unbounded pile of held sockets); with no pause configured, none waits. "At once" is
    within one turn of the event loop, not a wall-clock margin."""

    async def answered_at_once(refusal) -> bool:
        """Does ``refusal`` finish within one turn of the loop (no timer, however loaded the machine)?"""
        task = asyncio.create_task(refusal)
        await asyncio.sleep(0)
        done = task.done()
        task.cancel()
        return done

    async def scenario():
        refusals = SlowRefusals(delay_s=5.0, max_held=2)
        held = [asyncio.create_task(refusals.wait()) for _ in range(2)]
        await asyncio.sleep(0)
        assert refusals.held == 2
        assert await answered_at_once(refusals.wait())  # a third: answered at once
        assert not any(task.done() for task in held)  # the two still wait
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        assert refusals.held == 0
        assert not await answered_at_once(refusals.wait())  # room again: it waits
        assert await answered_at_once(SlowRefusals(delay_s=0.0).wait(FLOOD_RETRY_AFTER_S))  # no pause configured: none at all

    run(scenario())


def test_background_threads_run_below_the_streaming_threads(start_server):
    """A world's generation thread (and planning, saving) run at a lower CPU priority than
    the server's event loop and render thread, so on a busy machine the frame clock goes
    first (runtime.world.thread_priority). Read from /proc: Linux only."""
    if not Path("/proc/self/task").is_dir():
        pytest.skip("per-thread priorities are read from /proc (Linux)")
    server = start_server()

    def nice_by_thread() -> dict[int, int]:
        return {tid: nice for tid, (nice, _) in thread_stats(server.proc.pid).items()}

    async def scenario():
        async with WorldClient(server.url, new_world=m.NewWorld(name=unique("busy")), video=False) as c:
            await c.wait_for("generation_requested", timeout=90, since=0)
            # Each background thread lowers itself as it starts (a pool's initializer, the
            # store writer's first line), before it takes any work; on a loaded machine the
            # job can be announced before its thread has run that line: read until they settle.
            deadline = time.monotonic() + 60
            while True:
                nice = nice_by_thread()
                base = nice[server.proc.pid]  # the main thread (the event loop): as the server was started
                background = min(19, base + BACKGROUND_NICE)
                if sum(1 for v in nice.values() if v == background) >= 3 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        assert sorted(set(nice.values())) == [base, background], nice
        assert sum(1 for v in nice.values() if v == background) >= 3, nice  # plan, the world's generation, its store writer

    run(scenario())


@pytest.mark.parametrize("preset", [None, "active"])
def test_parallel_workers_sleep_between_kernels_unless_told_otherwise(preset):
    """The server makes numba's OpenMP workers sleep when a parallel kernel ends
    (``OMP_WAIT_POLICY=passive``) instead of spinning for the next one on cores the encoders
    and other players' work need; a policy set in the environment is kept. Asked of the
    OpenMP runtime itself (``omp_display_env``), in a fresh process where the server's
    ``main`` sets it before its first kernel."""
    import subprocess
    import sys

    script = (
        "import ctypes, numba, numpy as np\n"
        "from runtime.world.thread_priority import quiet_idle_parallel_workers\n"
        "assert 'libgomp' not in open('/proc/self/maps').read(), 'OpenMP loaded before the server set its policy'\n"
        "quiet_idle_parallel_workers()\n"
        "@numba.njit(parallel=True)\n"
        "def total(a):\n"
        "    s = 0.0\n"
        "    for i in numba.prange(a.size):\n"
        "        s += a[i]\n"
        "    return s\n"
        "total(np.ones(64))\n"
        "if numba.threading_layer() == 'omp':\n"
        "    ctypes.CDLL('libgomp.so.1').omp_display_env(0)\n"
        "print('layer', numba.threading_layer())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    if "layer omp" not in done.stdout:
        pytest.skip(f"numba's threading layer here is not OpenMP ({done.stdout.strip()})")
    assert f"OMP_WAIT_POLICY = '{(preset or 'passive').upper()}'" in done.stderr, done.stderr[-2000:]


def test_background_threads_are_put_in_the_idle_class(monkeypatch):
    """A background thread lowering itself goes into ``SCHED_IDLE`` (by default, and with
    ``WORLDSTREAM_BACKGROUND_POLICY=idle``); with ``normal`` it stays in the normal class, at
    its lowered nice value."""
    if not hasattr(os, "SCHED_IDLE"):
        pytest.skip("SCHED_IDLE is Linux's")
    import threading

    from runtime.world.thread_priority import POLICY_ENV, lower_thread_priority

    def policy_of_a_lowered_thread() -> int:
        seen = []

        def lower() -> None:
            lower_thread_priority()
            seen.append(os.sched_getscheduler(threading.get_native_id()))

        thread = threading.Thread(target=lower)
        thread.start()
        thread.join()
        return seen[0]

    monkeypatch.delenv(POLICY_ENV, raising=False)
    assert policy_of_a_lowered_thread() == os.SCHED_IDLE
    monkeypatch.setenv(POLICY_ENV, "idle")
    assert policy_of_a_lowered_thread() == os.SCHED_IDLE
    monkeypatch.setenv(POLICY_ENV, "normal")
    assert policy_of_a_lowered_thread() == os.SCHED_OTHER
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the calling thread is left as it was
