"""Issue 15's defects, each reproduced against the real server: one player's view that the
renderer cannot draw, simultaneous joins beyond ``--max-players``, expensive messages,
frozen clients, foreign origins and reverse proxies."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import gc
import json
import os
import socket
import ssl
import struct
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import msgpack
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from protocol import ProtocolError, decode, messages as m
from runtime.app import WS_CLOSE_TIMEOUT_S, WS_PING_INTERVAL_S, WS_PING_TIMEOUT_S, StreamServer
from runtime.client import WorldClient
from runtime.config import ServerConfig
from runtime.seats import Seats
from runtime.stream.rate_limit import BucketsByKey
from runtime.stream.forwarded import RequestSource, proxy_networks, request_source
from runtime.stream.origin import normalise_origin, origin_refusal
from runtime.metrics import ServerMetrics
from runtime.stream.websocket import (
    FRAME_BURST, LARGE_BURST, LARGE_RATE_HZ, MAX_FRAME_BYTES, OUTBOX_SIZE, OVERSIZE_FORGIVE_S, OVERSIZE_STRIKES, Connection,
)
from runtime.world.render.cpu import CpuRenderer
from conftest import launch_server, thread_stats, until
from fuzz import mutated_client_messages

pytestmark = pytest.mark.timeout(180)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def health(url: str) -> dict:
    with urllib.request.urlopen(url + "/healthz", timeout=10) as r:
        return json.loads(r.read())


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


def test_a_view_that_fails_to_render_costs_only_that_view(tmp_path, monkeypatch):
    """East's view fails in every tick while it stands east of x = 50 m. The session used to
    fail the whole tick: no player got a frame. Asserted by what each frame shows
    (``frame_info.input_seq``), not by frames per wall-clock second, which load stretches:
    west gets frames showing inputs it sent while east's view was failing, east never gets
    a frame showing the pose that fails, and gets frames again once it moves back."""
    monkeypatch.setenv("WORLDSTREAM_MEDIA_PROCESSES", "0")

    async def scenario():
        server = in_process_server(tmp_path, FailsFarEast())
        url = await server.start()
        failed = server.metrics.frames_dropped.labels("render_failed")._value.get
        try:
            name = unique("fails")
            async with WorldClient(url, new_world=m.NewWorld(name=name), name="west") as west, \
                    WorldClient(url, world=name, name="east") as east:
                await west.next_frame(timeout=60)
                await east.next_frame(timeout=60)
                away = await east.send_head_pose((100.0, -1.6, 0.0), (1.0, 0.0, 0.0, 0.0))
                await until(lambda: failed() >= 1, 60, "east's view to fail", every=0.05)
                # East's view fails in every tick from now until it moves back: each frame
                # west gets for an input sent now was rendered in a tick in which east's failed.
                for _ in range(3):
                    seq = await west.send_input(yaw_delta=0.02)
                    await west.frame_after_input(seq, timeout=60)
                assert failed() >= 3  # one per tick at least: the three ticks above
                assert not [f for f in east.of_type("frame_info") if f.input_seq >= away]  # none of the failing view
                assert await west.ping() > 0
                back = await east.send_head_pose((0.0, -1.6, 0.0), (1.0, 0.0, 0.0, 0.0))
                await east.frame_after_input(back, timeout=60)
                assert not [f for f in east.of_type("frame_info") if away <= f.input_seq < back]
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_seats_and_address_buckets():
    seats = Seats(2)
    assert seats.take() and seats.take() and not seats.take()
    seats.give_back()
    assert seats.take()
    now = [0.0]
    buckets = BucketsByKey(rate=1.0, burst=2, max_keys=2, clock=lambda: now[0])
    a = buckets.get("a")
    assert a.allow() and a.allow() and not a.allow()
    assert buckets.get("a") is a and a.seconds_to_token() == pytest.approx(1.0)
    buckets.get("b"), buckets.get("c")  # "a" was used least recently: forgotten
    assert buckets.get("a") is not a


# ---------------------------------------------------------------------------------------
# against a server process (procedural world, CPU renderer, 320x180), at most 4 players

MAX_PLAYERS = 4


def empty_arrays(chunks: int) -> bytes:
    """An array of ``chunks`` arrays of 65,535 empty arrays (64 KiB each): every container
    under msgpack's own length limits, one value per byte."""
    return b"\xdc" + chunks.to_bytes(2, "big") + (b"\xdc\xff\xff" + b"\x90" * 65535) * chunks


EMPTY_ARRAYS_8MIB = empty_arrays(127)
"""8.3 M empty msgpack arrays in 8 MiB: 2 s to unpack on the 2-core machine, and it used to
be unpacked three times on the event loop."""


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory):
    proc = launch_server(tmp_path_factory.mktemp("capped"), extra_args=("--max-players", str(MAX_PLAYERS)))
    yield proc
    proc.stop()


def raw(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def hello(**fields) -> bytes:
    return raw({"type": "hello", "protocol_version": m.PROTOCOL_VERSION, **fields})


async def worst_ping_while(c: WorldClient, attack) -> float:
    """The slowest of ``c``'s pings (ms) while ``attack`` (a coroutine or task) runs, pinging
    every 50 ms; every ping must be answered (within 30 s)."""
    task = asyncio.ensure_future(attack)
    worst = 0.0
    while not task.done():
        worst = max(worst, await c.ping(timeout=30))
        await asyncio.sleep(0.05)
    await task
    return max(worst, await c.ping(timeout=30))


def streaming_cpu_s(pid: int) -> float:
    """CPU seconds used so far by process ``pid``'s threads at its main thread's priority:
    the event loop, the render thread, the default executor. Not the background threads
    below it (a world's generation, planning and saving: ``runtime.world.thread_priority``),
    whose work is not a client's."""
    threads = thread_stats(pid)
    main_nice = threads[pid][0]
    return sum(cpu for nice, cpu in threads.values() if nice == main_nice)


async def streaming_cpu_for(pid: int, calm: WorldClient, attack) -> tuple[float, str]:
    """The CPU seconds server ``pid``'s streaming threads spend while ``attack`` runs, beyond
    their rate in 3 s just before with nothing but ``calm`` pinging every 50 ms (as it does
    through the attack: every ping must be answered); and a line reporting it."""
    cpu, t0 = streaming_cpu_s(pid), time.monotonic()
    calm_worst = await worst_ping_while(calm, asyncio.sleep(3.0))
    calm_rate = (streaming_cpu_s(pid) - cpu) / (time.monotonic() - t0)  # CPU s per s, no attack
    cpu, t0 = streaming_cpu_s(pid), time.monotonic()
    attack_worst = await worst_ping_while(calm, attack)
    wall = time.monotonic() - t0
    spent = streaming_cpu_s(pid) - cpu - calm_rate * wall
    return spent, (f"the attack cost the server's streaming threads {spent:.3f} s of CPU beyond {calm_rate:.3f} s/s "
                   f"in {wall:.1f} s; worst ping {attack_worst:.0f} ms (without the attack {calm_worst:.0f} ms)")


def decode_cpu_s(messages) -> float:
    """CPU seconds this thread takes to decode ``messages`` as the server does (each decodes
    or raises ProtocolError), without the garbage collector."""
    gc.disable()
    try:
        start = time.thread_time()
        for data in messages:
            with contextlib.suppress(ProtocolError):
                decode(data, sender="client")
        return time.thread_time() - start
    finally:
        gc.enable()


async def answered(c: WorldClient, within_s: float = 60.0) -> None:
    """``c``'s connection still works: one of its pings is answered. Pinged every 2 s: a ping
    right behind a flood of refusals finds the 'other' bucket (20/s) empty and is dropped."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            await c.ping(timeout=2.0)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def unpack_cpu_s(data: bytes) -> float:
    """CPU seconds this thread takes to unpack ``data`` with msgpack's default limits (as
    the server's error path once did), without the garbage collector: a lower bound of what
    it costs in any process (a process holding more objects pays more for collections)."""
    gc.disable()
    try:
        start = time.thread_time()
        msgpack.unpackb(data)
        return time.thread_time() - start
    finally:
        gc.enable()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread CPU time is read from /proc (Linux)")
def test_expensive_messages_do_not_freeze_the_server(capped_server):
    """Two 8 MiB messages of empty arrays and 100 small ones holding 60,000 values each, then
    an address sending 8 MiB frames in a loop. The server used to unpack each large one up
    to three times on its event loop (seconds each: every player froze, pings took 10 s).

    What is asserted is what a loaded machine cannot blur: the CPU time the server's
    streaming threads spent on the whole attack (beyond their rate with no attack, measured
    just before) is less than unpacking *one* of the large messages once costs, measured
    here. Wall-clock ping times stretch with the machine's load; they are reported only,
    and every ping must be answered."""
    small_but_dear = raw({"type": "ping", "id": 1, "pad": [[0] * 1000] * 60})  # 60,000 values in 60 KiB
    one_unpack_s = unpack_cpu_s(empty_arrays(8)) * 127 / 8  # a sixteenth, scaled: CPU time, not wall time

    async def attack():
        async with connect(capped_server.ws_url, max_size=None) as ws:
            for data in [EMPTY_ARRAYS_8MIB] * 2 + [small_but_dear] * 100:
                await ws.send(data)
            # The refusals emptied the 'other' bucket (20/s): ping until one gets through.
            replies, deadline = [], time.monotonic() + 60
            while not any(r["type"] == "pong" for r in replies):
                assert time.monotonic() < deadline, replies[-5:]
                await ws.send(raw({"type": "ping", "id": 2}))
                with contextlib.suppress(asyncio.TimeoutError):  # none within 0.5 s: dropped, ping again
                    while (reply := msgpack.unpackb(await asyncio.wait_for(ws.recv(), 0.5)))["type"] != "pong":
                        replies.append(reply)
                    replies.append(reply)
            errors = [r for r in replies if r["type"] == "error"]
            assert errors and {e["code"] for e in errors} <= {"too_large", "rate_limited"}, errors
            assert any("values" in e["message"] for e in errors)
        # From another address: past its budget for large messages (2, then 1 per 5 s) a large
        # frame closes its connection from its header, before its 8 MiB are read; after
        # OVERSIZE_STRIKES such closes the address's handshakes are refused (429) until one
        # is forgiven (1 per OVERSIZE_FORGIVE_S): on a slow machine a strike may be forgiven
        # meanwhile, so knock until refused and count.
        other = {"max_size": None, "local_addr": ("127.0.0.3", 0)}
        t0, closes = time.monotonic(), 0
        while True:
            try:
                ws = await connect(capped_server.ws_url, **other)
            except InvalidStatus as exc:
                status, body = exc.response.status_code, exc.response.body.decode(errors="replace")
                break
            while ws.close_code is None and time.monotonic() - t0 < 120:
                try:
                    await ws.send(EMPTY_ARRAYS_8MIB)
                except Exception:  # closed mid-send (websockets may say so with an AttributeError)
                    break
                await asyncio.sleep(0.2)
            await asyncio.wait_for(ws.wait_closed(), 30)
            assert ws.close_code == 1009, (closes, ws.close_code, ws.close_reason)
            closes += 1
            assert closes <= OVERSIZE_STRIKES + (time.monotonic() - t0) / OVERSIZE_FORGIVE_S, closes
        forgiven = int((time.monotonic() - t0) / OVERSIZE_FORGIVE_S)
        assert status == 429 and "try again" in body, (status, body)
        assert OVERSIZE_STRIKES <= closes <= OVERSIZE_STRIKES + forgiven, (closes, forgiven)

    async def scenario():
        async with WorldClient(capped_server.url, new_world=m.NewWorld(name=unique("calm")), video=False) as calm:
            spent, report = await streaming_cpu_for(capped_server.proc.pid, calm, attack())
        report += f"; one unpack costs {one_unpack_s:.2f} s"
        assert spent < one_unpack_s, report  # less than unpacking one of its messages once (it was 2 to 6 times)
        print(report)

    asyncio.run(scenario())


def test_fuzzed_messages_leave_connection_and_server_standing(capped_server):
    """600 damaged messages on one joined connection: typed errors (or the message applied),
    the connection carries on, the server's streaming threads spend under a second of CPU on
    all of them (another player's pings are answered throughout), nothing crashes inside."""

    async def fuzz():
        async with WorldClient(capped_server.url, new_world=m.NewWorld(name=unique("fuzzed")), video=False) as c:
            for data in mutated_client_messages(seed=7, count=600):
                await c.send_raw(data)
            # Until the server has read them all (141 frames/s) and the 'other' bucket, which
            # the refusals emptied, has refilled: no reply for 1.5 s.
            errors = -1
            while errors != len(c.of_type("error")):
                errors = len(c.of_type("error"))
                await asyncio.sleep(1.5)
            await answered(c)
            codes = {e.code for e in c.of_type("error")}
            assert codes and "internal" not in codes, codes

    async def scenario():
        async with WorldClient(capped_server.url, new_world=m.NewWorld(name=unique("bystander")), video=False) as calm:
            spent, report = await streaming_cpu_for(capped_server.proc.pid, calm, fuzz())
        report += f"; decoding them here costs {decode_cpu_s(mutated_client_messages(seed=7, count=600)):.3f} s"
        # Under 1 s of CPU for all 600 together: no stall of a second could come from them
        # (a machine's load stretches the wall-clock time a ping takes, not this).
        assert spent < 1.0, report
        print(report)

    asyncio.run(scenario())
    assert "Traceback" not in capped_server.log_text()


def test_simultaneous_joins_respect_max_players(capped_server):
    """30 hellos at once, each creating a world (awaited work between the check and the join)."""
    names = [unique("crowd") for _ in range(30)]

    async def scenario():
        sockets = await asyncio.gather(*(connect(capped_server.ws_url) for _ in names))
        try:
            await asyncio.gather(*(ws.send(hello(new_world={"name": n})) for ws, n in zip(sockets, names)))
            replies = [msgpack.unpackb(r) for r in await asyncio.gather(*(asyncio.wait_for(ws.recv(), 120) for ws in sockets))]
            welcomed = [r for r in replies if r["type"] == "welcome"]
            busy = [r for r in replies if r["type"] == "error" and r["code"] == "server_busy"]
            assert len(welcomed) == MAX_PLAYERS and len(busy) == 30 - MAX_PLAYERS, [r.get("code") for r in replies]
            assert health(capped_server.url)["players"] == MAX_PLAYERS
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        # the seats come back: a new player gets in
        await until(lambda: health(capped_server.url)["players"] == 0, 60, "the seats to come back")
        async with WorldClient(capped_server.url, world=welcomed[0]["world"], video=False) as late:
            assert late.welcome.world == welcomed[0]["world"]

    asyncio.run(scenario())


def test_a_frozen_client_is_dropped_in_time_and_its_owner_resumes_at_once(capped_server):
    """A client that stops reading is dropped by the WebSocket keepalive within the
    documented 6 s (it was 15 s), and its owner's token resumes the player from a new
    connection while the frozen one still holds it (it was refused until the drop).

    The drop's bound is the documented time plus 2 s plus the worst lag the server showed
    meanwhile (another player's pings, every 50 ms): a loaded machine runs the server's
    timers late by about that much. "At once" is shown by order, not by a clock: the server
    displaced the frozen connection for the new one (its log says so), which it can only do
    while the frozen one still held the player."""
    documented_s = 6.0  # docs/server.md
    assert WS_PING_INTERVAL_S + WS_PING_TIMEOUT_S + WS_CLOSE_TIMEOUT_S <= documented_s

    async def scenario():
        name = unique("frozen")
        async with WorldClient(capped_server.url, new_world=m.NewWorld(name=name), name="stays", video=False) as stays:
            frozen = WorldClient(capped_server.url, world=name, name="frozen", video=False)
            await frozen.connect()
            frozen_id = frozen.welcome.player_id
            await frozen.send_input(forward=1.0)
            # freeze: the process stops reading (its kernel still acknowledges TCP)
            frozen.ws.transport.pause_reading()
            for task in frozen._tasks:
                task.cancel()
            since = stays.event_count
            t0 = time.monotonic()

            async def dropped() -> float:
                left = await stays.wait_for(lambda e: e.TYPE == "player_left" and e.id == frozen_id, timeout=60, since=since)
                assert left.name == "frozen"
                return time.monotonic() - t0

            drop = asyncio.create_task(dropped())
            lag_ms = await worst_ping_while(stays, drop)
            assert await drop < documented_s + 2.0 + lag_ms / 1e3, (await drop, lag_ms)

            # frozen again; this time its owner comes back on a new connection before the drop
            again = WorldClient(capped_server.url, world=name, name="frozen", video=False, resume_token=None)
            await again.connect()
            token, again_id = again.welcome.resume_token, again.welcome.player_id
            again.ws.transport.pause_reading()
            for task in again._tasks:
                task.cancel()
            async with WorldClient(capped_server.url, world=name, name="frozen", video=False, resume_token=token) as back:
                assert back.welcome.resumed and back.welcome.player_id == again_id
                assert not [e for e in back.of_type("error") if e.code == "bad_resume_token"]
                players = await back.wait_for("players", timeout=30)
                assert [p.id for p in players.players].count(again_id) == 1
            assert f"player {again_id} resumed on another connection" in capped_server.log_text(), capped_server.log_text()[-3000:]
            again.ws.transport.abort()
            frozen.ws.transport.abort()

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------
# Origin check and reverse proxies

def test_origins_are_normalised_and_checked():
    own = RequestSource("127.0.0.1", "http", "play.example:8080")
    assert normalise_origin("HTTPS://Play.Example:443") == "https://play.example"
    assert normalise_origin("null") is None and normalise_origin("https://x/path") is None
    assert origin_refusal(None, own, frozenset()) is None  # not a browser
    assert origin_refusal("http://play.example:8080", own, frozenset()) is None
    assert origin_refusal("https://evil.example", own, frozenset()) is not None
    assert origin_refusal("http://play.example:8081", own, frozenset()) is not None  # another port is another origin
    assert origin_refusal("https://evil.example", own, frozenset({"https://evil.example"})) is None
    assert origin_refusal("null", own, frozenset({"*"})) is None


def test_forwarded_headers_count_only_from_trusted_proxies():
    headers = {"Host": "10.0.0.5:8080", "X-Forwarded-For": "6.6.6.6, 203.0.113.7", "X-Forwarded-Proto": "https",
               "X-Forwarded-Host": "Play.Example"}
    assert request_source("198.51.100.1", headers, proxy_networks("127.0.0.1")) == RequestSource("198.51.100.1", "http", "10.0.0.5:8080")
    trusted = request_source("::ffff:127.0.0.1", headers, proxy_networks("127.0.0.1"))
    assert trusted == RequestSource("203.0.113.7", "https", "play.example", True)  # the proxy's own entry, not the client's claim
    assert request_source("127.0.0.1", {"X-Forwarded-For": "<script>"}, proxy_networks("127.0.0.0/8")).address == "127.0.0.1"


async def http_status(ws_url: str, **kwargs) -> tuple[int, str]:
    """Open a WebSocket; (101, "") when it opens, else the HTTP status and body it got."""
    try:
        async with connect(ws_url, **kwargs):
            return 101, ""
    except InvalidStatus as exc:
        return exc.response.status_code, exc.response.body.decode(errors="replace")


def test_foreign_origins_are_refused_with_a_reason(capped_server):
    own = capped_server.url  # http://127.0.0.1:PORT

    async def scenario():
        for origin in ("https://evil.example", "http://127.0.0.1:1", "null"):
            status, body = await http_status(capped_server.ws_url, origin=origin)
            assert status == 403 and "--allow-origin" in body, (origin, status, body)
        assert (await http_status(capped_server.ws_url, origin=own))[0] == 101
        assert (await http_status(capped_server.ws_url))[0] == 101  # no Origin: not a browser
        async with WorldClient(capped_server.url, new_world=m.NewWorld(name=unique("own")), video=False) as c:
            assert c.welcome.world

    asyncio.run(scenario())
    metrics = urllib.request.urlopen(capped_server.url + "/metrics", timeout=10).read().decode()
    assert 'worldstream_connections_refused_total{reason="origin"} 3.0' in metrics


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for ``localhost`` and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


class TlsProxy:
    """A TLS-terminating reverse proxy, as nginx does it: accepts https/wss on a loopback
    port, adds ``X-Forwarded-For/-Proto/-Host`` to the request head and forwards the
    connection to the server over plain TCP. ``client_address`` stands in for the address
    the proxy would see (every test client is 127.0.0.1)."""

    def __init__(self, upstream: str, cert: Path, key: Path, client_address: str = "203.0.113.7") -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.client_address = client_address
        self.port = 0
        self._server = None

    async def __aenter__(self) -> "TlsProxy":
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()

    async def _forward(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, rest = head.split(b"\r\n", 1)
        host = next((line.split(b":", 1)[1].strip() for line in rest.split(b"\r\n") if line.lower().startswith(b"host:")), b"")
        added = b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: %s\r\n" % (self.client_address.encode(), host)
        up_writer.write(request_line + b"\r\n" + added + rest)

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def test_behind_a_tls_proxy(start_server, tmp_path, capped_server):
    """wss:// through a real TLS-terminating proxy: with --trust-proxy the page's https origin
    is the server's own and the log names the client's address; without it the same request
    is refused, with a hint."""
    trusting = start_server(extra_args=("--trust-proxy", "127.0.0.1"))
    cert, key = self_signed(tmp_path)
    client_tls = ssl.create_default_context(cafile=str(cert))

    async def scenario():
        async with TlsProxy(trusting.url, cert, key) as proxy:
            wss = f"wss://localhost:{proxy.port}/ws"
            page = f"https://localhost:{proxy.port}"
            async with connect(wss, ssl=client_tls, origin=page) as ws:
                await ws.send(hello(new_world={"name": unique("proxied")}, player_name="behind"))
                welcome = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 60))
                assert welcome["type"] == "welcome", welcome
            assert (await http_status(wss, ssl=client_tls, origin="https://evil.example"))[0] == 403
        async with TlsProxy(capped_server.url, cert, key) as untrusted:
            status, body = await http_status(f"wss://localhost:{untrusted.port}/ws", ssl=client_tls, origin=f"https://localhost:{untrusted.port}")
            assert status == 403 and "--trust-proxy" in body, body

    asyncio.run(scenario())
    log_text = trusting.log_text()
    assert "203.0.113.7: joined world" in log_text, log_text[-3000:]
    assert "203.0.113.7" not in capped_server.log_text()  # an untrusted peer's X-Forwarded-For is ignored


# ---------------------------------------------------------------------------------------
# Hardening counters in /metrics


def metric(url: str, sample: str) -> float:
    """One sample's value from the server's /metrics (``name{label="value"}``; 0 when never counted)."""
    for line in urllib.request.urlopen(url + "/metrics", timeout=10).read().decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_oversized_frames_and_read_holds_are_counted(capped_server):
    """A frame over the size the server reads closes its connection (1009) and is counted as
    such; a client sending frames faster than the server reads makes it pause reading,
    counted once per pause."""
    url = capped_server.url
    too_big, holds = 'worldstream_connections_closed_total{reason="message_too_big"}', "worldstream_read_holds_total"
    before = {name: metric(url, name) for name in (too_big, holds)}

    async def scenario():
        async with connect(capped_server.ws_url, local_addr=("127.0.0.7", 0)) as ws:
            for i in range(3 * FRAME_BURST):  # far more than a burst, at once
                await ws.send(raw({"type": "ping", "id": i}))
            await until(lambda: metric(url, holds) > before[holds], 60, "a read hold counted")
        ws = await connect(capped_server.ws_url, local_addr=("127.0.0.8", 0))
        with contextlib.suppress(Exception):  # closed mid-send (websockets may say so with an AttributeError)
            await ws.send(b"\x90" * (MAX_FRAME_BYTES + 1))
        await asyncio.wait_for(ws.wait_closed(), 30)
        assert ws.close_code == 1009, (ws.close_code, ws.close_reason)
        await until(lambda: metric(url, too_big) == before[too_big] + 1, 30, "the 1009 close counted")

    asyncio.run(scenario())


def raw_websocket(url: str, source: str) -> socket.socket:
    """A WebSocket to ``url``'s server from ``source`` (a 127.0.0.x address: another client
    address on one host), as a bare socket after its handshake: frames are the caller's to write."""
    address = urllib.parse.urlsplit(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=30, source_address=(source, 0))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: {address.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def test_oversized_frame_is_not_read_on(capped_server):
    """A frame over the size limit closes its connection (1009) from its header, and the server
    reads no more of it: it stops reading and drops the connection ``OVERSIZE_ABORT_S`` later,
    instead of reading and throwing away the rest of the frame (up to 8 MiB through its event
    loop per close) for as long as the client sends. The close is counted."""
    url = capped_server.url
    too_big = 'worldstream_connections_closed_total{reason="message_too_big"}'
    before = metric(url, too_big)
    claimed = 64 * 2**20
    with raw_websocket(url, "127.0.0.9") as sock:
        sock.sendall(b"\x82\xff" + struct.pack("!Q", claimed) + os.urandom(4))  # a binary frame of 64 MiB, masked
        outcome = {"sent": 0}

        def send_payload():
            chunk = bytes(2**20)
            try:
                while outcome["sent"] < claimed:
                    outcome["sent"] += sock.send(chunk)
            except OSError as exc:  # reset by the server, or 30 s without progress
                outcome["error"] = exc

        sender = threading.Thread(target=send_payload)
        sender.start()
        close = sock.recv(2 + 125)  # the server's close frame, sent as soon as the header came
        sender.join(60)
    assert close[0] == 0x88 and struct.unpack("!H", close[2:4])[0] == 1009, close
    assert isinstance(outcome.get("error"), (ConnectionResetError, BrokenPipeError)), outcome
    assert outcome["sent"] < claimed // 2, outcome  # read on, the whole 64 MiB would have gone
    asyncio.run(until(lambda: metric(url, too_big) == before + 1, 30, "the 1009 close counted"))


def bytes_read(pid: int) -> int:
    """Bytes process ``pid`` has read with ``read()`` so far (``/proc/<pid>/io`` ``rchar``: the
    server's event loop reads its sockets so)."""
    with open(f"/proc/{pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="bytes read are counted from /proc (Linux)")
def test_large_messages_are_read_only_on_the_address_budget(capped_server):
    """Eight connections from one address each send two 8 MiB messages at once, before any
    hello. The address's budget for messages over 64 KiB (2, then 1 per 5 s) is spent as each
    frame's header arrives: the rest are refused from their header (close 1009) and their
    payload is not read. The server used to check the budget before each read and take the
    token after it, while websockets parsed frames ahead: all eight connections' frames were
    read, 8 MiB through the event loop each, most of them then dropped unread by anyone.
    Counted, not timed: the bytes the server process read."""
    url, pid = capped_server.url, capped_server.proc.pid
    read, refused = 'worldstream_large_messages_total{outcome="read"}', 'worldstream_large_messages_total{outcome="refused"}'
    before = {name: metric(url, name) for name in (read, refused)}
    outcomes: list[str] = []
    reasons: list[str] = []

    async def one(ws) -> None:
        with contextlib.suppress(Exception):  # closed mid-send (websockets may say so with an AttributeError)
            for data in (EMPTY_ARRAYS_8MIB, EMPTY_ARRAYS_8MIB, raw({"type": "ping", "id": 1})):
                await ws.send(data)
        try:
            while (reply := msgpack.unpackb(await asyncio.wait_for(ws.recv(), 60)))["type"] != "pong":
                outcomes.append(reply["code"])
        except ConnectionClosed:
            outcomes.append(f"closed {ws.close_code}")
            reasons.append(ws.close_reason)

    async def scenario() -> float:
        sockets = [await connect(capped_server.ws_url, max_size=None, local_addr=("127.0.0.11", 0)) for _ in range(8)]
        t0 = time.monotonic()
        read0 = bytes_read(pid)
        await asyncio.gather(*(one(ws) for ws in sockets))
        for ws in sockets:
            await ws.close()
        return bytes_read(pid) - read0, time.monotonic() - t0

    got, seconds = asyncio.run(scenario())
    allowed = LARGE_BURST + int(seconds * LARGE_RATE_HZ)
    counted = {name: metric(url, name) - before[name] for name in (read, refused)}
    report = f"{got / 2**20:.1f} MiB read in {seconds:.1f} s, {allowed} messages allowed; {counted}; {sorted(outcomes)}"
    assert LARGE_BURST <= counted[read] <= allowed, report
    assert counted[read] + counted[refused] >= 8, report  # every connection's first frame was decided
    # Each one read was decoded and refused (unless its connection was closed for its next
    # frame before the answer went out); every other connection was closed from a header.
    assert set(outcomes) <= {"too_large", "closed 1009"} and outcomes.count("too_large") <= counted[read], report
    assert outcomes.count("closed 1009") >= 8 - counted[read], report
    assert all("budget" in reason for reason in reasons), reasons  # the close says which limit
    assert len(EMPTY_ARRAYS_8MIB) * LARGE_BURST <= got < len(EMPTY_ARRAYS_8MIB) * (allowed + 1), report


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="glibc's mallopt: Linux")
def test_the_server_process_keeps_large_buffers_for_reuse():
    """The server's command line sets glibc's malloc to keep freed buffers of a few MiB (an
    8 MiB hello's) instead of faulting in new pages for each (``runtime.native_heap``); in a
    process of its own, as it changes the allocator for good."""
    import subprocess
    import sys

    code = "from runtime.native_heap import keep_large_buffers; print(keep_large_buffers())"
    run = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "True", run.stdout + run.stderr


class _QuietLink:
    """The layer above a connection, for a test of the connection alone: joined, ignoring what comes."""

    joined = True

    async def hello(self, hello) -> bool:
        return True

    async def handle(self, msg) -> None:
        pass

    async def closed(self) -> None:
        pass


class _WaitingLink(_QuietLink):
    """A link whose client has not joined (its hello never comes)."""

    joined = False


def test_a_connection_without_hello_is_closed_after_its_hello_timeout():
    """No ``hello`` within the hello timeout: an ``error not_joined`` naming it, then close 1008
    (the read that was waiting is given up at the deadline, and the connection ends cleanly)."""
    metrics = ServerMetrics()

    async def scenario():
        async def handler(ws):
            await Connection(ws, lambda channel: _WaitingLink(), 0.5, metrics, BucketsByKey(1, 1)).run()

        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}") as ws:
                t0 = time.monotonic()
                reply = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 30))
                await asyncio.wait_for(ws.wait_closed(), 30)
                return reply, ws.close_code, time.monotonic() - t0

    reply, close_code, waited = asyncio.run(scenario())
    assert (reply["type"], reply["code"]) == ("error", "not_joined") and "0.5 s" in reply["message"], reply
    assert close_code == 1008
    assert waited >= 0.4, waited  # not before its time
    assert metrics.protocol_errors.labels("not_joined")._value.get() == 1


def test_messages_to_a_client_that_stops_reading_are_dropped_and_counted():
    """A client that stops reading fills its TCP buffers, then its connection's queue
    (``OUTBOX_SIZE``); what the server sends beyond that is dropped, and every dropped message
    is counted in ``worldstream_messages_dropped_total{reason="client_not_reading"}``."""
    metrics = ServerMetrics()
    piece = os.urandom(65536)  # incompressible: permessage-deflate would shrink zeros to nothing
    sends = 2 * OUTBOX_SIZE

    async def scenario():
        done = asyncio.Event()
        queued: list[Connection] = []

        async def handler(ws):
            # Small socket buffers, as a client far away would leave: the queue fills soon.
            ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            conn = Connection(ws, lambda channel: _QuietLink(), 10.0, metrics, BucketsByKey(1, 1))
            queued.append(conn)
            running = asyncio.create_task(conn.run())
            for _ in range(sends):
                conn.send(piece)
                await asyncio.sleep(0)  # the sender writes what the socket takes
            done.set()
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running

        async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.connect(("127.0.0.1", port))
            async with connect(f"ws://127.0.0.1:{port}", sock=sock, max_size=None) as ws:
                ws.transport.pause_reading()  # stops reading: the server's sends pile up
                await asyncio.wait_for(done.wait(), 60)
                ws.transport.abort()
        return queued[0]

    conn = asyncio.run(scenario())
    dropped = metrics.messages_dropped.labels("client_not_reading")._value.get()
    assert dropped > 0 and dropped == conn._dropped, (dropped, conn._dropped)
    assert dropped <= sends - OUTBOX_SIZE
